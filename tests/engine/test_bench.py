"""``python -m engine bench``: it runs (small), reports both execution paths, and refuses bad flags."""

from __future__ import annotations

import json

import pytest
import torch

from engine.cli import main
from engine.studies.bench import run_bench


def test_bench_times_both_execution_paths_against_the_centralized_step(capsys):
    rows = run_bench(clients="2", repeats=1, as_json=True)
    out = json.loads(capsys.readouterr().out)
    assert out["results"] == rows and out["meta"]["device"] == "cpu" and "CPU" in out["meta"]["device_name"]
    (row,) = rows
    for preset in ("parallel_sl", "locfedmix_sl"):
        for execution in ("loop", "batched"):
            assert row[f"{preset}_{execution}_s"] > 0
    assert row["parallel_sl_batched_ratio"] == pytest.approx(row["parallel_sl_batched_s"] / row["centralized_s"])
    assert row["locfedmix_sl_loop_ratio"] == pytest.approx(row["locfedmix_sl_loop_s"] / row["centralized_plus_mixup_s"])


@pytest.mark.parametrize("argv,message", [
    (["bench", "--execution", "vmap"], "--execution takes loop, batched"),
    (["bench", "--execution", ","], "--execution takes loop, batched"),
])
def test_bench_refuses_bad_flags(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_bench_on_cuda_without_a_gpu_says_so(capsys):
    assert main(["bench", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
