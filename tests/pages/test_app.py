"""The entry point: navigation, the sidebar's worker state, read-only mode."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from engine.config import validate_config
from storage import queries
from storage.db import connect

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def test_app_opens_on_new_run_and_says_no_worker_runs(db_url):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.header[0].value == "New run"
    assert any("No worker is running" in w.value for w in at.sidebar.warning)


def test_sidebar_shows_a_live_worker(db_url):
    with connect(db_url).write() as s:
        assert queries.claim_next_run(s, "lab:42") is None  # an idle worker looking for work
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert any("lab:42" in m.value and "idle" in m.value for m in at.sidebar.success)


def test_read_only_app_opens_on_the_results_and_starts_nothing(db_url, monkeypatch):
    monkeypatch.setenv("SPLITLAB_READONLY", "1")
    monkeypatch.delenv("SPLITLAB_NO_WORKER")
    with connect(db_url).write() as s:
        run_id = queries.create_run(s, validate_config({"name": "shared", "data": {"dataset": "synthetic"}}))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.header[0].value == "SplitLab results"
    assert any(f"#{run_id} shared" in str(link.proto.label) for link in at.get("page_link"))
    assert any("Read-only" in m.value for m in at.sidebar.info)
    with connect(db_url).read() as s:
        assert queries.live_workers(s, 60) == []
