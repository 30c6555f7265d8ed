"""Opening a SplitLab database: one engine and one ``sessionmaker`` per URL, with the schema checked.

The URL comes from ``--db``, else ``$SPLITLAB_DB``, else ``sqlite:///splitlab.db`` in the working
folder. SQLite runs in WAL mode with a busy timeout, so the dashboard reads while a worker
writes, and with real transactions (SQLAlchemy's pysqlite recipe): :meth:`Database.write`
takes the write lock up front with ``BEGIN IMMEDIATE``. Any other URL (PostgreSQL) gets plain
transactions; the queries lock rows where SQLite locks the file.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from storage.models import SCHEMA_VERSION, Base, SchemaVersion

DB_ENV_VAR = "SPLITLAB_DB"
DEFAULT_DB_URL = "sqlite:///splitlab.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE_LOCK_OPTION = "splitlab_write_lock"
_PG_SCHEMA_LOCK_KEY = 0x5B117AB  # advisory lock serialising schema creation between PostgreSQL clients


class StorageError(Exception):
    """A problem with the database or a run in it, reported as one line."""


class SchemaVersionError(StorageError):
    """The database was written by another schema version than this code reads."""


def resolve_db_url(cli_value: str | None = None) -> str:
    """The database URL: ``--db``, else ``$SPLITLAB_DB``, else ``sqlite:///splitlab.db``.

    A value without ``://`` is taken as the path of a SQLite file.
    """
    value = cli_value or os.environ.get(DB_ENV_VAR) or DEFAULT_DB_URL
    if "://" not in value:
        return f"sqlite:///{Path(value).expanduser()}"
    return value


@dataclass(frozen=True)
class Database:
    """An open database: its engine and the session factory every caller shares."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading; its transaction is rolled back when the block ends. It reads one
        consistent snapshot: SQLite's WAL gives that; PostgreSQL needs REPEATABLE READ (its default,
        READ COMMITTED, shows a write that commits half way through a page's reads)."""
        with self.sessions() as session:
            if not self.is_sqlite:
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose transaction holds the write lock from the start and commits when the block ends."""
        with self.sessions.begin() as session:
            session.connection(execution_options={_WRITE_LOCK_OPTION: True})
            yield session

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def display_url(self) -> str:
        """The URL without its password, for messages; a SQLite file by its absolute path."""
        url = self.engine.url
        if self.is_sqlite and url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            url = url.set(database=str(Path(url.database).resolve()))
        return url.render_as_string(hide_password=True)


_open_databases: dict[str, Database] = {}
_open_lock = threading.Lock()


def connect(url: str) -> Database:
    """The database at ``url``, opened (and its schema created, upgraded or refused) on first use."""
    with _open_lock:
        db = _open_databases.get(url)
        if db is None:
            db = _open(url)
            _open_databases[url] = db
        return db


def close(url: str) -> None:
    """Close the database at ``url`` if it is open (its next :func:`connect` opens it afresh)."""
    with _open_lock:
        db = _open_databases.pop(url, None)
    if db is not None:
        db.engine.dispose()


def _open(url: str) -> Database:
    is_sqlite = url.startswith("sqlite")
    # pre-ping replaces server connections dropped while a long run trained; a SQLite file never drops.
    engine = create_engine(url, pool_pre_ping=not is_sqlite)
    if is_sqlite:
        _configure_sqlite(engine)
    db = Database(url, engine, sessionmaker(engine, expire_on_commit=False))
    try:
        init_db(db)
    except BaseException:
        engine.dispose()
        raise
    return db


def _configure_sqlite(engine: Engine) -> None:
    """WAL, busy timeout, foreign keys, and BEGIN emitted by us (SQLAlchemy's pysqlite transaction recipe)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver emits no BEGIN of its own; _on_begin does
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)  # readers never wait for the writer, nor it for them
        cursor.execute("PRAGMA synchronous = NORMAL")  # WAL stays consistent through a crash or kill -9
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE_LOCK_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL, waiting as long as the busy timeout for another connection's lock.

    SQLite answers "database is locked" at once, without its busy handler, when connections to a new
    file switch its journal mode at the same moment (workers starting together); so wait here."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.2)


# ---- schema versions -----------------------------------------------------------------------
# To change the tables: bump storage.models.SCHEMA_VERSION and add the step from the previous
# version to MIGRATIONS (at the end of this file).
def init_db(db: Database) -> int:
    """Create the tables in an empty database, upgrade an older known version, refuse anything else.

    Returns the schema version in use. Raises :class:`SchemaVersionError` for a newer or unknown version.
    """
    with db.write() as session:
        if not db.is_sqlite:  # SQLite's write lock already serialises this; PostgreSQL needs a lock of its own
            session.execute(select(func.pg_advisory_xact_lock(_PG_SCHEMA_LOCK_KEY)))
        found = _found_version(db, session)
        if found is None:
            Base.metadata.create_all(session.connection())
            session.add(SchemaVersion(version=SCHEMA_VERSION))
        elif found != SCHEMA_VERSION:
            _upgrade(db, session, found)
    return SCHEMA_VERSION


def _found_version(db: Database, session: Session) -> int | None:
    """The stored schema version, or None for a database without SplitLab tables."""
    tables = set(inspect(session.connection()).get_table_names())
    if SchemaVersion.__tablename__ not in tables:
        ours = sorted(tables & Base.metadata.tables.keys())
        if ours:
            raise SchemaVersionError(
                f"database {db.display_url()} has SplitLab tables ({', '.join(ours)}) but no schema version: "
                f"refusing to read it; this SplitLab reads schema version {SCHEMA_VERSION}")
        return None
    versions = session.scalars(select(SchemaVersion.version)).all()
    if len(versions) != 1:
        raise SchemaVersionError(f"database {db.display_url()}: the schema_version table holds {len(versions)} "
                                 f"rows instead of one; refusing to read it")
    return versions[0]


def _upgrade(db: Database, session: Session, found: int) -> None:
    """Apply the migrations from ``found`` up to :data:`SCHEMA_VERSION`, or refuse a newer/unknown version."""
    steps = range(found, SCHEMA_VERSION)
    if found > SCHEMA_VERSION or any(v not in MIGRATIONS for v in steps):
        upgradable = ", ".join(str(v) for v in sorted(MIGRATIONS)) or "none"
        raise SchemaVersionError(
            f"database {db.display_url()} has schema version {found}, which this SplitLab cannot read: it reads "
            f"version {SCHEMA_VERSION} and upgrades from versions: {upgradable}. "
            f"Use a SplitLab that matches the database, or another database (--db / ${DB_ENV_VAR}).")
    for version in steps:
        MIGRATIONS[version](session.connection())
    session.execute(update(SchemaVersion).values(version=SCHEMA_VERSION))


def _add_workers_table(conn: Connection) -> None:
    """Version 1 -> 2: the ``workers`` table. Spelled out as it was in version 2, not taken from
    the models, so later versions of the table do not change what this step creates."""
    metadata = MetaData()
    Table("runs", metadata, Column("id", Integer, primary_key=True))  # referenced by the foreign key
    workers = Table("workers", metadata,
                    Column("worker_id", String(200), primary_key=True),
                    Column("run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL"), nullable=True),
                    Column("started_at", DateTime, nullable=False),
                    Column("heartbeat_at", DateTime, nullable=False))
    workers.create(conn)


def _add_worker_host(conn: Connection) -> None:
    """Version 2 -> 3: the host each worker runs on (``engine workers`` lists it)."""
    conn.exec_driver_sql("ALTER TABLE workers ADD COLUMN host VARCHAR(200)")


# version v -> the function that upgrades a version-v database to v + 1, inside the open transaction.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _add_workers_table, 2: _add_worker_host}
