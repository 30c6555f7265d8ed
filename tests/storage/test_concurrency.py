"""The dashboard reads while a worker writes: reads neither wait for the writer nor see half a write."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from storage.db import Database
from storage.queries import (
    append_images,
    append_metrics,
    claim_next_run,
    get_run,
    heartbeat,
    history_rows,
    list_runs,
    run_history,
    save_checkpoint,
)
from tests.storage.support import queue, tiny_config
from tests.storage.test_queries import history_row, snapshot

W1 = "worker-1"
# A read blocked by the writer's lock would wait for the busy timeout (30 s) and then fail; a read on
# a loaded machine (CI, two trainings beside it) can take a second. This bound separates the two; it
# is not a speed goal (those live in `python -m storage.perf`).
MAX_READ_S = 5.0


def claimed_run(db: Database) -> int:
    run_id = queue(db, tiny_config())
    with db.write() as session:
        claim_next_run(session, W1)
    return run_id


def timed_read(db: Database, run_id: int) -> tuple[float, int]:
    """Seconds taken by the dashboard's reads of a run, and how many evaluation steps they saw."""
    start = time.perf_counter()
    with db.read() as session:
        list_runs(session)
        get_run(session, run_id)
        frame = run_history(session, run_id)
    return time.perf_counter() - start, len(frame)


def test_reads_do_not_wait_for_an_open_write_transaction(db):
    run_id = claimed_run(db)
    written, release = threading.Event(), threading.Event()

    def slow_writer() -> None:
        with db.write() as session:
            append_metrics(session, run_id, W1, [history_row(5)])
            written.set()
            release.wait(5)  # holds the write lock, as a long checkpoint write would

    writer = threading.Thread(target=slow_writer)
    writer.start()
    try:
        assert written.wait(5)
        seconds, steps = timed_read(db, run_id)
        assert seconds < MAX_READ_S and steps == 0  # not blocked, and nothing uncommitted is seen
    finally:
        release.set()
        writer.join()
    assert timed_read(db, run_id)[1] == 1


def test_an_open_read_neither_delays_a_write_nor_sees_it_half_way(db):
    run_id = claimed_run(db)
    reading, release = threading.Event(), threading.Event()
    seen: list[int] = []

    def dashboard_read() -> None:
        with db.read() as session:
            seen.append(len(history_rows(session, run_id)))
            reading.set()
            release.wait(5)  # a slow page render keeps its read transaction open
            seen.append(len(history_rows(session, run_id)))

    reader = threading.Thread(target=dashboard_read)
    reader.start()
    try:
        assert reading.wait(5)
        start = time.perf_counter()
        with db.write() as session:
            append_metrics(session, run_id, W1, [history_row(5)])
        assert time.perf_counter() - start < MAX_READ_S
    finally:
        release.set()
        reader.join()
    assert seen == [0, 0]  # one consistent snapshot for the whole read
    assert timed_read(db, run_id)[1] == 1


def test_reader_and_writer_at_once(db):
    run_id = claimed_run(db)
    rounds = list(range(1, 121))

    def worker_writes() -> None:
        for round_ in rounds:
            with db.write() as session:
                append_metrics(session, run_id, W1, [history_row(round_)])
                heartbeat(session, run_id, W1, round_)
            if round_ % 20 == 0:
                with db.write() as session:
                    append_images(session, run_id, W1, round_, snapshot())
                    save_checkpoint(session, run_id, W1, round_, bytes(2_000_000))

    seen, slowest = [], 0.0
    with ThreadPoolExecutor(max_workers=1) as pool:
        writing = pool.submit(worker_writes)
        while not writing.done():
            seconds, steps = timed_read(db, run_id)
            seen.append(steps)
            slowest = max(slowest, seconds)
        writing.result()  # raises what the writer raised
    assert len(seen) > 5 and seen == sorted(seen) and slowest < MAX_READ_S
    with db.read() as session:
        assert [row["round"] for row in history_rows(session, run_id)] == rounds
