"""Defense: NoPeek (Vepakomma, Gupta, Gupta and Raskar 2020), ``alpha * dCor(x, s)`` added to each client's loss.

dCor is the sample distance correlation of Szekely, Rizzo and Bakirov (2007) between the client's
batch of inputs x and its smashed data s (rows are samples), from double-centred distance
matrices, as NoPeek computes it: dCor^2 = dCov^2(x, s) / sqrt(dVar^2(x) dVar^2(s)), and the penalty
is its square root. Lowering it makes the smashed data less dependent on the inputs. Computed on
the client (it needs the inputs), differentiable, for every client at once under batched execution.
The penalty is part of the clients' local loss (``train_loss_local``).
"""

from __future__ import annotations

import torch

from engine.batched import per_client
from engine.techniques.base import Technique, register

EPS = 1e-12


def centred_distances(a: torch.Tensor) -> torch.Tensor:
    """The double-centred Euclidean distance matrix of the rows of ``a`` [n, d] (float64)."""
    a = a.double()
    sq = (a * a).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2 * a @ a.T
    off = 1 - torch.eye(len(a), dtype=a.dtype, device=a.device)
    d = d2.clamp_min(EPS).sqrt() * off  # the diagonal is 0; its clamp keeps the gradient finite
    return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()


def distance_correlation(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The sample distance correlation of paired rows of ``x`` and ``s`` (any shape after the first
    dimension), in [0, 1]; differentiable in both (float64 scalar)."""
    a, b = centred_distances(x.flatten(1)), centred_distances(s.flatten(1))
    dcov2 = (a * b).mean()
    dvar2 = ((a * a).mean() * (b * b).mean()).sqrt()
    return (dcov2 / dvar2.clamp_min(EPS)).clamp_min(EPS).sqrt()


@register
class NoPeekDefense(Technique):
    name = "defense_nopeek"
    order = 75  # the clients' losses, after ④
    defense = True

    @classmethod
    def enabled(cls, cfg) -> bool:
        return cfg.defense.nopeek > 0

    def describe(self) -> str:
        return f"NoPeek: alpha={self.cfg.defense.nopeek:g} x dCor(inputs, smashed data) added to each client's loss"

    def client_loss(self, state, client: int, smashed: torch.Tensor, x: torch.Tensor,
                    y: torch.Tensor) -> torch.Tensor:
        dcor = distance_correlation(x, smashed)
        if state is not None and state.tracing:
            state.tracer.note("nopeek", dcor.item())
        return (self.cfg.defense.nopeek * dcor).to(smashed.dtype)

    def client_losses(self, state, clients: list[int], smashed: torch.Tensor, x: torch.Tensor,
                      y: torch.Tensor) -> torch.Tensor:
        """Every client's penalty at once (batched execution)."""
        return (self.cfg.defense.nopeek * per_client(distance_correlation, x, smashed)).to(smashed.dtype).sum()
