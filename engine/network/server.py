"""The server's side of a networked run: the rounds of :mod:`engine.round` with the clients in other processes.

The server holds the upper model, its optimiser and the random streams of mixup and SplitAvg; it
receives smashed data and labels, takes the server step with the in-process engine's own
``server_step`` and ``cut_gradients``, sends each client its gradient, and averages (⑤) the models
the clients upload. Bytes go into the same ledger as in the in-process engine.

The trainer's :class:`~engine.state.TrainState` on the server is also the evaluator's view of the
run: its client models are refreshed from the clients (:meth:`NetworkRounds.observe`) only before an
evaluation, a snapshot or a checkpoint, outside the timed round and the ledger, as evaluation is free
in the in-process engine too. Training never reads them.

Each round is timed (``latency_*``), along its critical path: client compute (slowest forward +
slowest update; without ② only the part of the updates that outlasts the server step), upload (all smashed data in, less the slowest forward), server compute, download (all
updates reported, less the slowest update) and model exchange (``latency_averaging_s``: ⑤'s
upload-average-download, or Vanilla SL's hand-over of the lower model through the server).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.network.client import flatten_states, load_param_states, param_states, unflatten_states
from engine.network.wire import (
    AVERAGE,
    BATON,
    FULL,
    GRADS_FOLLOW,
    PULL,
    PUSH,
    SERVER,
    STEP,
    STOP,
    Address,
    Link,
    PeerLost,
    data_fingerprint,
    disconnect,
    free_port,
    join,
    open_store,
)
from engine.state import TrainState
from engine.step import RoundLosses, cut_gradients, server_step
from engine.techniques import StepBatch, wire_codec
from engine.techniques.averaging import average_states

LATENCY_KEYS = ("latency_client_s", "latency_upload_s", "latency_server_s", "latency_download_s",
                "latency_averaging_s")


class ClientFailed(RuntimeError):
    """A client process of a networked run died, refused to start or stopped answering."""


@dataclass(frozen=True)
class NetworkOptions:
    """Where the server listens and whether it starts its clients on this machine."""

    listen: Address | None = None   # None: 127.0.0.1 on a free port
    spawn: bool = True              # start the n client processes here (``--transport process``)
    timeout_s: float = 60.0         # longest wait for any one message before a client counts as lost
    join_timeout_s: float = 300.0   # longest wait for every client to join
    announce: object = None         # called with a line of progress while clients join (engine serve)


class NetworkRounds:
    """Runs rounds with the clients in other processes; the trainer calls :meth:`run_round`."""

    def __init__(self, state: TrainState, options: NetworkOptions = NetworkOptions()):
        self.options = options
        self.address = options.listen or Address("127.0.0.1", free_port())
        self.n = state.num_clients
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.log_folder: Path | None = None  # the spawned clients' output, removed at the end
        self.fresh = "full"      # how current the server's copy of the client models is: None, light, full
        self.last_timing: dict[str, float] = {}
        self.link = Link(options.timeout_s)
        self.closed = False
        self.started_at = time.monotonic()
        self.joined_at: float | None = None  # when every client had joined (the process group formed)
        self.rounds_trained = 0  # rounds completed with these client processes
        self.current_round: int | None = None  # the round under way, None between rounds
        store = open_store(self.address, SERVER, options.join_timeout_s, world_size=self.n + 1)
        store.set("config", state.cfg.model_dump_json())
        try:
            if options.spawn:
                self._spawn()
            self._wait_for_clients(store)
            self._check_data(store, state)
            join(store, SERVER, self.n + 1, options.join_timeout_s)
            self.joined_at = time.monotonic()
        except BaseException:
            _kill(self.procs, self.log_folder)
            raise
        self.store = store
        # no client (and no log folder) outlives a server that was never closed
        weakref.finalize(self, _kill, self.procs, self.log_folder)

    # ---- processes -----------------------------------------------------------------------
    def _spawn(self) -> None:
        folder = self.log_folder = Path(tempfile.mkdtemp(prefix="splitlab-clients-"))
        root = str(Path(__file__).resolve().parents[2])  # the clients import this very engine
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("SPLITLAB_CLIENT_THREADS", "1"), "PYTHONPATH": path,
               "TORCH_CPP_LOG_LEVEL": os.environ.get("TORCH_CPP_LOG_LEVEL", "FATAL")}
        for rank in range(1, self.n + 1):
            log = folder / f"client-{rank - 1}.log"
            with open(log, "wb") as out:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "engine", "client", "--server", str(self.address), "--rank", str(rank),
                     "--timeout", f"{max(self.options.timeout_s * 10, 600):g}"],
                    stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL))
            self.logs.append(log)

    def _log_tail(self, rank: int) -> str:
        try:
            lines = self.logs[rank - 1].read_text(errors="replace").strip().splitlines()
        except (OSError, IndexError):
            return ""
        return lines[-1][:300] if lines else ""

    def _wait_for_clients(self, store) -> None:
        start, said = time.monotonic(), -1
        while (ready := store.add("ready", 0)) < self.n:
            for rank, proc in enumerate(self.procs, 1):
                if proc.poll() is not None:
                    raise ClientFailed(self._ended_while_joining(store, rank, proc.returncode))
            if ready != said and self.options.announce:
                self.options.announce(f"{ready} of {self.n} clients joined the server at {self.address}")
                said = ready
            if time.monotonic() - start > self.options.join_timeout_s:
                raise ClientFailed(f"only {ready} of {self.n} clients joined within {self.options.join_timeout_s:g} s")
            time.sleep(0.05)

    def _ended_while_joining(self, store, rank: int, code: int) -> str:
        """What a client process that ended before the run began did: it never joined, or it had
        loaded its data and was waiting for the others."""
        tail = self._log_tail(rank)
        ended = _how_it_ended(code)
        after = f"{time.monotonic() - self.started_at:.0f} s after it was started"
        if store.check([f"data/{rank}"]):
            return (f"client {rank - 1} had joined and loaded its data, then {ended} while waiting for the other "
                    f"clients, {after}, before any round" + (f": {tail}" if tail else ""))
        if code < 0:
            return f"client {rank - 1} {ended} before joining, {after}" + (f": {tail}" if tail else "")
        return f"client {rank - 1} exited with code {code} before joining" + (f": {tail}" if tail else "")

    def _check_data(self, store, state: TrainState) -> None:
        ours = data_fingerprint(state.dataset)
        for rank in range(1, self.n + 1):
            theirs = store.get(f"data/{rank}").decode()
            if theirs != ours:
                raise ClientFailed(f"client {rank - 1} loaded other training data than the server "
                                   f"({theirs} against {ours}): give every machine the same data set")

    def _lost(self, err: PeerLost) -> ClientFailed:
        """A lost peer as the run's failure: when in the run it was lost, how long it had trained, and
        (a client this server started) how its process ended and what it said last."""
        text = _plain_reason(str(err))
        for rank, proc in enumerate(self.procs, 1):
            if f"(rank {rank})" not in text:
                continue
            try:
                code = proc.wait(timeout=1.0)  # its sockets close a moment before its exit is reported
            except subprocess.TimeoutExpired:
                continue  # alive but silent: hung
            tail = self._log_tail(rank)
            return ClientFailed(f"{text}, {self._when()}: its process {_how_it_ended(code)}"
                                + (f" ({tail})" if tail else ""))
        return ClientFailed(f"{text}, {self._when()}")

    def _when(self) -> str:
        """Where the run was: "in round 51, after it had trained 50 rounds (25 s since the clients joined)"."""
        where = f"in round {self.current_round}" if self.current_round is not None else "between rounds"
        rounds = f"{self.rounds_trained} round{'s' if self.rounds_trained != 1 else ''}"
        since = f" ({time.monotonic() - self.joined_at:.0f} s since the clients joined)" if self.joined_at else ""
        return f"{where}, after it had trained {rounds}{since}"

    # ---- one round -----------------------------------------------------------------------
    def run_round(self, state: TrainState) -> RoundLosses:
        self.current_round = state.round + 1
        try:
            losses = self._round(state)
        except PeerLost as err:
            raise self._lost(err) from None
        self.current_round = None
        self.rounds_trained += 1
        return losses

    def _round(self, state: TrainState) -> RoundLosses:
        t = state.round + 1
        self.fresh = None
        totals, timing = RoundLosses(), defaultdict(float)
        groups = state.schedule_groups()
        for number, clients in enumerate(groups):
            step = self._step(state, clients, t, number, timing)
            totals.loss += step.loss / len(groups)
            totals.mixup += step.mixup / len(groups)
            totals.local += step.local / len(groups)
        if state.cfg.averaging.enabled and not state.sequential and t % state.cfg.averaging.interval == 0:
            start = time.perf_counter()
            self._average(state, t)
            timing["latency_averaging_s"] += time.perf_counter() - start
        state.round = t
        self.last_timing = {key: timing[key] for key in LATENCY_KEYS}
        return totals

    def _step(self, state: TrainState, clients: list[int], t: int, number: int, timing: dict) -> RoundLosses:
        cfg, link = state.cfg, self.link
        flags = (GRADS_FOLLOW if cfg.global_backward else 0) | (BATON if state.sequential else 0)
        if state.sequential:  # Vanilla SL's model goes to the client first (timed as model exchange)
            start = time.perf_counter()
            link.command(clients[0] + 1, STEP, t, number, flags)
            link.send_object(self._baton(state), clients[0] + 1, "receiving the lower model")
            timing["latency_averaging_s"] += time.perf_counter() - start
        start = time.perf_counter()
        if not state.sequential:
            for i in clients:
                link.command(i + 1, STEP, t, number, flags)
        b, shape = cfg.batch_size, (cfg.batch_size, *state.smashed_shape)
        codec = wire_codec(state.techniques)  # quantised smashed data travel as codes (defense.bits)
        spec = codec.wire(shape) if codec else [(shape, torch.float32)]
        pending = [([link.irecv(size, dtype, i + 1) for size, dtype in spec], link.irecv((b,), torch.int64, i + 1))
                   for i in clients]
        payloads = [[p.wait_for(link, i + 1, "uploading smashed data") for p in parts]
                    for i, (parts, _) in zip(clients, pending)]
        labels = [y.wait_for(link, i + 1, "uploading labels") for i, (_, y) in zip(clients, pending)]
        uploaded = time.perf_counter()

        k = len(clients)
        needs_grad = cfg.global_backward or (cfg.mixup.enabled and cfg.mixup.grad_to_clients)
        smashed = [codec.decode(p, shape) if codec else p[0] for p in payloads]
        server_in = torch.cat(smashed).to(state.device).requires_grad_(needs_grad)
        received = sum(t.numel() * t.element_size() for p in payloads for t in p)  # the bytes that came
        state.ledger.smashed(k * b, server_in[0].numel(), received)
        weights = state.weights[clients] / state.weights[clients].sum()
        batch = StepBatch(clients, None, server_in, torch.cat(labels).to(state.device), weights, t)
        losses = server_step(state, batch)
        grads = cut_gradients(state, batch)
        served = time.perf_counter()

        if flags & GRADS_FOLLOW:
            sends = [link.isend(g.cpu(), i + 1) for i, g in zip(clients, grads)]
            for i, sent in zip(clients, sends):
                sent.wait_for(link, i + 1, "receiving the cut-layer gradient")
        reports = [link.irecv((3,), torch.float64, i + 1) for i in clients]
        reports = [r.wait_for(link, i + 1, "updating its model") for i, r in zip(clients, reports)]
        done = time.perf_counter()
        if state.sequential:  # the lower model comes back through the server, as the ledger counts it
            self._keep_baton(state, link.recv_object(clients[0] + 1, "handing the lower model on"))
            state.ledger.model_exchange(1, [state.lowers[0]])
            timing["latency_averaging_s"] += time.perf_counter() - done

        local, forward, backward = torch.stack(reports).T.tolist()
        losses.local = sum(local) / k
        timing["latency_upload_s"] += max(0.0, uploaded - start - max(forward))
        timing["latency_server_s"] += served - uploaded
        if flags & GRADS_FOLLOW:  # the updates start when the gradients arrive
            timing["latency_client_s"] += max(forward) + max(backward)
            timing["latency_download_s"] += max(0.0, done - served - max(backward))
        else:  # without ② the clients update while the server computes: only what is left after it counts
            timing["latency_client_s"] += max(forward) + max(0.0, done - served)
        return losses

    def _baton(self, state: TrainState) -> dict:
        lower = state.lowers[0]
        return {"lower": lower.state_dict(), "opt": param_states(state.client_opt, list(lower.parameters()))}

    def _keep_baton(self, state: TrainState, baton: dict) -> None:
        lower = state.lowers[0]
        lower.load_state_dict(baton["lower"])
        load_param_states(state.client_opt, list(lower.parameters()), baton["opt"])

    def _average(self, state: TrainState, t: int) -> None:
        """⑤ through the server: every client uploads its model, the server averages, every client downloads."""
        with_aux = state.cfg.local_loss.enabled and state.cfg.local_loss.average_aux
        for i in range(self.n):
            self.link.command(i + 1, AVERAGE, t, 0, FULL if with_aux else 0)
        models = [state.lowers[0]] + ([state.auxes[0]] if with_aux else [])
        size = flatten_states(models).numel()
        pending = [self.link.irecv((size,), torch.float32, i + 1) for i in range(self.n)]
        uploads = [unflatten_states(p.wait_for(self.link, i + 1, "uploading its model for averaging"), models)
                   for i, p in enumerate(pending)]
        average = [average_states([u[k] for u in uploads], state.weights) for k in range(len(models))]
        flat = torch.cat([v.flatten() for avg in average for v in avg.values()])
        sends = [self.link.isend(flat, i + 1) for i in range(self.n)]
        for i, sent in enumerate(sends):
            sent.wait_for(self.link, i + 1, "receiving the averaged model")
        models = [state.lowers[0]] + ([state.auxes[0]] if with_aux else [])
        state.ledger.model_exchange(self.n, models)

    # ---- the evaluator's view, checkpoints -----------------------------------------------
    def observe(self, state: TrainState, full: bool = False) -> None:
        """Bring the server's copy of the client models (``full``: also their optimiser states and data
        walks, for a checkpoint) up to date. Not timed, not in the ledger."""
        if self.fresh == "full" or (self.fresh == "light" and not full) or self.closed:
            return
        try:
            for i in range(self.n):
                self.link.command(i + 1, PULL, state.round, 0, FULL if full else 0)
                sd = self.link.recv_object(i + 1, "sending its state")
                if not state.sequential:
                    state.lowers[i].load_state_dict(sd["lower"])
                if state.auxes:
                    state.auxes[i].load_state_dict(sd["aux"])
                if full:
                    if not state.sequential:
                        load_param_states(state.client_opt, list(state.lowers[i].parameters()), sd["opt_lower"])
                    if state.auxes:
                        load_param_states(state.client_opt, list(state.auxes[i].parameters()), sd["opt_aux"])
                    walk = state.clients[i]
                    walk.order, walk.cursor = sd["order"], sd["cursor"]
                    state.data_rng.bit_generator.state = sd["data_rng"]
                    techniques = {t.name: t for t in state.techniques}
                    for name, value in sd.get("techniques", {}).items():
                        techniques[name].load_client_state(i, value)  # the noise defense's stream
        except PeerLost as err:
            raise self._lost(err) from None
        self.fresh = "full" if full else "light"

    def restore(self, state: TrainState) -> None:
        """Send every client its part of a state the server loaded from a checkpoint."""
        walks = [(len(c.order), c.cursor) for c in state.clients]
        try:
            for i in range(self.n):
                lower = None if state.sequential else state.lowers[i]
                aux = state.auxes[i] if state.auxes else None
                self.link.command(i + 1, PUSH, state.round)
                self.link.send_object({
                    "lower": lower.state_dict() if lower is not None else None,
                    "opt_lower": param_states(state.client_opt, list(lower.parameters())) if lower else None,
                    "aux": aux.state_dict() if aux is not None else None,
                    "opt_aux": param_states(state.client_opt, list(aux.parameters())) if aux is not None else None,
                    "order": state.clients[i].order, "walks": walks,
                    "data_rng": state.data_rng.bit_generator.state, "round": state.round,
                    "techniques": {t.name: t.client_state(i) for t in state.techniques
                                   if t.client_state(i) is not None},
                }, i + 1, "receiving a checkpointed state")
        except PeerLost as err:
            raise self._lost(err) from None
        self.fresh = "full"

    # ---- the end -------------------------------------------------------------------------
    def close(self, state: TrainState | None = None, failed: bool = False) -> None:
        """End the run: (unless ``failed``) take the clients' final state and tell them to stop; then
        make sure no client process is left."""
        if self.closed:
            return
        try:
            if not failed and state is not None:
                self.observe(state, full=True)
                for i in range(self.n):
                    self.link.command(i + 1, STOP)
        except (PeerLost, ClientFailed):
            failed = True
        finally:
            self.closed = True
            self._stop_processes(grace_s=0.0 if failed else 10.0)
            disconnect()

    def _stop_processes(self, grace_s: float = 0.0) -> None:
        deadline = time.monotonic() + grace_s
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if self.log_folder is not None:
            shutil.rmtree(self.log_folder, ignore_errors=True)


def _how_it_ended(code: int) -> str:
    """A return code in words: "was killed by SIGKILL", "exited with code 3"."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _plain_reason(text: str) -> str:
    """A PeerLost message without gloo's internals: "client 1 (rank 2) cannot be reached ([.../pair.cc:553]
    Connection closed by peer ...)" reads "client 1 (rank 2) closed the connection"."""
    head, sep, detail = text.partition(" cannot be reached (")
    if sep and "closed by peer" in detail.lower():
        return f"{head} closed the connection"
    return text


def _kill(procs: list[subprocess.Popen], folder: Path | None = None) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
