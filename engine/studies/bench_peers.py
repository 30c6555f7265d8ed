"""The bench's peers: one Parallel SL round as others write it by hand, in the same process and settings.

- **Lockstep loop** (the SGLR authors' style): every client its own lower model and optimiser; each
  client's forward, the smashed data concatenated, one server step, the cut-layer gradient split and
  each client's backward and step, in a plain loop.
- **SplitFed authors' style** (their ``SFLV2`` code): the clients in turn, each with its own lower model
  and optimiser, each batch a client forward, a server step on that batch, the client backward and
  step; then the lower models averaged with their ``FedAvg`` (deep copy, summed key by key).

Both do the arithmetic of :func:`engine.studies.bench.round_state`'s Parallel SL round on the same
shapes: n clients, batch b, LeNet-5 cut after the first block, plain SGD at lr 0.01, each client
drawing its batch from its own shard in memory every round.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch.nn import functional as F

from engine.models import split_lenet5


class ClientBatches:
    """Each client's next batch of its own shard of a data set in memory, reshuffled when it runs out:
    the least a hand-written loop does to feed its clients (their code uses a DataLoader per client)."""

    def __init__(self, n: int, shape: tuple[int, ...], device: str, batch: int):
        size = max(4096, n * batch)  # as engine.studies.bench.round_state's synthetic data
        self.x = torch.rand(size, *shape, device=device)
        self.y = torch.randint(0, 10, (size,), device=device)
        self.shards = list(torch.arange(size, device=device).chunk(n))
        self.orders = [s[torch.randperm(len(s))] for s in self.shards]
        self.cursors = [0] * n
        self.batch = batch

    def next(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cursors[i] + self.batch > len(self.orders[i]):
            self.orders[i], self.cursors[i] = self.shards[i][torch.randperm(len(self.shards[i]))], 0
        idx = self.orders[i][self.cursors[i]:self.cursors[i] + self.batch]
        self.cursors[i] += self.batch
        return self.x[idx], self.y[idx]


def _clients(n: int, shape: tuple[int, ...], device: str, batch: int):
    lower, upper = split_lenet5(shape, 10, 1)
    lowers = [copy.deepcopy(lower).to(device) for _ in range(n)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.01) for m in lowers]
    upper = upper.to(device)
    server_opt = torch.optim.SGD(upper.parameters(), lr=0.01)
    return lowers, opts, upper, server_opt, ClientBatches(n, shape, device, batch)


def lockstep_round(n: int, shape: tuple[int, ...], device: str, batch: int) -> Callable[[], None]:
    """One round of Parallel SL as a hand-written lockstep loop."""
    lowers, opts, upper, server_opt, data = _clients(n, shape, device, batch)

    def step() -> None:
        batches = [data.next(i) for i in range(n)]
        outs = [lower(x) for lower, (x, _) in zip(lowers, batches)]
        smashed = [o.detach().requires_grad_() for o in outs]
        server_opt.zero_grad(set_to_none=True)
        F.cross_entropy(upper(torch.cat(smashed)), torch.cat([y for _, y in batches])).backward()
        server_opt.step()
        for out, s, opt in zip(outs, smashed, opts):
            opt.zero_grad(set_to_none=True)
            out.backward(s.grad)
            opt.step()

    return step


def fedavg(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The SplitFed authors' FedAvg: a deep copy of the first state, the others added key by key, divided by n."""
    avg = copy.deepcopy(states[0])
    for key in avg:
        for other in states[1:]:
            avg[key] += other[key]
        avg[key] = torch.div(avg[key], len(states))
    return avg


def splitfed_authors_round(n: int, shape: tuple[int, ...], device: str, batch: int) -> Callable[[], None]:
    """One round (one batch per client) as the SplitFed authors' V2 code runs it."""
    lowers, opts, upper, server_opt, data = _clients(n, shape, device, batch)

    def step() -> None:
        for i, (lower, opt) in enumerate(zip(lowers, opts)):
            x, y = data.next(i)
            opt.zero_grad(set_to_none=True)
            out = lower(x)
            client_fx = out.clone().detach().requires_grad_(True)  # "sent" to the server
            server_opt.zero_grad(set_to_none=True)
            F.cross_entropy(upper(client_fx), y).backward()
            server_opt.step()
            out.backward(client_fx.grad.clone().detach())  # dfx "sent" back
            opt.step()
        avg = fedavg([m.state_dict() for m in lowers])
        for m in lowers:
            m.load_state_dict(avg)

    return step
