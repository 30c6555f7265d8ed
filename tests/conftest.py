"""Session-wide fixtures, each built on first use: a throwaway PostgreSQL server (tests/postgres.py),
and the leakage runs a real worker trained (shared by the AppTest and the browser files)."""

from __future__ import annotations

import os

import pytest

from tests.postgres import PostgresServer, PostgresUnavailable


@pytest.fixture(scope="session")
def postgres():
    """The session's PostgreSQL server; skips (fails under CI) where none can be started."""
    try:
        server = PostgresServer()
    except PostgresUnavailable as err:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is needed under CI: {err}")
        pytest.skip(f"PostgreSQL not available: {err}")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres):
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    url = postgres.new_database()
    yield url
    from storage.db import close

    close(url)
    postgres.drop_database(url)


@pytest.fixture(scope="session")
def leakage_db(tmp_path_factory):
    """A SQLite file holding tests.pages.support.LEAKAGE_RUNS (leaky LocFedMix-SL, leaky SplitFed,
    quiet SplitFed; ids 1-3), trained once by a real worker. Tests copy it and never write to it."""
    from storage.db import close
    from tests.pages.support import LEAKAGE_RUNS, train_runs

    path = tmp_path_factory.mktemp("leakage") / "trained.db"
    url = f"sqlite:///{path}"
    assert train_runs(url, LEAKAGE_RUNS) == [1, 2, 3]
    close(url)  # checkpoints the WAL into the file, so a copy holds everything
    return path
