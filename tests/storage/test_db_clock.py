"""Heartbeats and their staleness are judged by the database's clock, never a worker host's: a worker whose
clock is an hour off neither makes its live run look lost to the others nor keeps a dead one alive."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import update

from storage import queries
from storage.models import Run, RunStatus
from storage.queries import claim_next_run, db_now, get_run, heartbeat, requeue_stale_runs
from tests.storage.support import queue, tiny_config


@pytest.fixture
def skewed(db, monkeypatch):
    """A context in which this machine's clock is an hour behind (a worker host whose clock is wrong)."""
    if db.is_sqlite:
        pytest.skip("SQLite is a file on one machine: its clock is that machine's")
    real = queries.utcnow

    @contextmanager
    def clock_an_hour_behind():
        monkeypatch.setattr(queries, "utcnow", lambda: real() - timedelta(hours=1))
        try:
            yield
        finally:
            monkeypatch.setattr(queries, "utcnow", real)

    return clock_an_hour_behind


def test_a_live_run_of_a_worker_with_a_wrong_clock_is_not_taken_over(db, skewed):
    run_id = queue(db, tiny_config())
    with skewed(), db.write() as s:  # the worker with the wrong clock claims and beats
        claim_next_run(s, "skewed:1")
        heartbeat(s, run_id, "skewed:1", 3)
    with db.write() as s:  # another worker, whose clock is right, looks for lost runs a moment later
        assert requeue_stale_runs(s, stale_after=15) == []
        assert get_run(s, run_id).status == RunStatus.RUNNING


def test_a_silent_run_is_taken_over_by_a_worker_with_a_wrong_clock(db, skewed):
    run_id = queue(db, tiny_config())
    with db.write() as s:
        claim_next_run(s, "gone:1")
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=db_now(s) - timedelta(seconds=60)))
    with skewed(), db.write() as s:
        assert requeue_stale_runs(s, stale_after=15) == [run_id]


def test_the_database_clock_is_naive_utc(db):
    with db.read() as s:
        now = db_now(s)
    assert now.tzinfo is None and abs((now - queries.utcnow()).total_seconds()) < 5  # one machine here
