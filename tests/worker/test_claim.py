"""Several worker processes over one queue: each run is trained exactly once."""

from __future__ import annotations

import re
import signal
from collections import Counter

from storage.models import RunStatus
from storage.queries import history_rows, list_runs
from tests.storage.support import queue, tiny_config, wait_for, worker_process

NUM_WORKERS, NUM_RUNS = 3, 9


def test_several_workers_train_every_queued_run_exactly_once(db, tmp_path):
    workers = [worker_process(db.url, "--poll", "0.05", "--worker-id", f"w{i}", cwd=tmp_path)
               for i in range(NUM_WORKERS)]
    try:
        for w in workers:  # every worker is up and polling before the runs arrive, so they race for them
            assert f" on {db.engine.dialect.name}" in w.stdout.readline()
        cfg = tiny_config(rounds=4, eval_every=2, image_every=0)
        run_ids = [queue(db, cfg) for _ in range(NUM_RUNS)]

        def all_ended():
            with db.read() as session:
                return all(run.status.is_terminal for run in list_runs(session))

        wait_for(all_ended, timeout=120, interval=0.1)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
    logs = [w.communicate(timeout=30)[0] for w in workers]
    assert [w.returncode for w in workers] == [0] * NUM_WORKERS, logs
    with db.read() as session:
        runs = list_runs(session)
        evaluated = {run.id: [row["round"] for row in history_rows(session, run.id)] for run in runs}
    assert {(run.status, run.attempts) for run in runs} == {(RunStatus.FINISHED, 1)}
    assert evaluated == {run_id: [2, 4] for run_id in run_ids}
    claims = Counter(int(m) for log in logs for m in re.findall(r"run (\d+) claimed by", log))
    assert claims == Counter(run_ids)  # each run claimed once, by one worker
    assert len({run.worker_id for run in runs}) > 1, logs  # and the workers did share the queue
