"""The tables, as typed SQLAlchemy 2.0 ORM classes.

``runs`` is the queue and the registry of every run; ``metrics`` holds one row per evaluation
step (the engine's history rows, one column per figure); ``images`` the InfoPro snapshots;
``checkpoints`` the latest exact checkpoint of each unfinished run; ``workers`` the workers
and what they train; ``schema_version`` the one integer that says how to read all of the above
(see :mod:`storage.db`).

Times are naive UTC datetimes. Everything here is plain SQL types, so the same tables work on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Enum, ForeignKey, Index, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Bump when the tables change, and add the upgrade from the previous version to storage.db.MIGRATIONS.
SCHEMA_VERSION = 3


class RunStatus(enum.StrEnum):
    """Where a run is in its life: queued -> running -> finished | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True once nothing will change the run any more."""
        return self in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.CANCELLED)


class Base(DeclarativeBase):
    # none_as_null: a missing summary is SQL NULL, not the JSON value null
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON(none_as_null=True), bytes: LargeBinary}


class SchemaVersion(Base):
    """A single row: the schema version the tables were created or last upgraded to."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)


class Run(Base):
    """One training run: its config, where it is in the queue, and its result."""

    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_status_id", "status", "id"),)  # the claim: oldest queued first

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # A VARCHAR with the allowed values checked, not a PostgreSQL ENUM type (which needs its own migrations).
    status: Mapped[RunStatus] = mapped_column(
        Enum(RunStatus, name="ck_runs_status", native_enum=False, length=16, create_constraint=True,
             values_callable=lambda statuses: [s.value for s in statuses]))
    config: Mapped[dict[str, Any]]
    seed: Mapped[int]
    rounds: Mapped[int]
    last_round: Mapped[int] = mapped_column(default=0)
    attempts: Mapped[int] = mapped_column(default=0)  # how many times a worker has claimed it
    worker_id: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Metric(Base):
    """One evaluation step: the engine's history row, column for column, in the engine's order."""

    __tablename__ = "metrics"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    round: Mapped[int] = mapped_column(primary_key=True)
    test_acc: Mapped[float]
    test_loss: Mapped[float]
    test_acc_min: Mapped[float]
    test_acc_max: Mapped[float]
    clients_evaluated: Mapped[int]
    train_loss: Mapped[float]
    train_loss_mixup: Mapped[float]
    train_loss_local: Mapped[float]
    round_s: Mapped[float]
    bytes_smashed_up: Mapped[int] = mapped_column(BigInteger)
    bytes_grads_down: Mapped[int] = mapped_column(BigInteger)
    bytes_model_up: Mapped[int] = mapped_column(BigInteger)
    bytes_model_down: Mapped[int] = mapped_column(BigInteger)
    bytes_up: Mapped[int] = mapped_column(BigInteger)
    bytes_down: Mapped[int] = mapped_column(BigInteger)
    wall_s: Mapped[float]
    # Figures the engine records beyond the columns above, so none is ever dropped.
    extra: Mapped[dict[str, Any] | None]


# The history keys that have a column of their own, in the engine's order.
METRIC_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in Metric.__table__.columns if c.name not in ("run_id", "extra"))


class Image(Base):
    """A reconstruction snapshot of one client at one round (arrays packed by :mod:`storage.arrays`)."""

    __tablename__ = "images"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    round: Mapped[int] = mapped_column(primary_key=True)
    client: Mapped[int] = mapped_column(primary_key=True)
    arrays: Mapped[bytes]
    mse: Mapped[float | None]  # reconstruction error (None without an InfoPro decoder)


class Checkpoint(Base):
    """The latest exact checkpoint of a run (``Trainer.checkpoint_bytes``), replaced in place."""

    __tablename__ = "checkpoints"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    round: Mapped[int]
    data: Mapped[bytes]
    saved_at: Mapped[datetime]


class WorkerRecord(Base):
    """A worker as it last reported itself: alive while ``heartbeat_at`` is recent."""

    __tablename__ = "workers"

    worker_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))  # None: idle
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]  # the database's clock (storage.queries.db_now), never the worker's
    host: Mapped[str | None] = mapped_column(String(200))  # the machine it runs on (schema 3)
