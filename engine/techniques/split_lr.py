"""SGLR's SplitLr: the server learns faster than the clients, eta_s = eta * n^alpha."""

from __future__ import annotations

from engine.techniques.base import Technique, register


@register
class SplitLr(Technique):
    name = "split_lr"
    order = 40  # the server's step

    @classmethod
    def enabled(cls, cfg) -> bool:
        return cfg.split_lr.enabled

    def describe(self) -> str:
        return f"SplitLr: eta_s = eta * n^{self.cfg.split_lr.alpha:g} = {self.cfg.server_lr:.4g}"

    def server_lr(self, state, lr: float) -> float:
        return lr * self.cfg.num_clients ** self.cfg.split_lr.alpha
