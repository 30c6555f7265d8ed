"""Load: 4 worker processes and 40 short runs queued at once, on each database. Every run is trained exactly
once, no worker logs an error, no metric row is lost; the throughput and the time from queue to claim are
printed (``pytest -s``) and kept in docs/results/queue-load.md."""

from __future__ import annotations

import re
import signal
import statistics
import time
from collections import Counter

from storage.models import RunStatus
from storage.queries import create_run, history_rows, list_runs
from tests.storage.support import tiny_config, wait_for, worker_process

NUM_WORKERS, NUM_RUNS = 4, 40


def test_four_workers_drain_forty_queued_runs_exactly_once(db, tmp_path):
    workers = [worker_process(db.url, "--poll", "0.05", "--worker-id", f"load{i}", cwd=tmp_path)
               for i in range(NUM_WORKERS)]
    try:
        for w in workers:  # all polling before the runs arrive
            assert f" on {db.engine.dialect.name}" in w.stdout.readline()
        cfg = tiny_config(rounds=4, eval_every=2, image_every=0)
        start = time.monotonic()
        with db.write() as session:  # queued at once, in one transaction
            run_ids = [create_run(session, cfg) for _ in range(NUM_RUNS)]

        def all_ended():
            with db.read() as session:
                return all(run.status.is_terminal for run in list_runs(session))

        wait_for(all_ended, timeout=300, interval=0.1)
        drained_s = time.monotonic() - start
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
    logs = [w.communicate(timeout=60)[0] for w in workers]
    assert [w.returncode for w in workers] == [0] * NUM_WORKERS, logs
    for log in logs:
        assert not re.search(r"error|lock|traceback|deadlock", log, re.IGNORECASE), log
    with db.read() as session:
        runs = {run.id: run for run in list_runs(session)}
        evaluated = {run_id: [row["round"] for row in history_rows(session, run_id)] for run_id in run_ids}
    assert sorted(runs) == sorted(run_ids)
    assert {(run.status, run.attempts) for run in runs.values()} == {(RunStatus.FINISHED, 1)}
    assert evaluated == {run_id: [2, 4] for run_id in run_ids}  # no metric row lost or doubled
    claims = Counter(int(m) for log in logs for m in re.findall(r"run (\d+) claimed by", log))
    assert claims == Counter(run_ids)  # each run claimed once, by one worker
    assert len({w for log in logs for w in re.findall(r"claimed by (load\d)", log)}) == NUM_WORKERS  # all worked
    waits = [(runs[i].started_at - runs[i].created_at).total_seconds() for i in run_ids]
    print(f"\n{db.engine.dialect.name}: {NUM_RUNS} runs, {NUM_WORKERS} workers: drained in {drained_s:.1f} s = "
          f"{NUM_RUNS / drained_s * 60:.0f} runs/min; queue to claim: min {min(waits):.2f} s, "
          f"median {statistics.median(waits):.2f} s, max {max(waits):.2f} s")
