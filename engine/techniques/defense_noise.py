"""Defense: Gaussian noise on the smashed data before upload, ``s' = s + sigma * N(0, I)``.

Each client draws its noise from a stream of its own (the run's seed and its id), so a client
draws the same noise in one process as over a transport, and a checkpoint keeps every stream:
a resumed run draws what an uninterrupted one would. The noise is additive: the client's
backward gets the cut-layer gradient unchanged. What sigma means depends on the scale of the
smashed data, so each evaluation records it as a signal-to-noise ratio (``defense_snr_db``).
"""

from __future__ import annotations

import math

import torch

from engine.techniques.base import Technique, register

SEED_NOISE = 6  # one more stream after engine.state's SEED_* offsets (and engine.privacy's 5)
SNR_IMAGES = 256  # a client's own first training images, for the recorded SNR


def snr_db(smashed: torch.Tensor, sigma: float) -> float:
    """What noise of std ``sigma`` means on ``smashed``: 10 log10(mean s^2 / sigma^2), in dB."""
    power = float(smashed.detach().double().pow(2).mean())
    return 10 * math.log10(power / sigma ** 2) if power > 0 else -math.inf


def stream_seed(seed: int, client: int) -> int:
    """The seed of ``client``'s noise stream in a run seeded ``seed``."""
    return ((seed * 7919 + SEED_NOISE) * 1_000_003 + client) % 2 ** 63


@register
class NoiseDefense(Technique):
    name = "defense_noise"
    order = 10  # on the client, right after the forward
    defense = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.sigma = cfg.defense.noise
        self.reseed(cfg.seed)

    @classmethod
    def enabled(cls, cfg) -> bool:
        return cfg.defense.noise > 0

    def describe(self) -> str:
        return f"noise: Gaussian, sigma={self.sigma:g}, added to the smashed data before upload"

    def reseed(self, seed: int) -> None:
        device = torch.device(self.cfg.device)
        self.generators = [torch.Generator(device=device).manual_seed(stream_seed(seed, i))
                           for i in range(self.cfg.num_clients)]

    def upload(self, state, clients: list[int], smashed: torch.Tensor) -> torch.Tensor:
        noise = torch.stack([torch.randn(smashed.shape[1:], generator=self.generators[i], dtype=smashed.dtype,
                                         device=smashed.device) for i in clients])
        if state is not None and state.tracing:
            state.tracer.note("snr_db", snr_db(smashed, self.sigma))
        return smashed + self.sigma * noise

    def metrics(self, state) -> dict[str, float]:
        """``defense_snr_db``: the SNR on the smashed data of the evaluated clients' own first training
        images through their current lower models (no random draw: training is unchanged)."""
        smashed = []
        for i in range(min(state.num_clients, state.cfg.eval_max_clients)):
            lower = state.lowers[i]
            idx = torch.as_tensor(state.clients[i].indices[:SNR_IMAGES], device=state.device)
            was_training = lower.training
            lower.eval()
            with torch.no_grad():
                smashed.append(lower(state.train_x[idx]).flatten())
            lower.train(was_training)
            if state.sequential:  # one lower model for all
                break
        return {"defense_snr_db": snr_db(torch.cat(smashed), self.sigma)}

    def client_state(self, client: int) -> torch.Tensor:
        return self.generators[client].get_state()

    def load_client_state(self, client: int, value: torch.Tensor) -> None:
        self.generators[client].set_state(value)
