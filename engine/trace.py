"""A trace of one round, for teaching: what each step of the round moved, recorded by the code that trains.

The round (:mod:`engine.schedules`) and the techniques call ``state.trace(phase, **values)`` at each step;
that does nothing unless a :class:`RoundTrace` is attached to the state. Recorded tensors are detached
CPU copies and recording draws no random number and changes no tensor, so a traced round leaves
exactly the state an untraced one leaves (tested for every preset).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from engine.config import RunConfig
from engine.data import Dataset
from engine.round import RoundLosses, run_round

PHASES = ("batch", "forward", "upload", "mixup", "server", "grads_down", "local", "client_update", "averaging")
PHASE_TITLES = {
    "batch": "1. Each client draws a batch",
    "forward": "2. Forward to the cut layer",
    "upload": "3. Smashed data up to the server",
    "mixup": "4. ③ Smashed-data mixup at the server",
    "server": "5. The server's loss and its step",
    "grads_down": "6. ② Cut-layer gradients down",
    "local": "7. ④ The clients' local loss",
    "client_update": "8. The clients' updates",
    "averaging": "9. ⑤ Averaging the lower models",
    "handoff": "Vanilla SL: the model is handed on",
}
SHOWN = 4  # samples per client (or per mixed pair) kept as pictures


@dataclass
class TraceEvent:
    """One step of the round: its phase, the schedule step it belongs to (Vanilla SL: one per client;
    SplitFed: one per batch, client after client)."""

    phase: str
    step: int
    values: dict[str, Any]


def _copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, list | tuple):
        return type(value)(_copy(v) for v in value)
    return value


@dataclass
class RoundTrace:
    """The events of one round, in the order they happened."""

    events: list[TraceEvent] = field(default_factory=list)
    step: int = 0
    notes: dict[str, Any] = field(default_factory=dict)  # what a technique tells a later event of the step

    def record(self, phase: str, **values: Any) -> None:
        self.events.append(TraceEvent(phase, self.step, {k: _copy(v) for k, v in values.items()}))

    def note(self, key: str, value: Any) -> None:
        """Keep ``value`` for the event that reports it (SplitAvg's active clients for "grads_down")."""
        self.notes.setdefault(key, []).append(_copy(value))

    def take(self, key: str) -> list[Any]:
        """The notes kept under ``key`` since the last take, oldest first."""
        return self.notes.pop(key, [])

    def get(self, phase: str, step: int | None = None) -> list[TraceEvent]:
        return [e for e in self.events if e.phase == phase and (step is None or e.step == step)]


@dataclass
class RoundResult:
    """A traced round: the trace, what ``run_round`` returned and the ledger around it."""

    config: RunConfig
    round: int
    trace: RoundTrace
    losses: RoundLosses
    ledger_before: dict[str, int]
    ledger_after: dict[str, int]
    absent: dict[int, str] = field(default_factory=dict)  # clients missing from the round, and why


def traced_round(state) -> RoundResult:
    """Run the next round of ``state`` (a TrainState) with a trace attached; the state advances as usual."""
    trace = RoundTrace()
    before = state.ledger.as_metrics()
    state.tracer = trace
    try:
        losses = run_round(state)
    finally:
        state.tracer = None
    return RoundResult(state.cfg, state.round, trace, losses, before, state.ledger.as_metrics(),
                       state.absence_reasons())


def trace_round(cfg: RunConfig, dataset: Dataset | None = None, checkpoint: bytes | None = None) -> RoundResult:
    """Trace the first round of a fresh run of ``cfg``, or the next round of a trained run's checkpoint."""
    from engine.trainer import Trainer

    if checkpoint is not None:  # a networked run's round is traced in one process: the same math
        trainer = Trainer.from_checkpoint(checkpoint, dataset, in_process=True)
    else:
        trainer = Trainer(cfg.model_copy(update={"transport": "inprocess"}), dataset)
    return traced_round(trainer.state)
