"""Bytes actually exchanged, by kind. The round and the techniques report here; nothing else counts.

Sizes are float32 tensors (4 bytes an element); a label travels as an int64 (8 bytes). Smashed data
quantised for the wire (``defense.bits``) count the bytes of what is sent instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from engine.models import num_state_elements

FLOAT_BYTES = 4
LABEL_BYTES = 8
KINDS = ("smashed_up", "grads_down", "model_up", "model_down")


@dataclass
class Ledger:
    smashed_up: int = 0   # smashed data and labels, client -> server
    grads_down: int = 0   # cut-layer gradients, server -> client (a broadcast counts once)
    model_up: int = 0     # lower (and auxiliary) models, client -> server (averaging, Vanilla SL hand-over)
    model_down: int = 0   # averaged models, server -> client

    def smashed(self, num_samples: int, sample_elements: int, payload_bytes: int | None = None) -> None:
        """Smashed data and labels of ``num_samples`` samples; ``payload_bytes``: what the smashed data
        took on the wire when not float32 (quantised codes and their ranges)."""
        data = num_samples * sample_elements * FLOAT_BYTES if payload_bytes is None else payload_bytes
        self.smashed_up += data + num_samples * LABEL_BYTES

    def grads(self, num_messages: int, batch_size: int, sample_elements: int) -> None:
        self.grads_down += num_messages * batch_size * sample_elements * FLOAT_BYTES

    def model_exchange(self, num_clients: int, models: list[nn.Module]) -> None:
        """Every client uploads ``models`` and downloads the result once."""
        size = sum(num_state_elements(m) for m in models) * FLOAT_BYTES
        self.model_up += num_clients * size
        self.model_down += num_clients * size

    def model_download(self, num_clients: int, models: list[nn.Module]) -> None:
        """``num_clients`` clients download ``models`` (a client back after missing an averaging)."""
        self.model_down += num_clients * sum(num_state_elements(m) for m in models) * FLOAT_BYTES

    @property
    def bytes_up(self) -> int:
        return self.smashed_up + self.model_up

    @property
    def bytes_down(self) -> int:
        return self.grads_down + self.model_down

    def as_metrics(self) -> dict[str, int]:
        """Metric keys as the run history stores them (``bytes_*``)."""
        out = {f"bytes_{k}": v for k, v in asdict(self).items()}
        out["bytes_up"], out["bytes_down"] = self.bytes_up, self.bytes_down
        return out
