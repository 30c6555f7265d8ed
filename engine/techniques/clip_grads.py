"""Cut-layer gradient clipping: the server clips each client's cut-layer gradient to an L2 norm of
at most ``max_norm`` (over the client's batch) before sending it down.

A plugin technique, the worked example of docs/extending.md: this one file is all it takes. Its
settings are the run config's ``plugins.clip`` section, its code ``clip`` joins ``--techniques``
(``--techniques 1,2,clip --set plugins.clip.max_norm=0.5``), and the New run form and the Round
walkthrough show it. It changes no byte on the wire and draws no random number.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from engine.techniques.base import StepBatch, Technique, register


class ClipSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="clip each client's cut-layer gradient before the server sends it")
    max_norm: float = Field(1.0, gt=0, le=1_000_000, description=(
        "the largest L2 norm of one client's cut-layer gradient over its batch; larger ones are scaled down to it"))


@register
class ClipCutGrads(Technique):
    name = "clip"
    code = "clip"
    label = "cut-layer gradient clipping"
    order = 65  # after SplitAvg (60): what is clipped is what is sent
    Settings = ClipSettings

    def describe(self) -> str:
        return (f"the server scales each client's cut-layer gradient down to an L2 norm of at most "
                f"{self.settings.max_norm:g} before sending it")

    def cut_grads(self, state, batch: StepBatch, grads: torch.Tensor, messages: int) -> tuple[torch.Tensor, int]:
        norms = grads.flatten(1).norm(dim=1)  # one per client of the step: grads is [k, b, ...]
        scale = (self.settings.max_norm / norms.clamp_min(1e-12)).clamp(max=1.0)
        return grads * scale.view(-1, *[1] * (grads.dim() - 1)), messages
