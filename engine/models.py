"""LeNet-5 split at a cut layer, and the clients' auxiliary networks.

LeNet-5 is four blocks and a head; ``cut_layer = k`` gives blocks 1..k to the client (the
lower model) and the rest to the server (the upper model). The paper cuts after block 1
(first conv + max-pool), so the smashed data are 6x14x14 per sample.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def lenet5_blocks(in_shape: tuple[int, int, int], num_classes: int) -> list[nn.Module]:
    """LeNet-5 as five sequential pieces: conv+pool, conv+pool, fc1, fc2, classifier.

    A 28x28 input gets ``padding=2`` on the first conv (the Fashion-MNIST variant), so both
    28x28 and 32x32 inputs give 6x14x14 after block 1 and 16x5x5 after block 2.
    """
    channels, height, width = in_shape
    pad = 2 if height == 28 else 0
    h1 = (height + 2 * pad - 4) // 2
    h2 = (h1 - 4) // 2
    w1 = (width + 2 * pad - 4) // 2
    w2 = (w1 - 4) // 2
    if h2 < 1 or w2 < 1:
        raise ValueError(f"LeNet-5 needs inputs of at least 12x12 pixels, got {height}x{width}")
    return [
        nn.Sequential(nn.Conv2d(channels, 6, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Flatten(), nn.Linear(16 * h2 * w2, 120), nn.ReLU()),
        nn.Sequential(nn.Linear(120, 84), nn.ReLU()),
        nn.Linear(84, num_classes),
    ]


def split_lenet5(in_shape: tuple[int, int, int], num_classes: int, cut_layer: int) -> tuple[nn.Module, nn.Module]:
    """(lower, upper): blocks before and after the cut, freshly initialised from torch's global RNG."""
    blocks = lenet5_blocks(in_shape, num_classes)
    if not 1 <= cut_layer <= len(blocks) - 1:
        raise ValueError(f"cut_layer must be between 1 and {len(blocks) - 1}, got {cut_layer}")
    return nn.Sequential(*blocks[:cut_layer]), nn.Sequential(*blocks[cut_layer:])


def smashed_shape(lower: nn.Module, in_shape: tuple[int, int, int]) -> tuple[int, ...]:
    """Shape of one sample's smashed data (the cut-layer output)."""
    with torch.no_grad():
        return tuple(lower(torch.zeros(1, *in_shape)).shape[1:])


class InfoProDecoder(nn.Module):
    """InfoPro auxiliary network: upsample the smashed data to the input size and decode it.

    Bilinear interpolation to HxW, conv C->12 3x3, BatchNorm, ReLU, conv 12->C_in 3x3, sigmoid.
    Vector smashed data (cuts after a fully connected layer) are first projected to a 16x8x8 map.
    """

    def __init__(self, smashed: tuple[int, ...], in_shape: tuple[int, int, int]):
        super().__init__()
        self.out_hw = in_shape[1:]
        self.project = nn.Linear(smashed[0], 16 * 8 * 8) if len(smashed) == 1 else None
        channels = 16 if self.project is not None else smashed[0]
        self.decode = nn.Sequential(
            nn.Conv2d(channels, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
            nn.Conv2d(12, in_shape[0], 3, padding=1), nn.Sigmoid(),
        )

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if self.project is not None:
            s = self.project(s).view(-1, 16, 8, 8)
        s = F.interpolate(s, size=self.out_hw, mode="bilinear", align_corners=False)
        return self.decode(s)

    def loss(self, s: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """MSE between the reconstruction and the input image in [0, 1]."""
        return self.output_loss(self(s), x, y)

    @staticmethod
    def output_loss(out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss from the network's output (the batched path computes outputs for many clients at once)."""
        return F.mse_loss(out, x)


class ClassifierHead(nn.Module):
    """LocSplitFed's local loss: a small classifier on the smashed data, trained with cross-entropy."""

    def __init__(self, smashed: tuple[int, ...], num_classes: int):
        super().__init__()
        if len(smashed) == 1:
            self.net = nn.Linear(smashed[0], num_classes)
        else:
            self.net = nn.Sequential(
                nn.Conv2d(smashed[0], 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                nn.Flatten(), nn.Linear(16 * 16, num_classes),
            )

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.net(s)

    def loss(self, s: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.output_loss(self(s), x, y)

    @staticmethod
    def output_loss(out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y)


class NormRegularizer(nn.Module):
    """Norm-based local loss |theta * ||x|| - ||s|||, averaged over the batch. No parameters.

    ALGORITHMS.md writes ``theta*||x|| - ||s||``; taken literally it is unbounded below
    (growing ||s|| lowers it forever), so the engine minimises its absolute value.
    """

    def __init__(self, theta: float):
        super().__init__()
        self.theta = theta

    def loss(self, s: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_norm = x.flatten(1).norm(dim=1)
        s_norm = s.flatten(1).norm(dim=1)
        return (self.theta * x_norm - s_norm).abs().mean()


def make_aux(kind: str, smashed: tuple[int, ...], in_shape: tuple[int, int, int], num_classes: int,
             theta: float = 1.0) -> nn.Module:
    """The auxiliary network of one client for the local-loss kind."""
    if kind == "infopro":
        return InfoProDecoder(smashed, in_shape)
    if kind == "classifier":
        return ClassifierHead(smashed, num_classes)
    if kind == "norm":
        return NormRegularizer(theta)
    raise ValueError(f"unknown local loss kind {kind!r}")


def num_params(module: nn.Module) -> int:
    """Number of trainable parameters (what a model upload carries)."""
    return sum(p.numel() for p in module.parameters())


def num_state_elements(module: nn.Module) -> int:
    """Parameters plus floating-point buffers (BatchNorm statistics travel with an averaged model)."""
    buffers = sum(b.numel() for b in module.buffers() if b.is_floating_point())
    return num_params(module) + buffers


def bytes_of(num_elements: int, dtype_bytes: int = 4) -> int:
    """Bytes of ``num_elements`` float32 values."""
    return int(num_elements) * dtype_bytes


def prod(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
