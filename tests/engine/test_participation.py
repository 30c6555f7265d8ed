"""Clients that come and go (issue 29, part 1): ``participation.fraction`` (C) and ``participation.dropout``
(p). What each technique does with an absent client, checked against hand-computed expectations; a run
with C = 1 and p = 0 draws nothing more than before; the draws are part of a checkpoint.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from engine import step as engine_step
from engine.config import ConfigError, deep_merge, validate_config
from engine.data import load_dataset
from engine.presets import PRESETS, techniques_to_config
from engine.round import run_round
from engine.state import TrainState
from engine.techniques.averaging import average_states
from engine.trainer import Callbacks, Trainer

BASE = {"num_clients": 4, "rounds": 6, "batch_size": 8, "eval_every": 3, "seed": 1,
        "data": {"dataset": "digits", "eval_subset": 32}, "optim": {"name": "adam", "lr": 0.001}}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def config(codes: str = "1,2", fraction: float = 1.0, dropout: float = 0.0, **overrides):
    data = deep_merge(deep_merge(BASE, techniques_to_config(codes)),
                      {"participation": {"fraction": fraction, "dropout": dropout}})
    return validate_config(deep_merge(data, overrides))


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()


def capture_steps(monkeypatch) -> list:
    """Every StepBatch the server steps on, as the round hands it over."""
    seen = []
    real = engine_step.server_step

    def spy(state, batch):
        seen.append(batch)
        return real(state, batch)

    monkeypatch.setattr(engine_step, "server_step", spy)
    return seen


# ---- who takes part ------------------------------------------------------------------------------
def test_everyone_every_round_draws_nothing_from_the_participation_stream(digits):
    for name in PRESETS:
        data = deep_merge(deep_merge(BASE, PRESETS[name].overrides()), {"rounds": 2, "eval_every": 2})
        trainer = Trainer(validate_config(data), digits)
        untouched = copy.deepcopy(trainer.state.participation_rng.bit_generator.state)
        result = trainer.run()
        assert trainer.state.participation_rng.bit_generator.state == untouched, name
        assert trainer.state.present == list(range(4)) and not trainer.state.behind
        assert "clients_present" not in result["history"][-1]  # histories keep their keys


def test_a_fraction_of_the_clients_is_drawn_each_round_from_its_own_seeded_stream(digits, monkeypatch):
    seen = capture_steps(monkeypatch)
    state = TrainState(config(fraction=0.5), digits)
    rng = np.random.default_rng([1, 7])  # the run's seed and engine.state.SEED_PARTICIPATION
    for _ in range(5):
        run_round(state)
        expected = sorted(rng.choice(4, 2, replace=False).tolist())
        assert state.present == state.selected == expected
        assert seen[-1].clients == expected


def test_at_least_one_client_is_drawn(digits):
    state = TrainState(config(fraction=0.01), digits)
    run_round(state)
    assert len(state.present) == 1


def test_dropouts_are_drawn_per_selected_client_and_an_empty_round_trains_nothing(digits):
    trainer = Trainer(config(dropout=0.5, rounds=40, eval_every=1), digits)
    history = trainer.run()["history"]
    present = [row["clients_present"] for row in history]
    assert all(row["clients_selected"] == 4 for row in history)
    assert 0.3 < sum(present) / (4 * len(present)) < 0.7  # about half stay (160 draws)
    assert 0 in present  # some round lost every client ...
    empty = present.index(0)
    before, after = history[empty - 1], history[empty]  # ... and nothing moved in it
    assert after["bytes_up"] == before["bytes_up"] and after["bytes_down"] == before["bytes_down"]


# ---- each technique with an absent client ----------------------------------------------------------
def test_global_gradient_weights_are_renormalised_over_the_present_clients(digits, monkeypatch):
    seen = capture_steps(monkeypatch)
    state = TrainState(config(fraction=0.5), digits)
    run_round(state)
    batch = seen[-1]
    w = state.weights[batch.clients]
    assert torch.allclose(batch.weights, w / w.sum()) and batch.weights.sum() == pytest.approx(1.0)


def test_absent_clients_neither_send_nor_train(digits):
    state = TrainState(config(fraction=0.5), digits)
    before = [flat(m) for m in state.lowers]
    cursors = [c.cursor for c in state.clients]
    run_round(state)
    for i in range(4):
        moved = not torch.equal(flat(state.lowers[i]), before[i])
        assert moved == (i in state.present), i
        assert (state.clients[i].cursor != cursors[i]) == (i in state.present)
    # two clients' batches went up, no more: b samples each, smashed data and labels
    assert state.ledger.smashed_up == 2 * 8 * (int(np.prod(state.smashed_shape)) * 4 + 8)


def test_mixup_draws_partners_among_the_present_clients_with_n_s_capped(digits, monkeypatch):
    from engine.techniques.mixup import Mixup

    draws = []
    real = Mixup.draw

    def spy(self, state, k, b):
        out = real(self, state, k, b)
        draws.append(out[0])
        return out

    monkeypatch.setattr(Mixup, "draw", spy)
    state = TrainState(config("1,2,3", fraction=0.5, mixup={"num_partners": 3}), digits)
    run_round(state)
    (partners,) = draws
    assert partners.shape == (2, 1) and partners.tolist() == [[1], [0]]  # each present client's one partner


def test_averaging_takes_the_present_clients_models_and_a_returning_client_gets_the_result(digits):
    cfg = config("1,2,5", fraction=0.5)
    averaged, plain = TrainState(cfg, digits), TrainState(config("1,2", fraction=0.5), digits)
    run_round(averaged)
    run_round(plain)  # the same draws: averaging draws nothing
    present = plain.present
    assert averaged.present == present
    w = plain.weights[present] / plain.weights[present].sum()
    expected = average_states([plain.lowers[i].state_dict() for i in present], w)
    for i in range(4):  # every slot holds the global model, the absent ones for when they return
        for key, value in averaged.lowers[i].state_dict().items():
            assert torch.allclose(value, expected[key], atol=1e-6), (i, key)
    assert averaged.behind == set(range(4)) - set(present)
    model_bytes = sum(p.numel() for p in averaged.lowers[0].state_dict().values()) * 4
    assert averaged.ledger.model_up == 2 * model_bytes and averaged.ledger.model_down == 2 * model_bytes
    # the next round: a client back from absence downloads the global model once, counted
    down = averaged.ledger.model_down
    run_round(averaged)
    back = len(set(averaged.present) & (set(range(4)) - set(present)))
    assert averaged.ledger.model_down - down == (back + len(averaged.present)) * model_bytes
    assert averaged.behind == set(range(4)) - set(averaged.present)


def test_split_avg_draws_its_active_clients_among_the_present(digits, monkeypatch):
    state = TrainState(config("1,2,splitavg", fraction=0.5, split_avg={"fraction": 1.0}), digits)
    sent = []
    real = engine_step.cut_gradients

    def spy(state, batch):
        grads = real(state, batch)
        sent.append(grads)
        return grads

    monkeypatch.setattr(engine_step, "cut_gradients", spy)
    run_round(state)
    (grads,) = sent
    assert len(grads) == 2 and torch.equal(grads[0], grads[1])  # φ = 1: the two present share one gradient


def test_vanilla_sl_skips_absent_clients_in_its_sequence(digits, monkeypatch):
    seen = capture_steps(monkeypatch)
    state = TrainState(config("1", fraction=0.5), digits)
    run_round(state)
    assert [b.clients for b in seen] == [[i] for i in state.present]
    assert state.ledger.model_up == 2 * sum(p.numel() for p in state.lowers[0].state_dict().values()) * 4


@pytest.mark.parametrize("schedule", ["splitfed_v1", "splitfed_v2"])
def test_splitfed_serves_only_the_present_clients_and_v1_averages_over_them(schedule, digits, monkeypatch):
    seen = capture_steps(monkeypatch)
    data = deep_merge(deep_merge(BASE, PRESETS[schedule].overrides()), {"participation": {"fraction": 0.5},
                                                                         "local_steps": 1})
    state = TrainState(validate_config(data), digits)
    run_round(state)
    assert sorted(b.clients[0] for b in seen) == state.present and len(seen) == 2


def test_a_resumed_run_with_participation_continues_exactly(digits):
    cfg = config("1,2,3,5", fraction=0.5, dropout=0.3, rounds=8, eval_every=2,
                 participation={"speed_spread": 0.7, "deadline": 2.0})
    straight = Trainer(cfg, digits)
    expected = straight.run()
    first = Trainer(cfg, digits)
    for _ in range(3):  # three rounds (the evaluation at round 2 on the way), then a checkpoint
        first.step(Callbacks())
    resumed = Trainer(cfg, digits)
    resumed.load_state_dict(copy.deepcopy(first.state_dict()))
    result = resumed.run()
    assert [r["test_loss"] for r in result["history"]] == [r["test_loss"] for r in expected["history"]]
    assert [r["clients_present"] for r in result["history"]] == [r["clients_present"] for r in expected["history"]]
    assert [r["compute_units"] for r in result["history"]] == [r["compute_units"] for r in expected["history"]]
    assert all(torch.equal(flat(a), flat(b)) for a, b in zip(resumed.state.lowers, straight.state.lowers))


def test_a_fraction_above_one_is_refused_naming_the_field():
    with pytest.raises(ConfigError) as err:
        config(fraction=1.5)
    assert err.value.text() == "participation.fraction must be greater than 0 and at most 1, got 1.5"


def test_the_command_line_sets_participation_and_names_its_flags(tmp_path, capsys):
    import json

    from engine.cli import main

    flags = ["--dataset", "digits", "--clients", "4", "--rounds", "4", "--batch-size", "8", "--eval-every", "2",
             "--set", "data.eval_subset=32", "--techniques", "1,2,3,5"]
    out = tmp_path / "run.json"
    assert main(["run", *flags, "--participation", "0.5", "--dropout", "0.25", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["participation"] == {"fraction": 0.5, "dropout": 0.25, "speed_spread": 0.0, "deadline": 0.0}
    assert all(1 <= row["clients_selected"] == 2 for row in result["history"])
    capsys.readouterr()
    assert main(["run", *flags, "--participation", "0"]) == 2
    assert "--participation must be greater than 0 and at most 1, got 0" in capsys.readouterr().err
    assert main(["run", *flags, "--dropout", "1"]) == 2
    assert "--dropout must be at least 0 and less than 1, got 1" in capsys.readouterr().err


@pytest.mark.parametrize("fraction,n,count", [(0.25, 10, 2), (0.35, 10, 3), (0.29, 100, 29), (0.01, 10, 1), (1.0, 7, 7)])
def test_the_clients_drawn_are_max_1_floor_c_n(fraction, n, count):
    assert validate_config({"num_clients": n, "participation": {"fraction": fraction}}).participation.clients(n) == count


# ---- stragglers and a deadline (the latency model's client compute) ----------------------------------
def test_client_speeds_are_log_normal_from_their_own_stream_and_ones_without_stragglers():
    from engine.state import client_speeds

    assert client_speeds(config()).tolist() == [1.0] * 4
    z = np.random.default_rng([1, 8]).standard_normal(4)  # the run's seed and engine.state.SEED_SPEEDS
    assert np.allclose(client_speeds(config(participation={"speed_spread": 0.5})), np.exp(0.5 * z))


def test_stragglers_without_a_deadline_train_the_same_run_and_wait_for_the_slowest(digits):
    plain = Trainer(config("1,2,3,5"), digits)
    slow = Trainer(config("1,2,3,5", participation={"speed_spread": 1.0}), digits)
    expected, got = plain.run()["history"], slow.run()["history"]
    assert [r["test_loss"] for r in got] == [r["test_loss"] for r in expected]
    assert got[-1]["compute_units"] == pytest.approx(6 * slow.state.speeds.max())  # 6 rounds, the slowest each
    assert "compute_units" not in expected[-1]
    sequential = Trainer(config("1", participation={"speed_spread": 1.0}), digits)
    sequential.run()
    assert sequential.history[-1]["compute_units"] == pytest.approx(6 * sequential.state.speeds.sum())


def test_a_deadline_drops_the_clients_slower_than_it_and_the_round_waits_the_deadline(digits):
    cfg = config("1,2,5", participation={"speed_spread": 1.0, "deadline": 1.0})
    trainer = Trainer(cfg, digits)
    speeds = trainer.state.speeds
    late = sorted(int(i) for i in np.flatnonzero(speeds > 1.0))
    assert 0 < len(late) < 4  # seed 1 has clients on both sides of the deadline
    history = trainer.run()["history"]
    assert trainer.state.late == late and trainer.state.present == sorted(set(range(4)) - set(late))
    assert history[-1]["clients_late"] == len(late) and history[-1]["clients_present"] == 4 - len(late)
    assert history[-1]["compute_units"] == pytest.approx(6 * 1.0)  # every round waited the whole deadline


def test_the_simulated_latency_counts_the_runs_own_compute_when_clients_come_and_go(digits):
    import pandas as pd

    from pages.figures import with_simulated_latency

    trainer = Trainer(config("1,2,5", participation={"speed_spread": 1.0, "deadline": 1.0}), digits)
    history = pd.DataFrame(trainer.run()["history"])
    out = with_simulated_latency(history, trainer.cfg.model_dump(), t_comp=0.05, uplink_bytes_per_s=1e6)
    assert np.allclose(out["latency_s"], history["compute_units"] * 0.05 + history["bytes_up"] / 1e6)
