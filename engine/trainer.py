"""The training loop: rounds, evaluation, callbacks, exact checkpoints.

The loop never asks which preset it runs; techniques act through their hooks and bytes are
counted by the ledger. Callers (CLI, worker) observe it through a :class:`Callbacks` object.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.config import RunConfig
from engine.data import Dataset
from engine.evaluate import Evaluator, reconstruction_snapshot
from engine.privacy import LEAK_EXTRA_KEYS, LEAK_KEYS, LeakageReport, attach_to_snapshot, measure_run
from engine.runtime import flush_denormals, tune_allocator
from engine.schedules import get as get_schedule
from engine.state import TrainState
from engine.step import RoundLosses

CHECKPOINT_VERSION = 1


class Callbacks:
    """What a caller sees of a run. Every method is optional; the defaults do nothing."""

    def on_round(self, trainer: "Trainer", losses: RoundLosses) -> None:
        """After every round (progress, heartbeats, checkpoints)."""

    def on_eval(self, trainer: "Trainer", record: dict[str, Any]) -> None:
        """After every evaluation step, with the history row just added."""

    def on_images(self, trainer: "Trainer", round_: int, snapshot: dict) -> None:
        """Every ``image_every`` rounds, with :func:`engine.evaluate.reconstruction_snapshot`."""

    def should_stop(self, trainer: "Trainer") -> bool:
        """Checked between rounds: True stops the run (cancel)."""
        return False


@dataclass
class _Running:
    """Loss terms and wall time accumulated since the last evaluation."""

    rounds: int = 0
    loss: float = 0.0
    mixup: float = 0.0
    local: float = 0.0
    wall: float = 0.0
    latency: dict[str, float] = field(default_factory=dict)  # networked runs: measured parts of a round
    updates: list[float] = field(default_factory=list)  # cfg.track_updates: summed UpdateSizes fields
    present: list[int] = field(default_factory=list)  # cfg.participation: clients here, one count a round
    selected: list[int] = field(default_factory=list)  # and chosen (before dropouts)
    late: list[int] = field(default_factory=list)  # and cut off by the deadline

    def add(self, losses: RoundLosses, wall: float, latency: dict[str, float] | None = None,
            participation: tuple[int, int, int] | None = None) -> None:
        self.rounds += 1
        if participation is not None:
            self.selected = [*self.selected, participation[0]]  # new lists: a checkpoint's copy stays as taken
            self.present = [*self.present, participation[1]]
            self.late = [*self.late, participation[2]]
        self.loss += losses.loss
        self.mixup += losses.mixup
        self.local += losses.local
        self.wall += wall
        for key, seconds in (latency or {}).items():
            self.latency[key] = self.latency.get(key, 0.0) + seconds
        if losses.updates is not None:
            sizes = astuple(losses.updates)
            self.updates = [a + b for a, b in zip(self.updates, sizes, strict=True)] if self.updates else list(sizes)

    def metrics(self) -> dict[str, float]:
        r = max(self.rounds, 1)
        out = {"train_loss": self.loss / r, "train_loss_mixup": self.mixup / r,
               "train_loss_local": self.local / r, "round_s": self.wall / r,
               **{key: seconds / r for key, seconds in self.latency.items()}}
        if self.present:  # only when clients come and go: a run with everyone keeps its old history keys
            out.update(clients_present=sum(self.present) / len(self.present), clients_present_min=min(self.present),
                       clients_selected=sum(self.selected) / len(self.selected),
                       clients_late=sum(self.late) / len(self.late) if self.late else 0.0)
        if self.updates:
            server, client, server_rel, client_rel = (v / r for v in self.updates)
            out.update(server_update_norm=server, client_update_norm=client,
                       update_ratio=server_rel / client_rel if client_rel > 0 else None)
        return out


@dataclass
class Trainer:
    """Runs a config round by round; ``history`` holds one row per evaluation step.

    With ``transport = process`` the rounds run over :mod:`engine.network` (clients in other
    processes; ``network`` says where to listen and whether to start them here); the trainer then
    owns those processes until :meth:`close`, which :meth:`run` calls when it ends.
    """

    cfg: RunConfig
    dataset: Dataset | None = None
    state: TrainState = field(init=False)
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    final: dict[str, Any] | None = None
    network: Any = None  # engine.network.NetworkOptions for a networked run (default: local clients)

    def __post_init__(self) -> None:
        tune_allocator()
        flush_denormals()
        if self.cfg.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {self.cfg.device!r} requested but CUDA is not available here")
        self.state = TrainState(self.cfg, self.dataset)
        self.schedule = get_schedule(self.cfg.schedule)  # how a round orders its steps (engine.schedules)
        self.evaluator = Evaluator(self.state)
        self._running = _Running()
        self._client_events: list[dict] = []  # a networked run's, resumed in one process
        self.transport = None  # the networked rounds (engine.network.NetworkRounds), None in-process
        if self.cfg.transport == "process":
            from engine.network.server import NetworkOptions, NetworkRounds

            self.transport = NetworkRounds(self.state, self.network or NetworkOptions())

    @property
    def client_events(self) -> list[dict]:
        """A networked run's lost and rejoined clients ({event, round, client, reason}), in order."""
        return self.transport.events if self.transport is not None else self._client_events

    def _observe(self, full: bool = False) -> None:
        """A networked run: fetch the clients' models (``full``: and the rest of their state) first."""
        if self.transport is not None:
            self.transport.observe(self.state, full)

    def close(self, failed: bool = False) -> None:
        """Stop a networked run's client processes (after taking their final state unless ``failed``)."""
        if self.transport is not None:
            self.transport.close(None if failed else self.state, failed=failed)

    @property
    def round(self) -> int:
        return self.state.round

    def run(self, callbacks: Callbacks | None = None) -> dict[str, Any]:
        """Train until ``cfg.rounds`` (or a stop request); return the result dict (config, history, summary)."""
        cb = callbacks or Callbacks()
        try:
            while self.state.round < self.cfg.rounds:
                if cb.should_stop(self):
                    self.close()
                    return self.result(stopped=True)
                self.step(cb)
            if self.final is None:
                self._observe()
                self.final = self.evaluator.final(self.state).metrics()
        except BaseException:
            self.close(failed=True)
            raise
        self.close()
        return self.result()

    def step(self, cb: Callbacks) -> None:
        """One round, then the evaluation and images that fall due after it."""
        start = time.perf_counter()
        losses = self.transport.run_round(self.state) if self.transport else self.schedule.run_round(self.state)
        wall = time.perf_counter() - start
        self.wall_s += wall
        taking_part = ((len(self.state.selected), len(self.state.present), len(self.state.late))
                       if self.cfg.participation.active else None)
        self._running.add(losses, wall, self.transport.last_timing if self.transport else None, taking_part)
        t, last = self.state.round, self.state.round == self.cfg.rounds
        leakage = self.measure_leakage() if self.privacy_due(t) else None
        if t % self.cfg.eval_every == 0 or last:
            record = self.evaluate_now(leakage, losses.authors_test_acc)
            cb.on_eval(self, record)
        if (self.cfg.image_every and t % self.cfg.image_every == 0) or leakage is not None:
            snapshot = self.snapshot()
            cb.on_images(self, t, attach_to_snapshot(snapshot, leakage) if leakage else snapshot)
        cb.on_round(self, losses)

    def privacy_due(self, t: int) -> bool:
        """Leakage is measured every ``privacy.every`` rounds (evaluation rounds, by validation) and at the end."""
        every = self.cfg.privacy.every
        return bool(every) and (t % every == 0 or t == self.cfg.rounds)

    def measure_leakage(self) -> LeakageReport:
        """Attack up to ``privacy.clients`` distinct lower models of the evaluated clients, the first
        shown client's always (:mod:`engine.privacy`); the seconds it took are not training time
        (``wall_s``), they are reported as ``leak_s``."""
        self._observe()
        start = time.perf_counter()
        report = measure_run(self.state, self.evaluator.live_clients)
        report.seconds = time.perf_counter() - start
        return report

    def evaluate_now(self, leakage: LeakageReport | None = None, authors_test_acc: float | None = None) -> dict[str, Any]:
        """Evaluate on the live subset and append a history row (with the leakage measured this round,
        and under SplitFed the authors' own test figure, measured during the round)."""
        self._observe()
        record = {"round": self.state.round, **self.evaluator.live(self.state).metrics(),
                  **self._running.metrics(), **self.state.ledger.as_metrics(), "wall_s": self.wall_s}
        if authors_test_acc is not None:
            record["authors_test_acc"] = authors_test_acc
        if self.cfg.participation.active:  # the latency model's client compute so far, in T_comp
            record["compute_units"] = self.state.compute_units
        if self.cfg.on_client_loss == "continue":  # a networked run that goes on without a lost client
            record["clients_lost"] = len(self.transport.lost) if self.transport else 0
        for tech in self.state.techniques:  # e.g. the noise defense's defense_snr_db
            record.update(tech.metrics(self.state))
        if leakage is not None:
            record.update(leakage.metrics(), leak_client=leakage.client, leak_s=leakage.seconds)
        self._running = _Running()
        self.history.append(record)
        return record

    def snapshot(self, num_clients: int = 3) -> dict:
        """The InfoPro snapshot of the first ``num_clients`` evaluated clients (the first is the one attacked)."""
        self._observe()
        clients = self.evaluator.live_clients[:num_clients]
        return reconstruction_snapshot(self.state, clients)

    # ---- results -----------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        accs = [row["test_acc"] for row in self.history]
        target = next((row["round"] for row in self.history if row["test_acc"] >= self.cfg.target_acc), None)
        out = {
            "rounds_done": self.state.round,
            "final_test_acc": self.final["test_acc"] if self.final else (accs[-1] if accs else None),
            "best_test_acc": max(accs) if accs else None,
            "rounds_to_target": target,
            "target_acc": self.cfg.target_acc,
            "wall_s": self.wall_s,
            **self.state.ledger.as_metrics(),
        }
        measured = [row for row in self.history if "leak_mse" in row]
        if measured:  # the last measurement: at the end, or the last before a stop
            last = measured[-1]
            out.update({key: last.get(key) for key in (*LEAK_KEYS, *LEAK_EXTRA_KEYS, "leak_client")},
                       leak_round=last["round"])
        if self.final:
            out.update({f"final_{k}": v for k, v in self.final.items() if k != "test_acc"})
        if self.client_events:  # on_client_loss = continue: who was lost when and why, and who came back
            out["client_events"] = list(self.client_events)
        authors = [row["authors_test_acc"] for row in self.history if "authors_test_acc" in row]
        if authors:  # SplitFed: the authors' own figure at the last evaluation (engine.schedules.splitfed)
            out["final_authors_test_acc"] = authors[-1]
        return out

    def result(self, stopped: bool = False) -> dict[str, Any]:
        """The JSON written by ``engine run --out``: config, history, summary."""
        summary = self.summary()
        summary["stopped"] = stopped
        return {"config": self.cfg.model_dump(mode="json"), "history": list(self.history), "summary": summary}

    # ---- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self._observe(full=True)
        return {"version": CHECKPOINT_VERSION, "config": self.cfg.model_dump(mode="json"),
                "state": self.state.state_dict(), "history": list(self.history), "wall_s": self.wall_s,
                "running": vars(self._running).copy(), "final": self.final,
                **({"client_events": list(self.client_events)} if self.client_events else {})}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if sd.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {sd.get('version')} is not {CHECKPOINT_VERSION}")
        # a setting added since reads as its default; how the clients execute does not change the run
        stored = RunConfig.model_validate(sd["config"]).model_copy(update={"execution": self.cfg.execution})
        if stored != self.cfg:
            raise ValueError("checkpoint was written for a different config")
        self.state.load_state_dict(sd["state"])
        if self.transport is not None:
            self.transport.restore(self.state)
        self.history = list(sd["history"])
        self.wall_s = sd["wall_s"]
        self._running = _Running(**sd["running"])
        self.final = sd["final"]
        self.client_events[:] = sd.get("client_events", [])

    def checkpoint_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        return buf.getvalue()

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.checkpoint_bytes())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def from_checkpoint(cls, data: bytes | str | os.PathLike, dataset: Dataset | None = None,
                        in_process: bool = False, execution: str | None = None) -> "Trainer":
        """Rebuild a trainer exactly as it was when the checkpoint was written (``in_process``: a
        networked run's state in one process; ``execution``: go on with the clients looped or batched;
        checkpoints are interchangeable between them)."""
        raw = data if isinstance(data, bytes) else Path(data).read_bytes()
        sd = torch.load(io.BytesIO(raw), weights_only=False)
        if in_process:
            sd["config"] = {**sd["config"], "transport": "inprocess"}
        if execution is not None:
            sd["config"] = {**sd["config"], "execution": execution}
        trainer = cls(RunConfig.model_validate(sd["config"]), dataset)
        trainer.load_state_dict(sd)
        return trainer
