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


def test_bench_times_the_peers_and_parallel_sl_against_the_lockstep_loop(capsys):
    (row,) = run_bench(clients="2", repeats=1, executions=("loop",))
    assert row["lockstep_s"] > 0 and row["splitfed_authors_s"] > 0
    assert row["parallel_sl_loop_vs_lockstep"] == pytest.approx(row["parallel_sl_loop_s"] / row["lockstep_s"])
    assert "peers: lockstep loop (SGLR authors' style)" in capsys.readouterr().out


def _flat(module):
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_the_lockstep_peer_trains_every_client_and_the_server_once_a_round(monkeypatch):
    from engine.studies import bench_peers

    made = {}
    real = bench_peers._clients

    def keep(*args):
        made["parts"] = real(*args)
        return made["parts"]

    monkeypatch.setattr(bench_peers, "_clients", keep)
    step = bench_peers.lockstep_round(3, (3, 32, 32), "cpu", 8)
    lowers, _, upper, _, data = made["parts"]
    before = [_flat(m) for m in lowers] + [_flat(upper)]
    cursors = list(data.cursors)
    step()
    after = [_flat(m) for m in lowers] + [_flat(upper)]
    assert all(not torch.equal(a, b) for a, b in zip(after, before))  # every model moved
    assert [c - b for c, b in zip(data.cursors, cursors)] == [8, 8, 8]  # each client drew one batch of its own
    # the clients' updates are their own: same start, different data, different models
    assert not torch.equal(after[0], after[1])


def test_the_splitfed_peer_averages_the_clients_as_its_authors_fedavg(monkeypatch):
    from engine.studies import bench_peers

    states = [{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}]
    assert torch.equal(bench_peers.fedavg(states)["w"], torch.tensor([2.0, 4.0]))
    assert torch.equal(states[0]["w"], torch.tensor([1.0, 2.0]))  # the first state is copied, not changed
    made = {}
    real = bench_peers._clients
    monkeypatch.setattr(bench_peers, "_clients", lambda *a: made.setdefault("parts", real(*a)))
    bench_peers.splitfed_authors_round(3, (3, 32, 32), "cpu", 8)()
    lowers = made["parts"][0]
    assert torch.equal(_flat(lowers[0]), _flat(lowers[1])) and torch.equal(_flat(lowers[1]), _flat(lowers[2]))
