"""Defense: k-bit uniform quantisation of the smashed data on the wire, straight-through gradient.

Each client's batch is quantised with its own range: lo = min s, hi = max s, scale =
(hi - lo) / (2^k - 1), code = round((s - lo) / scale), and the server receives lo + code * scale.
What travels is the codes packed k bits each (ceil(elements * k / 8) bytes) and lo, hi as two
float32s, instead of 4 bytes an element: the ledger counts exactly that, in one process and over
a transport (which sends these very tensors). The client's backward treats the rounding as the
identity (the straight-through estimator): the cut-layer gradient reaches the lower model unchanged.
"""

from __future__ import annotations

import math

import torch

from engine.techniques.base import Technique, register


def quantize(s: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes [k, ...] int64 in 0..2^bits-1, lo [k], hi [k]): each row of ``s`` [k, ...] with its own range."""
    lo, hi = s.flatten(1).amin(1), s.flatten(1).amax(1)
    scale = _scale(lo, hi, bits).view(-1, *[1] * (s.dim() - 1))
    codes = torch.round((s - lo.view_as(scale)) / scale).clamp(0, 2 ** bits - 1)
    return codes.long(), lo, hi


def dequantize(codes: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    """The values the codes stand for: lo + code * scale, row by row (float32)."""
    scale = _scale(lo, hi, bits).view(-1, *[1] * (codes.dim() - 1))
    return codes.to(scale.dtype) * scale + lo.view_as(scale)


def _scale(lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    """(hi - lo) / (2^bits - 1), 1 where a row is constant (every code is then 0)."""
    return torch.where(hi > lo, (hi - lo) / (2 ** bits - 1), torch.ones_like(lo))


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """The codes, ``bits`` each, as a stream of ceil(n * bits / 8) bytes (uint8), least significant first."""
    flat = codes.flatten()
    stream = ((flat[:, None] >> torch.arange(bits, device=flat.device)) & 1).flatten().to(torch.uint8)
    stream = torch.nn.functional.pad(stream, (0, (-len(stream)) % 8))
    weights = (1 << torch.arange(8, device=flat.device)).to(torch.int64)
    return (stream.view(-1, 8).long() * weights).sum(1).to(torch.uint8)


def unpack(data: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The first ``count`` codes of a :func:`pack` stream (int64)."""
    stream = ((data.long()[:, None] >> torch.arange(8, device=data.device)) & 1).flatten()[:count * bits]
    return (stream.view(count, bits) << torch.arange(bits, device=data.device)).sum(1)


def packed_bytes(count: int, bits: int) -> int:
    return math.ceil(count * bits / 8)


@register
class BitsDefense(Technique):
    name = "defense_bits"
    order = 20  # the wire: after every other change to the smashed data
    defense = True

    @classmethod
    def enabled(cls, cfg) -> bool:
        return cfg.defense.bits > 0

    def describe(self) -> str:
        k = self.cfg.defense.bits
        return (f"quantisation: {k}-bit codes of the smashed data on the wire ({32 / k:g}x fewer bytes), "
                "straight-through gradient")

    def upload(self, state, clients: list[int], smashed: torch.Tensor) -> torch.Tensor:
        bits = self.cfg.defense.bits
        plain = smashed.detach()
        received = dequantize(*quantize(plain, bits), bits)
        return received + (smashed - plain)  # the value received, the gradient of the identity

    def wire(self, shape: tuple[int, ...]) -> list[tuple[tuple[int, ...], torch.dtype]]:
        return [((packed_bytes(math.prod(shape), self.cfg.defense.bits),), torch.uint8), ((2,), torch.float32)]

    def encode(self, smashed: torch.Tensor) -> list[torch.Tensor]:
        bits = self.cfg.defense.bits
        codes, lo, hi = quantize(smashed.detach()[None], bits)
        return [pack(codes, bits), torch.cat([lo, hi])]

    def decode(self, payload: list[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
        bits = self.cfg.defense.bits
        data, bounds = payload
        codes = unpack(data, bits, math.prod(shape)).view(1, *shape)
        return dequantize(codes, bounds[:1], bounds[1:], bits)[0]
