"""Invariants of the engine: determinism, exact resume, closed-form byte counts, special cases."""

from __future__ import annotations

import math

import pytest
import torch

from engine.config import validate_config
from engine.evaluate import distinct_models
from engine.models import num_state_elements
from engine.presets import PRESETS, deep_merge, get_preset, techniques_to_config
from engine.round import run_round
from engine.state import TrainState
from engine.techniques.split_avg import SplitAvg
from engine.trainer import Trainer

from tests.helpers import tiny_dataset


def config(techniques: str = "1,2", **overrides):
    base = {"num_clients": 4, "batch_size": 8, "rounds": 6, "eval_every": 2, "seed": 1,
            "data": {"dataset": "synthetic", "eval_subset": 16}, "optim": {"name": "momentum", "lr": 0.05}}
    return validate_config(deep_merge(deep_merge(base, techniques_to_config(techniques)), overrides))


def weights(state: TrainState) -> list[torch.Tensor]:
    mods = [state.upper, *state.lowers, *(state.auxes or [])]
    return [t.clone() for m in mods for t in m.state_dict().values()]


def train(cfg, rounds=None) -> Trainer:
    tr = Trainer(cfg, tiny_dataset())
    for _ in range(rounds or cfg.rounds):
        tr.step(tr_callbacks())
    return tr


def tr_callbacks():
    from engine.trainer import Callbacks
    return Callbacks()


LFM = ("1,2,3,4p,5", {"mixup": {"num_partners": 2}})


def test_same_seed_same_results_bit_for_bit():
    a, b = train(config(*LFM[:1], **LFM[1])), train(config(*LFM[:1], **LFM[1]))
    assert all(torch.equal(x, y) for x, y in zip(weights(a.state), weights(b.state)))
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("wall_s", "round_s")} for r in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)


def test_a_different_seed_differs():
    a = train(config(*LFM[:1], **LFM[1]))
    b = train(config(*LFM[:1], seed=2, **LFM[1]))
    assert not all(torch.equal(x, y) for x, y in zip(weights(a.state), weights(b.state)))


def test_resume_from_checkpoint_is_exact(tmp_path):
    cfg = config("1,2,3,4p,5,splitavg", mixup={"num_partners": 2, "variant": "cutmix"}, averaging={"interval": 2})
    whole = train(cfg)
    half = train(cfg, rounds=3)
    half.save_checkpoint(tmp_path / "ck.pt")
    resumed = Trainer.from_checkpoint(tmp_path / "ck.pt", tiny_dataset())
    assert resumed.round == 3
    while resumed.round < cfg.rounds:
        resumed.step(tr_callbacks())
    assert all(torch.equal(x, y) for x, y in zip(weights(whole.state), weights(resumed.state)))
    drop = ("wall_s", "round_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in whole.history] == \
           [{k: v for k, v in r.items() if k not in drop} for r in resumed.history]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    tr = train(config(), rounds=1)
    path = tmp_path / "ck.pt"
    tr.save_checkpoint(path)
    before = path.read_bytes()
    tr.step(tr_callbacks())
    monkeypatch.setattr(Trainer, "checkpoint_bytes", lambda self: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        tr.save_checkpoint(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_zero_partners_equals_no_mixup():
    a = train(config("1,2,3", mixup={"num_partners": 0}))
    b = train(config("1,2"))
    assert all(torch.equal(x, y) for x, y in zip(weights(a.state), weights(b.state)))


def test_lower_models_are_equal_right_after_averaging():
    cfg = config("1,2,4p,5", averaging={"interval": 2})
    tr = train(cfg, rounds=1)
    assert len(distinct_models(tr.state.lowers, list(range(4)))) == 4  # round 1: no averaging yet
    tr.step(tr_callbacks())
    assert len(distinct_models(tr.state.lowers, list(range(4)))) == 1
    assert len(distinct_models(tr.state.auxes, list(range(4)))) == 1


def test_split_avg_with_phi_one_sends_one_gradient_to_every_client(monkeypatch):
    cfg = config("1,2,splitavg", split_avg={"fraction": 1.0})
    state = TrainState(cfg, tiny_dataset())
    seen = []
    original = SplitAvg.cut_grads

    def spy(self, st, batch, grads, messages):
        out = original(self, st, batch, grads, messages)
        seen.append(out)
        return out

    monkeypatch.setattr(SplitAvg, "cut_grads", spy)
    run_round(state)
    grads, messages = seen[0]
    assert messages == 1
    assert all(torch.equal(grads[0], g) for g in grads)
    per_message = cfg.batch_size * math.prod(state.smashed_shape) * 4
    assert state.ledger.grads_down == per_message


def test_one_client_parallel_equals_vanilla():
    par = train(config("1,2", num_clients=1))
    van = train(config("1", num_clients=1))
    for x, y in zip(weights(par.state), weights(van.state)):
        assert torch.allclose(x, y, atol=1e-7)


def test_bytes_exchanged_match_closed_form():
    cfg = config("1,2,3,4p,5", mixup={"num_partners": 2}, averaging={"interval": 4}, rounds=9)
    tr = train(cfg)
    st, n, b, T = tr.state, cfg.num_clients, cfg.batch_size, cfg.rounds
    s = math.prod(st.smashed_shape)
    wc, aux = num_state_elements(st.lowers[0]), num_state_elements(st.auxes[0])
    assert st.ledger.smashed_up == T * n * b * (4 * s + 8)
    assert st.ledger.grads_down == T * n * b * 4 * s
    assert st.ledger.model_up == st.ledger.model_down == (T // 4) * n * 4 * (wc + aux)
    assert tr.history[-1]["bytes_up"] == st.ledger.smashed_up + st.ledger.model_up


def test_vanilla_bytes_count_the_model_hand_over():
    tr = train(config("1", rounds=2))
    st, n = tr.state, 4
    assert st.ledger.model_up == 2 * n * 4 * num_state_elements(st.lowers[0])


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_trains_two_rounds_on_random_data(name):
    cfg = validate_config(deep_merge(get_preset(name).overrides(), {
        "num_clients": 3, "rounds": 2, "batch_size": 8, "eval_every": 1, "image_every": 1,
        "data": {"dataset": "synthetic", "eval_subset": 16}}))
    before = weights(TrainState(cfg, tiny_dataset()))
    tr = Trainer(cfg, tiny_dataset())
    images = []

    class Cb(tr_callbacks().__class__):
        def on_images(self, trainer, round_, snap):
            images.append(snap)

    result = tr.run(Cb())
    assert [r["round"] for r in result["history"]] == [1, 2]
    assert all(math.isfinite(r["train_loss"]) for r in result["history"])
    assert not all(torch.equal(x, y) for x, y in zip(before, weights(tr.state)))
    assert len(images) == 2 and images[0]["inputs"].shape[0] == 4
    has_decoder = cfg.local_loss.enabled and cfg.local_loss.kind == "infopro"
    assert ("reconstruction" in next(iter(images[0]["clients"].values()))) == has_decoder


def test_evaluation_counts_identical_lower_models_once(monkeypatch):
    import engine.evaluate as ev
    calls = []
    original = ev.evaluate_model
    monkeypatch.setattr(ev, "evaluate_model", lambda *a: calls.append(1) or original(*a))
    tr = train(config("1,2,5", num_clients=6, eval_every=100), rounds=1)
    tr.evaluator.final(tr.state)
    assert len(calls) == 1
    calls.clear()
    tr = train(config("1,2", num_clients=6, eval_every=100), rounds=1)
    tr.evaluator.final(tr.state)
    assert len(calls) == 6


@pytest.mark.parametrize(("fraction", "n", "active"), [(0.25, 6, 1), (0.5, 3, 1), (0.5, 10, 5), (0.29, 100, 29),
                                                       (0.29, 10, 2), (0.01, 20, 1), (1.0, 7, 7)])
def test_split_avg_draws_floor_phi_n_active_clients_as_the_sglr_paper(fraction, n, active):
    """The SGLR paper's example: n = 6, phi = 0.25 makes 1 client active (floor), not 2 (rounding)."""
    from engine.techniques.split_avg import active_count

    assert active_count(fraction, n) == active
    cfg = config("1,2,splitavg", num_clients=n, split_avg={"fraction": fraction})
    drawn = SplitAvg(cfg).draw_active(TrainState(cfg, tiny_dataset(n=max(96, 8 * n))), n)
    assert len(drawn) == active and len(set(drawn)) == active
