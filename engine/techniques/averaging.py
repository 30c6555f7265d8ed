"""⑤ Federated averaging of the lower models every T_c rounds: w_c = sum_i delta_i w_c,i.

With ④' the auxiliary networks are averaged too, BatchNorm statistics included.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engine.techniques.base import Technique, register


@torch.no_grad()
def average_into(modules: list[nn.Module], weights: torch.Tensor, present: list[int] | None = None) -> None:
    """Replace every module's floating-point state by the weighted average over ``modules`` (or over
    the ``present`` ones only, their weights renormalised: the others take the average as it is)."""
    states = [m.state_dict() for m in modules]
    if present is None:
        average = average_states(states, weights)
    else:
        average = average_states([states[i] for i in present], weights[present] / weights[present].sum())
    for s in states:
        for key, value in average.items():
            s[key].copy_(value)


@torch.no_grad()
def average_states(states: list[dict[str, torch.Tensor]], weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """sum_i w_i state_i for every floating-point entry (e.g. BatchNorm's num_batches_tracked is left
    out: each module keeps its own). The networked server averages the clients' uploads with it."""
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            stacked = torch.stack([s[key] for s in states])
            out[key] = torch.tensordot(weights.to(stacked.dtype), stacked, dims=1)
    return out


@register
class Averaging(Technique):
    name = "averaging"
    order = 90  # ⑤ at the end of the round

    @classmethod
    def enabled(cls, cfg) -> bool:
        return cfg.averaging.enabled

    def describe(self) -> str:
        aux = " (+ auxiliary networks)" if self.cfg.local_loss.enabled and self.cfg.local_loss.average_aux else ""
        return f"⑤ average the lower models{aux} every T_c={self.cfg.averaging.interval} round(s)"

    def end_round(self, state, round_: int) -> None:
        if round_ % self.cfg.averaging.interval != 0 or state.sequential:
            return
        present = state.present
        if not present:  # nobody took part: nothing to average
            return
        before = _distances(state.lowers, state.weights) if state.tracing else None
        up, down = state.ledger.bytes_up, state.ledger.bytes_down
        groups = [state.lowers] + ([state.auxes] if state.averages_aux else [])
        for modules in groups:
            average_into(modules, state.weights, present if len(present) < state.num_clients else None)
        state.ledger.model_exchange(len(present), [modules[0] for modules in groups])
        # an absent client's slot holds the global model now, standing for the download it makes when it
        # is back (engine.state.TrainState.begin_round counts that), so it never trains on a stale model
        state.behind |= set(range(state.num_clients)) - set(present)
        if before is not None:
            after = _distances(state.lowers, state.weights)
            state.trace("averaging", distances_before=before, spread_before=float(np.mean(before)),
                        spread_after=float(np.mean(after)),
                        bytes=state.ledger.bytes_up - up + state.ledger.bytes_down - down)


@torch.no_grad()
def _distances(modules: list[nn.Module], weights: torch.Tensor) -> list[float]:
    """Each module's L2 distance (all parameters) to the weighted average of them."""
    flat = torch.stack([torch.cat([p.flatten() for p in m.parameters()]) for m in modules])
    avg = torch.tensordot(weights.to(flat.dtype), flat, dims=1)
    return (flat - avg).norm(dim=1).tolist()
