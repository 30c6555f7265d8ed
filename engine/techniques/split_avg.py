"""SGLR's SplitAvg: a fraction phi of the clients, drawn each round, share one averaged gradient.

Every active client receives the mean of the active clients' cut-layer gradients (one broadcast)
and backpropagates it through its own lower model with its own input; inactive clients receive
their own gradient. An optional phase limits the averaging to the first or last part of training.
"""

from __future__ import annotations

import math

import torch

from engine.techniques.base import StepBatch, Technique, register


def in_phase(phase: str, phase_fraction: float, round_: int, rounds: int) -> bool:
    """Whether averaging applies in round ``round_`` (1-based) of ``rounds``."""
    edge = phase_fraction * rounds
    if phase == "first":
        return round_ <= edge
    if phase == "last":
        return round_ > rounds - edge
    return True


def active_count(fraction: float, k: int) -> int:
    """floor(phi * k), at least 1; a product a hair under a whole number (0.29 * 100) counts as it."""
    return max(1, math.floor(fraction * k + 1e-9))


@register
class SplitAvg(Technique):
    name = "split_avg"
    order = 60  # ② the cut-layer gradients down

    @classmethod
    def enabled(cls, cfg) -> bool:
        return cfg.split_avg.enabled and cfg.global_backward

    def describe(self) -> str:
        a = self.cfg.split_avg
        phase = "" if a.phase == "all" else f", {a.phase} {a.phase_fraction:.0%} of rounds"
        return f"SplitAvg: phi={a.fraction:g} of clients share the mean cut-layer gradient{phase}"

    def draw_active(self, state, k: int) -> list[int]:
        """The active clients of this step: floor(phi * k) of them, at least one (the SGLR paper's
        example: n = 6, phi = 0.25 gives 1)."""
        num = active_count(self.cfg.split_avg.fraction, k)
        return sorted(state.rng.choice(k, num, replace=False).tolist())

    def cut_grads(self, state, batch: StepBatch, grads: torch.Tensor, messages: int) -> tuple[torch.Tensor, int]:
        a, k = self.cfg.split_avg, grads.shape[0]
        if not in_phase(a.phase, a.phase_fraction, batch.round, self.cfg.rounds):
            return grads, messages
        active = torch.as_tensor(self.draw_active(state, k), device=grads.device)
        if state.tracing:
            state.tracer.note("active", active.tolist())
        grads = grads.clone()
        grads[active] = grads[active].mean(0, keepdim=True)
        return grads, messages - len(active) + 1  # inactive unicasts + one broadcast
