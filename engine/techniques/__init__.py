"""The techniques, registered by name. Imported explicitly, in the order a round applies them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.techniques import averaging, local_loss, mixup, split_avg, split_lr  # noqa: F401  (registers)
from engine.techniques.base import REGISTRY, StepBatch, Technique, register

if TYPE_CHECKING:
    from engine.config import RunConfig

__all__ = ["REGISTRY", "StepBatch", "Technique", "register", "active_techniques"]

ORDER = ("mixup", "split_lr", "split_avg", "local_loss", "averaging")


def active_techniques(cfg: "RunConfig") -> list[Technique]:
    """The techniques a config switches on, built from the registry."""
    enabled = {
        "mixup": cfg.mixup.enabled,
        "split_lr": cfg.split_lr.enabled,
        "split_avg": cfg.split_avg.enabled and cfg.global_backward,
        "local_loss": cfg.local_loss.enabled,
        "averaging": cfg.averaging.enabled,
    }
    return [REGISTRY[name](cfg) for name in ORDER if enabled[name]]
