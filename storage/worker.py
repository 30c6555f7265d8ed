"""The worker: claims queued runs one at a time and trains them with the engine, recording as it goes.

Per run: the metrics of every evaluation step and the images every ``image_every`` rounds are
written as they come; an exact checkpoint every ``checkpoint_every`` rounds; a heartbeat from a
timer thread, which also learns of cancel requests and takeovers. A run whose worker died is
queued again by the next worker to look: at once if that worker was a process on the same host
that no longer exists, else once its heartbeat is older than ``stale_after``. It resumes before
newer runs begin, from its checkpoint: the metric and image rows after it are dropped and
recorded again, so the resumed run ends exactly as an uninterrupted one would.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from engine.config import ConfigError, validate_config
from engine.data import DatasetNotFound
from engine.step import RoundLosses
from engine.trainer import Callbacks, Trainer
from storage.db import Database
from storage.models import RunStatus
from storage.queries import (
    RunInfo,
    RunLost,
    StoredCheckpoint,
    append_images,
    append_metrics,
    claim_next_run,
    forget_stale_workers,
    heartbeat,
    known_worker_ids,
    mark_cancelled,
    mark_failed,
    mark_finished,
    release_run,
    remove_worker,
    requeue_stale_runs,
    rewind_to_checkpoint,
    save_checkpoint,
)

log = logging.getLogger("splitlab.worker")

MAX_HEARTBEAT_INTERVAL = 1.0  # seconds; also how long a cancel request may wait to be seen


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker paces itself."""

    stale_after: float = 15.0   # seconds without a heartbeat before a running run is taken over
    checkpoint_every: int = 50  # rounds between checkpoints
    poll: float = 2.0           # seconds between looks at an empty queue
    once: bool = False          # exit when the queue is empty instead of waiting for runs
    exit_with_parent: bool = False  # stop as on SIGTERM once the process that started the worker is gone

    def __post_init__(self) -> None:
        if self.stale_after <= 0 or self.checkpoint_every < 1 or self.poll <= 0:
            raise ValueError("stale_after and poll must be > 0 and checkpoint_every >= 1")

    @property
    def heartbeat_interval(self) -> float:
        """Several heartbeats fit in ``stale_after``, so one late beat never looks like a dead worker."""
        return min(MAX_HEARTBEAT_INTERVAL, self.stale_after / 4)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def process_gone(worker_id: str) -> bool:
    """True if ``worker_id`` is ``host:pid`` of this host and that process has ended: the worker
    died (``kill -9``, a crash). False whenever unsure: another host, another naming, or a live
    process (which may be a new one that reused the pid; the heartbeat timeout covers that case).

    Workers that share a host name must share a PID namespace too (containers on the host's
    network do not): give those an explicit ``--worker-id``."""
    host, _, pid = worker_id.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) <= 0:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    return _is_zombie(int(pid))


def _is_zombie(pid: int) -> bool:
    """An ended process its parent has not reaped yet (Linux; False where /proc is missing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


class Worker:
    """Trains queued runs from one database, one at a time, until stopped."""

    def __init__(self, db: Database, options: WorkerOptions = WorkerOptions(), worker_id: str | None = None):
        self.db, self.options = db, options
        self.worker_id = worker_id or default_worker_id()
        self.shutdown = threading.Event()
        self.parent_pid = os.getppid()

    def stop(self) -> None:
        """Stop after the current round: the run in progress is checkpointed and queued again."""
        self.shutdown.set()

    def stopping(self) -> bool:
        """Whether to stop: :meth:`stop` was called (SIGTERM, SIGINT) or, with ``exit_with_parent``,
        the process that started this worker is gone (an orphan is adopted: its parent pid changes)."""
        if self.options.exit_with_parent and not self.shutdown.is_set() and os.getppid() != self.parent_pid:
            log.info("the process that started this worker (pid %d) is gone: stopping", self.parent_pid)
            self.stop()
        return self.shutdown.is_set()

    def run(self) -> int:
        """Train runs until stopped (with ``once``: until the queue is empty); returns how many were taken.

        While idle, the worker reports itself alive every ``poll`` seconds, at each look at the queue.
        """
        taken = 0
        try:
            while not self.stopping():
                run = self.claim()
                if run is None:
                    if self.options.once:
                        break
                    self.shutdown.wait(self.options.poll)
                    continue
                self.train(run)
                taken += 1
        finally:
            with self.db.write() as session:
                remove_worker(session, self.worker_id)
        return taken

    def claim(self) -> RunInfo | None:
        """Queue the runs of dead workers again, then take the next queued run (None if there is none):
        a run some worker started before newer ones."""
        with self.db.write() as session:
            dead = self._dead_workers_here(session)
            for run_id in requeue_stale_runs(session, self.options.stale_after, dead):
                log.info("run %d: its worker is gone; queued again", run_id)
            forget_stale_workers(session, self.options.stale_after, dead)
            run = claim_next_run(session, self.worker_id)
        if run is not None:
            log.info("run %d claimed by %s (attempt %d)", run.id, self.worker_id, run.attempts)
        return run

    @staticmethod
    def _dead_workers_here(session: Session) -> set[str]:
        """The workers known to the database whose process on this host has ended."""
        dead = {worker_id for worker_id in known_worker_ids(session) if process_gone(worker_id)}
        for worker_id in sorted(dead):
            log.info("worker %s is gone: no such process on this host", worker_id)
        return dead

    def train(self, run: RunInfo) -> RunStatus | None:
        """Train a claimed run to its end and record how it ended; None if another worker took it over."""
        try:
            checkpoint = self._rewind(run)
            with _Heartbeat(self.db, run.id, self.worker_id, self.options.heartbeat_interval,
                            last_round=checkpoint.round if checkpoint else 0) as beat:
                trainer = _build_trainer(run, checkpoint)
                recorder = _Recorder(self.db, run.id, self.worker_id, self.options.checkpoint_every, beat,
                                     self.stopping)
                result = trainer.run(recorder)
            return self._record_end(run, trainer, result["summary"], beat)
        except RunLost as lost:
            log.warning("%s; dropped here", lost)
            return None
        except (ConfigError, DatasetNotFound) as err:  # the run's own fault: its message says it all
            log.error("run %d failed: %s", run.id, err)
            return self._record_failure(run, err)
        except Exception as err:  # anything else: the traceback goes to the worker's log; the worker goes on
            log.exception("run %d failed", run.id)
            return self._record_failure(run, err)

    def _rewind(self, run: RunInfo) -> StoredCheckpoint | None:
        with self.db.write() as session:
            checkpoint = rewind_to_checkpoint(session, run.id, self.worker_id)
        if checkpoint is not None:
            log.info("run %d resumes from its checkpoint at round %d", run.id, checkpoint.round)
        return checkpoint

    def _record_end(self, run: RunInfo, trainer: Trainer, summary: dict[str, Any], beat: _Heartbeat) -> RunStatus:
        """Finished, cancelled, or (on shutdown) checkpointed and queued again."""
        if not summary["stopped"]:
            status = RunStatus.FINISHED
            with self.db.write() as session:
                mark_finished(session, run.id, self.worker_id, summary, trainer.round)
        elif beat.lost.is_set():
            raise RunLost(f"run {run.id} was taken over by another worker")
        elif beat.cancel.is_set():
            status = RunStatus.CANCELLED
            with self.db.write() as session:
                mark_cancelled(session, run.id, self.worker_id, summary, trainer.round)
        else:
            status = RunStatus.QUEUED
            data = trainer.checkpoint_bytes()
            with self.db.write() as session:
                save_checkpoint(session, run.id, self.worker_id, trainer.round, data)
                release_run(session, run.id, self.worker_id, trainer.round)
        log.info("run %d %s after %d rounds", run.id, status.value, trainer.round)
        return status

    def _record_failure(self, run: RunInfo, err: Exception) -> RunStatus | None:
        try:
            with self.db.write() as session:
                mark_failed(session, run.id, self.worker_id, failure_text(err))
        except RunLost as lost:
            log.warning("%s; its failure is not recorded", lost)
            return None
        return RunStatus.FAILED


def _build_trainer(run: RunInfo, checkpoint: StoredCheckpoint | None) -> Trainer:
    if checkpoint is not None:
        return Trainer.from_checkpoint(checkpoint.data)
    return Trainer(validate_config(run.config))


class _Heartbeat:
    """Reports the worker alive from a timer thread with sessions of its own, and learns whether to stop."""

    def __init__(self, db: Database, run_id: int, worker_id: str, interval: float, last_round: int):
        self.db, self.run_id, self.worker_id, self.interval = db, run_id, worker_id, interval
        self.last_round = last_round  # set by the training thread after every round
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-run-{run_id}", daemon=True)

    @property
    def stop_requested(self) -> bool:
        return self.cancel.is_set() or self.lost.is_set()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._done.wait(self.interval):
            try:
                self._beat()
            except SQLAlchemyError as err:  # a locked or unreachable database: try again next beat
                log.warning("run %d: heartbeat failed: %s", self.run_id, err)

    def _beat(self) -> None:
        with self.db.write() as session:
            reply = heartbeat(session, self.run_id, self.worker_id, self.last_round)
        if not reply.owned:
            self.lost.set()
        if reply.cancel_requested:
            self.cancel.set()


class _Recorder(Callbacks):
    """Writes what the trainer reports; stops it on cancel, takeover or worker shutdown (signal, parent gone)."""

    def __init__(self, db: Database, run_id: int, worker_id: str, checkpoint_every: int, beat: _Heartbeat,
                 worker_stopping: Callable[[], bool]):
        self.db, self.run_id, self.worker_id = db, run_id, worker_id
        self.checkpoint_every, self.beat, self.worker_stopping = checkpoint_every, beat, worker_stopping

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None:
        with self.db.write() as session:
            append_metrics(session, self.run_id, self.worker_id, [record])

    def on_images(self, trainer: Trainer, round_: int, snapshot: dict) -> None:
        with self.db.write() as session:
            append_images(session, self.run_id, self.worker_id, round_, snapshot)

    def on_round(self, trainer: Trainer, losses: RoundLosses) -> None:
        self.beat.last_round = trainer.round
        if trainer.round % self.checkpoint_every == 0 and trainer.round < trainer.cfg.rounds:
            data = trainer.checkpoint_bytes()  # serialised before the write lock is taken
            with self.db.write() as session:
                save_checkpoint(session, self.run_id, self.worker_id, trainer.round, data)

    def should_stop(self, trainer: Trainer) -> bool:
        return self.beat.stop_requested or self.worker_stopping()


def failure_text(err: BaseException) -> str:
    """What a failed run's page and ``engine status`` say: a refusal the user can act on (bad input or
    missing files: ValueError, OSError, DatasetNotFound) in its own words; anything else (a bug, the
    GPU) with its class, which tells a developer where to look (the worker's log has the traceback)."""
    text = str(err)
    return text if isinstance(err, (ValueError, OSError)) and text else f"{type(err).__name__}: {text}"
