"""The queue commands end to end: submit, worker --once, status, export, cancel."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import update

from engine.cli import main as engine_main
from storage.cli import main as queue_main
from storage.models import Run
from storage.queries import claim_next_run, db_now, list_runs, requeue_stale_runs, save_checkpoint
from tests.storage.support import BAD_RUN_FLAGS, without_wall_clock

RUN_FLAGS = ["--dataset", "synthetic", "--clients", "3", "--rounds", "6", "--batch-size", "8", "--eval-every", "3",
             "--techniques", "1,2,3,4p,5", "--seed", "4", "--set", "data.eval_subset=64", "--name", "cli run"]


@pytest.fixture
def url(db):
    return db.url


def submit(url: str, capsys, *flags: str) -> int:
    assert queue_main(["submit", "--db", url, *RUN_FLAGS, *flags]) == 0
    return int(capsys.readouterr().out)


def status_json(url: str, run_id: int, capsys) -> dict:
    assert queue_main(["status", str(run_id), "--db", url, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_submit_queues_the_run_that_the_flags_describe_and_prints_its_id(url, capsys):
    run_id = submit(url, capsys, "--lr", "0.02")
    status = status_json(url, run_id, capsys)
    assert (status["id"], status["status"], status["name"], status["progress"]) == (run_id, "queued", "cli run", 0)
    assert status["config"]["optim"]["lr"] == 0.02 and status["config"]["mixup"]["enabled"] is True
    assert status["latest_metrics"] is None


def test_bad_flags_and_unknown_runs_exit_with_code_2_and_one_line(url, capsys):
    assert queue_main(["submit", "--db", url, *RUN_FLAGS, "--clients", "0"]) == 2
    assert capsys.readouterr().err == "error: --clients must be between 1 and 1000, got 0\n"
    assert queue_main(["status", "99", "--db", url]) == 2
    assert capsys.readouterr().err == "error: no run with id 99\n"
    assert queue_main(["status", "one", "--db", url]) == 2
    assert "is not a run id" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", BAD_RUN_FLAGS, ids=" ".join)
def test_submit_names_a_bad_value_by_its_flag_and_queues_nothing(args, message, db, capsys):
    assert engine_main(["submit", "--db", db.url, *args]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    with db.read() as session:
        assert list_runs(session) == []


def test_worker_status_and_export_give_what_engine_run_gives(url, capsys, tmp_path):
    run_id = submit(url, capsys)
    assert queue_main(["worker", "--db", url, "--once"]) == 0
    capsys.readouterr()
    assert queue_main(["status", str(run_id), "--db", url]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"run {run_id} (cli run): finished, round 6/6 (100%)") and "latest (round 6): test_acc" in text
    exported, direct = tmp_path / "exported.json", tmp_path / "direct.json"
    assert queue_main(["export", str(run_id), "--db", url, "--out", str(exported)]) == 0
    assert engine_main(["run", *RUN_FLAGS, "--out", str(direct)]) == 0
    ours, theirs = json.loads(exported.read_text()), json.loads(direct.read_text())
    assert ours["config"] == theirs["config"]
    assert without_wall_clock(ours["history"]) == without_wall_clock(theirs["history"])
    ours["summary"].pop("wall_s"), theirs["summary"].pop("wall_s")
    assert ours["summary"] == theirs["summary"]


def test_cancelling_a_queued_run_ends_it_before_any_worker_takes_it(url, capsys):
    run_id = submit(url, capsys)
    assert queue_main(["cancel", str(run_id), "--db", url]) == 0
    assert capsys.readouterr().out == f"run {run_id} is cancelled\n"
    assert queue_main(["worker", "--db", url, "--once"]) == 0
    assert status_json(url, run_id, capsys)["status"] == "cancelled"


def test_exporting_an_unfinished_run_warns_that_the_summary_is_missing(url, capsys, tmp_path):
    run_id = submit(url, capsys)
    out = tmp_path / "queued.json"
    assert queue_main(["export", str(run_id), "--db", url, "--out", str(out)]) == 0
    assert "has not ended" in capsys.readouterr().err
    assert json.loads(out.read_text())["summary"] is None


def test_the_database_url_comes_from_the_environment_without_db(url, capsys, monkeypatch):
    monkeypatch.setenv("SPLITLAB_DB", url)
    assert queue_main(["submit", *RUN_FLAGS]) == 0
    run_id = int(capsys.readouterr().out)
    assert status_json(url, run_id, capsys)["status"] == "queued"


def claimed_and_silent(db, capsys, worker_id: str, silent_s: float, checkpoint_round: int | None) -> int:
    """A submitted run, claimed by ``worker_id``, whose last heartbeat was ``silent_s`` seconds ago."""
    run_id = submit(db.url, capsys)
    with db.write() as session:
        claim_next_run(session, worker_id)
        if checkpoint_round is not None:
            save_checkpoint(session, run_id, worker_id, checkpoint_round, b"state")
        session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=db_now(session) - timedelta(seconds=silent_s)))
    return run_id


def status_text(db, run_id: int, capsys) -> str:
    assert engine_main(["status", str(run_id), "--db", db.url]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("checkpoint_round, resumes_from", [(3, 3), (None, 0)])
def test_status_says_a_silent_worker_is_lost_and_where_its_run_resumes(db, capsys, checkpoint_round, resumes_from):
    run_id = claimed_and_silent(db, capsys, "box:123", silent_s=42.2, checkpoint_round=checkpoint_round)
    text = status_text(db, run_id, capsys)  # 42 s, or a little more on a busy machine
    silent = re.search(r"worker box:123 lost \(no heartbeat for (\d+) s\); the run resumes from round (\d+) "
                       r"when a worker takes it over", text)
    assert silent and 42 <= int(silent[1]) <= 50 and int(silent[2]) == resumes_from, text
    assert status_json(db.url, run_id, capsys)["checkpoint_round"] == checkpoint_round


def test_status_says_where_a_run_queued_again_resumes(db, capsys):
    run_id = claimed_and_silent(db, capsys, "box:123", silent_s=60, checkpoint_round=3)
    with db.write() as session:
        assert requeue_stale_runs(session, stale_after=30) == [run_id]
    assert "queued again; resumes from round 3" in status_text(db, run_id, capsys)


def test_status_shows_a_worker_that_beat_lately_as_alive(db, capsys):
    run_id = claimed_and_silent(db, capsys, "box:123", silent_s=1, checkpoint_round=None)
    text = status_text(db, run_id, capsys)
    assert "worker box:123, last heartbeat " in text and "lost" not in text


@pytest.mark.parametrize("command", [["status"], ["cancel"], ["export", "--out", "unused.json"]])
@pytest.mark.parametrize("run_id", ["99999999999999999999999", "abc", "0", "1.5"])
def test_a_run_id_no_run_can_have_is_refused_in_one_line_before_any_query(url, capsys, command, run_id):
    assert engine_main([command[0], run_id, "--db", url, *command[1:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"'{run_id}' is not a run id (a whole number from 1 to" in err
    assert "Traceback" not in err and "OverflowError" not in err
