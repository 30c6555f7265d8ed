"""``track_updates``: the server-client update imbalance, measured as the paper describes it (§2.3)."""

from __future__ import annotations

import csv
import dataclasses
import math

import pytest
import torch

import engine.studies.reproduce as rep
from engine.config import ConfigError, validate_config
from engine.presets import deep_merge, get_preset
from engine.round import run_round
from engine.state import TrainState
from engine.trainer import Trainer
from tests.helpers import tiny_dataset


def config(preset: str = "locsplitfed_2", **overrides):
    base = {"num_clients": 3, "batch_size": 8, "rounds": 4, "eval_every": 2, "seed": 2, "track_updates": True,
            "data": {"dataset": "synthetic", "eval_subset": 16}, "optim": {"name": "sgd", "lr": 0.05}}
    return validate_config(deep_merge(deep_merge(base, get_preset(preset).overrides()), overrides))


def flat(module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()


@pytest.mark.parametrize("preset", ["locsplitfed_2", "locfedmix_sl", "vanilla_sl"])
def test_a_round_reports_how_far_it_moved_the_server_and_the_clients(preset, monkeypatch):
    state = TrainState(config(preset), tiny_dataset())
    run_round(state)  # the second round is measured, from trained weights
    server0, lowers0 = flat(state.upper), [flat(m) for m in dict.fromkeys(state.lowers)]
    averaged = []  # the lower models as the clients' steps leave them, before ⑤ averages them
    real_end = [t.end_round for t in state.techniques]
    for tech, end in zip(state.techniques, real_end):
        monkeypatch.setattr(tech, "end_round", lambda st, r, end=end: (averaged.append(
            [flat(m) for m in dict.fromkeys(st.lowers)]), end(st, r))[1])
    sizes = run_round(state).updates
    lowers1 = averaged[0] if averaged else [flat(m) for m in dict.fromkeys(state.lowers)]
    moved = [float((a - b).norm()) for a, b in zip(lowers1, lowers0)]
    assert sizes.server == pytest.approx(float((flat(state.upper) - server0).norm()), rel=1e-6)
    assert sizes.client == pytest.approx(sum(moved) / len(moved), rel=1e-6)
    assert sizes.server_rel == pytest.approx(sizes.server / float(server0.norm()), rel=1e-6)
    assert sizes.client_rel == pytest.approx(
        sum(m / float(w.norm()) for m, w in zip(moved, lowers0)) / len(moved), rel=1e-6)
    assert sizes.server > 0 and sizes.client > 0
    if preset == "vanilla_sl":
        assert len(lowers0) == 1  # one shared lower model, moved by every client's step


def test_history_rows_average_the_rounds_since_the_last_evaluation(monkeypatch):
    trainer = Trainer(config(), tiny_dataset())
    rounds, original = [], trainer.schedule.run_round

    def recording(state):
        losses = original(state)
        rounds.append(losses.updates)
        return losses

    monkeypatch.setattr(trainer, "schedule", dataclasses.replace(trainer.schedule, run_round=recording))
    trainer.run()
    first = trainer.history[0]
    assert first["server_update_norm"] == pytest.approx((rounds[0].server + rounds[1].server) / 2)
    assert first["client_update_norm"] == pytest.approx((rounds[0].client + rounds[1].client) / 2)
    assert first["update_ratio"] == pytest.approx((rounds[0].server_rel + rounds[1].server_rel)
                                                  / (rounds[0].client_rel + rounds[1].client_rel))


def test_without_tracking_no_update_keys_and_no_cost():
    trainer = Trainer(config(track_updates=False), tiny_dataset())
    trainer.run()
    assert not any("update" in key for row in trainer.history for key in row)


def test_tracking_needs_the_clients_in_this_process():
    with pytest.raises(ConfigError, match="track_updates needs transport inprocess"):
        config(transport="process")


def test_paper_profile_study_has_its_own_folder_and_an_imbalance_table(tmp_path):
    out = rep.reproduce("table3", "digits", [3], rounds=2, seeds=[0], profile="paper", out_dir=str(tmp_path),
                        db_url=None, only=["row7", "row8"])
    assert out == tmp_path / "table3-digits-T2-paper"
    run = rep.load_results(out)["row8_n3_s0"]
    assert run["config"]["optim"] == {"name": "sgd", "lr": 0.004, "momentum": 0.9, "weight_decay": 0.0}
    assert run["config"]["track_updates"] is True
    with open(out / "imbalance.csv") as f:
        rows = {r["arm"][:1]: r for r in csv.DictReader(f)}
    assert set(rows) == {"7", "8"}
    hist = run["history"]
    expected = sum(h["server_update_norm"] for h in hist) / len(hist)
    assert float(rows["8"]["server_update_norm"]) == pytest.approx(expected, rel=1e-6)
    assert math.isclose(float(rows["8"]["norm_ratio"]),
                        float(rows["8"]["server_update_norm"]) / float(rows["8"]["client_update_norm"]), rel_tol=1e-6)
    assert "server-client update imbalance" in (out / "table.md").read_text()
    assert (out / "imbalance.png").stat().st_size > 1000
    # the demo profile's folder is another one, and measures nothing
    demo = rep.reproduce("table3", "digits", [3], rounds=2, seeds=[0], profile="demo", out_dir=str(tmp_path),
                         db_url=None, only=["row7"])
    assert demo == tmp_path / "table3-digits-T2" and not (demo / "imbalance.csv").exists()
