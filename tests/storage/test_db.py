"""Opening a database: the URL, SQLite's settings, and schema versions (created, upgraded or refused)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text, update

from storage import db as storage_db
from storage.cli import main as queue_main
from storage.db import SchemaVersionError, connect, resolve_db_url
from storage.models import SCHEMA_VERSION, RunStatus, SchemaVersion, WorkerRecord
from storage.queries import get_run
from tests.storage.support import queue, tiny_config


def fresh_url(request, tmp_path: Path, name: str) -> str:
    """An empty database of the test's kind: a SQLite file, or a database on the throwaway PostgreSQL server."""
    if request.node.callspec.params["url"] == "sqlite":
        return f"sqlite:///{tmp_path / name}"
    postgres = request.getfixturevalue("postgres")
    url = postgres.new_database()
    request.addfinalizer(lambda: (storage_db.close(url), postgres.drop_database(url)))
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path: Path):
    url = fresh_url(request, tmp_path, "lab.db")
    yield url
    storage_db.close(url)


def set_stored_version(url: str, version: int) -> None:
    with connect(url).write() as session:
        session.execute(update(SchemaVersion).values(version=version))
    storage_db.close(url)


def test_db_url_comes_from_the_flag_then_the_environment_then_the_default(monkeypatch):
    monkeypatch.setenv("SPLITLAB_DB", "postgresql://lab@db/splitlab")
    assert resolve_db_url("sqlite:///flag.db") == "sqlite:///flag.db"
    assert resolve_db_url(None) == "postgresql://lab@db/splitlab"
    monkeypatch.delenv("SPLITLAB_DB")
    assert resolve_db_url(None) == "sqlite:///splitlab.db"


def test_a_plain_path_means_a_sqlite_file():
    assert resolve_db_url("runs/lab.db") == "sqlite:///runs/lab.db"


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout_and_foreign_keys(url):
    if not url.startswith("sqlite"):
        pytest.skip("SQLite's settings")
    with connect(url).read() as session:
        settings = {name: session.execute(text(f"PRAGMA {name}")).scalar()
                    for name in ("journal_mode", "busy_timeout", "foreign_keys")}
    assert settings == {"journal_mode": "wal", "busy_timeout": storage_db.SQLITE_BUSY_TIMEOUT_MS, "foreign_keys": 1}


def test_a_new_database_gets_every_table_and_the_current_schema_version(url):
    database = connect(url)
    with database.read() as session:
        assert session.scalars(select(SchemaVersion.version)).all() == [SCHEMA_VERSION]
        tables = set(inspect(session.connection()).get_table_names())
    assert {"runs", "metrics", "images", "checkpoints", "schema_version"} <= tables


def test_opening_an_existing_database_keeps_its_runs(url):
    run_id = queue(connect(url), tiny_config())
    storage_db.close(url)
    with connect(url).read() as session:
        assert get_run(session, run_id).status == RunStatus.QUEUED


def test_a_newer_schema_version_is_refused_with_a_clear_message(url):
    connect(url)
    set_stored_version(url, SCHEMA_VERSION + 1)
    with pytest.raises(SchemaVersionError) as refused:
        connect(url)
    message = str(refused.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message and f"reads version {SCHEMA_VERSION}" in message


def test_the_cli_reports_a_refused_schema_in_one_line(url, capsys):
    connect(url)
    set_stored_version(url, 99)
    assert queue_main(["status", "1", "--db", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: database") and "schema version 99" in err and err.count("\n") == 1


def test_an_unknown_older_version_is_refused(url):
    connect(url)
    set_stored_version(url, 0)
    with pytest.raises(SchemaVersionError, match="schema version 0"):
        connect(url)


def test_splitlab_tables_without_a_schema_version_are_refused(url):
    connect(url)
    with connect(url).write() as session:
        session.execute(SchemaVersion.__table__.delete())
        SchemaVersion.__table__.drop(session.connection())
    storage_db.close(url)
    with pytest.raises(SchemaVersionError, match="no schema version"):
        connect(url)


def columns_by_table(url: str) -> dict[str, list[tuple[str, str, bool]]]:
    with connect(url).read() as session:
        inspector = inspect(session.connection())
        return {table: [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)]
                for table in sorted(inspector.get_table_names())}


def test_a_version_1_database_is_upgraded_to_the_current_schema_and_keeps_its_runs(request, tmp_path, url):
    old_url = fresh_url(request, tmp_path, "v1.db")
    run_id = queue(connect(old_url), tiny_config())
    with connect(old_url).write() as session:  # back to version 1: no workers table
        WorkerRecord.__table__.drop(session.connection())
        session.execute(update(SchemaVersion).values(version=1))
    storage_db.close(old_url)
    try:
        assert columns_by_table(old_url) == columns_by_table(url)
        with connect(old_url).read() as session:
            assert session.scalars(select(SchemaVersion.version)).all() == [SCHEMA_VERSION]
            assert get_run(session, run_id).status == RunStatus.QUEUED
    finally:
        storage_db.close(old_url)


def test_workers_that_open_a_new_database_at_once_create_its_schema_once(url):
    """Eight connections race to create the tables of an empty database: one creates them, the others find
    them (SQLite: its write lock; PostgreSQL: an advisory lock), and nobody fails."""
    opened = open_at_once(url)
    try:
        with opened[0].read() as session:
            assert session.scalars(select(SchemaVersion.version)).all() == [SCHEMA_VERSION]
    finally:
        for database in opened:
            database.engine.dispose()


def test_sqlite_workers_opening_new_files_at_once_never_see_database_is_locked(tmp_path):
    """Switching a new file to WAL answers "database is locked" at once, without SQLite's busy handler,
    when several connections do it together (about one race in fifty here before the wait): repeated on
    fresh files, so that a lost wait shows (as the exception, from the thread that met it)."""
    for i in range(40):
        for database in open_at_once(f"sqlite:///{tmp_path / f'new{i}.db'}"):
            database.engine.dispose()


def open_at_once(url: str, connections: int = 8) -> list:
    """``connections`` threads open the database at ``url`` at the same moment; any one's error is raised."""
    from concurrent.futures import ThreadPoolExecutor

    from storage.db import _open

    with ThreadPoolExecutor(connections) as pool:
        return list(pool.map(lambda _: _open(url), range(connections)))
