"""``worker --exit-with-parent``: when the process that started the worker dies, the worker stops as on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

from storage.models import RunStatus
from storage.queries import get_run, live_workers, load_checkpoint
from storage.worker import process_gone
from tests.storage.support import ROOT, queue, tiny_config, wait_for

# A parent like the dashboard: starts the worker in a session of its own, prints its pid, then waits.
PARENT = textwrap.dedent("""
    import subprocess, sys, time
    log = open(sys.argv[2], "wb")
    worker = subprocess.Popen([sys.executable, "-m", "engine", "worker", "--exit-with-parent", "--db", sys.argv[1]],
                              stdout=log, stderr=log, start_new_session=True)
    print(worker.pid, flush=True)
    time.sleep(600)
""")


def test_the_worker_checkpoints_queues_its_run_again_and_exits_when_its_parent_is_killed(db, tmp_path):
    run_id = queue(db, tiny_config(rounds=100_000, eval_every=50, image_every=0))
    log = tmp_path / "worker.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, db.url, str(log)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, text=True)
    worker_pid = int(parent.stdout.readline())

    def training() -> bool:
        with db.read() as session:
            return get_run(session, run_id).last_round > 0

    def worker_gone() -> bool:
        return process_gone(f"{socket.gethostname()}:{worker_pid}")

    try:
        wait_for(training, timeout=60, interval=0.1)
        parent.kill()
        parent.wait(timeout=10)
        wait_for(worker_gone, timeout=15, interval=0.1)
    finally:
        if not worker_gone():
            os.kill(worker_pid, signal.SIGKILL)
    text = log.read_text()
    assert "the process that started this worker" in text and "is gone: stopping" in text, text
    with db.read() as session:
        run = get_run(session, run_id)
        checkpoint = load_checkpoint(session, run_id)
        assert live_workers(session, max_age=60) == []
    assert (run.status, run.worker_id) == (RunStatus.QUEUED, None)
    assert checkpoint.round == run.last_round == run.checkpoint_round > 0
    assert f"run {run_id} queued after {run.last_round} rounds" in text
