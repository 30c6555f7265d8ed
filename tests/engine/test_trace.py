"""A traced round (engine.trace) is the training round itself: same state bit for bit, and its
events report the round's own losses and the ledger's bytes."""

import pytest
import torch

from engine.config import deep_merge, validate_config
from engine.presets import PRESETS
from engine.round import run_round
from engine.state import TrainState
from engine.trace import PHASES, trace_round, traced_round
from engine.trainer import Trainer
from tests.helpers import tiny_dataset


def config(preset: str, **extra):
    return validate_config(deep_merge(PRESETS[preset].overrides(), {
        "num_clients": 3, "batch_size": 8, "rounds": 10, "data": {"dataset": "synthetic"},
        "optim": {"name": "adam", "lr": 0.001}, **extra}))


def schedule_steps(cfg) -> int:
    """Steps a round takes: one (parallel), one per client (Vanilla SL), one per batch (SplitFed)."""
    return {"parallel": 1, "sequential": cfg.num_clients}.get(cfg.schedule, cfg.num_clients * cfg.local_steps)


def same(a, b) -> bool:
    """Equal nested state: tensors bit for bit, everything else by ==."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if hasattr(a, "dtype") and hasattr(a, "shape"):  # numpy
        return bool((a == b).all())
    return a == b


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_traced_round_leaves_exactly_the_state_of_an_untraced_one(preset):
    data = tiny_dataset()
    plain, traced = TrainState(config(preset), data), TrainState(config(preset), data)
    for _ in range(2):
        expected = run_round(plain)
        result = traced_round(traced)
        assert (result.losses.loss, result.losses.mixup, result.losses.local) == \
            (expected.loss, expected.mixup, expected.local)
    assert same(plain.state_dict(), traced.state_dict())
    assert traced.tracer is None


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_the_events_report_the_rounds_own_losses_and_the_ledgers_bytes(preset):
    cfg = config(preset)
    res = trace_round(cfg, tiny_dataset())
    steps = schedule_steps(cfg)
    assert len(res.trace.get("batch")) == len(res.trace.get("forward")) == steps
    up = sum(e.values["bytes"] for e in res.trace.get("upload"))
    assert up == res.ledger_after["bytes_smashed_up"] - res.ledger_before["bytes_smashed_up"]
    down = sum(e.values["bytes"] for e in res.trace.get("grads_down"))
    assert down == res.ledger_after["bytes_grads_down"] - res.ledger_before["bytes_grads_down"]
    server = res.trace.get("server")
    assert sum(e.values["loss"] for e in server) / steps == pytest.approx(res.losses.loss, rel=1e-12)
    assert sum(e.values["mixup"] for e in server) / steps == pytest.approx(res.losses.mixup, rel=1e-12)
    assert [e.phase for e in res.trace.events if e.phase in PHASES][0] == "batch"
    assert bool(res.trace.get("mixup")) == cfg.mixup.enabled
    assert bool(res.trace.get("local")) == cfg.local_loss.enabled
    assert bool(res.trace.get("averaging")) == (cfg.averaging.enabled and cfg.schedule != "sequential")
    assert bool(res.trace.get("grads_down")) == cfg.global_backward
    if cfg.local_loss.enabled:
        (local,) = res.trace.get("local")
        assert sum(local.values["losses"]) / 3 == pytest.approx(res.losses.local, rel=1e-6)
        assert (local.values["reconstructions"] is not None) == (cfg.local_loss.kind == "infopro")
    if cfg.schedule == "sequential":
        hand = res.trace.get("handoff")
        assert [e.values["to"] for e in hand] == [1, 2, None]
        model = res.ledger_after["bytes_model_up"] - res.ledger_before["bytes_model_up"]
        assert sum(e.values["bytes"] for e in hand) == model


@pytest.mark.parametrize("preset", ["splitfed_v1", "splitfed_v2"])
def test_a_splitfed_round_traces_a_step_per_batch_client_by_client(preset):
    cfg = config(preset, local_steps=2)
    res = trace_round(cfg, tiny_dataset())
    served = [e.values["clients"] for e in res.trace.get("batch")]
    assert [e.step for e in res.trace.get("batch")] == list(range(6))  # 3 clients x 2 batches
    assert all(len(c) == 1 for c in served) and served[::2] == served[1::2]  # a client's batches in a row
    assert sorted(c for (c,) in served[::2]) == [0, 1, 2]
    for phase in ("forward", "upload", "server", "grads_down", "client_update"):
        assert [e.step for e in res.trace.get(phase)] == list(range(6)), phase
    (avg,) = res.trace.get("averaging")  # once, at the round's end
    assert res.trace.events[-1] is avg and avg.values["spread_after"] < 1e-6


def test_mixup_pairs_lambda_and_splitavg_active_clients_are_the_rounds_draws():
    res = trace_round(config("locfedmix_sl"), tiny_dataset())
    (mix,) = res.trace.get("mixup")
    k, n_s = 3, 1
    assert mix.values["first"] == [0, 1, 2] and len(mix.values["second"]) == k * n_s
    assert all(f != s for f, s in zip(mix.values["first"], mix.values["second"]))
    assert mix.values["mixed"].shape[:2] == (k * n_s, 4) and ((mix.values["lam"] >= 0) & (mix.values["lam"] <= 1)).all()
    (avg,) = res.trace.get("averaging")
    assert avg.values["spread_before"] > 0 and avg.values["spread_after"] < 1e-6
    sglr = config("sglr")
    sglr = sglr.model_copy(update={"split_avg": sglr.split_avg.model_copy(update={"fraction": 0.7})})
    (grads,) = trace_round(sglr, tiny_dataset()).trace.get("grads_down")
    active = grads.values["active"]
    assert len(active) == 2  # floor(0.7 * 3)
    sent = grads.values["norms"]
    assert sent[active[0]] == pytest.approx(sent[active[1]])


def test_a_checkpoint_traces_the_next_round_of_the_trained_run():
    data = tiny_dataset()
    trainer = Trainer(config("splitfed"), data)
    for _ in range(3):
        trainer.step(type("Quiet", (), {"on_eval": lambda *a: None, "on_images": lambda *a: None,
                                        "on_round": lambda *a: None})())
    res = trace_round(None, data, checkpoint=trainer.checkpoint_bytes())
    assert res.round == 4
    expected = run_round(trainer.state)
    assert res.losses.loss == expected.loss
