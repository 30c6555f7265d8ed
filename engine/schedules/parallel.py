"""Parallel SL, read like the paper's Algorithm 4: every client taking part is served in one step.

forward every client -> server losses (+ mixup) -> one server step -> cut-layer gradients
(+ SplitAvg) -> client steps (+ local losses) -> end-of-round hooks (averaging every T_c).
"""

from __future__ import annotations

from engine.schedules.base import Schedule, register
from engine.schedules.frame import one_round, serve_steps
from engine.state import TrainState
from engine.step import RoundLosses


def steps(present: list[int]) -> list[list[int]]:
    """One step serving every client taking part (none when nobody is)."""
    return [list(present)] if present else []


def parallel_round(state: TrainState) -> RoundLosses:
    """Train one round with every client in one step and return its loss terms."""
    with one_round(state) as (t, totals):
        serve_steps(state, steps(state.present), t, totals)
    return totals


register(Schedule("parallel", parallel_round, steps))
