"""The command line: presets listing, a run written as JSON, and one clear line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main
from engine.presets import PRESETS
from tests.storage.support import BAD_RUN_FLAGS

TINY = ["--dataset", "synthetic", "--clients", "3", "--rounds", "4", "--batch-size", "8", "--eval-every", "2",
        "--set", "data.eval_subset=32"]


def test_presets_prints_one_line_per_preset_starting_with_its_name(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(PRESETS)
    assert "1,2,3,4p,5" in next(line for line in lines if line.startswith("locfedmix_sl "))
    for line, preset in zip(lines, PRESETS.values()):  # which paper or code each follows
        assert preset.source and preset.source in line
    assert "SplitFed authors' code (V1)" in next(line for line in lines if line.startswith("splitfed_v1 "))
    assert "LocFedMix-SL Table 3 row 4" in next(line for line in lines if line.startswith("splitfed "))


def test_run_writes_config_history_and_summary(tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main(["run", "--preset", "locfedmix_sl", *TINY, "--n-s", "2", "--tc", "2", "--lam-alpha", "2",
                 "--set", "mixup.reduction=sum", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    cfg = data["config"]
    assert cfg["num_clients"] == 3 and cfg["mixup"]["num_partners"] == 2 and cfg["mixup"]["alpha"] == 2.0
    assert cfg["averaging"]["interval"] == 2 and cfg["mixup"]["reduction"] == "sum"
    assert [row["round"] for row in data["history"]] == [2, 4]
    for key in ("test_acc", "test_loss", "train_loss", "bytes_up", "bytes_down", "train_loss_mixup"):
        assert key in data["history"][0]
    for key in ("final_test_acc", "best_test_acc", "rounds_to_target", "wall_s"):
        assert key in data["summary"]
    assert "final test accuracy" in capsys.readouterr().out


def test_techniques_flag_builds_the_same_config_as_the_preset(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["run", "--preset", "splitfed", *TINY, "--out", str(a)]) == 0
    assert main(["run", "--techniques", "1,2,5", *TINY, "--name", "SplitFed", "--out", str(b)]) == 0
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("wall_s", "round_s")} for r in h]  # noqa: E731
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    assert da["config"] == db["config"]
    assert strip(da["history"]) == strip(db["history"])


@pytest.mark.parametrize("args, field", [
    (["--clients", "4", "--n-s", "4"], "--n-s"),
    (["--tc", "0"], "--tc"),
    (["--lr", "-0.1"], "--lr"),
    (["--preset", "nope"], "preset"),
    (["--techniques", "1,9"], "techniques"),
    (["--set", "mixup.bogus=1"], "--set mixup.bogus"),
    (["--set", "split_avg.fraction=1.5"], "--set split_avg.fraction"),
    (["--set", "split_lr.alpha=3"], "--set split_lr.alpha"),
    (["--dataset", "imagenet"], "--dataset"),
])
def test_bad_input_exits_2_with_one_line_naming_the_field(args, field, capsys):
    base = ["run", "--dataset", "synthetic", "--clients", "3", "--rounds", "1"]
    assert main([*base, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and field in err, err


@pytest.mark.parametrize("args, message", BAD_RUN_FLAGS, ids=" ".join)
def test_a_bad_value_is_named_by_its_flag_with_what_the_flag_allows(args, message, capsys):
    assert main(["run", *args]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_the_front_door_names_the_flag_and_exits_2(tmp_path):
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, "-m", "engine", "run", "--n-s", "-1"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": root}, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "error: --n-s must be between 0 and n-1 = 9 (n = 10 clients), got -1\n"


def test_missing_data_set_is_a_clear_error_not_a_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = str(Path(__file__).resolve().parents[2])
    env = {"SPLITLAB_DATA": str(tmp_path / "empty"), "PATH": "/usr/bin:/bin", "PYTHONPATH": root}
    proc = subprocess.run([sys.executable, "-m", "engine", "run", "--dataset", "cifar10", "--rounds", "1",
                           "--data-dir", str(tmp_path / "nowhere")], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "cifar10" in proc.stderr.lower() and str(tmp_path / "nowhere") in proc.stderr
