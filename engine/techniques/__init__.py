"""The techniques, registered by name. Each says itself whether a config switches it on (``enabled``)
and where it acts in a round (``order``); registering one is its file in this folder: every module
here is imported (and so registers its techniques) when the package is."""

from __future__ import annotations

import importlib
import math
import pkgutil
from typing import TYPE_CHECKING

import torch
from torch import nn

from engine.techniques.base import REGISTRY, StepBatch, Technique, plugins, register, unregister

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")

if TYPE_CHECKING:
    from engine.config import RunConfig

__all__ = [
    "REGISTRY",
    "ServerView",
    "StepBatch",
    "Technique",
    "active_techniques",
    "plugin_lines",
    "plugins",
    "register",
    "unregister",
    "upload",
    "wire_bytes",
    "wire_codec",
]


def active_techniques(cfg: RunConfig) -> list[Technique]:
    """Every registered technique ``cfg`` switches on, built, in the order a round applies them."""
    classes = sorted((cls for cls in REGISTRY.values() if cls.enabled(cfg)), key=lambda cls: (cls.order, cls.name))
    techniques = [cls(cfg) for cls in classes]
    wire_codec(techniques)  # refuses a set whose wire encoding would not send what the server should receive
    return techniques


def plugin_lines(cfg: RunConfig, phase: str) -> list[str]:
    """What each plugin switched on in ``cfg`` does in step ``phase`` of a round (the walkthrough's words)."""
    return [f"{cls.label}: {cls(cfg).describe()}" for cls in plugins() if cls.enabled(cfg) and phase in cls.acts_in()]


def upload(state, techniques: list[Technique], clients: list[int], smashed: torch.Tensor) -> torch.Tensor:
    """What the server receives of the clients' smashed data [k, b, ...]: every technique's ``upload``, in order."""
    for tech in techniques:
        smashed = tech.upload(state, clients, smashed)
    return smashed


def wire_codec(techniques: list[Technique]) -> Technique | None:
    """The technique that decides how smashed data travel (quantisation), or None (float32 as computed).
    It must come last among the techniques that change an upload: what it encodes is what is sent."""
    codecs = [t for t in techniques if t.wire((1,)) is not None]
    if len(codecs) > 1:
        raise ValueError(f"two techniques encode the smashed data for the wire: {', '.join(t.name for t in codecs)}")
    if codecs:
        later = [t for t in techniques[techniques.index(codecs[0]) + 1:] if type(t).upload is not Technique.upload]
        if later:
            raise ValueError(f"{later[0].name} changes the smashed data after {codecs[0].name} encoded them")
    return codecs[0] if codecs else None


def wire_bytes(techniques: list[Technique], shape: tuple[int, ...], num_clients: int) -> int | None:
    """Bytes ``num_clients`` clients' smashed data of ``shape`` each take on the wire when a technique
    encodes them (None: float32, as the ledger counts by default)."""
    codec = wire_codec(techniques)
    if codec is None:
        return None
    return num_clients * sum(math.prod(size) * dtype.itemsize for size, dtype in codec.wire(shape))


class ServerView(nn.Module):
    """A lower model as the server sees it: its output through the defenses of ``cfg``, in uploads of
    ``cfg.batch_size`` images (quantisation ranges are per upload), noise drawn from streams of ``seed``
    (a measurement's own, never the run's). Attacks take it as the lower model: the smashed data it
    gives are the ones the server receives."""

    def __init__(self, lower: nn.Module, cfg: RunConfig, seed: int = 0):
        super().__init__()
        self.lower, self.batch_size = lower, cfg.batch_size
        self.techniques = [t for t in active_techniques(cfg) if type(t).upload is not Technique.upload]
        for tech in self.techniques:
            tech.reseed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.batch_size
        return torch.cat([upload(None, self.techniques, [0], self.lower(x[i:i + b])[None])[0]
                          for i in range(0, len(x), b)])
