"""The worker in this process: what it records, and how a run ends (finished, cancelled, failed, lost, requeued)."""

from __future__ import annotations

import logging
import os
import re
import socket
import time

import pytest
from sqlalchemy import update

from engine.trainer import Trainer
from storage.db import Database
from storage.models import Run, RunStatus
from storage.queries import (
    claim_next_run,
    export_result,
    get_run,
    history_rows,
    image_rounds,
    live_workers,
    load_checkpoint,
    request_cancel,
    run_images,
)
from storage.worker import Worker, WorkerOptions, _Recorder
from tests.storage.support import dead_pid, queue, tiny_config, without_wall_clock

FAST = WorkerOptions(stale_after=0.4, checkpoint_every=10, poll=0.05, once=True)  # heartbeat every 0.1 s


def engine_result(cfg) -> dict:
    """What ``engine run --out`` writes for ``cfg``."""
    return Trainer(cfg).run()


def assert_same_result(stored: dict, expected: dict) -> None:
    """Equal in everything but wall-clock times."""
    assert stored["config"] == expected["config"]
    assert without_wall_clock(stored["history"]) == without_wall_clock(expected["history"])
    drop = lambda summary: {k: v for k, v in summary.items() if k != "wall_s"}
    assert drop(stored["summary"]) == drop(expected["summary"])


def on_eval_at(monkeypatch, round_: int, action) -> None:
    """Run ``action(recorder, trainer)`` right after the evaluation step of ``round_`` is recorded."""
    record = _Recorder.on_eval

    def on_eval(self, trainer, row):
        record(self, trainer, row)
        if row["round"] == round_:
            action(self, trainer)

    monkeypatch.setattr(_Recorder, "on_eval", on_eval)


def test_a_worker_run_records_what_an_engine_run_returns(db):
    cfg = tiny_config()
    run_id = queue(db, cfg)
    assert Worker(db, FAST).run() == 1
    with db.read() as session:
        run = get_run(session, run_id)
        stored = export_result(session, run_id)
        images = run_images(session, run_id)
        assert load_checkpoint(session, run_id) is None  # a finished run keeps none
    assert (run.status, run.last_round, run.attempts, run.error) == (RunStatus.FINISHED, 20, 1, None)
    assert_same_result(stored, engine_result(cfg))
    assert [(i.round, i.client) for i in images] == [(r, c) for r in (10, 20) for c in range(3)]
    assert images[0].reconstruction.shape == images[0].inputs.shape == (4, 3, 32, 32)


def test_cancel_stops_a_run_within_one_round(db, monkeypatch):
    run_id = queue(db, tiny_config(rounds=1000))

    def cancel_and_wait_for_a_heartbeat(recorder, trainer):
        with db.write() as session:
            request_cancel(session, run_id)
        time.sleep(3 * FAST.heartbeat_interval)  # the heartbeat thread sees the request while round 10 ends

    on_eval_at(monkeypatch, 10, cancel_and_wait_for_a_heartbeat)
    Worker(db, FAST).run()
    with db.read() as session:
        run = get_run(session, run_id)
        rounds = [row["round"] for row in history_rows(session, run_id)]
    assert (run.status, run.last_round, run.summary["stopped"], run.summary["rounds_done"]) == \
        (RunStatus.CANCELLED, 10, True, 10)
    assert rounds == [5, 10]


def test_a_failing_run_is_marked_failed_and_the_worker_goes_on(db, tmp_path, monkeypatch):
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("SPLITLAB_DATA", str(empty))
    monkeypatch.chdir(empty)
    missing = queue(db, tiny_config(data={"dataset": "cifar10", "data_dir": str(tmp_path / "nonexistent")}))
    good = queue(db, tiny_config(rounds=5))
    assert Worker(db, FAST).run() == 2
    with db.read() as session:
        failed, finished = get_run(session, missing), get_run(session, good)
    assert failed.status == RunStatus.FAILED and finished.status == RunStatus.FINISHED
    # the user's own words, no exception class: what the Live page and `engine status` show
    assert failed.error.startswith("Data set 'cifar10' (CIFAR-10) is not on this host") and "\n" not in failed.error


def test_an_error_during_training_keeps_the_metrics_so_far(db, monkeypatch):
    run_id = queue(db, tiny_config())

    def boom(recorder, trainer):
        raise RuntimeError("the GPU caught fire")

    on_eval_at(monkeypatch, 10, boom)
    Worker(db, FAST).run()
    with db.read() as session:
        run = get_run(session, run_id)
        rounds = [row["round"] for row in history_rows(session, run_id)]
    assert (run.status, run.error, rounds) == (RunStatus.FAILED, "RuntimeError: the GPU caught fire", [5, 10])


def test_a_worker_whose_run_was_taken_over_stops_without_writing(db, monkeypatch):
    run_id = queue(db, tiny_config(rounds=1000))

    def taken_over(recorder, trainer):
        with db.write() as session:
            session.execute(update(Run).where(Run.id == run_id).values(worker_id="the-successor"))
        time.sleep(3 * FAST.heartbeat_interval)

    on_eval_at(monkeypatch, 5, taken_over)
    Worker(db, FAST).run()
    with db.read() as session:
        run = get_run(session, run_id)
        rounds = [row["round"] for row in history_rows(session, run_id)]
    assert (run.status, run.worker_id, rounds) == (RunStatus.RUNNING, "the-successor", [5])


def test_a_stopped_worker_queues_its_run_again_and_the_next_one_ends_it_exactly(db, monkeypatch):
    cfg = tiny_config()
    run_id = queue(db, cfg)
    first = Worker(db, FAST, worker_id="first")
    on_eval_at(monkeypatch, 15, lambda recorder, trainer: first.stop())
    first.run()
    with db.read() as session:
        run = get_run(session, run_id)
        checkpoint = load_checkpoint(session, run_id)
    assert (run.status, run.worker_id, checkpoint.round) == (RunStatus.QUEUED, None, 15)
    monkeypatch.undo()
    Worker(db, FAST, worker_id="second").run()
    with db.read() as session:
        run = get_run(session, run_id)
        stored = export_result(session, run_id)
        assert image_rounds(session, run_id) == [10, 20]
    assert (run.status, run.attempts) == (RunStatus.FINISHED, 2)
    assert_same_result(stored, engine_result(cfg))


def test_a_worker_shows_itself_alive_with_its_run_and_removes_itself_when_it_exits(db, monkeypatch):
    run_id = queue(db, tiny_config(rounds=10))
    seen = []

    def look(recorder, trainer):
        time.sleep(2 * FAST.heartbeat_interval)
        with db.read() as session:
            seen.extend((w.worker_id, w.run_id) for w in live_workers(session, max_age=1))

    on_eval_at(monkeypatch, 5, look)
    Worker(db, FAST, worker_id="w").run()
    assert seen == [("w", run_id)]
    with db.read() as session:
        assert live_workers(session, max_age=60) == []


def test_an_empty_queue_ends_a_worker_with_once(db):
    assert Worker(db, WorkerOptions(once=True)).run() == 0


def test_worker_options_are_checked():
    with pytest.raises(ValueError):
        WorkerOptions(checkpoint_every=0)


def test_runs_are_trained_in_the_order_they_were_queued(db: Database):
    ids = [queue(db, tiny_config(rounds=2, eval_every=1, image_every=0)) for _ in range(3)]
    Worker(db, FAST).run()
    with db.read() as session:
        started = [get_run(session, run_id).started_at for run_id in ids]
    assert started == sorted(started)


def claim_as(db: Database, run_id: int, worker_id: str) -> None:
    with db.write() as session:
        assert claim_next_run(session, worker_id).id == run_id


def test_a_run_whose_worker_process_here_is_gone_resumes_first_without_waiting_for_the_timeout(db, caplog):
    cfg = tiny_config()
    orphan = queue(db, cfg)
    claim_as(db, orphan, f"{socket.gethostname()}:{dead_pid()}")
    newer = queue(db, tiny_config(rounds=2, eval_every=1, image_every=0))
    with caplog.at_level(logging.INFO, logger="splitlab.worker"):
        assert Worker(db, WorkerOptions(stale_after=600, poll=0.05, once=True), worker_id="w").run() == 2
    assert [int(m) for m in re.findall(r"run (\d+) claimed by w", caplog.text)] == [orphan, newer]
    with db.read() as session:
        assert get_run(session, orphan).status == RunStatus.FINISHED
        assert_same_result(export_result(session, orphan), engine_result(cfg))


@pytest.mark.parametrize("holder", [f"elsewhere:{os.getpid()}", f"{socket.gethostname()}:{os.getpid()}", "w1"],
                         ids=["another host", "a live process here", "a name that is no pid"])
def test_a_run_whose_worker_may_be_alive_waits_for_the_heartbeat_timeout(db, holder):
    run_id = queue(db, tiny_config())
    claim_as(db, run_id, holder)
    assert Worker(db, WorkerOptions(stale_after=600, once=True)).claim() is None
    with db.read() as session:
        assert get_run(session, run_id).worker_id == holder


def test_a_worker_with_exit_with_parent_stops_like_on_sigterm_when_its_parent_is_gone(db, monkeypatch):
    run_id = queue(db, tiny_config(rounds=1000))
    worker = Worker(db, WorkerOptions(stale_after=0.4, checkpoint_every=10, poll=0.05, exit_with_parent=True))

    def adopted(recorder, trainer):  # the parent died: the orphan's parent pid changes
        monkeypatch.setattr(os, "getppid", lambda: worker.parent_pid + 1)

    on_eval_at(monkeypatch, 15, adopted)
    assert worker.run() == 1  # without once: only the parent's end stops it
    with db.read() as session:
        run = get_run(session, run_id)
        checkpoint = load_checkpoint(session, run_id)
        assert live_workers(session, max_age=60) == []
    assert (run.status, run.worker_id, run.last_round, checkpoint.round) == (RunStatus.QUEUED, None, 15, 15)


def test_an_idle_worker_with_exit_with_parent_exits_when_its_parent_is_gone(db, monkeypatch):
    worker = Worker(db, WorkerOptions(poll=0.05, exit_with_parent=True))
    monkeypatch.setattr(os, "getppid", lambda: worker.parent_pid + 1)
    assert worker.run() == 0 and worker.shutdown.is_set()
