"""The server's side of a networked run: the rounds of :mod:`engine.schedules` with the clients in other processes.

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

import json
import logging
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.network.client import (
    copy_into,
    flatten_states,
    float_state,
    load_param_states,
    param_states,
    unflatten_states,
)
from engine.network.launcher import launch_method, start_client
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
    _first_line,
    data_fingerprint,
    disconnect,
    free_port,
    join,
    open_store,
)
from engine.schedules import get as get_schedule
from engine.state import TrainState
from engine.step import RoundLosses, cut_gradients, server_step
from engine.techniques import StepBatch, wire_codec
from engine.techniques.averaging import average_states

log = logging.getLogger("splitlab.network")

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
        self.schedule = get_schedule(state.cfg.schedule)  # a lockstep one: the config refuses SplitFed here
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.log_folder: Path | None = None  # the spawned clients' output, removed at the end
        self.fresh = "full"      # how current the server's copy of the client models is: None, light, full
        self.last_timing: dict[str, float] = {}
        # cfg.on_client_loss = continue: a lost client is left out (self.lost: client -> why) until a process
        # with its rank joins again; the run's losses and returns are self.events
        self.continue_on_loss = state.cfg.on_client_loss == "continue"
        self.lost: dict[int, str] = {}
        self.events: list[dict] = []
        self.generation = 0  # the process group is formed again (generation 1, 2, ...) when a client rejoins
        self.stopped: dict[int, str] = {}  # rank -> what it was doing when the server stopped its hung process
        # the global lower model (and ④' auxiliary network) a rejoining client takes: the last average
        self.global_states = [_float_state(m) for m in self._averaged_models(state, 0)]
        # with clients it started, the server stops a hung one itself (the watchdog below) rather than let
        # gloo time out: a timed-out receive closes every connection of the server, not the hung one's only
        watch = self.continue_on_loss and options.spawn
        self.link = Link(options.timeout_s + 30 if watch else options.timeout_s)
        self.closed = False
        self._closing = threading.Event()
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
        weakref.finalize(self, self._closing.set)
        if watch:
            threading.Thread(target=_watchdog, args=(self.link, self.procs, self.stopped, options.timeout_s,
                                                     self._closing), daemon=True, name="splitlab-watchdog").start()

    # ---- processes -----------------------------------------------------------------------
    def _spawn(self) -> None:
        try:
            launch_method()
        except ValueError as err:
            raise ClientFailed(f"the clients cannot be started: {err}") from None
        folder = self.log_folder = Path(tempfile.mkdtemp(prefix="splitlab-clients-"))
        for rank in range(1, self.n + 1):
            log = folder / f"client-{rank - 1}.log"
            self.procs.append(start_client(self.address, rank, max(self.options.timeout_s * 10, 600), log))
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
            if rank in self.stopped:  # hung: the watchdog stopped it
                return ClientFailed(f"client {rank - 1} (rank {rank}) {self.stopped.pop(rank)}, {self._when()}: "
                                    f"the server stopped its process")
            if self._rejoined(rank - 1):
                break  # a process started again elsewhere: this server does not own it
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
        if self.lost:
            self._take_back(state, t)
        lost = set(self.lost)
        behind, lost_behind = set(state.behind), state.behind & lost
        state.behind -= lost_behind  # a lost client drawn this round is not back: it downloads nothing
        state.begin_round()  # who takes part (cfg.participation; everyone by default)
        state.behind |= lost_behind
        if self.continue_on_loss and not state.cfg.participation.active:
            state.present = list(range(self.n))  # everyone is drawn; the lost are taken out below
        # the steps as the clients replay the shared data stream (they do not know who was lost) ...
        groups = self.schedule.steps(list(state.present))
        if lost:  # ... and a lost client is absent from them until it rejoins
            here = state.present if state.cfg.participation.active else range(self.n)
            state.present = [i for i in here if i not in lost]
        back = sorted((behind - lost) & set(state.present))
        if back:  # back after missing an averaging: the global model first (begin_round counted it)
            start = time.perf_counter()
            self._send_global(state, back, t)
            timing["latency_averaging_s"] += time.perf_counter() - start
        steps = [(number, [i for i in clients if i not in lost]) for number, clients in enumerate(groups)]
        steps = [(number, clients) for number, clients in steps if clients]  # numbered as the clients replay them
        for number, clients in steps:
            step = self._step(state, clients, t, number, timing)
            totals.loss += step.loss / len(steps)
            totals.mixup += step.mixup / len(steps)
            totals.local += step.local / len(steps)
        if state.cfg.averaging.enabled and not state.sequential and t % state.cfg.averaging.interval == 0:
            start = time.perf_counter()
            self._average(state, t)
            timing["latency_averaging_s"] += time.perf_counter() - start
        state.round = t
        self.last_timing = {key: timing[key] for key in LATENCY_KEYS}
        return totals

    def _each(self, state: TrainState, clients: list[int], action, data: list | None = None) -> tuple[list[int], list]:
        """``action(i)`` (or ``action(i, x)`` with ``data``) for every client; returns the clients it worked for
        and its results. A lost client (``on_client_loss = continue``) drops out; otherwise the loss ends the run."""
        kept, out = [], []
        for i, x in zip(clients, data if data is not None else [None] * len(clients)):
            if i in self.lost:  # lost earlier in this round
                continue
            try:
                out.append(action(i) if data is None else action(i, x))
                kept.append(i)
            except PeerLost as err:
                self._lose(state, i, err)
        return kept, out

    def _lose(self, state: TrainState, client: int, err: PeerLost) -> None:
        """Record client ``client`` as lost and go on without it (or, by default, end the run)."""
        if not self.continue_on_loss:
            raise err
        if err.timed_out:  # gloo's timeout closed every connection of the server: nobody is left to go on with
            raise ClientFailed(f"{self._lost(err)}; a client that stops answering is left out only when this server "
                               "started it (it then stops the process itself); gloo's timeout closes every "
                               "connection of the server, so the run ends") from None
        reason = str(self._lost(err))
        self.lost[client] = reason
        state.present = [i for i in state.present if i != client]  # absent from here on (⑤ goes without it)
        self.events.append({"event": "lost", "round": state.round + 1, "client": client, "reason": reason})
        self.store.set(f"lost/{client + 1}", "1")
        proc = self.procs[client] if client < len(self.procs) else None
        if proc is not None and proc.poll() is None and not self._rejoined(client):
            proc.kill()  # half alive: it must not answer later
        log.warning("%s; the run goes on with %d of %d clients (to bring it back: python -m engine client --server "
                    "%s --rank %d)", reason, self.n - len(self.lost), self.n, self.address, client + 1)

    def _rejoined(self, client: int) -> bool:
        return any(e["client"] == client and e["event"] == "rejoined" for e in self.events)

    def _step(self, state: TrainState, clients: list[int], t: int, number: int, timing: dict) -> RoundLosses:
        cfg, link = state.cfg, self.link
        flags = (GRADS_FOLLOW if cfg.global_backward else 0) | (BATON if state.sequential else 0)
        if state.sequential:  # Vanilla SL's model goes to the client first (timed as model exchange)
            start = time.perf_counter()

            def hand_over(i):
                link.command(i + 1, STEP, t, number, flags)
                link.send_object(self._baton(state), i + 1, "receiving the lower model")
            clients, _ = self._each(state, clients, hand_over)
            timing["latency_averaging_s"] += time.perf_counter() - start
        start = time.perf_counter()
        if not state.sequential:
            clients, _ = self._each(state, clients, lambda i: link.command(i + 1, STEP, t, number, flags))
        b, shape = cfg.batch_size, (cfg.batch_size, *state.smashed_shape)
        codec = wire_codec(state.techniques)  # quantised smashed data travel as codes (defense.bits)
        spec = codec.wire(shape) if codec else [(shape, torch.float32)]
        clients, pending = self._each(state, clients, lambda i: (
            [link.irecv(size, dtype, i + 1, "uploading smashed data") for size, dtype in spec],
            link.irecv((b,), torch.int64, i + 1, "uploading labels")))
        clients, uploads = self._each(state, clients, lambda i, p: (
            [part.wait() for part in p[0]],
            p[1].wait()), pending)
        payloads, labels = [u[0] for u in uploads], [u[1] for u in uploads]
        uploaded = time.perf_counter()
        if not clients:  # every client of this step was lost
            return RoundLosses()

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

        sends = {}
        if flags & GRADS_FOLLOW:
            clients, posted = self._each(state, clients, lambda i, g: link.isend(
                g.cpu(), i + 1, "receiving the cut-layer gradient"), grads)
            sends = dict(zip(clients, posted))
        # the reports are awaited before the gradients' sends: a receive from a client that died fails at once,
        # where a send to it can wait out gloo's timeout (which closes every connection of the server)
        clients, reports = self._each(state, clients, lambda i: link.irecv((3,), torch.float64, i + 1,
                                                                                 "updating its model"))
        clients, reports = self._each(state, clients, lambda i, r: r.wait(), reports)
        clients, _ = self._each(state, clients, lambda i: sends[i].wait() if i in sends else None)
        done = time.perf_counter()
        if state.sequential and clients:  # the lower model comes back through the server, as the ledger counts it
            batons = self._each(state, clients, lambda i: link.recv_object(i + 1, "handing the lower model on"))[1]
            for baton in batons:  # a client lost holding it: the server's copy from before its step goes on
                self._keep_baton(state, baton)
                state.ledger.model_exchange(1, [state.lowers[0]])
            timing["latency_averaging_s"] += time.perf_counter() - done
        if not reports:  # lost after the server step: the server's update stands, no client update came back
            reports = [torch.zeros(3, dtype=torch.float64)]
        local, forward, backward = torch.stack(reports).T.tolist()
        losses.local = sum(local) / len(local)
        # The clients' own clocks split the windows the server saw, never beyond them: the parts add up to
        # done - start even where a loaded machine stretches a client's measured time past what the server waited.
        fwd = min(max(forward), uploaded - start)
        timing["latency_upload_s"] += uploaded - start - fwd
        timing["latency_server_s"] += served - uploaded
        if flags & GRADS_FOLLOW:  # the updates start when the gradients arrive
            bwd = min(max(backward), done - served)
            timing["latency_client_s"] += fwd + bwd
            timing["latency_download_s"] += done - served - bwd
        else:  # without ② the clients update while the server computes: only what is left after it counts
            timing["latency_client_s"] += fwd + (done - served)
        return losses

    def _baton(self, state: TrainState) -> dict:
        lower = state.lowers[0]
        return {"lower": lower.state_dict(), "opt": param_states(state.client_opt, list(lower.parameters()))}

    def _keep_baton(self, state: TrainState, baton: dict) -> None:
        lower = state.lowers[0]
        lower.load_state_dict(baton["lower"])
        load_param_states(state.client_opt, list(lower.parameters()), baton["opt"])

    def _average(self, state: TrainState, t: int) -> None:
        """⑤ through the server: every present client uploads its model, the server averages (weights
        renormalised over the present clients when some are absent), every present client downloads. An
        absent client's slot on the server takes the average: it is sent when the client is back."""
        present, with_aux, link = list(state.present), state.averages_aux, self.link
        present, _ = self._each(state, present, lambda i: link.command(i + 1, AVERAGE, t, 0, FULL if with_aux else 0))
        models = self._averaged_models(state, 0)
        size = flatten_states(models).numel()
        present, pending = self._each(state, present, lambda i: link.irecv(
            (size,), torch.float32, i + 1, "uploading its model for averaging"))
        present, uploads = self._each(state, present, lambda i, p: unflatten_states(
            p.wait(), models), pending)
        if not present:
            return
        weights = state.weights if len(present) == self.n else state.weights[present] / state.weights[present].sum()
        average = [average_states([u[k] for u in uploads], weights) for k in range(len(models))]
        flat = torch.cat([v.flatten() for avg in average for v in avg.values()])
        present, sends = self._each(state, present, lambda i: link.isend(flat, i + 1, "receiving the averaged model"))
        present, _ = self._each(state, present, lambda i, sent: sent.wait(), sends)
        state.ledger.model_exchange(len(present), models)
        self.global_states = average
        absent = sorted(set(range(self.n)) - set(present))
        for i in absent:
            for module, values in zip(self._averaged_models(state, i), average):
                copy_into(module, values)
        state.behind |= set(absent)

    def _send_global(self, state: TrainState, clients: list[int], t: int) -> None:
        """The global model (held in a returning client's slot since the averaging it missed) to ``clients``."""
        with_aux = state.averages_aux

        def send(i):
            flat = flatten_states(self._averaged_models(state, i))
            self.link.command(i + 1, GLOBAL, t, 0, FULL if with_aux else 0)
            self.link.send(flat, i + 1, "receiving the global model")
        self._each(state, clients, send)

    @staticmethod
    def _averaged_models(state: TrainState, i: int) -> list[torch.nn.Module]:
        """Client ``i``'s modules that ⑤ averages: its lower model, and with ④' its auxiliary network."""
        return [state.lowers[i]] + ([state.auxes[i]] if state.averages_aux else [])

    # ---- a lost client comes back --------------------------------------------------------
    def _take_back(self, state: TrainState, t: int) -> None:
        """Between rounds: every lost client whose rank a new process has claimed (``engine client`` started
        again) rejoins: the process group is formed again with it, and it takes the global lower model (the
        last average; without ⑤ the server's last copy of its own model, from the last evaluation)."""
        store, ready = self.store, []
        for i in sorted(self.lost):
            if not store.check([f"rejoin/{i + 1}"]):
                continue
            theirs = store.get(f"rejoin_data/{i + 1}").decode()
            ours = data_fingerprint(state.dataset)
            if theirs != ours:
                store.delete_key(f"rejoin/{i + 1}")
                store.set(f"rejoin_go/{i + 1}", f"refused: it loaded other training data than the server "
                                                f"({theirs} against {ours})")
                log.warning("client %d tried to rejoin with other training data (%s): refused", i, theirs)
                continue
            ready.append(i)
        if not ready:
            return
        self._regroup(ready)
        for i in ready:
            del self.lost[i]
            store.delete_key(f"lost/{i + 1}")
            store.delete_key(f"rejoin/{i + 1}")
            if state.cfg.averaging.enabled and not state.sequential:
                lower, aux = self.global_states[0], self.global_states[1] if state.averages_aux else None
            else:
                lower, aux = None, None
            models = {"lower": lower if lower is not None else _float_state(state.lowers[i]),
                      "aux": (aux if aux is not None else _float_state(state.auxes[i])) if state.auxes else None}
            try:
                self.link.command(i + 1, REJOIN, state.round)
                self.link.send_object(models, i + 1, "receiving the model it rejoins with")
            except PeerLost as err:
                self._lose(state, i, err)
                continue
            state.behind.discard(i)
            state.ledger.model_download(1, [state.lowers[i]] + ([state.auxes[i]] if state.auxes else []))
            self.events.append({"event": "rejoined", "round": t, "client": i,
                                "reason": "a process with its rank joined again"})
            log.warning("client %d rejoined in round %d with the %s", i, t,
                        "global lower model" if lower is not None else "server's last copy of its lower model")

    def _regroup(self, joining: list[int]) -> None:
        """Form the process group again: the server, every live client and ``joining``, ranked in client order."""
        live = [i for i in range(self.n) if i not in self.lost]
        members = sorted(live + joining)
        self.generation += 1
        g = self.generation
        self.store.set(f"generation/{g}/members", json.dumps(members))
        for i in live:
            try:
                self.link.command(i + 1, REGROUP, g)
            except PeerLost as err:  # lost while the group is formed again: that cannot be undone here
                raise ClientFailed(f"{self._lost(err)}, while the process group was formed again for a rejoining "
                                   f"client") from None
        for i in joining:
            self.store.set(f"rejoin_go/{i + 1}", str(g))
        disconnect()
        try:
            join(self.store, SERVER, len(members) + 1, self.options.join_timeout_s, g)
        except RuntimeError as err:
            raise ClientFailed(f"the process group could not be formed again for client(s) "
                               f"{', '.join(map(str, joining))} to rejoin: {_first_line(err)}") from None
        self.link.ranks = {i + 1: rank for rank, i in enumerate(members, 1)}

    # ---- the evaluator's view, checkpoints -----------------------------------------------
    def observe(self, state: TrainState, full: bool = False) -> None:
        """Bring the server's copy of the client models (``full``: also their optimiser states and data
        walks, for a checkpoint) up to date. Not timed, not in the ledger."""
        if self.fresh == "full" or (self.fresh == "light" and not full) or self.closed:
            return
        try:
            for i in range(self.n):
                if i in self.lost:  # the server keeps its last copy
                    continue
                self.link.command(i + 1, PULL, state.round, 0, FULL if full else 0)
                sd = self.link.recv_object(i + 1, "sending its state")
                behind = i in state.behind  # its slot holds the global model it takes when it is back
                if not state.sequential:
                    _load_state(state.lowers[i], sd["lower"], keep_floats=behind)
                if state.auxes:
                    _load_state(state.auxes[i], sd["aux"], keep_floats=behind and state.averages_aux)
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
                if i in self.lost:
                    continue
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
                    "participation_rng": state.participation_rng.bit_generator.state,
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
                    if i not in self.lost:
                        self.link.command(i + 1, STOP)
        except (PeerLost, ClientFailed):
            failed = True
        finally:
            self.closed = True
            self._closing.set()
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


def _float_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in float_state(module).items()}


def _watchdog(link: Link, procs: list[subprocess.Popen], stopped: dict[int, str], timeout_s: float,
              closing: threading.Event) -> None:
    """Stop a client process the server has waited on for more than ``timeout_s``: its connection then
    closes and the run goes on without it (``on_client_loss = continue``)."""
    while not closing.wait(min(0.2, timeout_s / 4)):
        waiting = link.waiting
        if waiting is None:
            continue
        peer, since, what = waiting
        if time.monotonic() - since > timeout_s and 1 <= peer <= len(procs) and procs[peer - 1].poll() is None:
            stopped[peer] = f"sent nothing for {timeout_s:g} s while {what}"
            procs[peer - 1].kill()


def _load_state(module: torch.nn.Module, theirs: dict, keep_floats: bool = False) -> None:
    """Load a client's module state; ``keep_floats``: all but the floating-point entries (weights, BatchNorm
    statistics), which hold the global model the client takes when it is back (its counters are its own)."""
    if keep_floats:
        ours = module.state_dict()
        theirs = {key: ours[key] if value.is_floating_point() else value for key, value in theirs.items()}
    module.load_state_dict(theirs)


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
    if sep and any(w in detail.lower() for w in ("closed by peer", "connection reset", "read error", "broken pipe")):
        return f"{head} closed the connection"
    return text


def _kill(procs: list[subprocess.Popen], folder: Path | None = None) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
