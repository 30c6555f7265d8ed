"""A client process of a networked run (``python -m engine client --server HOST:PORT --rank I``).

It holds only its own part: its training samples, its lower model, its auxiliary network and their
optimiser. It waits for the server's commands; a step is the client half of a round of
:mod:`engine.schedules`: draw a batch, forward, upload smashed data and labels, receive the cut-layer
gradient (②), add the local loss (④) and take one optimiser step, with the same functions the
in-process engine uses. Vanilla SL's one lower model (and its optimiser state) travels through the
server from client to client.

Batches come from one random stream shared by all clients in the in-process engine (a client's
reshuffle draws from it when its data run out). Each client replays that stream for every client's
data sizes, without their samples, so it draws exactly the batches the in-process engine would.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
from torch import nn

from engine.config import RunConfig
from engine.data import Dataset, DatasetNotFound, load_dataset
from engine.network.wire import (
    AVERAGE,
    BATON,
    FULL,
    GLOBAL,
    GRADS_FOLLOW,
    PULL,
    PUSH,
    REGROUP,
    REJOIN,
    SERVER,
    STEP,
    STOP,
    Address,
    Link,
    PeerLost,
    data_fingerprint,
    disconnect,
    join,
    limit_threads,
    open_store,
)
from engine.runtime import flush_denormals
from engine.schedules import get as get_schedule
from engine.state import (
    SEED_BATCHES,
    SEED_PARTICIPATION,
    ClientData,
    client_partitions,
    client_speeds,
    draw_participation,
    initial_models,
    make_optimizer,
)
from engine.step import client_update
from engine.techniques import StepBatch, Technique, active_techniques, wire_codec


def param_states(opt: torch.optim.Optimizer, params: list[nn.Parameter]) -> list[dict | None]:
    """The optimiser's per-parameter state (Adam's moments, momentum buffers) for ``params``, copied."""
    return [{k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()} if p in opt.state else None
            for p in params]


def load_param_states(opt: torch.optim.Optimizer, params: list[nn.Parameter], states: list[dict | None]) -> None:
    for p, st in zip(params, states, strict=True):
        if st is None:
            opt.state.pop(p, None)
        else:
            opt.state[p] = {k: v.clone() if torch.is_tensor(v) else v for k, v in st.items()}


def float_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in module.state_dict().items() if v.is_floating_point()}


def flatten_states(modules: list[nn.Module]) -> torch.Tensor:
    """The modules' floating-point state (weights and BatchNorm statistics) as one float32 vector: ⑤'s
    message. Both ends know the layout from the architecture, so nothing else travels."""
    return torch.cat([v.detach().flatten().float() for m in modules for v in float_state(m).values()])


@torch.no_grad()
def copy_into(module: nn.Module, values: dict[str, torch.Tensor]) -> None:
    """Copy ``values`` (some of ``module``'s state entries: an average, the global model) into ``module``."""
    entries = module.state_dict()
    for key, value in values.items():
        entries[key].copy_(value)


def unflatten_states(flat: torch.Tensor, like: list[nn.Module]) -> list[dict[str, torch.Tensor]]:
    """The inverse of :func:`flatten_states`, laid out as ``like``'s states (views into ``flat``)."""
    out, offset = [], 0
    for m in like:
        state = {}
        for key, v in float_state(m).items():
            state[key] = flat[offset:offset + v.numel()].view_as(v)
            offset += v.numel()
        out.append(state)
    return out


def client_upload(state, techniques: list[Technique], client: int,
                  smashed: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One client's upload, as the in-process round makes it (:func:`engine.techniques.upload`): (what the
    server will hold, with the client's gradient path through the defenses; ``smashed`` itself when no
    technique changes it, the tensors that travel: the wire codec's encoding, or that float32 tensor)."""
    codec, own, payload = wire_codec(techniques), smashed[None], None
    out = own
    for tech in techniques:
        if tech is codec:
            payload = codec.encode(out[0])
        out = tech.upload(state, [client], out)
    sent = smashed if out is own else out[0]
    return sent, payload if payload is not None else [sent]


class ClientProcess:
    """Client ``index``'s models, optimiser and samples; answers the server's commands."""

    def __init__(self, cfg: RunConfig, index: int, dataset: Dataset):
        self.cfg, self.index = cfg, index
        self.device = torch.device(cfg.device)
        self.tracer = None
        self.store = None  # the run's rendezvous, where a new process group is formed (a client rejoining)
        parts, _ = client_partitions(cfg, dataset.train_y.numpy())
        own = parts[index]
        # every client's data walk (positions only for the others), advanced by the shared stream
        self.walks = [ClientData(own if c == index else np.arange(len(p))) for c, p in enumerate(parts)]
        self.data_rng = np.random.default_rng([cfg.seed, SEED_BATCHES])
        self.position = (1, 0)  # (round, step) of the next batch draw
        self.samples = np.unique(own)
        self.train_x = dataset.train_x[torch.as_tensor(self.samples)].to(self.device)
        self.train_y = dataset.train_y[torch.as_tensor(self.samples)].to(self.device)
        lower, _, self.smashed_shape, aux = initial_models(cfg, dataset.input_shape, dataset.num_classes)
        self.lower = lower.to(self.device)
        self.aux = aux.to(self.device) if aux is not None else None
        self.lowers = {index: self.lower}
        self.auxes = {index: self.aux}
        self.client_opt = make_optimizer([p for m in self.modules() for p in m.parameters()], cfg, cfg.optim.lr)
        self.techniques = active_techniques(cfg)
        self.schedule = get_schedule(cfg.schedule)  # its steps, as the server runs them
        # who takes part in each round (cfg.participation), replayed from the seed as the server draws it
        self.participation_rng = np.random.default_rng([cfg.seed, SEED_PARTICIPATION])
        self.speeds = client_speeds(cfg)
        self.groups_round = 0  # the round whose groups self.groups are
        self.groups = self.schedule.steps(list(range(cfg.num_clients)))

    # what engine.step.client_update reads of a state
    tracing = False
    num_clients = property(lambda self: self.cfg.num_clients)

    def modules(self) -> list[nn.Module]:
        return [self.lower] + ([self.aux] if self.aux is not None else [])

    # ---- batches -------------------------------------------------------------------------
    def _groups(self, round_: int) -> list[list[int]]:
        """The steps of round ``round_`` (rounds are reached in order): with clients coming and going,
        this round's present clients, drawn from the participation stream as TrainState.begin_round draws."""
        if self.cfg.participation.active and round_ != self.groups_round:
            _, present, _ = draw_participation(self.cfg, self.participation_rng, self.speeds)
            self.groups, self.groups_round = self.schedule.steps(present), round_
        return self.groups

    def _draw(self, round_: int, step: int) -> np.ndarray | None:
        """Advance every walk of the step's clients, in order, as TrainState.next_batches does."""
        mine = None
        for c in self._groups(round_)[step]:
            idx = self.walks[c].next_batch(self.cfg.batch_size, self.data_rng)
            if c == self.index:
                mine = idx
        return mine

    def _advance(self, round_: int, step: int) -> None:
        """The position after step ``step`` of round ``round_``."""
        self.position = (round_, step + 1) if step + 1 < len(self._groups(round_)) else (round_ + 1, 0)

    def catch_up(self, round_: int, step: int) -> None:
        """Replay the shared stream up to (not including) step ``step`` of round ``round_``."""
        while self.position < (round_, step):
            r, s = self.position
            if s < len(self._groups(r)):  # a round nobody took part in has no step
                self._draw(r, s)
            self._advance(r, s)

    def next_batch(self, round_: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.catch_up(round_, step)
        idx = self._draw(round_, step)
        self._advance(round_, step)
        rows = torch.as_tensor(np.searchsorted(self.samples, idx), device=self.device)
        return self.train_x[rows], self.train_y[rows]

    # ---- commands ------------------------------------------------------------------------
    def step(self, link: Link, round_: int, step: int, flags: int) -> None:
        if flags & BATON:  # Vanilla SL: the one lower model and its optimiser state, from the last client
            self.take_baton(link.recv_object(SERVER, "receiving the lower model"))
        start = time.perf_counter()
        x, y = self.next_batch(round_, step)
        smashed = self.lower(x)
        sent, payload = client_upload(self, self.techniques, self.index, smashed)
        forward = time.perf_counter() - start
        for pending in [link.isend(tensor, SERVER, "uploading smashed data") for tensor in (*payload, y)]:
            pending.wait()
        grads = None
        if flags & GRADS_FOLLOW:
            grads = [link.recv(tuple(smashed.shape), smashed.dtype, SERVER, "waiting for the cut-layer gradient")]
        start = time.perf_counter()
        batch = StepBatch([self.index], x[None], sent, y, torch.ones(1), round_)
        local = client_update(self, batch, [smashed], grads, None if sent is smashed else [sent])
        backward = time.perf_counter() - start
        link.send(torch.tensor([local, forward, backward], dtype=torch.float64), SERVER, "reporting the step")
        if flags & BATON:
            link.send_object(self.baton(), SERVER, "handing the lower model on")

    def baton(self) -> dict:
        return {"lower": self.lower.state_dict(), "opt": param_states(self.client_opt, list(self.lower.parameters()))}

    def take_baton(self, baton: dict) -> None:
        self.lower.load_state_dict(baton["lower"])
        load_param_states(self.client_opt, list(self.lower.parameters()), baton["opt"])

    def average(self, link: Link, with_aux: bool) -> None:
        modules = [self.lower] + ([self.aux] if with_aux else [])
        flat = flatten_states(modules)
        link.send(flat, SERVER, "uploading its model for averaging")
        self._load_flat(modules, link.recv(tuple(flat.shape), flat.dtype, SERVER, "waiting for the averaged model"))

    def take_global(self, link: Link, with_aux: bool) -> None:
        """Back after missing an averaging (cfg.participation): take the global model before training."""
        modules = [self.lower] + ([self.aux] if with_aux else [])
        size = flatten_states(modules).numel()
        self._load_flat(modules, link.recv((size,), torch.float32, SERVER, "receiving the global model"))

    @staticmethod
    def _load_flat(modules: list[nn.Module], flat: torch.Tensor) -> None:
        for module, values in zip(modules, unflatten_states(flat, modules)):
            copy_into(module, values)

    def regroup(self, generation: int, link: Link) -> None:
        """Leave the process group and form the next one (``generation``) with the server and the clients it
        names: a lost client is rejoining (gloo cannot add a process to a running group)."""
        members = json.loads(self.store.get(f"generation/{generation}/members").decode())
        disconnect()
        join(self.store, members.index(self.index) + 1, len(members) + 1, link.timeout.total_seconds(), generation)

    def rejoin(self, models: dict) -> None:
        """Back after this client's process was lost: take the model the server sends (the global lower
        model), with a fresh optimiser state. The shared data stream is replayed from the start."""
        for module, values in ((self.lower, models["lower"]), (self.aux, models["aux"])):
            if module is not None and values is not None:
                copy_into(module, values)
        for module in self.modules():
            for p in module.parameters():
                self.client_opt.state.pop(p, None)

    def state(self, round_: int, full: bool) -> dict:
        """What the server's evaluator (and, ``full``, its checkpoint) needs of this client after ``round_``."""
        out = {"lower": self.lower.state_dict(), "aux": self.aux.state_dict() if self.aux is not None else None}
        if full:
            self.catch_up(round_ + 1, 0)
            walk = self.walks[self.index]
            out.update(opt_lower=param_states(self.client_opt, list(self.lower.parameters())),
                       opt_aux=param_states(self.client_opt, list(self.aux.parameters())) if self.aux else None,
                       order=walk.order.copy(), cursor=walk.cursor, data_rng=self.data_rng.bit_generator.state,
                       techniques={t.name: t.client_state(self.index) for t in self.techniques
                                   if t.client_state(self.index) is not None})
        return out

    def load(self, sd: dict) -> None:
        """Take over a state the server restored from a checkpoint."""
        if sd["lower"] is not None:
            self.lower.load_state_dict(sd["lower"])
            load_param_states(self.client_opt, list(self.lower.parameters()), sd["opt_lower"])
        if self.aux is not None:
            self.aux.load_state_dict(sd["aux"])
            load_param_states(self.client_opt, list(self.aux.parameters()), sd["opt_aux"])
        for c, (size, cursor) in enumerate(sd["walks"]):
            walk = self.walks[c]
            walk.order = np.asarray(sd["order"], dtype=np.int64) if c == self.index else np.arange(size)
            walk.cursor = int(cursor)
        self.data_rng.bit_generator.state = sd["data_rng"]
        self.position = (sd["round"] + 1, 0)
        if sd.get("participation_rng") is not None:  # the draws of every round up to sd["round"] are made
            self.participation_rng.bit_generator.state = sd["participation_rng"]
            self.groups_round = sd["round"]
        techniques = {t.name: t for t in self.techniques}
        for name, value in sd.get("techniques", {}).items():
            techniques[name].load_client_state(self.index, value)

    def serve(self, link: Link) -> None:
        """Answer commands until the server says stop."""
        while True:
            op, round_, step, flags = link.recv((4,), torch.int64, SERVER, "waiting for a command").tolist()
            if op == STEP:
                self.step(link, round_, step, flags)
            elif op == AVERAGE:
                self.average(link, bool(flags & FULL))
            elif op == REGROUP:
                self.regroup(round_, link)
            elif op == REJOIN:
                self.rejoin(link.recv_object(SERVER, "receiving the model it rejoins with"))
            elif op == GLOBAL:
                self.take_global(link, bool(flags & FULL))
            elif op == PULL:
                link.send_object(self.state(round_, bool(flags & FULL)), SERVER, "sending its state")
            elif op == PUSH:
                self.load(link.recv_object(SERVER, "receiving a checkpointed state"))
            elif op == STOP:
                return
            else:
                raise PeerLost(f"the server sent an unknown command {op}")


def run_client(server: Address, rank: int, data_dir: str | None = None, timeout_s: float = 600.0,
               stream=sys.stderr) -> int:
    """Join the server at ``server`` as client ``rank - 1``, train until told to stop. 0 when the run
    ended normally, 1 (with one line on ``stream``) when the server went away or refused us."""
    limit_threads()
    flush_denormals()  # as the in-process trainer does: the same arithmetic on both sides
    try:
        store = open_store(server, rank, timeout_s)
        cfg = RunConfig.model_validate_json(store.get("config").decode())
        n = cfg.num_clients
        if not 1 <= rank <= n:
            raise PeerLost(f"rank {rank} is not a client of this run: the server at {server} runs {n} clients "
                           f"(ranks 1 to {n})")
        rejoining = store.add(f"rank/{rank}", 1) != 1
        if rejoining and not store.check([f"lost/{rank}"]):
            raise PeerLost(f"another client already joined the server at {server} as rank {rank}")
        dataset = load_dataset(cfg.data.dataset, data_dir or cfg.data.data_dir, cfg.data.download, seed=cfg.seed)
        client = ClientProcess(cfg, rank - 1, dataset)
        client.store = store
        if rejoining:  # the server lost this rank's process (on_client_loss = continue): take its place
            if cfg.on_client_loss != "continue":
                raise PeerLost(f"another client already joined the server at {server} as rank {rank}")
            store.set(f"rejoin_data/{rank}", data_fingerprint(dataset))
            if store.add(f"rejoin/{rank}", 1) != 1:
                raise PeerLost(f"another process is already rejoining the server at {server} as rank {rank}")
            print(f"client {rank - 1}: rejoining the run at {server} at its next round", file=stream, flush=True)
            try:
                answer = store.get(f"rejoin_go/{rank}").decode()
            except RuntimeError:  # the store's timeout, or the server ended meanwhile
                raise PeerLost(f"the server at {server} did not take this client back within {timeout_s:g} s") from None
            store.delete_key(f"rejoin_go/{rank}")
            if not answer.isdigit():
                raise PeerLost(f"the server {answer}")
            generation = int(answer)
            members = json.loads(store.get(f"generation/{generation}/members").decode())
            join(store, members.index(rank - 1) + 1, len(members) + 1, timeout_s, generation)
        else:
            store.set(f"data/{rank}", data_fingerprint(dataset))
            store.add("ready", 1)
            join(store, rank, n + 1, timeout_s)
        client.serve(Link(timeout_s))
    except (PeerLost, DatasetNotFound) as err:
        print(f"client {rank - 1}: {' '.join(str(err).split())}", file=stream)
        return 1
    finally:
        disconnect()
    return 0
