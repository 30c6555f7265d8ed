"""One training round, read like the paper's Algorithm 4.

forward every client -> server losses (+ mixup) -> one server step -> cut-layer gradients
(+ SplitAvg) -> client steps (+ local losses) -> end-of-round hooks (averaging every T_c).
The step itself is :mod:`engine.step`; this module orders steps into a round. Parallel SL serves
every client in one step; Vanilla SL runs the step once per client with one shared lower model;
the SplitFed schedules (:mod:`engine.splitfed`) run it once per batch of each client, in a random
order.
"""

from __future__ import annotations

from engine.splitfed import run_splitfed_round
from engine.state import TrainState
from engine.step import RoundLosses, parameters, run_step, update_sizes


def run_round(state: TrainState) -> RoundLosses:
    """Train one round (every client updates once) and return its loss terms."""
    if state.cfg.schedule.startswith("splitfed"):  # clients one after another, many batches each
        return run_splitfed_round(state)
    t = state.round + 1
    totals = RoundLosses()
    before = parameters(state) if state.cfg.track_updates else None
    state.begin_round()  # who takes part (cfg.participation; everyone by default)
    groups = state.schedule_groups()
    for number, clients in enumerate(groups):
        if state.tracing:
            state.tracer.step = number
        step = run_step(state, clients, t)
        totals.loss += step.loss / len(groups)
        totals.mixup += step.mixup / len(groups)
        totals.local += step.local / len(groups)
    if before is not None:
        totals.updates = update_sizes(before, parameters(state))
    for tech in state.techniques:
        tech.end_round(state, t)
    state.round = t
    return totals
