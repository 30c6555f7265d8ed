"""The SplitFed schedules: a round as the SplitFed authors' code runs it (SFLV1_/SFLV2_ResNet_HAM10000.py).

The clients are served one after another, in an order drawn afresh every round from the run's
seeded generator (so a resumed run draws the same orders). Each client takes ``local_steps``
batches, starting from the global (averaged) lower model; every batch is one engine step for that
client alone (:func:`engine.step.run_step`): forward, one server step, the cut-layer gradient down,
one client step.

- ``splitfed_v2``: one upper model, updated batch after batch as the clients take their turns.
- ``splitfed_v1``: the server keeps a copy of the upper model per client. Each copy starts the round
  from the global upper model and learns from its own client's batches only; at the round's end the
  global upper model becomes the delta-weighted average of the copies.

The lower models are averaged (⑤, FedAvg) by the end-of-round hooks, as in every schedule. With
``reset_optimizers`` the optimisers are re-created where the authors' code creates them: the
clients' at the start of every round, the server's before every batch.

On an evaluation round the round also measures the figure the authors' code prints
(``authors_test_acc``): after each client's turn, the client's round-start lower model with the
upper model it was served by (V1: its own copy; V2: the one server model, as it stands after that
turn) on the client's own shard of the test set, averaged over the clients. It only reads the
models, so training is the same with or without it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch

from engine.evaluate import authors_test_shards, evaluate_model
from engine.state import TrainState, make_optimizer
from engine.step import RoundLosses, parameters, run_step, update_sizes


def run_splitfed_round(state: TrainState) -> RoundLosses:
    """Train one SplitFed round (every client ``local_steps`` batches, in a random order) and return its
    loss terms, each the mean over the round's batches."""
    cfg, t = state.cfg, state.round + 1
    before = parameters(state) if cfg.track_updates else None
    if cfg.reset_optimizers:
        reset_client_optimizer(state)
    state.begin_round()  # who takes part (cfg.participation; everyone by default)
    order = client_order(state)
    copies = ServerCopies(state) if cfg.schedule == "splitfed_v1" else None
    totals, steps, number = RoundLosses(), len(order) * cfg.local_steps, 0
    shards = authors_test_shards(state) if t % cfg.eval_every == 0 or t == cfg.rounds else None
    authors_acc = []
    for client in order:
        start_lower = copy.deepcopy(state.lowers[client]) if shards else None
        with copies.serving(client) if copies else nullcontext():
            for _ in range(cfg.local_steps):
                if state.tracing:
                    state.tracer.step = number
                if cfg.reset_optimizers:
                    reset_server_optimizer(state)
                step = run_step(state, [client], t)
                totals.loss += step.loss / steps
                totals.mixup += step.mixup / steps
                totals.local += step.local / steps
                number += 1
            if shards:  # the authors' test: round-start lower model, the upper model that served it, own shard
                x, y = shards[client]
                authors_acc.append(evaluate_model(start_lower, state.upper, x, y)[0])
    if authors_acc:
        totals.authors_test_acc = sum(authors_acc) / len(authors_acc)
    if copies and order:
        copies.average_into_global()
    if before is not None:  # the server's update after V1's average; the clients' before ⑤
        totals.updates = update_sizes(before, parameters(state))
    for tech in state.techniques:
        tech.end_round(state, t)
    state.round = t
    return totals


def client_order(state: TrainState) -> list[int]:
    """This round's order of the clients: every client once, drawn as the authors' code draws it
    (``np.random.choice(range(n), n, replace=False)``), from the run's seeded generator."""
    n, present = state.num_clients, state.present
    if len(present) == n:
        return state.rng.choice(n, n, replace=False).tolist()
    # some clients are absent (cfg.participation): the present ones, in an order drawn the same way
    return [present[j] for j in state.rng.choice(len(present), len(present), replace=False).tolist()]


def reset_server_optimizer(state: TrainState) -> None:
    """A fresh server optimiser over the upper model being trained (V1: the served client's copy)."""
    state.server_opt = make_optimizer(list(state.upper.parameters()), state.cfg, state.cfg.server_lr)


def reset_client_optimizer(state: TrainState) -> None:
    """A fresh optimiser over every client module. It updates each client as the client's own fresh
    optimiser would (the optimisers are elementwise), as the authors re-create it at every turn."""
    params = [p for m in state.client_modules() for p in m.parameters()]
    state.client_opt = make_optimizer(params, state.cfg, state.cfg.optim.lr) if params else None


class ServerCopies:
    """V1's server side of one round: the global upper model and its optimiser, set aside while each
    client's copy is trained, and the running sum of the copies weighted by delta_i (one sum, not n
    copies kept: the average needs nothing else)."""

    def __init__(self, state: TrainState):
        self.state = state
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
    def average_into_global(self) -> None:
        """The global upper model becomes sum_i delta_i w_s,i (the delta_i sum to 1; with absent clients,
        over the clients served, renormalised)."""
        entries = self.global_upper.state_dict()
        for key, value in self.total.items():
            entries[key].copy_(value / self.weight_sum.to(value.dtype) if self.partial else value)
