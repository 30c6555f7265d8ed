"""Test accuracy of the clients' deployed models [w_c,i ; w_s], kept cheap.

Clients whose lower models hold identical weights (after averaging, or Vanilla SL's single
model) are evaluated once. During training a fixed subset of the test set and at most
``eval_max_clients`` distinct clients are used; the final evaluation uses everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from engine.state import SEED_EVAL, TrainState

EVAL_BATCH = 4096


@dataclass
class EvalResult:
    """Accuracy and loss per evaluated client, and their summary."""

    client_acc: dict[int, float]
    client_loss: dict[int, float]

    @property
    def acc(self) -> float:
        return float(np.mean(list(self.client_acc.values())))

    @property
    def loss(self) -> float:
        return float(np.mean(list(self.client_loss.values())))

    def metrics(self) -> dict[str, float]:
        accs = list(self.client_acc.values())
        return {"test_acc": self.acc, "test_loss": self.loss, "test_acc_min": float(min(accs)),
                "test_acc_max": float(max(accs)), "clients_evaluated": len(accs)}


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return a is b or all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def distinct_models(lowers: list[nn.Module], clients: list[int]) -> list[list[int]]:
    """Group ``clients`` by identical lower-model weights: each group is evaluated once."""
    groups: list[list[int]] = []
    for i in clients:
        for g in groups:
            if same_weights(lowers[g[0]], lowers[i]):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


@torch.no_grad()
def evaluate_model(lower: nn.Module, upper: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of [lower ; upper] on (x, y)."""
    correct, loss = 0, 0.0
    for lo in range(0, len(y), EVAL_BATCH):
        logits = upper(lower(x[lo:lo + EVAL_BATCH]))
        target = y[lo:lo + EVAL_BATCH]
        correct += (logits.argmax(1) == target).sum().item()
        loss += F.cross_entropy(logits, target, reduction="sum").item()
    return correct / len(y), loss / len(y)


def authors_test_shards(state: TrainState) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The test set cut into n disjoint, equal, seeded shards, one per client: where the SplitFed
    authors' code tests each client (``dataset_iid`` on the test set)."""
    data = state.dataset
    rng = np.random.default_rng([state.cfg.seed, SEED_EVAL, 1])
    shards = np.array_split(rng.permutation(len(data.test_y)), state.num_clients)
    return [(data.test_x[s].to(state.device), data.test_y[s].to(state.device)) for s in map(torch.as_tensor, shards)]


def evaluate(state: TrainState, clients: list[int], x: torch.Tensor, y: torch.Tensor) -> EvalResult:
    """Evaluate the given clients' models, each distinct lower model once."""
    acc, loss = {}, {}
    for group in distinct_models(state.lowers, clients):
        group_acc, group_loss = evaluate_model(state.lowers[group[0]], state.upper, x, y)
        for i in group:
            acc[i], loss[i] = group_acc, group_loss
    return EvalResult(acc, loss)


class Evaluator:
    """Fixed test subset and client sample for live curves; everything for the final figure."""

    def __init__(self, state: TrainState):
        cfg, data = state.cfg, state.dataset
        rng = np.random.default_rng([cfg.seed, SEED_EVAL])
        n_test = len(data.test_y)
        subset = torch.as_tensor(np.sort(rng.permutation(n_test)[:min(cfg.data.eval_subset, n_test)]))
        self.x_live = data.test_x[subset].to(state.device)
        self.y_live = data.test_y[subset].to(state.device)
        self.x_full = data.test_x.to(state.device)
        self.y_full = data.test_y.to(state.device)
        n = cfg.num_clients
        k = min(n, cfg.eval_max_clients)
        self.live_clients = sorted(rng.choice(n, k, replace=False).tolist()) if k < n else list(range(n))

    def live(self, state: TrainState) -> EvalResult:
        return evaluate(state, self.live_clients, self.x_live, self.y_live)

    def final(self, state: TrainState) -> EvalResult:
        return evaluate(state, list(range(state.num_clients)), self.x_full, self.y_full)


@torch.no_grad()
def reconstruction_snapshot(state: TrainState, clients: list[int], num_images: int = 4,
                            num_channels: int = 4) -> dict:
    """For a fixed handful of test images: the inputs, a few smashed-data channels per client,
    and each client's InfoPro reconstruction (None without an InfoPro decoder). Numpy arrays."""
    x = state.dataset.test_x[:num_images].to(state.device)
    out = {"inputs": x.cpu().numpy(), "labels": state.dataset.test_y[:num_images].numpy(), "clients": {}}
    for i in clients:
        s = state.lowers[i](x)
        entry = {"smashed": s[:, :num_channels].cpu().numpy() if s.dim() == 4 else s.cpu().numpy()}
        aux = state.auxes[i] if state.auxes else None
        if aux is not None and hasattr(aux, "decode"):
            was_training = aux.training
            aux.eval()
            recon = aux(s)
            aux.train(was_training)
            entry["reconstruction"] = recon.cpu().numpy()
            entry["mse"] = float(F.mse_loss(recon, x))
        out["clients"][i] = entry
    return out
