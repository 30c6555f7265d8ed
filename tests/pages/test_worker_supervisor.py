"""The dashboard's worker supervisor (storage/supervisor.py, issue 26 item 5): it starts a worker, starts
a new one within seconds after ``kill -9`` and says what happened, starts none while another worker
serves the database, and pauses (saying so) when a worker fails right after starting.

The browser test (tests/e2e/test_pages_current.py) does the same through ``make run`` and the sidebar."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import time

import pytest

from storage import queries
from storage.db import close, connect
from storage.supervisor import WorkerSupervisor, how_it_ended
from storage.worker import process_gone
from tests.pages.support import ROOT


def wait_until(check, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def live_here(db_url: str) -> list[int]:
    """The pids of the live workers of this host."""
    with connect(db_url).read() as s:
        return [int(w.worker_id.rpartition(":")[2]) for w in queries.live_workers(s, 10)
                if w.worker_id.startswith(socket.gethostname() + ":") and not process_gone(w.worker_id)]


@pytest.fixture
def url(tmp_path):
    url = f"sqlite:///{tmp_path / 'supervised.db'}"
    connect(url)
    yield url
    close(url)


@pytest.mark.parametrize(("code", "words"), [(-signal.SIGKILL, "killed by SIGKILL"), (-signal.SIGTERM,
                         "stopped by SIGTERM"), (0, "exited"), (1, "exited with code 1")])
def test_how_a_worker_ended_is_said_in_words(code, words):
    assert how_it_ended(code) == words


def test_a_worker_killed_with_kill_9_is_replaced_within_seconds_and_the_event_is_told(url, tmp_path):
    sup = WorkerSupervisor(url, ROOT, tmp_path / "worker.log", check_every=0.2)
    sup.start()
    try:
        (first,) = wait_until(lambda: live_here(url), 120, "the first worker reports")
        assert sup.state().pid == first and sup.state().event is None
        os.kill(first, signal.SIGKILL)
        killed_at = time.time()
        event = wait_until(lambda: sup.state().event, 5, "the supervisor notices")
        assert time.time() - killed_at < 5
        second = sup.state().pid
        assert second not in (None, first)
        assert event.startswith(f"The worker (pid {first}) stopped (killed by SIGKILL) at ")
        assert event.endswith(f"; started a new one (pid {second}).") and not sup.state().problem
        assert wait_until(lambda: live_here(url), 120, "the new worker reports") == [second]
    finally:
        sup.stop()


def test_no_worker_is_started_while_another_serves_the_database(url, tmp_path):
    with connect(url).write() as s:
        assert queries.claim_next_run(s, "another-host:7") is None  # an idle worker elsewhere, reporting now
    sup = WorkerSupervisor(url, ROOT, tmp_path / "worker.log")
    sup.check()
    assert sup.state().pid is None and sup.state().event is None


def test_a_worker_that_fails_at_start_is_tried_again_after_a_pause_and_it_says_so(url, tmp_path):
    sup = WorkerSupervisor(url, ROOT, tmp_path / "worker.log",
                           command=[sys.executable, "-c", "raise SystemExit(3)"])
    sup.check()
    # started; it fails at once, so on a busy machine it may have ended before state() is read
    # (state() names live processes only): its pid is the process the supervisor holds
    assert sup._proc is not None
    first = sup._proc.pid
    sup._proc.wait(timeout=30)
    sup.check()  # notes the failure; starts nothing during the pause
    state = sup.state()
    assert state.pid is None and state.problem
    assert f"The worker (pid {first}) exited with code 3" in state.event
    assert "trying again in 2 s" in state.event and str(tmp_path / "worker.log") in state.event
    sup.check()
    assert sup.state().pid is None  # still pausing
    sup._next_try = 0.0  # the pause is over
    sup.check()
    # a new process was started (it fails at once again, so by now it may have ended: its pid is in the event)
    again = re.match(r"Started the worker again \(pid (\d+)\) at ", sup.state().event)
    assert again and int(again.group(1)) != first and sup._proc.pid == int(again.group(1))
    sup.stop()
