"""Vanilla (sequential) SL: the clients one after another, one step each, on one shared lower model
(the state holds the same lower model for every client; :func:`engine.step.run_step` hands it on)."""

from __future__ import annotations

from engine.schedules.base import Schedule, register
from engine.schedules.frame import one_round, serve_steps
from engine.state import TrainState
from engine.step import RoundLosses


def steps(present: list[int]) -> list[list[int]]:
    """One step per client taking part, in client order (an absent client is skipped)."""
    return [[i] for i in present]


def sequential_round(state: TrainState) -> RoundLosses:
    """Train one round, client after client, and return its loss terms (each the mean over the steps)."""
    with one_round(state) as (t, totals):
        serve_steps(state, steps(state.present), t, totals)
    return totals


register(Schedule("sequential", sequential_round, steps))
