"""What the two SplitFed schedules share: a round as the SplitFed authors' code runs it
(SFLV1_/SFLV2_ResNet_HAM10000.py).

The clients are served one after another, in an order drawn afresh every round from the run's
seeded generator (so a resumed run draws the same orders). Each client takes ``local_steps``
batches, starting from the global (averaged) lower model; every batch is one engine step for that
client alone (:func:`engine.step.run_step`): forward, one server step, the cut-layer gradient down,
one client step. V2 (:mod:`.splitfed_v2`) trains one upper model batch after batch; V1
(:mod:`.splitfed_v1`) gives each client a copy of it for its turn.

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
from contextlib import AbstractContextManager, nullcontext

from engine.evaluate import authors_test_shards, evaluate_model
from engine.schedules.frame import add_step, one_round
from engine.state import TrainState, make_optimizer
from engine.step import RoundLosses, run_step


class ServerTurns:
    """The server's side of one round's turns. As it is, V2's: every turn is served by the one upper model.
    V1's (:class:`engine.schedules.splitfed_v1.ServerCopies`) serves each turn with the client's own copy."""

    def __init__(self, state: TrainState):
        self.state = state

    def serving(self, client: int) -> AbstractContextManager[None]:
        """A context in which ``state.upper`` is the upper model that serves ``client``."""
        return nullcontext()

    def end(self) -> None:
        """After the last turn (V1 averages its copies here)."""


def splitfed_round(state: TrainState, turns: type[ServerTurns]) -> RoundLosses:
    """Train one SplitFed round (every client ``local_steps`` batches, in a random order) and return its
    loss terms, each the mean over the round's batches. ``turns`` is the server's side of the round (V1, V2)."""
    cfg = state.cfg
    if cfg.reset_optimizers:
        reset_client_optimizer(state)
    with one_round(state) as (t, totals):
        order = client_order(state)
        server = turns(state)
        steps, number = len(order) * cfg.local_steps, 0
        shards = authors_test_shards(state) if t % cfg.eval_every == 0 or t == cfg.rounds else None
        authors_acc = []
        for client in order:
            start_lower = copy.deepcopy(state.lowers[client]) if shards else None
            with server.serving(client):
                for _ in range(cfg.local_steps):
                    if state.tracing:
                        state.tracer.step = number
                    if cfg.reset_optimizers:
                        reset_server_optimizer(state)
                    add_step(totals, run_step(state, [client], t), steps)
                    number += 1
                if shards:  # the authors' test: round-start lower model, the upper model that served it, own shard
                    x, y = shards[client]
                    authors_acc.append(evaluate_model(start_lower, state.upper, x, y)[0])
        if authors_acc:
            totals.authors_test_acc = sum(authors_acc) / len(authors_acc)
        if order:
            server.end()
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
