"""The Live page read while a worker process writes, on SQLite and on PostgreSQL: every load succeeds and shows
the latest evaluated round, which moves on as the run trains."""

from __future__ import annotations

import signal

import pytest
import streamlit as st

from engine.config import validate_config
from storage.db import connect
from storage.queries import create_run, latest_metrics
from tests.pages.conftest import dashboard_on
from tests.pages.support import page
from tests.storage.support import wait_for, worker_process

LONG = {"num_clients": 3, "rounds": 100_000, "batch_size": 8, "eval_every": 5, "name": "long",
        "data": {"dataset": "digits", "eval_subset": 32}, "optim": {"name": "adam", "lr": 0.001}}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'dashboard.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    yield from dashboard_on(url, monkeypatch)


def latest_round(db, run_id: int) -> int:
    with db.read() as s:
        latest = latest_metrics(s, run_id)
    return int(latest["round"]) if latest else 0


def test_the_live_page_follows_a_run_a_worker_is_writing(db_url, tmp_path):
    db = connect(db_url)
    with db.write() as s:
        run_id = create_run(s, validate_config(LONG))
    worker = worker_process(db_url, "--checkpoint-every", "10", cwd=tmp_path)
    try:
        wait_for(lambda: latest_round(db, run_id) >= 5, timeout=120, interval=0.1)
        shown = []
        for _ in range(3):
            st.cache_data.clear()  # the page's reads are cached for a second or two: read afresh
            st.cache_resource.clear()
            before = latest_round(db, run_id)
            at = page("live", run_id)
            assert not at.exception
            rounds = [m.value for m in at.metric if m.label == "round"]
            assert len(rounds) == 1 and int(rounds[0]) >= before
            shown.append(int(rounds[0]))
            wait_for(lambda: latest_round(db, run_id) > shown[-1], timeout=60, interval=0.1)
        assert shown == sorted(shown) and shown[-1] > shown[0]  # the page follows the run
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)
