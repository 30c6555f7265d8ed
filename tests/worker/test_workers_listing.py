"""``engine workers``: every worker on the queue with its host, its run and its last heartbeat."""

from __future__ import annotations

import json
import signal
import socket

from storage.cli import main as queue_main
from storage.queries import get_run
from tests.storage.support import queue, tiny_config, wait_for, worker_process


def test_workers_lists_each_worker_with_host_run_and_heartbeat(db, tmp_path, capsys):
    assert queue_main(["workers", "--db", db.url]) == 0
    assert "no workers" in capsys.readouterr().out
    run_id = queue(db, tiny_config(rounds=100_000, eval_every=50, image_every=0))
    busy = worker_process(db.url, "--worker-id", "busy", cwd=tmp_path)
    idle = worker_process(db.url, "--worker-id", "idle", "--poll", "0.1", cwd=tmp_path)
    try:
        def both_seen():
            queue_main(["workers", "--db", db.url, "--json"])
            listed = json.loads(capsys.readouterr().out)
            return listed if {w["worker_id"] for w in listed} == {"busy", "idle"} else None

        listed = wait_for(both_seen, timeout=60, interval=0.2)
        with db.read() as s:
            holder = get_run(s, run_id).worker_id
        by_id = {w["worker_id"]: w for w in listed}
        assert by_id[holder]["run_id"] == run_id
        assert by_id["busy" if holder == "idle" else "idle"]["run_id"] is None
        assert all(w["host"] == socket.gethostname() and 0 <= w["silent_s"] < 5 for w in listed)
        assert queue_main(["workers", "--db", db.url]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["HOST", "WORKER", "RUN", "LAST", "HEARTBEAT"]
        assert any(f"#{run_id}" in line and holder in line and "s ago" in line for line in lines[1:])
    finally:
        for w in (busy, idle):
            w.send_signal(signal.SIGTERM)
            w.communicate(timeout=60)


def test_an_unreachable_database_is_one_line_without_its_password(capsys):
    url = "postgresql+psycopg://lab:secret@127.0.0.1:1/splitlab"  # nothing listens on port 1
    assert queue_main(["workers", "--db", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "secret" not in err
    assert err.startswith("error: database postgresql+psycopg://lab:***@127.0.0.1:1/splitlab: ")
    assert "Connection refused" in err
