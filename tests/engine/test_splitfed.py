"""The SplitFed schedules (engine.schedules.splitfed_v1 and _v2) equal a plain per-client computation of the SplitFed
authors' round, written from their code's description: the clients in turn, in a random order,
``local_steps`` batches each, one server step per batch; V1 trains a copy of the upper model per
client and averages the copies, V2 trains one upper model; the lower models are averaged (⑤).

As in test_round_matches_reference, the reference shares nothing with the engine but the initial
weights and the batches (whose clients give the order the engine drew); every gradient is its own
``torch.autograd.grad`` call, and weights move by hand (SGD) or by a fresh ``torch.optim.Adam``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from engine.config import ConfigError, deep_merge, validate_config
from engine.evaluate import authors_test_shards, evaluate_model
from engine.presets import get_preset
from engine.round import run_round
from engine.state import SEED_TECHNIQUES, TrainState
from engine.trainer import Callbacks, Trainer
from tests.engine.test_round_matches_reference import (
    LR,
    Recorder,
    assert_same_weights,
    make_config,
    reference_average,
    sgd,
)
from tests.helpers import tiny_dataset

ROUNDS, LOCAL_STEPS = 3, 2
ADAM_LR = 0.001
# Adam's first step is lr * g / (|g| + eps): where |g| is near eps, float32 rounding of g (which differs
# between CPU kernels, e.g. AVX2 and AVX-512) moves the step visibly; 1.3e-6 was seen on an AVX-512
# CPU. 1 % of one step (lr = 1e-3) still tells a fresh optimiser from a kept one (they differ by ~lr).
ADAM_TOL = 1e-5


def splitfed_config(schedule: str, **overrides):
    """3 clients, b = 4, plain SGD (test_round_matches_reference's), ⑤ every round, 2 batches per client."""
    return make_config("1,2,5", **{"schedule": schedule, "local_steps": LOCAL_STEPS, **overrides})


def rounds_of(batches: list, n: int, local_steps: int) -> list[list[tuple[int, list]]]:
    """The recorded batches cut into rounds, each round into its clients' turns: [(client, [(x, y), ...])]."""
    per_round = n * local_steps
    assert len(batches) % per_round == 0
    out = []
    for r in range(0, len(batches), per_round):
        turns = []
        for k in range(r, r + per_round, local_steps):
            mine = batches[k:k + local_steps]
            assert all(clients == mine[0][0] and len(clients) == 1 for clients, _, _ in mine)  # one client a turn
            turns.append((mine[0][0][0], [(x[0], y[0]) for _, x, y in mine]))
        assert sorted(c for c, _ in turns) == list(range(n))  # every client once a round
        out.append(turns)
    return out


class PlainSGD:
    """Weights moved by hand: w -= lr * g."""

    def __init__(self, lr: float):
        self.lr = lr

    def server(self, params):
        return lambda grads: sgd(params, grads, self.lr)

    client = server


class FreshAdam:
    """The authors' optimisers: a new torch.optim.Adam for every server batch and for every client turn."""

    def __init__(self, lr: float):
        self.lr = lr

    def server(self, params):
        opt = torch.optim.Adam(params, lr=self.lr)

        def step(grads):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
            for p in params:
                p.grad = None
        return step

    client = server


def reference_splitfed(schedule: str, upper, lowers, delta, turns_by_round, optim) -> None:
    """The SplitFed authors' rounds, client by client and batch by batch."""
    for turns in turns_by_round:
        copies = []
        for client, batches in turns:
            server = copy.deepcopy(upper) if schedule == "splitfed_v1" else upper  # V1: the client's own copy
            lower = lowers[client]
            client_step = optim.client(list(lower.parameters()))  # a client's optimiser lives for its turn
            for x, y in batches:
                s = lower(x)
                s_server = s.detach().requires_grad_(True)
                loss = F.cross_entropy(server(s_server), y)
                cut, *server_grads = torch.autograd.grad(loss, [s_server, *server.parameters()])
                optim.server(list(server.parameters()))(server_grads)  # the server's optimiser lives for a batch
                client_step(torch.autograd.grad(s, list(lower.parameters()), grad_outputs=cut))
            copies.append((client, server))
        if schedule == "splitfed_v1":  # the global upper model: the delta-weighted mean of the copies
            with torch.no_grad():
                for name, p in upper.state_dict().items():
                    p.copy_(sum(delta[c] * m.state_dict()[name] for c, m in copies))
        reference_average(lowers, delta)  # ⑤, T_c = 1


def run_both(cfg, monkeypatch, optim):
    state = TrainState(cfg, tiny_dataset())
    upper, lowers = copy.deepcopy(state.upper), [copy.deepcopy(m) for m in state.lowers]
    rec = Recorder(state, monkeypatch)
    for _ in range(ROUNDS):
        run_round(state)
    turns = rounds_of(rec.batches, cfg.num_clients, cfg.local_steps)
    reference_splitfed(cfg.schedule, upper, lowers, state.weights.clone(), turns, optim)
    return state, upper, lowers, turns


@pytest.mark.parametrize("reset", [False, True], ids=["kept", "reset"])
@pytest.mark.parametrize("schedule", ["splitfed_v1", "splitfed_v2"])
def test_rounds_match_the_authors_round_written_plainly(schedule, reset, monkeypatch):
    cfg = splitfed_config(schedule, reset_optimizers=reset)  # plain SGD has no state: the reset changes nothing
    state, upper, lowers, turns = run_both(cfg, monkeypatch, PlainSGD(LR))
    assert len(turns) == ROUNDS and state.round == ROUNDS
    assert_same_weights([state.upper], [upper])
    assert_same_weights(state.lowers, lowers)


@pytest.mark.parametrize("schedule", ["splitfed_v1", "splitfed_v2"])
def test_under_adam_the_optimisers_are_recreated_as_the_authors_do(schedule, monkeypatch):
    """A fresh Adam for the server before every batch (every server step is Adam's first) and for each
    client at the start of its turn."""
    cfg = splitfed_config(schedule, reset_optimizers=True, optim={"name": "adam", "lr": ADAM_LR})
    state, upper, lowers, _ = run_both(cfg, monkeypatch, FreshAdam(ADAM_LR))
    assert_same_weights([state.upper], [upper], ADAM_TOL)
    assert_same_weights(state.lowers, lowers, ADAM_TOL)


def test_without_the_reset_adam_keeps_its_state_and_differs(monkeypatch):
    """V2 under Adam without the reset: one server optimiser through the round, not a fresh one a batch."""
    cfg = splitfed_config("splitfed_v2", reset_optimizers=False, optim={"name": "adam", "lr": ADAM_LR})
    state, upper, _, _ = run_both(cfg, monkeypatch, FreshAdam(ADAM_LR))
    with pytest.raises(AssertionError):
        assert_same_weights([state.upper], [upper], ADAM_TOL)


def test_the_reference_tells_v1_from_v2(monkeypatch):
    """The comparison is sharp: V2's upper model is not V1's averaged copies (nor the other way round)."""
    cfg = splitfed_config("splitfed_v1")
    state = TrainState(cfg, tiny_dataset())
    upper, lowers = copy.deepcopy(state.upper), [copy.deepcopy(m) for m in state.lowers]
    rec = Recorder(state, monkeypatch)
    for _ in range(ROUNDS):
        run_round(state)
    reference_splitfed("splitfed_v2", upper, lowers, state.weights.clone(),
                       rounds_of(rec.batches, cfg.num_clients, cfg.local_steps), PlainSGD(LR))
    with pytest.raises(AssertionError):
        assert_same_weights([state.upper], [upper])


def client_orders(cfg, rounds: int, monkeypatch) -> list[list[int]]:
    state = TrainState(cfg, tiny_dataset())
    rec = Recorder(state, monkeypatch)
    for _ in range(rounds):
        run_round(state)
    return [[c for c, _ in turns] for turns in rounds_of(rec.batches, cfg.num_clients, cfg.local_steps)]


def test_the_client_order_changes_every_round_and_follows_the_seed(monkeypatch):
    cfg = splitfed_config("splitfed_v2", num_clients=5, local_steps=1)
    orders = client_orders(cfg, 6, monkeypatch)
    assert len({tuple(o) for o in orders}) > 1  # not one fixed order
    rng = np.random.default_rng([cfg.seed, SEED_TECHNIQUES])  # the run's seeded generator, as the engine holds it
    assert orders == [rng.choice(5, 5, replace=False).tolist() for _ in range(6)]
    assert client_orders(cfg, 6, monkeypatch) == orders  # the same seed draws the same orders
    assert client_orders(cfg.model_copy(update={"seed": cfg.seed + 1}), 6, monkeypatch) != orders


def test_a_round_averages_once_and_counts_once():
    """⑤ and the round counter run once per round, after every client's turns, as in the other schedules."""
    cfg = splitfed_config("splitfed_v1", track_updates=True)
    state = TrainState(cfg, tiny_dataset())
    losses = run_round(state)
    assert state.round == 1
    first = state.lowers[0].state_dict()
    assert all(torch.equal(first[k], m.state_dict()[k]) for m in state.lowers[1:] for k in first)
    per_model = sum(t.numel() for t in first.values()) * 4
    assert state.ledger.model_up == state.ledger.model_down == cfg.num_clients * per_model
    assert state.ledger.smashed_up > 0 and losses.updates is not None and losses.updates.server > 0


def preset_config(name: str, **overrides):
    base = {"num_clients": 3, "batch_size": 8, "rounds": 4, "eval_every": 2, "seed": 2,
            "data": {"dataset": "synthetic", "eval_subset": 16}, "optim": {"name": "adam", "lr": ADAM_LR}}
    return validate_config(deep_merge(deep_merge(base, get_preset(name).overrides()), overrides))


def all_weights(state: TrainState) -> list[torch.Tensor]:
    return [t.clone() for m in [state.upper, *state.lowers] for t in m.state_dict().values()]


@pytest.mark.parametrize(("name", "overrides"), [
    ("splitfed_v1", {}), ("splitfed_v2", {}), ("splitfed_v2", {"reset_optimizers": False})],
    ids=["v1", "v2", "v2 adam kept across rounds"])
def test_a_run_resumed_from_a_checkpoint_equals_one_never_stopped(name, overrides, tmp_path):
    cfg = preset_config(name, **overrides)
    whole = Trainer(cfg, tiny_dataset())
    for _ in range(cfg.rounds):
        whole.step(Callbacks())
    half = Trainer(cfg, tiny_dataset())
    for _ in range(2):
        half.step(Callbacks())
    half.save_checkpoint(tmp_path / "ck.pt")
    resumed = Trainer.from_checkpoint(tmp_path / "ck.pt", tiny_dataset())
    assert resumed.round == 2
    while resumed.round < cfg.rounds:
        resumed.step(Callbacks())
    assert all(torch.equal(a, b) for a, b in zip(all_weights(whole.state), all_weights(resumed.state), strict=True))
    assert whole.state.rng.bit_generator.state == resumed.state.rng.bit_generator.state
    drop = ("wall_s", "round_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in whole.history] == \
           [{k: v for k, v in r.items() if k not in drop} for r in resumed.history]


@pytest.mark.parametrize(("overrides", "field", "words"), [
    ({"schedule": "splitfed_v2", "mixup": {"enabled": True}}, "", "mixup needs the parallel schedule"),
    ({"schedule": "splitfed_v1", "split_avg": {"enabled": True}}, "split_avg.enabled", "needs the parallel schedule"),
    ({"schedule": "splitfed_v2", "transport": "process"}, "transport", "does not run the splitfed_v2 schedule"),
    ({"schedule": "parallel", "local_steps": 2}, "local_steps", "SplitFed schedules only"),
    ({"schedule": "sequential", "local_steps": 3}, "local_steps", "SplitFed schedules only"),
    ({"schedule": "parallel", "reset_optimizers": True}, "reset_optimizers", "SplitFed schedules only"),
    ({"schedule": "splitfed_v1", "optim": {"name": "adam"}}, "reset_optimizers", "no optimiser state of the copies"),
    ({"schedule": "splitfed_v1", "optim": {"name": "momentum"}}, "reset_optimizers", "must be true for splitfed_v1"),
    ({"schedule": "splitfed_v1", "local_steps": 0}, "local_steps", "must be between 1 and 10,000"),
])
def test_combinations_the_schedules_cannot_run_are_refused_naming_the_field(overrides, field, words):
    with pytest.raises(ConfigError) as err:
        validate_config(deep_merge({"num_clients": 3}, overrides))
    (problem,) = err.value.problems
    assert problem.field == field and words in problem.message
    assert err.value.text().startswith(field or "mixup")  # the line names what to change


def test_what_the_schedules_can_run_is_accepted():
    for overrides in ({"schedule": "splitfed_v1", "optim": {"name": "sgd"}},  # plain SGD: nothing to reset
                      {"schedule": "splitfed_v2", "optim": {"name": "adam"}},  # V2 keeps one server optimiser
                      {"schedule": "splitfed_v2", "local_steps": 5, "local_loss": {"enabled": True}},
                      {"schedule": "splitfed_v1", "reset_optimizers": True, "optim": {"name": "momentum"}}):
        cfg = validate_config({"num_clients": 3, **overrides})
        assert cfg.techniques()[:2] == ["1", "2"]  # ② for a SplitFed schedule as for the parallel one
    assert validate_config({"schedule": "splitfed_v2"}).warnings() == [
        "splitfed_v2 without ⑤ averaging: each client keeps its own lower model (SplitFed averages them every round)"]


def test_the_presets_set_the_schedule_and_keep_the_row_4_preset_as_it_was():
    for name, schedule in (("splitfed_v1", "splitfed_v1"), ("splitfed_v2", "splitfed_v2")):
        cfg = preset_config(name)
        assert (cfg.schedule, cfg.local_steps, cfg.reset_optimizers) == (schedule, 20, True)
        assert cfg.techniques() == ["1", "2", "5"] and cfg.averaging.interval == 1
        assert get_preset(name).source.startswith("SplitFed authors' code")
    row4 = preset_config("splitfed")
    assert (row4.schedule, row4.local_steps, row4.reset_optimizers) == ("parallel", 1, False)
    assert get_preset("splitfed").source == "LocFedMix-SL Table 3 row 4"


# ---- the authors' own test figure (authors_test_acc) ----------------------------------------------
@pytest.mark.parametrize("schedule", ["splitfed_v1", "splitfed_v2"])
def test_the_authors_figure_is_the_round_start_lower_model_with_the_upper_that_served_it(schedule):
    """One client: its shard is the whole test set, and the upper model that served it is the round's
    final one (V1's single copy is also the average). The figure pairs it with the lower model as it
    was before the round, not after."""
    cfg = splitfed_config(schedule, num_clients=1, rounds=1, eval_every=1)
    trainer = Trainer(cfg, tiny_dataset())
    lower_before = copy.deepcopy(trainer.state.lowers[0])
    result = trainer.run()
    data = trainer.state.dataset
    expected = evaluate_model(lower_before, trainer.state.upper, data.test_x, data.test_y)[0]
    after = evaluate_model(trainer.state.lowers[0], trainer.state.upper, data.test_x, data.test_y)[0]
    assert result["history"][-1]["authors_test_acc"] == pytest.approx(expected, abs=1e-9)
    assert result["summary"]["final_authors_test_acc"] == result["history"][-1]["authors_test_acc"]
    assert lower_before.state_dict()["0.0.weight"].ne(trainer.state.lowers[0].state_dict()["0.0.weight"]).any()
    assert 0 <= expected <= 1 and 0 <= after <= 1


def test_the_authors_figure_is_measured_on_evaluation_rounds_only_and_never_changes_training():
    measured = Trainer(splitfed_config("splitfed_v1", rounds=4, eval_every=2), tiny_dataset())
    unmeasured = Trainer(splitfed_config("splitfed_v1", rounds=4, eval_every=4), tiny_dataset())
    a, b = measured.run(), unmeasured.run()
    assert [("authors_test_acc" in h, h["round"]) for h in a["history"]] == [(True, 2), (True, 4)]
    assert_same_weights([measured.state.upper, *measured.state.lowers],
                        [unmeasured.state.upper, *unmeasured.state.lowers], tol=0.0)
    parallel = Trainer(make_config("1,2,5", rounds=2, eval_every=1), tiny_dataset()).run()
    assert all("authors_test_acc" not in h for h in parallel["history"])
    assert "final_authors_test_acc" not in parallel["summary"]


def test_each_client_is_tested_on_its_own_disjoint_equal_shard():
    state = TrainState(splitfed_config("splitfed_v2", num_clients=3), tiny_dataset(n=96))
    shards = authors_test_shards(state)
    sizes = [len(y) for _, y in shards]
    assert len(shards) == 3 and max(sizes) - min(sizes) <= 1 and sum(sizes) == len(state.dataset.test_y)
    rows = {tuple(x.flatten().tolist()) for x_shard, _ in shards for x in x_shard}
    assert len(rows) == len(state.dataset.test_y)  # disjoint: every test image once
