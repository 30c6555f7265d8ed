"""One training step, read like the paper's Algorithm 4: the clients served together forward,
the server's losses (+ mixup) and one server step, the cut-layer gradients down (+ SplitAvg), the
client steps (+ local losses). The schedules (:mod:`engine.schedules`: parallel, Vanilla SL, SplitFed
V1 and V2, one file each) decide which clients a step serves and in what order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from engine.batched import stacked_call
from engine.state import TrainState, unique_modules
from engine.techniques import StepBatch, upload, wire_bytes


@dataclass
class RoundLosses:
    """Mean training-loss terms of a round: L (server), L~ (mixup), L^ (local)."""

    loss: float = 0.0
    mixup: float = 0.0
    local: float = 0.0
    updates: UpdateSizes | None = None  # with cfg.track_updates
    authors_test_acc: float | None = None  # SplitFed schedules, evaluation rounds (engine.schedules.splitfed)


@dataclass
class UpdateSizes:
    """How far a round moved the server's model and the clients' (before averaging): L2 norms of the
    parameter change, absolute and relative to the norm of the parameters before the round. The
    clients' values are the mean over the distinct lower models (one for Vanilla SL)."""

    server: float
    client: float
    server_rel: float
    client_rel: float


def parameters(state: TrainState) -> list[torch.Tensor]:
    """The server's parameters, then each distinct lower model's, as flat copies."""
    return [_flat(m) for m in [state.upper, *unique_modules(state.lowers)]]


def update_sizes(before: list[torch.Tensor], after: list[torch.Tensor]) -> UpdateSizes:
    """:class:`UpdateSizes` from the flat parameters (server first) before and after a round."""
    moved = [float((a - b).norm()) for a, b in zip(after, before, strict=True)]
    rel = [m / max(float(b.norm()), 1e-12) for m, b in zip(moved, before)]
    k = len(moved) - 1
    return UpdateSizes(moved[0], sum(moved[1:]) / k, rel[0], sum(rel[1:]) / k)


def run_step(state: TrainState, clients: list[int], t: int) -> RoundLosses:
    """Serve ``clients`` together: forward, one server update, their client updates."""
    cfg = state.cfg
    x, y = state.next_batches(clients)
    k, b = y.shape
    state.trace("batch", clients=clients, x=x, y=y)
    if state.runs_batched(k):  # ① forward, every client at once
        stacked = own = stacked_call([state.lowers[i] for i in clients], x)
        smashed = list(stacked.unbind(0))
    else:                      # ① forward, client by client
        stacked, smashed = None, [state.lowers[i](x[j]) for j, i in enumerate(clients)]
        own = torch.stack(smashed)
    sent = upload(state, state.techniques, clients, own)  # what the server receives (defenses)
    server_in = sent.flatten(0, 1).detach()
    needs_grad = cfg.global_backward or (cfg.mixup.enabled and cfg.mixup.grad_to_clients)
    server_in.requires_grad_(needs_grad)
    up = state.ledger.bytes_up
    state.ledger.smashed(k * b, server_in[0].numel(), wire_bytes(state.techniques, (b, *server_in.shape[1:]), k))
    if state.tracing:
        trace_upload(state, clients, own, sent, state.ledger.bytes_up - up)
    weights = state.weights[clients] / state.weights[clients].sum()
    batch = StepBatch(clients, x, server_in, y.reshape(-1), weights, t, stacked)
    losses = server_step(state, batch)
    client_step(state, batch, smashed, losses, None if sent is own else list(sent.unbind(0)))
    if state.sequential:  # Vanilla SL: the lower model is handed to the next client
        up = state.ledger.bytes_up
        state.ledger.model_exchange(1, [state.lowers[0]])
        if state.tracing:
            later = [i for i in state.present if i > clients[0]]  # an absent client is skipped
            state.trace("handoff", **{"from": clients[0], "to": later[0] if later else None,
                                      "bytes": state.ledger.bytes_up - up})
    return losses


def trace_upload(state: TrainState, clients: list[int], own: torch.Tensor, sent: torch.Tensor, sent_bytes: int) -> None:
    """The walkthrough's steps 2 and 3: the clients' smashed data, and what the server receives of them
    after the defenses (the same tensor without one), with the bytes sent."""
    k, shape = len(clients), tuple(own.shape[2:])
    snr = state.tracer.take("snr_db")
    state.trace("forward", clients=clients, smashed=own, shape=shape)
    state.trace("upload", clients=clients, bytes=sent_bytes, bytes_per_client=sent_bytes // k, received=sent,
                defenses=[tech.describe() for tech in state.techniques if tech.defense],
                snr_db=snr[0] if snr else None)


def server_step(state: TrainState, batch: StepBatch) -> RoundLosses:
    """Server losses sum_i delta_i (L_i + L~_i), backpropagated into w_s (and the cut layer), one step."""
    k, b = batch.num_clients, batch.batch_size
    state.server_opt.zero_grad(set_to_none=True)
    per_client = F.cross_entropy(state.upper(batch.smashed), batch.labels, reduction="none").view(k, b).mean(1)
    loss = (batch.weights * per_client).sum()
    loss.backward()
    mixup = 0.0
    for tech in state.techniques:
        for extra in tech.server_extra_losses(state, batch):                    # ③ mixup
            extra.backward()
            mixup += extra.item()
    lr = state.cfg.optim.lr
    for tech in state.techniques:
        lr = tech.server_lr(state, lr)                                           # SplitLr
    for group in state.server_opt.param_groups:
        group["lr"] = lr
    state.server_opt.step()
    state.trace("server", loss=loss.item(), mixup=mixup, lr=state.cfg.optim.lr, server_lr=lr)
    return RoundLosses(loss=loss.item(), mixup=mixup)


def client_step(state: TrainState, batch: StepBatch, smashed: list[torch.Tensor], losses: RoundLosses,
                sent: list[torch.Tensor] | None = None) -> None:
    """Cut-layer gradients down (②), local losses (④), one update of every client model."""
    if state.client_opt is None:
        return
    losses.local = client_update(state, batch, smashed, cut_gradients(state, batch), sent)


def cut_gradients(state: TrainState, batch: StepBatch) -> list[torch.Tensor] | None:
    """The server's side of ②: dL_i/ds_i for each of the step's clients (after SplitAvg), counted in
    the ledger; None when ② sends nothing."""
    if batch.smashed.grad is None or not state.cfg.global_backward:
        return None
    k, b = batch.num_clients, batch.batch_size
    # the server's gradient is w.r.t. sum_i delta_i L_i: divide delta_i out to get dL_i/ds_i
    shape = (k, b, *batch.smashed.shape[1:])
    cut = batch.smashed.grad.view(shape) / batch.weights.view(k, *[1] * (len(shape) - 1))
    messages = k
    own = cut
    for tech in state.techniques:
        cut, messages = tech.cut_grads(state, batch, cut, messages)         # SplitAvg
    down = state.ledger.bytes_down
    state.ledger.grads(messages, b, batch.smashed[0].numel())
    if state.tracing:
        state.trace("grads_down", clients=batch.clients, own_norms=own.flatten(1).norm(dim=1).tolist(),
                    norms=cut.flatten(1).norm(dim=1).tolist(),
                    active=next(iter(state.tracer.take("active")), None), bytes=state.ledger.bytes_down - down,
                    messages=messages)
    return list(cut)


def client_update(state: TrainState, batch: StepBatch, smashed: list[torch.Tensor],
                  grads: list[torch.Tensor] | None, sent: list[torch.Tensor] | None = None) -> float:
    """The clients' side: backpropagate the received cut-layer gradients (if any) through what each client
    sent (``sent``, after its defenses; default its smashed data) and the local losses (④, NoPeek) of its
    own smashed data into the lower (and auxiliary) models, one optimiser step. Returns the mean local loss."""
    k = batch.num_clients
    tensors, grads = (sent or smashed, grads) if grads is not None else ([], [])
    local = local_losses(state, batch, smashed)
    if local is not None and state.tracing:
        entries = state.tracer.take("local")  # (loss, reconstruction or None) per client, from the technique
        recons = [e[1] for e in entries]
        nopeek = state.tracer.take("nopeek")  # NoPeek's dCor per client
        state.trace("local", clients=batch.clients,
                    kind=state.cfg.local_loss.kind if state.cfg.local_loss.enabled else None,
                    losses=[e[0] for e in entries], inputs=batch.inputs[:, :4],
                    reconstructions=torch.stack(recons) if recons and recons[0] is not None else None,
                    nopeek_dcor=nopeek or None)
    mean_local = 0.0
    if local is not None:
        tensors, grads = [*tensors, local], [*grads, torch.ones_like(local)]
        mean_local = local.item() / k
    if not tensors:
        return mean_local
    state.client_opt.zero_grad(set_to_none=True)
    torch.autograd.backward(tensors, grads)
    before = [_flat(state.lowers[i]) for i in batch.clients] if state.tracing else None
    state.client_opt.step()
    if before is not None:
        moved = [float((_flat(state.lowers[i]) - w).norm()) for i, w in zip(batch.clients, before)]
        state.trace("client_update", clients=batch.clients, moved=moved)
    return mean_local


def _flat(module: nn.Module) -> torch.Tensor:
    """A module's parameters as one detached vector (a copy)."""
    return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()


def local_losses(state: TrainState, batch: StepBatch, smashed: list[torch.Tensor]) -> torch.Tensor | None:
    """Sum over the step's clients of every technique's local loss (None when there is none)."""
    total = None
    if batch.stacked is not None:  # batched execution: each technique takes all clients at once
        y = batch.labels.view(batch.num_clients, batch.batch_size)
        for tech in state.techniques:
            term = tech.client_losses(state, batch.clients, batch.stacked, batch.inputs, y)
            if term is not None:
                total = term if total is None else total + term
        return total
    for j, i in enumerate(batch.clients):
        y = batch.labels[j * batch.batch_size:(j + 1) * batch.batch_size]
        for tech in state.techniques:
            term = tech.client_loss(state, i, smashed[j], batch.inputs[j], y)
            if term is not None:
                total = term if total is None else total + term
    return total
