"""Every read and write of a SplitLab database, as plain functions taking a ``Session``.

The caller owns the session and its transaction (:meth:`storage.db.Database.read` and
:meth:`~storage.db.Database.write`); nothing here commits. Results are dataclasses, dicts or
DataFrames, never live ORM objects.

The functions a worker calls on the run it trains take its ``worker_id`` and raise
:class:`RunLost` when the run is no longer its own (taken over after a stale heartbeat, or
deleted), so a worker that was presumed dead can never write over its successor.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.orm import Session

from storage.arrays import SCORE_KEYS, pack_client_snapshot, unpack_client_snapshot
from storage.db import StorageError
from storage.models import METRIC_COLUMNS, Checkpoint, Image, Metric, Run, RunStatus, WorkerRecord

if TYPE_CHECKING:  # only types here: reading the database needs no torch, the worker and the CLI no pandas
    import pandas as pd

    from engine.config import RunConfig


class RunNotFound(StorageError):
    """No run has this id."""


class RunLost(StorageError):
    """The run is no longer held by this worker (another worker took it over, or it was deleted)."""


@dataclass(frozen=True)
class RunInfo:
    """A run as the queue and the dashboard see it."""

    id: int
    name: str
    status: RunStatus
    config: dict[str, Any]
    seed: int
    rounds: int
    last_round: int
    attempts: int
    worker_id: str | None
    heartbeat_at: datetime | None
    cancel_requested: bool
    error: str | None
    summary: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    checkpoint_round: int | None = None  # the round of its stored checkpoint (where a resume starts); None: none

    @property
    def progress(self) -> float:
        """Fraction of the rounds done, 0..1."""
        return self.last_round / self.rounds

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 (UTC), the status as its name, progress added."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat() + "Z"
        out["status"] = self.status.value
        out["progress"] = self.progress
        return out


@dataclass(frozen=True)
class WorkerInfo:
    """A worker as it last reported itself."""

    worker_id: str
    run_id: int | None  # the run it trains; None while it waits for one
    started_at: datetime
    heartbeat_at: datetime
    host: str | None = None


@dataclass(frozen=True)
class HeartbeatReply:
    """What a worker learns when it reports it is alive."""

    owned: bool             # False: the run was taken over or deleted; stop without writing
    cancel_requested: bool


@dataclass(frozen=True)
class StoredCheckpoint:
    round: int
    data: bytes
    saved_at: datetime


@dataclass(frozen=True)
class ImageRecord:
    """One client's reconstruction snapshot at one round (images as float32 in [0, 1])."""

    round: int
    client: int
    inputs: np.ndarray                    # [k, C, H, W]
    labels: np.ndarray                    # [k]
    smashed: np.ndarray                   # [k, channels, h, w] or [k, d]
    reconstruction: np.ndarray | None  # [k, C, H, W]; None without an InfoPro decoder
    mse: float | None
    # Only where leakage was measured (privacy.every), for the attacked client: the server's inversion
    # of the same images [k, C, H, W], its PSNR (dB) and SSIM per image [k], and those of ``reconstruction``.
    attack: np.ndarray | None = None
    attack_psnr: np.ndarray | None = None
    attack_ssim: np.ndarray | None = None
    psnr: np.ndarray | None = None
    ssim: np.ndarray | None = None


MAX_RUN_ID = 2**63 - 1  # the largest id a database row can hold; a longer number names no run, and is never queried
_RUN_ID = re.compile(r"[0-9]{1,19}")


def parse_run_id(text: str | None) -> int | None:
    """A run id as a person types it (a link's ``?run=``, a command's RUN_ID): whole digits,
    1 .. 2**63-1; None for anything else, which no run can have."""
    if text is None or not _RUN_ID.fullmatch(text.strip()):
        return None
    value = int(text.strip())
    return value if 1 <= value <= MAX_RUN_ID else None


def utcnow() -> datetime:
    """Now by this machine's clock, as the naive UTC datetime every table stores."""
    return datetime.now(UTC).replace(tzinfo=None)


def db_now(session: Session) -> datetime:
    """Now by the database's clock (naive UTC). Every time the queue stores or compares (heartbeats,
    staleness, claims, ends) comes from here, so workers on several machines need not agree on the
    time. SQLite is a file on one machine: its clock is that machine's."""
    if session.get_bind().dialect.name == "postgresql":
        return session.scalar(select(func.timezone("UTC", func.clock_timestamp())))
    return utcnow()


# ---- the queue ------------------------------------------------------------------------------
def create_run(session: Session, cfg: RunConfig) -> int:
    """Queue a run of ``cfg``; returns its id."""
    run = Run(name=cfg.name, status=RunStatus.QUEUED, config=cfg.model_dump(mode="json"), seed=cfg.seed,
              rounds=cfg.rounds, created_at=db_now(session))
    session.add(run)
    session.flush()
    return run.id


def claim_next_run(session: Session, worker_id: str) -> RunInfo | None:
    """Move the next queued run to running for ``worker_id``; None when nothing is queued.
    Either way the worker is recorded as alive (training that run, or idle).

    The next run is the oldest one a worker already started (a lost worker's, or one given back
    on shutdown: it resumes before newer runs begin), else the oldest queued run. Atomic when
    called in a :meth:`~storage.db.Database.write` transaction: SQLite holds the write lock from
    its start; PostgreSQL locks the row and other workers skip it.
    """
    run = session.scalars(_oldest_queued(started=True)).first() or session.scalars(_oldest_queued()).first()
    if run is not None:
        now = db_now(session)
        run.status, run.worker_id, run.heartbeat_at = RunStatus.RUNNING, worker_id, now
        run.started_at = run.started_at or now
        run.attempts += 1
    _worker_alive(session, worker_id, run.id if run else None)
    return None if run is None else _info(run, _checkpoint_round(session, run.id))


def known_worker_ids(session: Session) -> set[str]:
    """Every worker that holds a running run or is in the workers table (alive, or not yet forgotten)."""
    holding = session.scalars(select(Run.worker_id).where(Run.status == RunStatus.RUNNING, Run.worker_id.is_not(None)))
    return set(holding) | set(session.scalars(select(WorkerRecord.worker_id)))


def requeue_stale_runs(session: Session, stale_after: float, dead_workers: Collection[str] = ()) -> list[int]:
    """Queue again the running runs whose heartbeat is older than ``stale_after`` seconds, or whose
    worker is in ``dead_workers`` (known to be gone, e.g. its process no longer exists); their ids.

    Their checkpoints stay, so the next worker resumes them. A stale run whose cancel was
    requested is marked cancelled instead. Heartbeats and the cutoff are the database's clock
    (:func:`db_now`): the worker hosts' clocks do not matter.
    """
    cutoff = db_now(session) - timedelta(seconds=stale_after)
    lost = (Run.heartbeat_at < cutoff) | Run.worker_id.in_(list(dead_workers))
    stale = session.scalars(select(Run).where(Run.status == RunStatus.RUNNING, lost)
                            .with_for_update(skip_locked=True)).all()
    requeued = []
    for run in stale:
        run.worker_id, run.heartbeat_at = None, None
        if run.cancel_requested:
            run.status, run.finished_at = RunStatus.CANCELLED, db_now(session)
        else:
            run.status = RunStatus.QUEUED
            requeued.append(run.id)
    session.flush()
    return requeued


def heartbeat(session: Session, run_id: int, worker_id: str, last_round: int) -> HeartbeatReply:
    """Record that ``worker_id`` is alive and has done ``last_round`` rounds of its run; report whether to stop."""
    result = session.execute(
        update(Run).where(Run.id == run_id, Run.worker_id == worker_id, Run.status == RunStatus.RUNNING)
        .values(heartbeat_at=db_now(session), last_round=last_round))
    owned = result.rowcount == 1
    _worker_alive(session, worker_id, run_id if owned else None)
    cancel = session.scalar(select(Run.cancel_requested).where(Run.id == run_id))
    return HeartbeatReply(owned=owned, cancel_requested=bool(cancel))


def live_workers(session: Session, max_age: float) -> list[WorkerInfo]:
    """The workers that reported themselves alive in the last ``max_age`` seconds, by id."""
    cutoff = db_now(session) - timedelta(seconds=max_age)
    records = session.scalars(select(WorkerRecord).where(WorkerRecord.heartbeat_at >= cutoff)
                              .order_by(WorkerRecord.worker_id))
    return [WorkerInfo(w.worker_id, w.run_id, w.started_at, w.heartbeat_at, w.host) for w in records]


def all_workers(session: Session) -> tuple[list[WorkerInfo], datetime]:
    """Every worker in the table (alive, or silent and not yet forgotten), by host and id, and the
    database's now to judge their heartbeats by."""
    records = session.scalars(select(WorkerRecord).order_by(WorkerRecord.host, WorkerRecord.worker_id))
    return [WorkerInfo(w.worker_id, w.run_id, w.started_at, w.heartbeat_at, w.host) for w in records], db_now(session)


def forget_stale_workers(session: Session, stale_after: float, dead_workers: Collection[str] = ()) -> None:
    """Remove the workers silent for more than ``stale_after`` seconds (killed, or their machine gone)
    and those in ``dead_workers``."""
    cutoff = db_now(session) - timedelta(seconds=stale_after)
    lost = (WorkerRecord.heartbeat_at < cutoff) | WorkerRecord.worker_id.in_(list(dead_workers))
    session.execute(delete(WorkerRecord).where(lost))


def remove_worker(session: Session, worker_id: str) -> None:
    """A worker that exits removes itself."""
    session.execute(delete(WorkerRecord).where(WorkerRecord.worker_id == worker_id))


def request_cancel(session: Session, run_id: int) -> RunStatus:
    """Cancel a run: a queued one at once, a running one at its worker's next round. Returns the status now."""
    run = _locked_run(session, run_id)
    if run.status == RunStatus.QUEUED:
        run.status, run.finished_at = RunStatus.CANCELLED, db_now(session)
    elif run.status == RunStatus.RUNNING:
        run.cancel_requested = True
    session.flush()
    return run.status


def release_run(session: Session, run_id: int, worker_id: str, last_round: int) -> None:
    """Give a running run back to the queue (the worker is shutting down; its checkpoint is current)."""
    run = _owned_run(session, run_id, worker_id)
    run.status, run.worker_id, run.heartbeat_at, run.last_round = RunStatus.QUEUED, None, None, last_round


def mark_finished(session: Session, run_id: int, worker_id: str, summary: dict[str, Any], last_round: int) -> None:
    """The run completed: store its summary and drop its checkpoint, which nothing needs any more."""
    _close(session, run_id, worker_id, RunStatus.FINISHED, summary=summary, last_round=last_round)
    session.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id))


def mark_cancelled(session: Session, run_id: int, worker_id: str, summary: dict[str, Any], last_round: int) -> None:
    """The run stopped on request, after ``last_round`` rounds."""
    _close(session, run_id, worker_id, RunStatus.CANCELLED, summary=summary, last_round=last_round)


def mark_failed(session: Session, run_id: int, worker_id: str, error: str) -> None:
    """The run raised ``error`` (a readable message); its metrics so far stay."""
    _close(session, run_id, worker_id, RunStatus.FAILED, error=error)


def delete_run(session: Session, run_id: int) -> None:
    """Delete a run with its metrics, images and checkpoint (a worker training it stops at its next heartbeat)."""
    if session.execute(delete(Run).where(Run.id == run_id)).rowcount == 0:
        raise RunNotFound(f"no run with id {run_id}")


# ---- what a worker records -------------------------------------------------------------------
def append_metrics(session: Session, run_id: int, worker_id: str, rows: Iterable[dict[str, Any]]) -> None:
    """Store evaluation steps (the engine's history rows); figures without a column go to ``extra``."""
    _owned_run(session, run_id, worker_id)
    for row in rows:
        extra = {key: value for key, value in row.items() if key not in METRIC_COLUMNS}
        session.add(Metric(run_id=run_id, **{key: row[key] for key in METRIC_COLUMNS}, extra=extra or None))
    session.flush()


def append_images(session: Session, run_id: int, worker_id: str, round_: int, snapshot: dict) -> None:
    """Store a :func:`engine.evaluate.reconstruction_snapshot`, one row per client shown."""
    _owned_run(session, run_id, worker_id)
    for client, entry in snapshot["clients"].items():
        arrays = pack_client_snapshot(snapshot["inputs"], snapshot["labels"], entry)
        session.add(Image(run_id=run_id, round=round_, client=int(client), arrays=arrays, mse=entry.get("mse")))
    session.flush()


def save_checkpoint(session: Session, run_id: int, worker_id: str, round_: int, data: bytes) -> None:
    """Replace the run's checkpoint. Commit it with the metrics up to ``round_`` so the two always agree."""
    _owned_run(session, run_id, worker_id)
    session.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id))
    session.add(Checkpoint(run_id=run_id, round=round_, data=data, saved_at=db_now(session)))
    session.flush()


def load_checkpoint(session: Session, run_id: int) -> StoredCheckpoint | None:
    """The run's latest checkpoint, or None."""
    checkpoint = session.get(Checkpoint, run_id)
    if checkpoint is None:
        return None
    return StoredCheckpoint(round=checkpoint.round, data=checkpoint.data, saved_at=checkpoint.saved_at)


def rewind_to_checkpoint(session: Session, run_id: int, worker_id: str) -> StoredCheckpoint | None:
    """Before training a claimed run: drop metric and image rows after its checkpoint (all of them
    without one), so the resumed run adds each evaluation step exactly once. Returns the checkpoint."""
    run = _owned_run(session, run_id, worker_id)
    checkpoint = load_checkpoint(session, run_id)
    kept = checkpoint.round if checkpoint else 0
    session.execute(delete(Metric).where(Metric.run_id == run_id, Metric.round > kept))
    session.execute(delete(Image).where(Image.run_id == run_id, Image.round > kept))
    run.last_round = kept
    session.flush()
    return checkpoint


# ---- what the dashboard and the CLI read -------------------------------------------------------
def get_run(session: Session, run_id: int) -> RunInfo:
    """The run with this id; :class:`RunNotFound` if there is none."""
    row = session.execute(_runs_with_checkpoint_round().where(Run.id == run_id)).first()
    if row is None:
        raise RunNotFound(f"no run with id {run_id}")
    return _info(*row)


def list_runs(session: Session, statuses: Iterable[RunStatus] | None = None, limit: int | None = None) -> list[RunInfo]:
    """Runs, newest first, optionally only those in ``statuses``."""
    query = _runs_with_checkpoint_round().order_by(Run.id.desc()).limit(limit)
    if statuses is not None:
        query = query.where(Run.status.in_(list(statuses)))
    return [_info(run, checkpoint_round) for run, checkpoint_round in session.execute(query)]


def history_rows(session: Session, run_id: int) -> list[dict[str, Any]]:
    """The run's evaluation steps by round, as the engine's ``history`` rows."""
    metrics = session.scalars(select(Metric).where(Metric.run_id == run_id).order_by(Metric.round))
    return [_history_row(metric) for metric in metrics]


def run_history(session: Session, run_id: int) -> pd.DataFrame:
    """The run's evaluation steps as a DataFrame, one row per step, one column per figure."""
    import pandas as pd

    rows = history_rows(session, run_id)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(METRIC_COLUMNS))


def latest_metrics(session: Session, run_id: int) -> dict[str, Any] | None:
    """The run's last evaluation step, or None before its first."""
    metric = session.scalars(select(Metric).where(Metric.run_id == run_id)
                             .order_by(Metric.round.desc()).limit(1)).first()
    return None if metric is None else _history_row(metric)


def image_rounds(session: Session, run_id: int) -> list[int]:
    """The rounds at which the run recorded reconstruction snapshots."""
    return list(session.scalars(select(Image.round).where(Image.run_id == run_id).distinct().order_by(Image.round)))


def run_images(session: Session, run_id: int, round_: int | None = None) -> list[ImageRecord]:
    """The run's snapshots (of one round, if given), by round then client."""
    query = select(Image).where(Image.run_id == run_id).order_by(Image.round, Image.client)
    if round_ is not None:
        query = query.where(Image.round == round_)
    return [_image_record(image) for image in session.scalars(query)]


def export_result(session: Session, run_id: int) -> dict[str, Any]:
    """The JSON ``engine run --out`` writes: config, history, summary (None until the run ends)."""
    run = get_run(session, run_id)
    return {"config": run.config, "history": history_rows(session, run_id), "summary": run.summary}


# ---- helpers ----------------------------------------------------------------------------------
def _info(run: Run, checkpoint_round: int | None) -> RunInfo:
    values = {f.name: getattr(run, f.name) for f in fields(RunInfo) if f.name != "checkpoint_round"}
    return RunInfo(**values, checkpoint_round=checkpoint_round)


def _runs_with_checkpoint_round() -> Select[tuple[Run, int | None]]:
    """Runs with the round of their checkpoint (NULL without one), in one query; the checkpoint's bytes stay unread."""
    return select(Run, Checkpoint.round).outerjoin(Checkpoint, Checkpoint.run_id == Run.id)


def _checkpoint_round(session: Session, run_id: int) -> int | None:
    return session.scalar(select(Checkpoint.round).where(Checkpoint.run_id == run_id))


def _history_row(metric: Metric) -> dict[str, Any]:
    return {**{key: getattr(metric, key) for key in METRIC_COLUMNS}, **(metric.extra or {})}


def _image_record(image: Image) -> ImageRecord:
    arrays = unpack_client_snapshot(image.arrays)
    return ImageRecord(round=image.round, client=image.client, inputs=arrays["inputs"], labels=arrays["labels"],
                       smashed=arrays["smashed"], reconstruction=arrays.get("reconstruction"), mse=image.mse,
                       **{key: arrays.get(key) for key in ("attack", *SCORE_KEYS)})


def _oldest_queued(started: bool = False) -> Select[tuple[Run]]:
    """The oldest queued run (with ``started``: of those a worker has claimed before), locked;
    PostgreSQL skips rows other workers hold (SQLite ignores FOR UPDATE). Only a claimed run
    can have a checkpoint, so ``started`` also covers every run with one."""
    query = select(Run).where(Run.status == RunStatus.QUEUED)
    if started:
        query = query.where(Run.attempts > 0)
    return query.order_by(Run.id).limit(1).with_for_update(skip_locked=True)


def _locked_run(session: Session, run_id: int) -> Run:
    """The run, its row locked against concurrent changes until the transaction ends (PostgreSQL;
    SQLite's write transaction already excludes other writers)."""
    run = session.scalars(select(Run).where(Run.id == run_id).with_for_update()).first()
    if run is None:
        raise RunNotFound(f"no run with id {run_id}")
    return run


def _owned_run(session: Session, run_id: int, worker_id: str) -> Run:
    """The run, if ``worker_id`` holds it; else :class:`RunLost`."""
    run = session.scalars(select(Run).where(Run.id == run_id).with_for_update()).first()
    if run is None or run.status != RunStatus.RUNNING or run.worker_id != worker_id:
        raise RunLost(f"run {run_id} is no longer held by worker {worker_id}")
    return run


def _worker_alive(session: Session, worker_id: str, run_id: int | None) -> None:
    now = db_now(session)
    record = session.get(WorkerRecord, worker_id)
    if record is None:
        record = WorkerRecord(worker_id=worker_id, started_at=now, host=socket.gethostname())
        session.add(record)
    record.heartbeat_at, record.run_id = now, run_id
    session.flush()


def _close(session: Session, run_id: int, worker_id: str, status: RunStatus, **values: Any) -> None:
    run = _owned_run(session, run_id, worker_id)
    run.status, run.finished_at = status, db_now(session)
    for key, value in values.items():
        setattr(run, key, value)
    session.flush()
