"""What every schedule does around its steps, and the loop of steps the lockstep schedules share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from engine.state import TrainState
from engine.step import RoundLosses, parameters, run_step, update_sizes


@contextmanager
def one_round(state: TrainState) -> Iterator[tuple[int, RoundLosses]]:
    """Round ``t = state.round + 1``: who takes part is drawn first; the block trains the round's steps
    into the loss totals it is given; then the update sizes (``cfg.track_updates``), the end-of-round
    hooks (averaging every T_c) and the round counter."""
    t = state.round + 1
    totals = RoundLosses()
    before = parameters(state) if state.cfg.track_updates else None
    state.begin_round()  # who takes part (cfg.participation; everyone by default)
    yield t, totals
    if before is not None:  # after the steps (SplitFed V1: after averaging its server copies), before ⑤
        totals.updates = update_sizes(before, parameters(state))
    for tech in state.techniques:
        tech.end_round(state, t)
    state.round = t


def serve_steps(state: TrainState, steps: list[list[int]], t: int, totals: RoundLosses) -> None:
    """Run ``steps`` in order, each serving its clients together; each loss term is the mean over the steps."""
    for number, clients in enumerate(steps):
        if state.tracing:
            state.tracer.step = number
        add_step(totals, run_step(state, clients, t), len(steps))


def add_step(totals: RoundLosses, step: RoundLosses, count: int) -> None:
    """Add one of a round's ``count`` steps to its loss totals (each term the mean over the steps)."""
    totals.loss += step.loss / count
    totals.mixup += step.mixup / count
    totals.local += step.local / count
