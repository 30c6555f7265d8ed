"""The reproduction command: a resumable grid of runs, tables and plots, in-process or queued."""

from __future__ import annotations

import csv
import threading

import pytest

import engine.reproduce as rep
from storage.db import close, connect
from storage.worker import Worker, WorkerOptions


def test_table3_grid_writes_tables_and_plots_and_resumes(tmp_path, monkeypatch):
    out = rep.reproduce("table3", "digits", [3, 4], rounds=2, seed=0, profile="demo", out_dir=str(tmp_path),
                        db_url=None)
    assert len(list((out / "runs").glob("*.json"))) == 16
    table = (out / "table.md").read_text()
    assert table.count("\n| ") >= 8 + 8  # our 8 rows and the paper's 8
    assert "8: 1,2,3,4p,5 (LocFedMix-SL)" in table
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["arm"][:1], r["n"]) for r in rows} == {(str(i), n) for i in range(1, 9) for n in ("3", "4")}
    assert (out / "accuracy_vs_n.png").stat().st_size > 1000 and (out / "curves_n4.png").exists()
    monkeypatch.setattr(rep, "run_in_process", lambda cfg, path: pytest.fail(f"{cfg.name} trained twice"))
    rep.reproduce("table3", "digits", [3, 4], 2, 0, "demo", str(tmp_path), None)


def test_study_configs_follow_the_paper_where_the_scale_allows():
    cfg = rep.study_config(rep.table3_arms()[7], 20, "fashion-mnist", 300, 0, "demo")
    assert cfg.mixup.enabled and cfg.mixup.num_partners == 10 and cfg.mixup.reduction == "sum"
    assert cfg.local_loss.average_aux and cfg.averaging.enabled and cfg.batch_size == 64


def test_sglr_grid_runs_through_the_queue(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    worker = Worker(connect(url), WorkerOptions(poll=0.1))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        out = rep.reproduce("sglr", "digits", [3], rounds=2, seed=0, profile="demo", out_dir=str(tmp_path / "r"),
                            db_url=url)
    finally:
        worker.stop()
        thread.join(timeout=30)
        close(url)
    assert len(list((out / "runs").glob("*.json"))) == 4
    assert "SGLR: both" in (out / "table.md").read_text()
