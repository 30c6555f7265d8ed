"""Batched client execution: many clients' models of one architecture run as one computation.

A parallel step applies k lower models (and k auxiliary networks) of the same shape to k batches.
The loop path calls each module in turn: on a GPU that is k times the kernel launches of one
model. Here their parameters are stacked along a new first dimension and ``torch.func.vmap``
runs ``functional_call`` over them, so each layer is one batched kernel for all k clients.

The stacked parameters are built with ``torch.stack`` from the clients' own parameters, so
autograd delivers every client's gradient to its own module and the optimiser, the averaging,
the evaluation and the checkpoints see the usual per-client modules: the two paths hold the
same state and a checkpoint written by one resumes in the other. BatchNorm statistics (the
InfoPro decoder has one) are updated per client inside the vmapped call and written back.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap


def stacked_call(modules: list[nn.Module], inputs: torch.Tensor) -> torch.Tensor:
    """``torch.stack([m(x) for m, x in zip(modules, inputs)])`` as one vmapped call.

    ``modules`` share one architecture (the first is the template); ``inputs`` is [k, b, ...].
    Gradients flow into each module's parameters; running statistics are copied back into each
    module's buffers, as its own forward would have left them.
    """
    template = modules[0]
    names = [name for name, _ in template.named_parameters()]
    own = [dict(m.named_parameters()) for m in modules]
    params = {name: torch.stack([p[name] for p in own]) for name in names}
    buffer_names = [name for name, _ in template.named_buffers()]
    own_buffers = [dict(m.named_buffers()) for m in modules]
    buffers = {name: torch.stack([b[name] for b in own_buffers]) for name in buffer_names}

    def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(template, (p, b), (x,))

    out = vmap(one)(params, buffers, inputs)
    if buffer_names and template.training:
        with torch.no_grad():
            for name in buffer_names:
                for i, b in enumerate(own_buffers):
                    b[name].copy_(buffers[name][i])
    return out


def per_client(loss, *tensors: torch.Tensor) -> torch.Tensor:
    """``loss`` (a function of one client's tensors returning a scalar) for each client at once: [k]."""
    return vmap(loss)(*tensors)
