"""What N viewers of a dashboard page cost: Streamlit server CPU, and the worker's time per round.

    .venv/bin/python -m tests.load.viewers --viewers 10 --seconds 60 [--page live|run|runs] [--out docs/load/x.json]

Starts the real app (``streamlit run app.py``, worker auto-start off) on a loopback port with a
throwaway SQLite database, queues one long run, starts one worker (``python -m engine worker``),
waits until the run trains, then measures alternating phases of ``--seconds`` each: no viewers,
N viewers, no viewers, N viewers. A viewer is a :class:`~tests.load.streamlit_session.StreamlitSession`
on ``/live?run=ID`` (or ``/run?run=ID``, ``/runs``); the viewers of a phase connect and load the
page before the phase's clock starts, and leave after it stops.

Per phase: CPU seconds of the Streamlit server and of the worker (``/proc/<pid>/stat``, utime +
stime), and of this process; the worker's seconds per round, two ways:

* ``progress`` (the main figure): ``runs.last_round``, which the worker's heartbeat writes every
  second, polled every 0.25 s; the rounds between its first and last change inside the phase over
  the time between them. Everything the worker does (evaluations, checkpoints, database writes),
  to about ±0.25 s over the phase; always available.
* ``engine``: from the ``metrics`` rows, Δ``wall_s`` / Δ``round`` over the rows whose evaluation
  window lies inside the phase. ``wall_s`` sums the trainer's own ``perf_counter`` around each
  round: training only, exact, but only when two evaluations fall inside the phase (a slowed
  worker evaluating every 10 rounds may give none in 30 s: then "–").

Everything started here runs in its own process group and is stopped on exit, on Ctrl-C and on
failure. Every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

from tests.load.streamlit_session import StreamlitSession, close_sessions, open_sessions

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGES = {"live": ("live", "run={run_id}"), "run": ("run", "run={run_id}"), "runs": ("runs", "")}
POLL_S = 0.25          # how often the run's progress and latest evaluation are read
START_TIMEOUT_S = 120  # the app answering, the worker reaching its second evaluation
STOP_TIMEOUT_S = 10    # SIGTERM, then SIGKILL
SATURATED_PCT = 90     # server CPU % (of one core) from which it counts as saturated
RECORDED_ENV = ("STREAMLIT_", "OMP_", "MKL_", "TORCH_", "SPLITLAB_")  # settings that change the figures
RUN_FLAGS = ("--preset", "locfedmix_sl", "--profile", "demo", "--dataset", "digits", "--clients", "10",
             "--rounds", "100000", "--eval-every", "10")  # ~0.3 s a round on 2 cores (4 s when others load them)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process ``pid`` (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; utime and stime are fields 14, 15
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class Lab:
    """The real app and, on request, one worker on a database in ``workdir``; stopped on exit.

    ``with Lab(tmp) as lab: lab.start_app(); run_id = lab.submit(); lab.start_worker()``
    """

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.db_url = f"sqlite:///{self.workdir / 'load.db'}"
        self.app: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self._logs: list[Any] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "SPLITLAB_DB": self.db_url, "SPLITLAB_NO_WORKER": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("SPLITLAB_READONLY", None)
        return env

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (closed in close())
        self._logs.append(log)
        return subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def start_app(self) -> None:
        self.app = self._spawn("app", [sys.executable, "-m", "streamlit", "run", "app.py",
                                       "--server.port", str(self.port), "--server.address", HOST,
                                       "--server.headless", "true", "--browser.gatherUsageStats", "false",
                                       "--server.fileWatcherType", "none"])

    def wait_for_app(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive(self.app, "app")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}/_stcore/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"the app did not answer within {timeout} s; see {self.workdir / 'app.log'}")

    def start_worker(self) -> None:
        self.worker = self._spawn("worker", [sys.executable, "-m", "engine", "worker", "--db", self.db_url])

    def engine_cli(self, *argv: str) -> str:
        done = subprocess.run([sys.executable, "-m", "engine", *argv], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"python -m engine {' '.join(argv)} failed:\n{done.stderr}")
        return done.stdout

    def submit(self, *flags: str) -> int:
        """Queue a run (``engine submit`` flags; default: :data:`RUN_FLAGS`); returns its id."""
        return int(self.engine_cli("submit", "--db", self.db_url, *(flags or RUN_FLAGS)).split()[-1])

    def cancel(self, run_id: int) -> None:
        self.engine_cli("cancel", "--db", self.db_url, str(run_id))

    def database(self):
        from storage.db import connect
        return connect(self.db_url)

    def run_info(self, run_id: int):
        from storage import queries
        with self.database().read() as session:
            return queries.get_run(session, run_id)

    def latest_round(self, run_id: int) -> int | None:
        """The round of the run's latest evaluation row (None before the first)."""
        from storage import queries
        with self.database().read() as session:
            latest = queries.latest_metrics(session, run_id)
        return None if latest is None else int(latest["round"])

    def history(self, run_id: int) -> list[dict[str, Any]]:
        from storage import queries
        with self.database().read() as session:
            return queries.history_rows(session, run_id)

    def wait_for_rows(self, run_id: int, rows: int, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until the run has ``rows`` evaluation rows (the worker is warm and training)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive(self.worker, "worker")
            if len(self.history(run_id)) >= rows:
                return
            time.sleep(0.5)
        raise TimeoutError(f"run {run_id} did not reach {rows} evaluations in {timeout} s; "
                           f"see {self.workdir / 'worker.log'}")

    def wait_for_end(self, run_id: int, timeout: float) -> bool:
        """Wait until the run is finished, failed or cancelled; report whether it is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run_info(run_id).status.is_terminal:
                return True
            time.sleep(0.5)
        return self.run_info(run_id).status.is_terminal

    def _check_alive(self, proc: subprocess.Popen | None, name: str) -> None:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the {name} exited with code {proc.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def close(self) -> None:
        for proc in (self.worker, self.app):
            if proc is not None:
                stop_group(proc)
        self.worker = self.app = None
        for log in self._logs:
            log.close()
        self._logs.clear()
        from storage.db import close
        close(self.db_url)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group ``proc`` leads, SIGKILL after :data:`STOP_TIMEOUT_S`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # the leader may be gone while a child of its group lives on
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class RowClock:
    """Polls the run: when each evaluation row appears, and each change of ``last_round``."""

    def __init__(self, lab: Lab, run_id: int):
        self.lab, self.run_id = lab, run_id
        self.arrivals: dict[int, float] = {}          # evaluated round -> first seen (monotonic)
        self.progress: list[tuple[float, int]] = []   # (first seen, last_round) at each change
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._poll(), name="row-clock")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _poll(self) -> None:
        while True:
            latest, last_round, now = self.lab.latest_round(self.run_id), self.lab.run_info(self.run_id).last_round, \
                time.monotonic()
            if latest is not None and latest not in self.arrivals:
                self.arrivals[latest] = now
            if not self.progress or self.progress[-1][1] != last_round:
                self.progress.append((now, last_round))
            await asyncio.sleep(POLL_S)

    def s_per_round(self, since: float, until: float) -> float | None:
        """Seconds per round between the first and last change of ``last_round`` in [since, until)."""
        inside = [(t, r) for t, r in self.progress if since <= t < until]
        if len(inside) < 2 or inside[-1][1] <= inside[0][1]:
            return None
        return (inside[-1][0] - inside[0][0]) / (inside[-1][1] - inside[0][1])


@dataclass
class Phase:
    """One measured interval: its viewers, the CPU each process used, and the worker's pace."""

    index: int
    viewers: int
    seconds: float
    connect_s: float = 0.0
    server_cpu_s: float = 0.0
    worker_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    evaluations: int = 0
    rounds: int = 0
    progress_s_per_round: float | None = None
    engine_s_per_round: float | None = None
    per_viewer: list[dict] = field(default_factory=list)

    @property
    def server_cpu_pct(self) -> float:
        return 100 * self.server_cpu_s / self.seconds

    @property
    def worker_cpu_pct(self) -> float:
        return 100 * self.worker_cpu_s / self.seconds

    def as_dict(self) -> dict:
        totals = Counter()
        for viewer in self.per_viewer:
            totals.update(viewer["elements"])
        return {**{k: v for k, v in asdict(self).items() if k != "per_viewer"},
                "server_cpu_pct": round(self.server_cpu_pct, 1), "worker_cpu_pct": round(self.worker_cpu_pct, 1),
                "client_cpu_pct": round(100 * self.client_cpu_s / self.seconds, 1),
                "bytes_per_viewer_per_s": self.bytes_per_viewer_per_s(),
                "elements_all_viewers": dict(totals),
                "problems": sorted({p for v in self.per_viewer for p in v["problems"]}),
                "per_viewer": self.per_viewer}

    def bytes_per_viewer_per_s(self) -> float | None:
        if not self.per_viewer:
            return None
        return round(statistics.fmean(v["bytes"] for v in self.per_viewer) / self.seconds, 1)


def worker_pace(history: list[dict], arrivals: dict[int, float], since: float, until: float) -> dict:
    """Evaluations in [since, until), and the engine's seconds per round over the evaluation
    windows that lie inside it (a window lies inside when the row before it appeared inside too)."""
    inside = sorted(int(row["round"]) for row in history if since <= arrivals.get(int(row["round"]), -1) < until)
    by_round = {int(row["round"]): row for row in history}
    ordered = sorted(by_round)
    pace: dict[str, Any] = {"evaluations": len(inside), "rounds": 0, "engine_s_per_round": None}
    if not inside:
        return pace
    first, last = inside[0], inside[-1]
    before = ordered[ordered.index(first) - 1] if ordered.index(first) > 0 else None
    start = before if before is not None and since <= arrivals.get(before, -1) else first
    if last > start:
        pace["rounds"] = last - start
        pace["engine_s_per_round"] = (by_round[last]["wall_s"] - by_round[start]["wall_s"]) / (last - start)
    return pace


async def measure_phase(lab: Lab, clock: RowClock, run_id: int, index: int, viewers: int,
                        seconds: float, page: str) -> Phase:
    path, query = PAGES[page]
    started = time.monotonic()
    sessions: list[StreamlitSession] = []
    if viewers:
        sessions = await open_sessions(HOST, lab.port, path, query.format(run_id=run_id), viewers)
    phase = Phase(index, viewers, seconds, connect_s=round(time.monotonic() - started, 2))
    assert lab.app is not None and lab.worker is not None
    cpu0 = cpu_seconds(lab.app.pid), cpu_seconds(lab.worker.pid), own_cpu_seconds()
    t0 = time.monotonic()
    try:
        await asyncio.sleep(seconds)
    finally:
        t1 = time.monotonic()
        cpu1 = cpu_seconds(lab.app.pid), cpu_seconds(lab.worker.pid), own_cpu_seconds()
        await close_sessions(sessions)
    phase.seconds = t1 - t0
    phase.server_cpu_s, phase.worker_cpu_s, phase.client_cpu_s = (round(b - a, 3) for a, b in zip(cpu0, cpu1))
    phase.per_viewer = [s.stats.summary(t0, t1) for s in sessions]
    pace = worker_pace(lab.history(run_id), clock.arrivals, t0, t1)
    phase.evaluations, phase.rounds, phase.engine_s_per_round = pace["evaluations"], pace["rounds"], \
        pace["engine_s_per_round"]
    phase.progress_s_per_round = clock.s_per_round(t0, t1)
    return phase


def summarize(phases: list[Phase], viewers: int) -> dict:
    """Viewer phases against phases without viewers: means over the phases of each kind."""
    def mean(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.fmean(present) if present else None

    idle = [p for p in phases if p.viewers == 0]
    busy = [p for p in phases if p.viewers > 0]
    out: dict[str, Any] = {"viewers": viewers}
    for name, get in (("server_cpu_pct", lambda p: p.server_cpu_pct), ("worker_cpu_pct", lambda p: p.worker_cpu_pct),
                      ("progress_s_per_round", lambda p: p.progress_s_per_round),
                      ("engine_s_per_round", lambda p: p.engine_s_per_round)):
        out[name] = {"none": mean([get(p) for p in idle]), "viewers": mean([get(p) for p in busy])}
    server = out["server_cpu_pct"]
    out["server_cpu_pct_per_viewer"] = (server["viewers"] - server["none"]) / viewers if viewers else None
    # one Python process: near one core it is saturated, viewers wait, and the figure per viewer is a floor
    out["server_saturated"] = bool(server["viewers"] and server["viewers"] >= SATURATED_PCT)
    for name in ("progress_s_per_round", "engine_s_per_round"):
        none, busy_value = out[name]["none"], out[name]["viewers"]
        out[name]["slowdown_pct"] = 100 * (busy_value / none - 1) if none and busy_value else None
    out["bytes_per_viewer_per_s"] = mean([p.bytes_per_viewer_per_s() for p in busy])
    charts = [sum(v["elements"].get("plotly_chart", 0) for v in p.per_viewer) / (len(p.per_viewer) * p.seconds)
              for p in busy if p.per_viewer]
    out["plotly_charts_per_viewer_per_min"] = 60 * statistics.fmean(charts) if charts else None
    return _rounded(out)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def table(summary: dict, phases: list[Phase]) -> str:
    def fmt(value: float | None, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    header = (f"{'phase':>5} {'viewers':>7} {'server CPU %':>12} {'worker CPU %':>12} {'s/round':>8} "
              f"{'s/round engine':>14} {'B/viewer/s':>10} {'charts':>6}")
    lines = [header]
    for p in phases:
        charts = sum(v["elements"].get("plotly_chart", 0) for v in p.per_viewer)
        lines.append(f"{p.index:>5} {p.viewers:>7} {p.server_cpu_pct:>12.1f} {p.worker_cpu_pct:>12.1f} "
                     f"{fmt(p.progress_s_per_round, '.3f'):>8} {fmt(p.engine_s_per_round, '.3f'):>14} "
                     f"{fmt(p.bytes_per_viewer_per_s(), ',.0f'):>10} {charts:>6}")
    n = summary["viewers"]
    saturated = " (at least: the server was saturated, its viewers waited)" if summary["server_saturated"] else ""
    lines += ["", f"server CPU per viewer: {fmt(summary['server_cpu_pct_per_viewer'], '.1f')} % of a core{saturated}"]
    for name, label in (("progress_s_per_round", "worker s/round (progress):    "),
                        ("engine_s_per_round", "worker s/round (engine timer):")):
        figure = summary[name]
        lines.append(f"{label} {fmt(figure['none'], '.3f')} without viewers, {fmt(figure['viewers'], '.3f')} "
                     f"with {n}: {fmt(figure['slowdown_pct'], '+.1f')} %")
    lines.append(f"bytes per viewer per second: {fmt(summary['bytes_per_viewer_per_s'], ',.0f')}; "
                 f"plotly charts per viewer per minute: {fmt(summary['plotly_charts_per_viewer_per_min'], '.1f')}")
    return "\n".join(lines)


async def measure(lab: Lab, run_id: int, args: argparse.Namespace) -> list[Phase]:
    # one visit to / first, as on a server someone has opened: the very first visits of a fresh
    # server run pages/<name>.py without app.py (Streamlit's pages/ folder mode), not measured here
    await close_sessions(await open_sessions(HOST, lab.port, "", "", 1))
    phases = []
    async with RowClock(lab, run_id) as clock:
        for index, viewers in enumerate([0, args.viewers] * args.pairs):
            phase = await measure_phase(lab, clock, run_id, index, viewers, args.seconds, args.page)
            phases.append(phase)
            print(f"phase {index}: {viewers} viewers, server {phase.server_cpu_pct:.1f} % CPU, "
                  f"worker {phase.worker_cpu_pct:.1f} %, {phase.evaluations} evaluations", flush=True)
            for problem in phase.as_dict()["problems"]:
                print(f"  a viewer got: {problem}", flush=True)
            if lab.run_info(run_id).status.is_terminal:
                raise RuntimeError(f"run {run_id} ended during phase {index}: queue a longer one")
            await asyncio.sleep(args.settle)
    return phases


def git_commit() -> str | None:
    """The commit of the code measured (None outside a git checkout); '+' when files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def streamlit_version() -> str:
    from importlib.metadata import version
    return version("streamlit")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.load.viewers", description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=10, help="sessions in each viewer phase")
    parser.add_argument("--seconds", type=float, default=60, help="length of each phase")
    parser.add_argument("--pairs", type=int, default=2, help="(none, viewers) phase pairs")
    parser.add_argument("--page", choices=sorted(PAGES), default="live", help="the page the viewers open")
    parser.add_argument("--settle", type=float, default=2, help="pause between phases (s)")
    parser.add_argument("--out", type=Path, help="write the phases and summary here as JSON")
    parser.add_argument("--workdir", type=Path, help="keep the database and logs here (else a temporary folder)")
    parser.add_argument("--run-flags", default=" ".join(RUN_FLAGS), help="the flags of `engine submit`")
    parser.add_argument("--note", default="", help="a line kept in the JSON (which code was measured, ...)")
    args = parser.parse_args(argv)
    if not 1 <= args.viewers <= 200 or args.seconds <= 0 or not 1 <= args.pairs <= 10:
        parser.error("--viewers 1..200, --seconds > 0, --pairs 1..10")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the app and the worker
    with tempfile.TemporaryDirectory(prefix="splitlab-load-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        load_before = os.getloadavg()
        with Lab(workdir) as lab:
            lab.start_app()
            run_id = lab.submit(*args.run_flags.split())
            lab.start_worker()
            lab.wait_for_app()
            lab.wait_for_rows(run_id, rows=2)
            print(f"app on http://{HOST}:{lab.port}, run {run_id} training; measuring", flush=True)
            phases = asyncio.run(measure(lab, run_id, args))
        summary = summarize(phases, args.viewers)
    report = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "app": {"root": str(ROOT), "commit": git_commit(), "streamlit": streamlit_version(),
                      "env": {k: v for k, v in os.environ.items() if k.startswith(RECORDED_ENV)}},
              "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                          "note": "shared machine: other work ran at the same time, figures are indicative"},
              "summary": summary, "phases": [p.as_dict() for p in phases]}
    print(table(summary, phases))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
