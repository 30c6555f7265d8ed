"""A dashboard's worker: started with the server, watched every second, started again when it stops.

``make run`` starts the server through ``python app.py``, which starts the supervisor before the
first page is served, so queued and interrupted runs never wait for a visitor (``streamlit run
app.py`` starts it at the first page instead). The worker is a child process (``python -m engine
worker --exit-with-parent``): it stops with the server. When it stops on its own (``kill -9``, a
crash) the supervisor notices within ``check_every`` seconds, starts another, and keeps one line
for people about what happened ("The worker (pid 812) stopped (killed by SIGKILL) at 10:42:07;
started a new one (pid 845)."), which the sidebar shows. A worker that dies right after starting
(a broken install) is started again after a pause that doubles up to a minute, and the line says so.

No worker is started while another one serves the same database (started by hand, or by another
dashboard): the queue needs one, not one per dashboard.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from storage import queries
from storage.db import connect, resolve_db_url

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("splitlab.supervisor")

LIVE_WORKER_S = 10.0  # a worker whose heartbeat is newer than this counts as alive (it beats every 1-2 s)
QUICK_EXIT_S = 15.0   # a worker that fails (exit code > 0) this soon after it started is started again after a pause
MAX_PAUSE_S = 60.0
THREAD_NAME = "splitlab-worker-supervisor"


@dataclass(frozen=True)
class SupervisorState:
    """What the sidebar says about the dashboard's own worker."""

    pid: int | None          # the worker process this dashboard runs now (None: none)
    started_at: float | None  # time.time() when it started
    event: str | None         # the last thing that happened to it, in a sentence (None: nothing yet)
    problem: bool             # the event is a failure that is not fixed yet (waiting to try again)


def how_it_ended(returncode: int) -> str:
    """A process's end for people: "killed by SIGKILL", "exited with code 1", "exited"."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}" if -returncode == signal.SIGKILL else f"stopped by {name}"
    return "exited" if returncode == 0 else f"exited with code {returncode}"


def clock(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S")


class WorkerSupervisor:
    """Keeps one worker process alive for one database; :meth:`start` watches from a thread."""

    def __init__(self, db_url: str, cwd: str | os.PathLike, log_path: str | os.PathLike,
                 check_every: float = 1.0, command: list[str] | None = None):
        self.db_url, self.cwd, self.log_path, self.check_every = db_url, Path(cwd), Path(log_path), check_every
        self.command = command or [sys.executable, "-m", "engine", "worker", "--db", db_url, "--exit-with-parent"]
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self._started_at: float | None = None
        self._event: str | None = None
        self._problem = False
        self._failures = 0               # quick exits in a row
        self._next_try = 0.0             # time.monotonic() before which no worker is started
        self._ended: str | None = None   # how the last worker ended, until its successor starts

    # ---- the watching thread ------------------------------------------------------------------
    def start(self) -> None:
        """Start watching from a thread (once; later calls do nothing); its first look is at once."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._watch, name=THREAD_NAME, daemon=True)
            self._thread.splitlab_db_url, self._thread.splitlab_supervisor = self.db_url, self  # supervisor_for
            self._thread.start()

    def _watch(self) -> None:
        while True:
            try:
                self.check()
            except SQLAlchemyError as err:  # a locked or unreachable database: look again next time
                log.warning("worker supervisor: %s", err)
            except Exception:  # never let the watcher die: the dashboard would lose its worker for good
                log.exception("worker supervisor")
            time.sleep(self.check_every)

    def check(self) -> None:
        """One look: note a worker that stopped, and start one if none serves the database."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is not None:
                self._note_end(self._proc)
            if self._proc is not None or time.monotonic() < self._next_try:
                return
        if self._other_worker_alive():
            return
        with self._lock:
            if self._proc is None:
                self._launch()

    def _note_end(self, proc: subprocess.Popen) -> None:
        lived = time.time() - (self._started_at or time.time())
        how = how_it_ended(proc.returncode)
        self._proc, self._started_at = None, None
        if proc.returncode > 0 and lived < QUICK_EXIT_S:  # it failed at start-up (a broken install): pause
            self._failures += 1
            pause = min(MAX_PAUSE_S, 2.0 ** self._failures)
            self._next_try = time.monotonic() + pause
            self._event = (f"The worker (pid {proc.pid}) {how} {lived:.0f} s after it started, at "
                           f"{clock(time.time())}; trying again in {pause:.0f} s. Its messages are in {self.log_path}.")
            self._problem = True
        else:
            self._failures = 0
            self._ended = f"The worker (pid {proc.pid}) stopped ({how}) at {clock(time.time())}"
        log.warning("worker %d %s", proc.pid, how)

    def _other_worker_alive(self) -> bool:
        """Another worker serves this database: it reported in the last ``LIVE_WORKER_S`` seconds and,
        if it is a process on this host, that process still exists."""
        from storage.worker import process_gone  # imports torch: only in this thread, after the server is up

        with connect(self.db_url).read() as session:
            workers = queries.live_workers(session, LIVE_WORKER_S)
        return any(not process_gone(w.worker_id) for w in workers)

    def _launch(self) -> None:
        out = open(self.log_path, "ab")  # noqa: SIM115 (the child owns it)
        try:
            self._proc = subprocess.Popen(self.command, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        finally:
            out.close()
        self._started_at = time.time()
        if self._ended is not None:
            self._event, self._ended = f"{self._ended}; started a new one (pid {self._proc.pid}).", None
        elif self._problem:
            self._event = f"Started the worker again (pid {self._proc.pid}) at {clock(self._started_at)}."
        self._problem = False
        log.info("worker %d started", self._proc.pid)

    # ---- for the sidebar ------------------------------------------------------------------------
    def state(self) -> SupervisorState:
        with self._lock:
            pid = self._proc.pid if self._proc is not None and self._proc.poll() is None else None
            return SupervisorState(pid, self._started_at if pid else None, self._event, self._problem)

    def stop(self) -> None:
        """Stop the worker (tests; the server's own end stops it through ``--exit-with-parent``). The
        watching thread goes on: call it only on a supervisor that is about to be dropped."""
        with self._lock:
            proc, self._proc = self._proc, None
            self._next_try = float("inf")
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)


_registry_lock = threading.Lock()


def supervisor_for(db_url: str, cwd: str | os.PathLike, log_path: str | os.PathLike) -> WorkerSupervisor:
    """The one supervisor of this process for ``db_url``, watching (started on first use).

    It is found through its thread, not a module variable: with Streamlit's file watcher on (it is off in
    .streamlit/config.toml), a changed file unloads the app's modules, and a second copy of this module
    must not start a second supervisor (a second worker, and a sidebar reading the one that knows nothing)."""
    with _registry_lock:
        for thread in threading.enumerate():
            if getattr(thread, "splitlab_db_url", None) == db_url:
                return thread.splitlab_supervisor
        sup = WorkerSupervisor(db_url, cwd, log_path)
        sup.start()
        return sup


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false")


def autostart_disabled() -> bool:
    """The dashboard starts no worker: ``SPLITLAB_NO_WORKER=1``, or a read-only host (``SPLITLAB_READONLY=1``)."""
    return _flag("SPLITLAB_NO_WORKER") or _flag("SPLITLAB_READONLY")


def dashboard_supervisor() -> WorkerSupervisor | None:
    """The dashboard's supervisor for ``$SPLITLAB_DB``, watching (None where no worker is started). Its
    worker writes to ``$SPLITLAB_WORKER_LOG`` (default ``worker.log`` beside app.py)."""
    if autostart_disabled():
        return None
    return supervisor_for(resolve_db_url(), ROOT, os.environ.get("SPLITLAB_WORKER_LOG", ROOT / "worker.log"))


def serve_dashboard(script: Path, args: list[str]) -> int:
    """``python app.py [streamlit options]``: start the worker, then serve ``script`` with Streamlit in this
    process (so the worker's parent is the server, and it stops with it)."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web import cli

    # app.py names its pages with st.navigation. Left to itself, Streamlit assumes the folder layout
    # of multipage apps until a first script run calls st.navigation, so the server's first visitor
    # saw the files of pages/ (app, common, figures, form fields, ...) in the sidebar for a second or two.
    PagesManager.uses_pages_directory = False
    dashboard_supervisor()
    sys.argv = ["streamlit", "run", str(script), *args]
    return cli.main()
