"""The queue commands end to end: submit, worker --once, status, export, cancel."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from engine.cli import main as engine_main
from storage.cli import main as queue_main
from storage.models import Run
from storage.queries import claim_next_run, db_now, list_runs, requeue_stale_runs, save_checkpoint
from tests.storage.support import BAD_RUN_FLAGS, without_wall_clock

ROOT = Path(__file__).resolve().parents[2]
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


def test_submit_refuses_a_run_the_data_cannot_hold_and_queues_nothing(db, capsys):
    assert engine_main(["submit", "--db", db.url, "--dataset", "digits", "--samples-per-client", "1000000000"]) == 2
    assert capsys.readouterr().err == ("error: --samples-per-client must be at most the 1,437 training samples of "
                                       "digits (each client draws distinct items), got 1,000,000,000\n")
    with db.read() as session:
        assert list_runs(session) == []


def test_submit_for_workers_elsewhere_skips_only_this_hosts_data_check(db, capsys, tmp_path, monkeypatch):
    """A queue host without the data can still queue a Fashion-MNIST run for worker hosts that have it;
    the config's own ranges are still judged."""
    import engine.data

    monkeypatch.setenv("SPLITLAB_DATA", str(tmp_path))  # an empty data folder first ...
    monkeypatch.chdir(tmp_path)  # ... no ./data beside it, and no shared folder beside the project
    monkeypatch.setattr(engine.data, "_SHARED_DATA", tmp_path / "shared")
    flags = ["submit", "--db", db.url, "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "none")]
    assert engine_main(flags) == 2
    assert "--dataset must be a data set this host has" in capsys.readouterr().err
    with db.read() as session:
        assert list_runs(session) == []
    assert engine_main([*flags, "--workers-have-the-data"]) == 0
    with db.read() as session:
        assert [r.config["data"]["dataset"] for r in list_runs(session)] == ["fashion-mnist"]
    assert engine_main([*flags, "--workers-have-the-data", "--clients", "0"]) == 2
    assert "--clients must be" in capsys.readouterr().err


def _engine_into_a_closed_pipe(*args: str, cwd) -> subprocess.CompletedProcess:
    """Run ``python -m engine ARGS`` with stdout a pipe whose reader has already gone (as `| head -1` leaves it)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "engine", *args], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, cwd=cwd, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        os.close(write_end)


@pytest.mark.parametrize("command", [["status", "{id}"], ["status", "{id}", "--json"], ["workers"], ["presets"],
                                     ["data", "list"]])
def test_a_reader_that_stops_early_gets_no_broken_pipe_traceback(command, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    run_id = submit(url, capsys)
    args = [part.format(id=run_id) for part in command] + (["--db", url] if command[0] in ("status", "workers") else [])
    proc = _engine_into_a_closed_pipe(*args, cwd=tmp_path)
    assert proc.stderr == "" and proc.returncode == 141  # 128 + SIGPIPE, as `yes | head -1` ends


def test_status_piped_into_head_prints_its_first_line_only(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    run_id = submit(url, capsys)
    shell = f"{sys.executable} -m engine status {run_id} --db {url} 2>{tmp_path / 'err'} | head -1"
    proc = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout == f"run {run_id} (cli run): queued, round 0/6 (0%)\n"
    assert (tmp_path / "err").read_text() == ""
