"""One training round: the schedule ``cfg.schedule`` names (:mod:`engine.schedules`) orders the round's
training steps (:mod:`engine.step`). Parallel SL, read like the paper's Algorithm 4, is
:mod:`engine.schedules.parallel`.
"""

from __future__ import annotations

from engine.schedules import get
from engine.state import TrainState
from engine.step import RoundLosses

__all__ = ["RoundLosses", "run_round"]


def run_round(state: TrainState) -> RoundLosses:
    """Train one round (every client taking part updates) with the run's schedule and return its loss terms."""
    return get(state.cfg.schedule).run_round(state)
