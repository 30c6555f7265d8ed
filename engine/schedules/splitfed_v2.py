"""SplitFed V2: one upper model, updated batch after batch as the clients take their turns. The round
itself is :mod:`.splitfed`."""

from __future__ import annotations

from engine.schedules.base import Schedule, register
from engine.schedules.splitfed import ServerTurns, splitfed_round
from engine.state import TrainState
from engine.step import RoundLosses


def splitfed_v2_round(state: TrainState) -> RoundLosses:
    """Train one SplitFed V2 round and return its loss terms."""
    return splitfed_round(state, ServerTurns)


register(Schedule("splitfed_v2", splitfed_v2_round))
