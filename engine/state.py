"""Everything a run holds between rounds, and how it is built from a config and saved exactly."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from engine.config import RunConfig
from engine.data import Dataset, load_dataset, partition, resolve_samples_per_client
from engine.ledger import Ledger
from engine.models import make_aux, smashed_shape, split_lenet5
from engine.techniques import Technique, active_techniques

# Fixed offsets give each source of randomness its own stream from the one seed.
SEED_INIT, SEED_SPLIT, SEED_BATCHES, SEED_TECHNIQUES, SEED_EVAL = 0, 1, 2, 3, 4
SEED_PARTICIPATION = 7  # after engine.privacy's 5 and the noise defense's 6
SEED_SPEEDS = 8  # the clients' compute speeds (stragglers), drawn once per run


@dataclass
class ClientData:
    """A client's training indices, its current shuffled order and how far it has walked."""

    indices: np.ndarray
    order: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    cursor: int = 0

    def next_batch(self, b: int, rng: np.random.Generator) -> np.ndarray:
        """The next b indices, reshuffling whenever the client's data run out."""
        out = []
        while b > 0:
            if self.cursor >= len(self.order):
                self.order, self.cursor = rng.permutation(self.indices), 0
            take = self.order[self.cursor:self.cursor + b]
            out.append(take)
            self.cursor += len(take)
            b -= len(take)
        return np.concatenate(out)


def make_optimizer(params: list[nn.Parameter], cfg: RunConfig, lr: float) -> torch.optim.Optimizer:
    """The configured optimiser over ``params``. Elementwise, so one optimiser over many clients'
    parameters updates each client exactly as its own optimiser would."""
    o = cfg.optim
    if o.name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=o.weight_decay)
    momentum = o.momentum if o.name == "momentum" else 0.0
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=o.weight_decay)


def unique_modules(modules: list[nn.Module]) -> list[nn.Module]:
    seen, out = set(), []
    for m in modules:
        if id(m) not in seen:
            seen.add(id(m))
            out.append(m)
    return out


def client_partitions(cfg: RunConfig, labels: np.ndarray) -> tuple[list[np.ndarray], torch.Tensor]:
    """Every client's training indices and its weight delta_i (its share of all samples), from the seed."""
    m = resolve_samples_per_client(cfg.data.dataset, cfg.data.partition, cfg.data.samples_per_client, len(labels))
    parts = partition(labels, cfg.num_clients, cfg.data.partition, np.random.default_rng([cfg.seed, SEED_SPLIT]),
                      samples_per_client=m, beta=cfg.data.dirichlet_beta)
    sizes = torch.tensor([len(p) for p in parts], dtype=torch.float32)
    return [np.asarray(p, dtype=np.int64) for p in parts], sizes / sizes.sum()


def initial_models(cfg: RunConfig, in_shape: tuple[int, ...],
                   num_classes: int) -> tuple[nn.Module, nn.Module, tuple[int, ...], nn.Module | None]:
    """(lower, upper, smashed shape, auxiliary network or None) at initialisation, from the seed alone:
    the in-process engine and every process of a networked run build the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed * 7919 + SEED_INIT)
        lower, upper = split_lenet5(in_shape, num_classes, cfg.cut_layer)
        shape = smashed_shape(lower, in_shape)
        aux = None
        if cfg.local_loss.enabled:
            aux = make_aux(cfg.local_loss.kind, shape, in_shape, num_classes, cfg.local_loss.norm_theta)
    return lower, upper, shape, aux


def client_speeds(cfg: RunConfig) -> np.ndarray:
    """Each client's compute time per step in T_comp: exp(sigma z), z ~ N(0, 1), drawn once from a stream
    of the run's seed (median 1); all ones without stragglers (``participation.speed_spread`` = 0)."""
    sigma = cfg.participation.speed_spread
    if sigma == 0:
        return np.ones(cfg.num_clients)
    return np.exp(sigma * np.random.default_rng([cfg.seed, SEED_SPEEDS]).standard_normal(cfg.num_clients))


def draw_participation(cfg: RunConfig, rng: np.random.Generator,
                       speeds: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    """One round's (selected, present, late) clients (``cfg.participation``): a seeded random
    max(1, floor(C n)) clients, each of which then drops out with probability p; a delivering client
    slower than the deadline is late and misses the round too. The draws depend on the seed alone, so a
    client process replays them (:mod:`engine.network.client`) without being told who took part."""
    part, n = cfg.participation, cfg.num_clients
    selected = sorted(rng.choice(n, part.clients(n), replace=False).tolist()) if part.fraction < 1 else list(range(n))
    if part.dropout > 0:
        kept = rng.random(len(selected)) >= part.dropout
        present = [i for i, keep in zip(selected, kept) if keep]
    else:
        present = list(selected)
    late = [i for i in present if part.deadline and speeds[i] > part.deadline]
    return selected, [i for i in present if i not in late], late


class TrainState:
    """Models, optimisers, client data, random generators and counters of one run."""

    def __init__(self, cfg: RunConfig, dataset: Dataset | None = None):
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.dataset = dataset or load_dataset(cfg.data.dataset, cfg.data.data_dir, cfg.data.download, seed=cfg.seed)
        self.num_classes = self.dataset.num_classes
        self.in_shape = self.dataset.input_shape
        self.round = 0
        self.rng = np.random.default_rng([cfg.seed, SEED_TECHNIQUES])
        self.data_rng = np.random.default_rng([cfg.seed, SEED_BATCHES])
        self.torch_gen = torch.Generator(device=self.device).manual_seed(cfg.seed * 7919 + SEED_TECHNIQUES)
        self.ledger = Ledger()
        self.tracer = None  # an engine.trace.RoundTrace while a round is traced for teaching
        # Who takes part (cfg.participation): drawn from a stream of its own, only when the section is
        # active, so that a run with every client in every round draws exactly what it always drew.
        self.participation_rng = np.random.default_rng([cfg.seed, SEED_PARTICIPATION])
        self.present: list[int] = list(range(cfg.num_clients))   # this round's clients
        self.selected: list[int] = list(range(cfg.num_clients))  # chosen this round, before dropouts
        self.behind: set[int] = set()  # absent at the last averaging: they take the global model on return
        self.late: list[int] = []  # drawn and delivering, but slower than the deadline: missed this round
        self.speeds = client_speeds(cfg)  # each client's compute time per step, in T_comp (median 1)
        self.compute_units = 0.0  # client compute time of every round so far, in T_comp (the latency model's)
        self._build_clients()
        self._build_models()
        self.techniques: list[Technique] = active_techniques(cfg)
        # batched execution (engine.batched): every client's models as one vmapped call
        self.batched = cfg.execution == "batched" or (cfg.execution == "auto" and self.device.type == "cuda")
        self.train_x = self.dataset.train_x.to(self.device)
        self.train_y = self.dataset.train_y.to(self.device)

    # ---- set-up ------------------------------------------------------------------------
    def _build_clients(self) -> None:
        parts, self.weights = client_partitions(self.cfg, self.dataset.train_y.numpy())
        self.clients = [ClientData(p) for p in parts]
        self.weights = self.weights.to(self.device)

    def _build_models(self) -> None:
        cfg, n = self.cfg, self.cfg.num_clients
        lower, self.upper, self.smashed_shape, aux = initial_models(cfg, self.in_shape, self.num_classes)
        self.sequential = cfg.schedule == "sequential"  # only Vanilla SL: SplitFed has a lower model per client
        # Every client starts from the same lower model; Vanilla SL passes one model around.
        self.lowers = [lower] * n if self.sequential else [copy.deepcopy(lower) for _ in range(n)]
        self.auxes = [copy.deepcopy(aux) for _ in range(n)] if aux is not None else None
        for m in [self.upper, *self.lowers, *(self.auxes or [])]:
            m.to(self.device)
        self.server_opt = make_optimizer(list(self.upper.parameters()), cfg, cfg.optim.lr)
        client_params = [p for m in self.client_modules() for p in m.parameters()]
        self.client_opt = make_optimizer(client_params, cfg, cfg.optim.lr) if client_params else None

    # ---- helpers -----------------------------------------------------------------------
    @property
    def tracing(self) -> bool:
        return self.tracer is not None

    def trace(self, phase: str, **values) -> None:
        """Record a step of the round (:mod:`engine.trace`); nothing happens when no trace is attached."""
        if self.tracer is not None:
            self.tracer.record(phase, **values)

    def runs_batched(self, k: int) -> bool:
        """Whether a step serving ``k`` clients runs their models batched (a traced step keeps the loop:
        the walkthrough shows each client's own reconstruction)."""
        return self.batched and k > 1 and not self.sequential and not self.tracing

    @property
    def num_clients(self) -> int:
        return self.cfg.num_clients

    def client_modules(self) -> list[nn.Module]:
        """Every distinct module on the client side (lower models, then auxiliary networks)."""
        return unique_modules(self.lowers) + unique_modules(self.auxes or [])

    def begin_round(self) -> None:
        """Draw who takes part this round (``cfg.participation``): a seeded random max(1, floor(C n))
        clients, then each drops out with probability p. A client back after missing an averaging first
        takes the global lower model (:class:`engine.techniques.averaging.Averaging` left it in its slot);
        the ledger counts that download. With C = 1 and p = 0 nothing is drawn and every client is here."""
        if not self.cfg.participation.active:
            return
        self.selected, self.present, self.late = draw_participation(self.cfg, self.participation_rng, self.speeds)
        self.compute_units += self.round_compute()
        back = sorted(self.behind & set(self.present))
        if back:
            models = [self.lowers[back[0]]] + ([self.auxes[back[0]]] if self.averages_aux else [])
            self.ledger.model_download(len(back), models)
            self.behind -= set(back)

    def absence_reasons(self) -> dict[int, str]:
        """Why each client missing from this round is missing (empty when every client takes part)."""
        part, n = self.cfg.participation, self.num_clients
        if not part.active:
            return {}
        out = {}
        for i in range(n):
            if i not in self.selected:
                out[i] = f"not drawn this round (C = {part.fraction:g}: {part.clients(n)} of {n} clients)"
            elif i in self.late:
                out[i] = (f"missed the deadline: its step takes {self.speeds[i]:.2f}·T_comp, the round waits "
                          f"{part.deadline:g}·T_comp")
            elif i not in self.present:
                out[i] = f"dropped out: failed to deliver its smashed data (p = {part.dropout:g})"
        return out

    def round_compute(self) -> float:
        """This round's client compute time in T_comp: clients in parallel take as long as the slowest
        present one, or the whole deadline when one was cut off by it (the server waited for it); clients in
        turn (Vanilla SL, SplitFed) add up, a cut-off client's turn costing the deadline."""
        part = self.cfg.participation
        steps = self.cfg.local_steps if self.cfg.schedule in ("splitfed_v1", "splitfed_v2") else 1
        times = [float(self.speeds[i]) * steps for i in self.present]
        if self.sequential or self.cfg.schedule.startswith("splitfed"):
            return sum(times) + part.deadline * len(self.late)
        return part.deadline if self.late else max(times, default=0.0)

    @property
    def averages_aux(self) -> bool:
        return self.cfg.local_loss.enabled and self.cfg.local_loss.average_aux and self.auxes is not None

    def next_batches(self, clients: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs [k, b, C, H, W] and labels [k, b] of the clients' next batches."""
        b = self.cfg.batch_size
        idx = np.stack([self.clients[i].next_batch(b, self.data_rng) for i in clients])
        idx = torch.as_tensor(idx, device=self.device)
        return self.train_x[idx], self.train_y[idx]

    # ---- exact save / restore ----------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue bit for bit: models, optimisers, data cursors, RNGs, bytes."""
        return {
            "round": self.round,
            "upper": self.upper.state_dict(),
            "lowers": [m.state_dict() for m in unique_modules(self.lowers)],
            "auxes": [m.state_dict() for m in self.auxes] if self.auxes else None,
            "server_opt": self.server_opt.state_dict(),
            "client_opt": self.client_opt.state_dict() if self.client_opt else None,
            "clients": [(c.order.copy(), c.cursor) for c in self.clients],
            "rng": self.rng.bit_generator.state,
            "data_rng": self.data_rng.bit_generator.state,
            "torch_gen": self.torch_gen.get_state(),
            "ledger": vars(self.ledger).copy(),
            "techniques": self.technique_states(),
            "participation": {"rng": self.participation_rng.bit_generator.state, "present": list(self.present),
                              "selected": list(self.selected), "behind": sorted(self.behind),
                              "late": list(self.late), "compute_units": self.compute_units},
        }

    def technique_states(self) -> dict[str, list]:
        """Each technique's per-client state (the noise defense's random streams), by name."""
        return {t.name: [t.client_state(i) for i in range(self.num_clients)]
                for t in self.techniques if t.client_state(0) is not None}

    def load_state_dict(self, sd: dict) -> None:
        self.round = sd["round"]
        self.upper.load_state_dict(sd["upper"])
        for m, s in zip(unique_modules(self.lowers), sd["lowers"], strict=True):
            m.load_state_dict(s)
        for m, s in zip(self.auxes or [], sd["auxes"] or [], strict=True):
            m.load_state_dict(s)
        self.server_opt.load_state_dict(sd["server_opt"])
        if self.client_opt:
            self.client_opt.load_state_dict(sd["client_opt"])
        for c, (order, cursor) in zip(self.clients, sd["clients"], strict=True):
            c.order, c.cursor = np.asarray(order, dtype=np.int64), int(cursor)
        self.rng.bit_generator.state = sd["rng"]
        self.data_rng.bit_generator.state = sd["data_rng"]
        self.torch_gen.set_state(sd["torch_gen"])
        self.ledger = Ledger(**sd["ledger"])
        part = sd.get("participation")  # absent from checkpoints stored before participation existed
        if part is not None:
            self.participation_rng.bit_generator.state = part["rng"]
            self.present, self.selected, self.behind = list(part["present"]), list(part["selected"]), set(part["behind"])
            self.late, self.compute_units = list(part.get("late", [])), float(part.get("compute_units", 0.0))
        techniques = {t.name: t for t in self.techniques}
        for name, states in sd.get("techniques", {}).items():
            for i, value in enumerate(states):
                techniques[name].load_client_state(i, value)
