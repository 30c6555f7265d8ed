"""``kill -9`` a worker mid-run; the next worker resumes from the checkpoint (at once, before newer runs, when the
dead worker was a process on this host) and ends exactly as an uninterrupted run."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time

import numpy as np

from engine.trainer import Callbacks, Trainer
from storage.arrays import pack_client_snapshot, unpack_client_snapshot
from storage.models import RunStatus
from storage.queries import export_result, get_run, history_rows, load_checkpoint, run_images
from tests.storage.support import queue, tiny_config, wait_for, without_wall_clock, worker_process

STALE_AFTER, CHECKPOINT_EVERY = 1.0, 20


class SnapshotRecorder(Callbacks):
    """The reference run's images, packed and unpacked as the worker stores them."""

    def __init__(self) -> None:
        self.images: dict[tuple[int, int], dict[str, np.ndarray]] = {}

    def on_images(self, trainer, round_, snapshot):
        for client, entry in snapshot["clients"].items():
            packed = pack_client_snapshot(snapshot["inputs"], snapshot["labels"], entry)
            self.images[round_, client] = unpack_client_snapshot(packed)


def kill_after_a_checkpoint(db, run_id: int, worker: subprocess.Popen, rounds: int) -> int:
    """``kill -9`` the worker once it recorded evaluation steps past a checkpoint; that checkpoint's round."""

    def past_a_checkpoint():
        """(checkpoint round, evaluated rounds) once evaluation steps were recorded after a checkpoint."""
        with db.read() as session:
            checkpoint = load_checkpoint(session, run_id)
            rounds = [row["round"] for row in history_rows(session, run_id)]
        return checkpoint and rounds[-1] > checkpoint.round and (checkpoint.round, rounds)

    checkpoint_round, rounds_at_kill = wait_for(past_a_checkpoint, timeout=60)
    os.kill(worker.pid, signal.SIGKILL)
    worker.communicate(timeout=10)
    assert worker.returncode == -signal.SIGKILL and rounds_at_kill[-1] < rounds
    return checkpoint_round


def assert_ends_as_uninterrupted(db, run_id: int, cfg, worker_id: str) -> None:
    """The run finished on its second attempt with the history, summary and images of an uninterrupted run."""
    reference = SnapshotRecorder()
    expected = Trainer(cfg).run(reference)
    with db.read() as session:
        run = get_run(session, run_id)
        stored = export_result(session, run_id)
        images = run_images(session, run_id)
    assert (run.status, run.worker_id, run.attempts) == (RunStatus.FINISHED, worker_id, 2)
    assert [row["round"] for row in stored["history"]] == list(range(5, cfg.rounds + 1, 5))  # none missing, none twice
    assert without_wall_clock(stored["history"]) == without_wall_clock(expected["history"])
    assert {k: v for k, v in stored["summary"].items() if k != "wall_s"} == \
           {k: v for k, v in expected["summary"].items() if k != "wall_s"}
    assert [(i.round, i.client) for i in images] == list(reference.images)
    for image in images:
        want = reference.images[image.round, image.client]
        assert np.array_equal(image.smashed, want["smashed"]) and np.array_equal(image.reconstruction,
                                                                                 want["reconstruction"])


def test_a_killed_worker_s_run_resumes_and_ends_exactly_as_an_uninterrupted_run(db, tmp_path):
    cfg = tiny_config(rounds=60)
    run_id = queue(db, cfg)
    flags = ("--once", "--stale-after", str(STALE_AFTER), "--checkpoint-every", str(CHECKPOINT_EVERY))
    first = worker_process(db.url, *flags, "--worker-id", "first", cwd=tmp_path)
    checkpoint_round = kill_after_a_checkpoint(db, run_id, first, cfg.rounds)
    time.sleep(STALE_AFTER)  # its heartbeat goes stale ("first" names no process: only the timeout tells)

    second = worker_process(db.url, *flags, "--worker-id", "second", cwd=tmp_path)
    log = second.communicate(timeout=120)[0]
    assert second.returncode == 0, log
    assert f"resumes from its checkpoint at round {checkpoint_round}" in log
    assert_ends_as_uninterrupted(db, run_id, cfg, "second")


def test_a_dead_local_worker_s_run_is_taken_over_at_once_and_before_newer_runs(db, tmp_path):
    cfg = tiny_config(rounds=60)
    orphan = queue(db, cfg)
    flags = ("--once", "--stale-after", "600", "--checkpoint-every", str(CHECKPOINT_EVERY))
    first = worker_process(db.url, *flags, cwd=tmp_path)  # named host:pid, as by default
    checkpoint_round = kill_after_a_checkpoint(db, orphan, first, cfg.rounds)
    newer = queue(db, tiny_config(rounds=4, eval_every=2, image_every=0))

    second = worker_process(db.url, *flags, "--worker-id", "second", cwd=tmp_path)  # no wait: 600 s is far off
    log = second.communicate(timeout=120)[0]
    assert second.returncode == 0, log
    assert f"worker {socket.gethostname()}:{first.pid} is gone" in log
    claims = [int(run_id) for run_id in re.findall(r"run (\d+) claimed by", log)]
    assert claims == [orphan, newer], log
    assert f"resumes from its checkpoint at round {checkpoint_round}" in log
    assert_ends_as_uninterrupted(db, orphan, cfg, "second")
