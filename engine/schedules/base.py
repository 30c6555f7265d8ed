"""A schedule, and the registry of schedules by name (``cfg.schedule``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.state import TrainState
    from engine.step import RoundLosses


@dataclass(frozen=True)
class Schedule:
    """How a round orders training steps.

    ``run_round`` trains one round and returns its loss terms. A lockstep schedule also says, with
    ``steps``, which clients each of a round's steps serves, in order, given the clients taking part:
    the networked server and clients replay those steps (:mod:`engine.network`)."""

    name: str
    run_round: Callable[[TrainState], RoundLosses]
    steps: Callable[[list[int]], list[list[int]]] | None = None


REGISTRY: dict[str, Schedule] = {}


def register(schedule: Schedule) -> Schedule:
    """Make ``schedule`` the one ``cfg.schedule == schedule.name`` runs."""
    REGISTRY[schedule.name] = schedule
    return schedule


def get(name: str) -> Schedule:
    """The schedule called ``name`` (the config has checked that it is one)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"no schedule is called {name!r}; there are {', '.join(sorted(REGISTRY))}") from None
