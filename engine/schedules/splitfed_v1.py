"""SplitFed V1: the server keeps a copy of the upper model per client. Each copy starts the round from
the global upper model and learns from its own client's batches only; at the round's end the global
upper model becomes the delta-weighted average of the copies. The round itself is :mod:`.splitfed`."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from engine.schedules.base import Schedule, register
from engine.schedules.splitfed import ServerTurns, splitfed_round
from engine.state import TrainState, make_optimizer
from engine.step import RoundLosses


def splitfed_v1_round(state: TrainState) -> RoundLosses:
    """Train one SplitFed V1 round and return its loss terms."""
    return splitfed_round(state, ServerCopies)


class ServerCopies(ServerTurns):
    """V1's server side of one round: the global upper model and its optimiser, set aside while each
    client's copy is trained, and the running sum of the copies weighted by delta_i (one sum, not n
    copies kept: the average needs nothing else)."""

    def __init__(self, state: TrainState):
        super().__init__(state)
        self.global_upper, self.global_opt = state.upper, state.server_opt
        self.total: dict[str, torch.Tensor] = {}
        # the delta_i of the clients served (they sum to 1 when every client takes part)
        self.partial = len(state.present) < state.num_clients
        self.weight_sum = state.weights[state.present].sum() if self.partial else None

    @contextmanager
    def serving(self, client: int) -> Iterator[None]:
        """While the block runs, ``state.upper`` is the client's copy of the global upper model, with
        its own optimiser; afterwards the copy is added to the sum and the global model is back."""
        state = self.state
        state.upper = copy.deepcopy(self.global_upper)
        state.server_opt = make_optimizer(list(state.upper.parameters()), state.cfg, state.cfg.server_lr)
        try:
            yield
            self._add(state.upper.state_dict(), state.weights[client])
        finally:
            state.upper, state.server_opt = self.global_upper, self.global_opt

    @torch.no_grad()
    def _add(self, entries: dict[str, torch.Tensor], weight: torch.Tensor) -> None:
        for key, value in entries.items():
            if value.is_floating_point():  # as engine.techniques.averaging.average_states
                term = weight.to(value.dtype) * value
                self.total[key] = self.total[key] + term if key in self.total else term

    @torch.no_grad()
    def end(self) -> None:
        """After the last turn the global upper model becomes sum_i delta_i w_s,i (the delta_i sum to 1;
        with absent clients, over the clients served, renormalised)."""
        entries = self.global_upper.state_dict()
        for key, value in self.total.items():
            entries[key].copy_(value / self.weight_sum.to(value.dtype) if self.partial else value)


register(Schedule("splitfed_v1", splitfed_v1_round))
