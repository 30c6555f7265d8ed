"""The queue and the records, one query at a time, on a SQLite file."""

from __future__ import annotations

import io
import json
import threading
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import event, func, select, update

from storage.db import Database
from storage.models import Checkpoint, Image, Metric, Run, RunStatus, WorkerRecord
from storage.queries import (
    RunLost,
    RunNotFound,
    append_images,
    append_metrics,
    claim_next_run,
    db_now,
    delete_run,
    export_result,
    forget_stale_workers,
    get_run,
    heartbeat,
    history_rows,
    image_rounds,
    known_worker_ids,
    latest_metrics,
    list_runs,
    live_workers,
    load_checkpoint,
    mark_failed,
    mark_finished,
    parse_run_id,
    release_run,
    remove_worker,
    request_cancel,
    requeue_stale_runs,
    rewind_to_checkpoint,
    run_history,
    run_images,
    save_checkpoint,
)
from tests.storage.support import queue, tiny_config

W1, W2 = "worker-1", "worker-2"


def history_row(round_: int, **extra) -> dict:
    """A row shaped like the engine's history rows, in the engine's key order."""
    return {"round": round_, "test_acc": 0.125 * round_, "test_loss": 2.3 / round_, "test_acc_min": 0.1,
            "test_acc_max": 0.2, "clients_evaluated": 3, "train_loss": 1 / 3, "train_loss_mixup": 0.0,
            "train_loss_local": 0.5, "round_s": 0.01, "bytes_smashed_up": 2**40 + round_, "bytes_grads_down": 7,
            "bytes_model_up": 0, "bytes_model_down": 0, "bytes_up": 2**40 + round_, "bytes_down": 7,
            "wall_s": 0.1 * round_, **extra}


def snapshot(with_reconstruction: bool = True) -> dict:
    rng = np.random.default_rng(0)
    inputs = rng.random((4, 3, 8, 8), dtype=np.float32)
    clients = {}
    for client in (0, 2):
        entry = {"smashed": rng.standard_normal((4, 4, 3, 3)).astype(np.float32)}
        if with_reconstruction:
            entry["reconstruction"] = rng.random((4, 3, 8, 8), dtype=np.float32)
            entry["mse"] = 0.25 + client
        clients[client] = entry
    return {"inputs": inputs, "labels": np.array([3, 1, 4, 1]), "clients": clients}


def claimed(db: Database, worker_id: str = W1) -> int:
    """Queue a run and let ``worker_id`` claim it."""
    run_id = queue(db, tiny_config())
    with db.write() as session:
        assert claim_next_run(session, worker_id).id == run_id
    return run_id


def test_a_queued_run_keeps_its_config_seed_and_name(db):
    cfg = tiny_config(name="lfm", seed=7)
    run_id = queue(db, cfg)
    with db.read() as session:
        run = get_run(session, run_id)
    assert (run.status, run.name, run.seed, run.rounds, run.last_round) == (RunStatus.QUEUED, "lfm", 7, 20, 0)
    assert run.config == cfg.model_dump(mode="json") and run.progress == 0.0


def test_an_unknown_run_id_is_a_readable_error(db):
    with db.read() as session, pytest.raises(RunNotFound, match="no run with id 42"):
        get_run(session, 42)


def test_runs_are_listed_newest_first_and_filtered_by_status(db):
    ids = [queue(db, tiny_config()) for _ in range(3)]
    with db.write() as session:
        claim_next_run(session, W1)
    with db.read() as session:
        assert [r.id for r in list_runs(session)] == ids[::-1]
        assert [r.id for r in list_runs(session, [RunStatus.QUEUED])] == ids[:0:-1]
        assert [r.id for r in list_runs(session, limit=1)] == ids[-1:]


def test_the_oldest_queued_run_is_claimed_first(db):
    first, second = queue(db, tiny_config()), queue(db, tiny_config())
    with db.write() as session:
        run = claim_next_run(session, W1)
    assert run.id == first and run.status == RunStatus.RUNNING and run.worker_id == W1 and run.attempts == 1
    with db.write() as session:
        assert claim_next_run(session, W2).id == second
        assert claim_next_run(session, W2) is None


def test_a_run_a_worker_already_started_is_claimed_before_older_fresh_runs(db):
    older, orphan, newer = queue(db, tiny_config()), queue(db, tiny_config()), queue(db, tiny_config())
    with db.write() as session:
        session.execute(update(Run).where(Run.id == older).values(status=RunStatus.CANCELLED))
        assert claim_next_run(session, W1).id == orphan
        release_run(session, orphan, W1, 0)  # given back (shutdown, or a lost worker's run queued again)
        session.execute(update(Run).where(Run.id == older).values(status=RunStatus.QUEUED))
        assert [claim_next_run(session, W2).id for _ in range(3)] == [orphan, older, newer]


def test_concurrent_claims_take_every_run_exactly_once(db):
    run_ids = [queue(db, tiny_config()) for _ in range(40)]
    taken: dict[str, list[int]] = {f"w{i}": [] for i in range(4)}
    start = threading.Barrier(len(taken))

    def claim_all(worker_id: str) -> None:
        start.wait()
        while True:
            with db.write() as session:
                run = claim_next_run(session, worker_id)
            if run is None:
                return
            taken[worker_id].append(run.id)

    threads = [threading.Thread(target=claim_all, args=(w,)) for w in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_taken = [run_id for ids in taken.values() for run_id in ids]
    assert sorted(all_taken) == run_ids
    with db.read() as session:
        assert {(r.status, r.attempts) for r in list_runs(session)} == {(RunStatus.RUNNING, 1)}


def test_workers_are_alive_while_they_report_idle_or_training(db):
    run_id = claimed(db, W1)
    with db.write() as session:
        assert claim_next_run(session, W2) is None  # W2 looked at the queue: alive, idle
        heartbeat(session, run_id, W1, 3)
        alive = live_workers(session, max_age=30)
    assert [(w.worker_id, w.run_id) for w in alive] == [(W1, run_id), (W2, None)]
    with db.write() as session:
        session.execute(update(WorkerRecord).where(WorkerRecord.worker_id == W2)
                        .values(heartbeat_at=db_now(session) - timedelta(seconds=61)))
        assert [w.worker_id for w in live_workers(session, max_age=30)] == [W1]
        forget_stale_workers(session, stale_after=60)
        remove_worker(session, W1)
        assert session.scalar(select(func.count()).select_from(WorkerRecord)) == 0


def test_a_heartbeat_records_progress_and_reports_a_cancel_request(db):
    run_id = claimed(db)
    with db.write() as session:
        assert heartbeat(session, run_id, W1, 12).cancel_requested is False
        assert request_cancel(session, run_id) == RunStatus.RUNNING
        reply = heartbeat(session, run_id, W1, 13)
    assert reply.owned and reply.cancel_requested
    with db.read() as session:
        assert get_run(session, run_id).last_round == 13


def test_cancelling_a_queued_run_cancels_it_at_once_and_an_ended_run_stays_as_it_is(db):
    run_id = queue(db, tiny_config())
    with db.write() as session:
        assert request_cancel(session, run_id) == RunStatus.CANCELLED
        assert claim_next_run(session, W1) is None
    done = claimed(db)
    with db.write() as session:
        mark_finished(session, done, W1, {"final_test_acc": 0.5}, 20)
        assert request_cancel(session, done) == RunStatus.FINISHED


def test_runs_with_a_stale_heartbeat_are_queued_again_with_their_checkpoint(db):
    stale, alive, stale_cancelled = claimed(db, W1), claimed(db, W2), claimed(db, "worker-3")
    with db.write() as session:
        save_checkpoint(session, stale, W1, 10, b"state at 10")
        request_cancel(session, stale_cancelled)
        session.execute(update(Run).where(Run.id.in_([stale, stale_cancelled]))
                        .values(heartbeat_at=db_now(session) - timedelta(seconds=31)))
        assert requeue_stale_runs(session, stale_after=30) == [stale]
        assert heartbeat(session, stale, W1, 11).owned is False  # the presumed-dead worker learns it lost the run
    with db.read() as session:
        statuses = {r.id: r.status for r in list_runs(session)}
        assert load_checkpoint(session, stale).data == b"state at 10"
    assert statuses == {stale: RunStatus.QUEUED, alive: RunStatus.RUNNING, stale_cancelled: RunStatus.CANCELLED}


def test_the_runs_of_dead_workers_are_queued_again_without_waiting_for_the_timeout(db):
    dead, alive = claimed(db, W1), claimed(db, W2)
    with db.write() as session:
        assert known_worker_ids(session) == {W1, W2}
        assert requeue_stale_runs(session, stale_after=30, dead_workers={W1, "gone-before"}) == [dead]
        forget_stale_workers(session, stale_after=30, dead_workers={W1})
        assert known_worker_ids(session) == {W2}
        assert get_run(session, alive).status == RunStatus.RUNNING


def test_a_run_says_the_round_of_its_checkpoint_in_one_query(db):
    with_checkpoint, without = claimed(db), queue(db, tiny_config())
    with db.write() as session:
        save_checkpoint(session, with_checkpoint, W1, 10, b"state at 10")
    statements = []
    event.listen(db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with db.read() as session:
        listed = {run.id: run.checkpoint_round for run in list_runs(session)}
    assert listed == {with_checkpoint: 10, without: None}
    assert len([sql for sql in statements if sql.lstrip().upper().startswith("SELECT")]) == 1
    with db.read() as session:
        run = get_run(session, with_checkpoint)
    assert run.checkpoint_round == 10 and json.loads(json.dumps(run.as_dict()))["checkpoint_round"] == 10


def test_metrics_come_back_as_the_engine_wrote_them(db):
    run_id = claimed(db)
    rows = [history_row(5), history_row(10, grad_norm=1.5)]  # grad_norm: a figure without a column of its own
    with db.write() as session:
        append_metrics(session, run_id, W1, rows[:1])
    with db.write() as session:
        append_metrics(session, run_id, W1, rows[1:])
    with db.read() as session:
        stored = history_rows(session, run_id)
        frame = run_history(session, run_id)
        latest = latest_metrics(session, run_id)
    assert stored == rows and [list(r) for r in stored] == [list(r) for r in rows]
    assert all(type(stored[0][k]) is type(v) for k, v in rows[0].items())
    assert list(frame["round"]) == [5, 10] and frame["test_acc"].tolist() == [0.625, 1.25]
    assert latest == rows[1]


def test_an_empty_history_is_an_empty_frame_with_the_metric_columns(db):
    run_id = queue(db, tiny_config())
    with db.read() as session:
        frame = run_history(session, run_id)
        assert latest_metrics(session, run_id) is None
    assert frame.empty and "test_acc" in frame.columns


def test_images_come_back_as_compact_arrays_per_client(db):
    run_id = claimed(db)
    snap = snapshot()
    with db.write() as session:
        append_images(session, run_id, W1, 10, snap)
        append_images(session, run_id, W1, 20, snapshot(with_reconstruction=False))
    with db.read() as session:
        assert image_rounds(session, run_id) == [10, 20]
        at_10 = run_images(session, run_id, 10)
        at_20 = run_images(session, run_id, 20)
    assert [(r.round, r.client) for r in at_10] == [(10, 0), (10, 2)]
    first = at_10[0]
    np.testing.assert_allclose(first.inputs, snap["inputs"], atol=0.5 / 255 + 1e-7)
    np.testing.assert_allclose(first.reconstruction, snap["clients"][0]["reconstruction"], atol=0.5 / 255 + 1e-7)
    np.testing.assert_allclose(first.smashed, snap["clients"][0]["smashed"], rtol=1e-3, atol=1e-3)
    assert first.labels.tolist() == [3, 1, 4, 1] and first.mse == 0.25
    assert at_20[0].reconstruction is None and at_20[0].mse is None


def with_attack(snap: dict, client: int = 0) -> dict:
    """``snap`` as :func:`engine.privacy.attach_to_snapshot` leaves it: the attacked client's entry
    gains the server's reconstruction of the shown images and the PSNR/SSIM of both reconstructions."""
    rng = np.random.default_rng(1)
    entry = snap["clients"][client]
    entry["attack"] = rng.random(snap["inputs"].shape, dtype=np.float32)
    entry["attack_psnr"], entry["attack_ssim"] = np.array([11.5, 12.25, 9.0, 10.0]), np.array([0.5, 0.25, 0.125, 0.0])
    if entry.get("reconstruction") is not None:
        entry["psnr"], entry["ssim"] = np.array([20.5, 21.0, 19.0, 18.0]), np.array([0.75, 0.875, 0.625, 0.5])
    return snap


def test_the_attack_reconstruction_and_its_scores_come_back_for_the_attacked_client_only(db):
    run_id = claimed(db)
    snap = with_attack(snapshot())
    with db.write() as session:
        append_images(session, run_id, W1, 10, snap)
    with db.read() as session:
        attacked, other = run_images(session, run_id, 10)
    entry = snap["clients"][0]
    np.testing.assert_allclose(attacked.attack, entry["attack"], atol=0.5 / 255 + 1e-7)
    assert attacked.attack.dtype == np.float32 and attacked.attack.shape == (4, 3, 8, 8)
    for key in ("attack_psnr", "attack_ssim", "psnr", "ssim"):
        value = getattr(attacked, key)
        assert value.dtype == np.float32 and value.tolist() == entry[key].tolist(), key  # exact in float32
    assert attacked.reconstruction is not None and attacked.mse == 0.25
    assert all(getattr(other, key) is None for key in ("attack", "attack_psnr", "attack_ssim", "psnr", "ssim"))


def test_an_attack_on_a_client_without_infopro_keeps_its_scores_and_no_reconstruction_scores(db):
    run_id = claimed(db)
    snap = with_attack(snapshot(with_reconstruction=False))
    with db.write() as session:
        append_images(session, run_id, W1, 10, snap)
    with db.read() as session:
        attacked = run_images(session, run_id, 10)[0]
    assert attacked.reconstruction is None and attacked.psnr is None and attacked.ssim is None
    assert attacked.attack is not None and attacked.attack_psnr.tolist() == [11.5, 12.25, 9.0, 10.0]


def test_a_snapshot_stored_before_leakage_existed_still_reads(db):
    """The bytes an older SplitLab wrote: inputs, labels, smashed, reconstruction and nothing more."""
    run_id = claimed(db)
    rng = np.random.default_rng(2)
    buf = io.BytesIO()
    np.savez_compressed(buf, inputs=np.full((2, 1, 4, 4), 255, np.uint8), labels=np.array([1, 2]),
                        smashed=rng.standard_normal((2, 3)).astype(np.float16),
                        reconstruction=np.zeros((2, 1, 4, 4), np.uint8))
    with db.write() as session:
        session.add(Image(run_id=run_id, round=5, client=1, arrays=buf.getvalue(), mse=0.5))
    with db.read() as session:
        (record,) = run_images(session, run_id)
    assert record.inputs.max() == 1.0 and record.reconstruction.max() == 0.0 and record.labels.tolist() == [1, 2]
    assert (record.attack, record.attack_psnr, record.attack_ssim, record.psnr, record.ssim) == (None,) * 5


def test_a_checkpoint_is_replaced_and_a_rewind_drops_the_rows_after_it(db):
    run_id = claimed(db)
    with db.write() as session:
        append_metrics(session, run_id, W1, [history_row(r) for r in (5, 10, 15)])
        append_images(session, run_id, W1, 10, snapshot())
        save_checkpoint(session, run_id, W1, 5, b"five")
        save_checkpoint(session, run_id, W1, 10, b"ten")
        append_images(session, run_id, W1, 20, snapshot())
        checkpoint = rewind_to_checkpoint(session, run_id, W1)
    assert (checkpoint.round, checkpoint.data) == (10, b"ten")
    with db.read() as session:
        assert [r["round"] for r in history_rows(session, run_id)] == [5, 10]
        assert image_rounds(session, run_id) == [10]
        assert session.scalar(select(func.count()).select_from(Checkpoint)) == 1
        assert get_run(session, run_id).last_round == 10


def test_a_rewind_without_a_checkpoint_starts_over(db):
    run_id = claimed(db)
    with db.write() as session:
        append_metrics(session, run_id, W1, [history_row(5)])
        assert rewind_to_checkpoint(session, run_id, W1) is None
    with db.read() as session:
        assert history_rows(session, run_id) == []


def test_a_worker_that_lost_its_run_cannot_write_to_it(db):
    run_id = claimed(db)
    with db.write() as session:
        session.execute(update(Run).where(Run.id == run_id).values(worker_id=W2))
    for write in (lambda s: append_metrics(s, run_id, W1, [history_row(5)]),
                  lambda s: append_images(s, run_id, W1, 5, snapshot()),
                  lambda s: save_checkpoint(s, run_id, W1, 5, b""),
                  lambda s: mark_failed(s, run_id, W1, "boom")):
        with pytest.raises(RunLost), db.write() as session:
            write(session)
    with db.read() as session:
        assert get_run(session, run_id).status == RunStatus.RUNNING and history_rows(session, run_id) == []


def test_finishing_stores_the_summary_and_drops_the_checkpoint(db):
    run_id = claimed(db)
    with db.write() as session:
        append_metrics(session, run_id, W1, [history_row(20)])
        save_checkpoint(session, run_id, W1, 10, b"ten")
        mark_finished(session, run_id, W1, {"final_test_acc": 0.5, "stopped": False}, 20)
    with db.read() as session:
        run = get_run(session, run_id)
        assert load_checkpoint(session, run_id) is None
        result = export_result(session, run_id)
    assert (run.status, run.last_round, run.progress, run.finished_at is not None) == (RunStatus.FINISHED, 20, 1, True)
    assert result == {"config": run.config, "history": [history_row(20)], "summary": run.summary}


def test_a_failure_keeps_its_message(db):
    run_id = claimed(db)
    with db.write() as session:
        mark_failed(session, run_id, W1, "DatasetNotFound: no cifar10 here")
    with db.read() as session:
        run = get_run(session, run_id)
    assert (run.status, run.error) == (RunStatus.FAILED, "DatasetNotFound: no cifar10 here")


def test_deleting_a_run_deletes_its_records(db):
    run_id = claimed(db)
    with db.write() as session:
        append_metrics(session, run_id, W1, [history_row(5)])
        append_images(session, run_id, W1, 5, snapshot())
        save_checkpoint(session, run_id, W1, 5, b"five")
        delete_run(session, run_id)
    with db.read() as session:
        counts = [session.scalar(select(func.count()).select_from(t)) for t in (Run, Metric, Image, Checkpoint)]
    assert counts == [0, 0, 0, 0]
    with db.write() as session, pytest.raises(RunNotFound):
        delete_run(session, run_id)


@pytest.mark.parametrize(("text", "expected"), [
    ("1", 1), (" 42 ", 42), ("9223372036854775807", 2**63 - 1), ("9223372036854775808", None),
    ("99999999999999999999999", None), ("0", None), ("-1", None), ("1.5", None), ("abc", None), ("", None),
    ("1';DROP TABLE runs", None), ("１", None), (None, None)])
def test_a_run_id_is_whole_digits_within_what_a_row_id_can_hold(text, expected):
    assert parse_run_id(text) == expected
