"""A networked run (``transport = process``) through the queue: the worker's trainer starts the clients, a
client killed mid-run fails the run with a message naming it, the metrics up to the failure stay, no client is
left; a cancelled networked run stops its clients too."""

from __future__ import annotations

import os
import signal
import threading
import time

from storage.models import RunStatus
from storage.queries import get_run, history_rows, request_cancel
from storage.worker import Worker, WorkerOptions
from tests.helpers import client_processes
from tests.storage.support import queue, tiny_config

NETWORKED = {"transport": "process", "rounds": 5000, "eval_every": 2, "image_every": 0,
             "data": {"dataset": "digits", "eval_subset": 32}}


def client_pids() -> list[int]:
    """This process's networked-run client processes."""
    return sorted(client_processes())


def run_worker_in_background(db) -> threading.Thread:
    thread = threading.Thread(target=Worker(db, WorkerOptions(once=True, poll=0.1)).run, daemon=True)
    thread.start()
    return thread


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def metric_rounds(db, run_id: int) -> list[int]:
    with db.read() as s:
        return [row["round"] for row in history_rows(s, run_id)]


def test_a_killed_client_fails_the_queued_run_naming_it_and_keeps_its_metrics(db):
    run_id = queue(db, tiny_config(**NETWORKED))
    worker = run_worker_in_background(db)
    wait_for(lambda: len(metric_rounds(db, run_id)) >= 2)
    clients = client_pids()
    assert len(clients) == 3
    os.kill(clients[1], signal.SIGKILL)
    worker.join(timeout=60)
    assert not worker.is_alive()
    with db.read() as s:
        run = get_run(s, run_id)
    assert run.status == RunStatus.FAILED
    assert "ClientFailed: client 1 (rank 2) closed the connection while" in run.error
    assert "SIGKILL" in run.error
    rounds = metric_rounds(db, run_id)
    assert len(rounds) >= 2 and rounds == sorted(rounds)
    assert client_pids() == []


def test_a_cancelled_networked_run_stops_its_clients(db):
    run_id = queue(db, tiny_config(**NETWORKED))
    worker = run_worker_in_background(db)
    wait_for(lambda: len(metric_rounds(db, run_id)) >= 1)
    assert len(client_pids()) == 3
    with db.write() as s:
        request_cancel(s, run_id)
    worker.join(timeout=60)
    assert not worker.is_alive()
    with db.read() as s:
        assert get_run(s, run_id).status == RunStatus.CANCELLED
    assert client_pids() == []
