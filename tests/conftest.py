"""Session-wide fixtures: a throwaway PostgreSQL server (tests/postgres.py), started on first use."""

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
