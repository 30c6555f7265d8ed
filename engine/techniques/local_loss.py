"""④ A local loss on each client's smashed data (InfoPro reconstruction, norm, or a classifier).

Client i updates its auxiliary network with grad L^_i and its lower model with grad (L^_i + L_i),
the second term only where ② sends a gradient. ④' also averages the auxiliary networks in ⑤.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from engine.batched import per_client, stacked_call
from engine.techniques.base import Technique, register


@register
class LocalLoss(Technique):
    name = "local_loss"
    order = 70  # ④ the clients' losses

    @classmethod
    def enabled(cls, cfg) -> bool:
        return cfg.local_loss.enabled

    def describe(self) -> str:
        loc = self.cfg.local_loss
        prime = "④'" if loc.average_aux and self.cfg.averaging.enabled else "④"
        return f"{prime} local {loc.kind} loss (weight {loc.weight:g})"

    def client_loss(self, state, client: int, smashed: torch.Tensor, x: torch.Tensor,
                    y: torch.Tensor) -> torch.Tensor | None:
        aux = state.auxes[client]
        if state.tracing and hasattr(aux, "decode"):  # InfoPro: the same loss, keeping the reconstruction to show
            recon = aux(smashed)
            loss = self.cfg.local_loss.weight * F.mse_loss(recon, x)
            state.tracer.note("local", (loss.item(), recon[:4]))
            return loss
        loss = self.cfg.local_loss.weight * aux.loss(smashed, x, y)
        if state.tracing:
            state.tracer.note("local", (loss.item(), None))
        return loss

    def client_losses(self, state, clients: list[int], smashed: torch.Tensor, x: torch.Tensor,
                      y: torch.Tensor) -> torch.Tensor:
        """Every client's local loss at once: the auxiliary networks as one vmapped call."""
        auxes = [state.auxes[i] for i in clients]
        if any(True for _ in auxes[0].parameters()):  # InfoPro decoder, classifier head
            losses = per_client(type(auxes[0]).output_loss, stacked_call(auxes, smashed), x, y)
        else:  # the norm regulariser has no parameters: the same function for every client
            losses = per_client(auxes[0].loss, smashed, x, y)
        return self.cfg.local_loss.weight * losses.sum()
