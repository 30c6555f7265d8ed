"""Defenses (engine/techniques/defense_*.py) on the technique hooks, and the registry they register in.

- the registry: each technique says itself whether it runs (``enabled``) and where (``order``);
  a technique registered from outside the engine runs in a round;
- ``upload``: what the server receives, on the loop and the batched paths, with the client's
  gradient through it;
- noise: each client's own checkpointed stream (resume is bit-identical), its SNR, and a large
  sigma leaves the attacker nothing but the data mean;
- NoPeek: the sample distance correlation, differentiable, and the penalty lowers the measured dCor;
- bits: k-bit codes and their range on the wire, 8x fewer smashed bytes at 4 bits;
- every defense trains every preset; all at 0 change nothing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.config import deep_merge, validate_config
from engine.data import load_dataset
from engine.presets import PRESETS, get_preset, get_profile, techniques_to_config
from engine.round import run_round
from engine.state import TrainState
from engine.techniques import REGISTRY, ServerView, Technique, active_techniques, register, unregister
from engine.techniques.defense_bits import BitsDefense, dequantize, pack, packed_bytes, quantize, unpack
from engine.techniques.defense_noise import NoiseDefense, snr_db
from engine.techniques.defense_nopeek import distance_correlation
from engine.trace import traced_round
from engine.trainer import Callbacks, Trainer
from tests.helpers import tiny_dataset

DEFENSES = {"noise": {"noise": 0.5}, "nopeek": {"nopeek": 1.0}, "bits": {"bits": 4}}
TIMING = ("wall_s", "round_s")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def tiny(codes: str = "1,2", **overrides):
    base = {"num_clients": 3, "batch_size": 8, "rounds": 4, "eval_every": 2, "seed": 1,
            "data": {"dataset": "synthetic", "eval_subset": 16}, "optim": {"name": "momentum", "lr": 0.05}}
    return validate_config(deep_merge(deep_merge(base, techniques_to_config(codes)), overrides))


def on_digits(preset: str, **overrides):
    data = deep_merge(deep_merge(get_profile("demo"), get_preset(preset).overrides()),
                      {"num_clients": 3, "batch_size": 16, "rounds": 2, "eval_every": 2, "seed": 1,
                       "data": {"dataset": "digits", "eval_subset": 64}})
    if data.get("local_steps", 1) > 1:  # SplitFed: a few batches per client is enough here
        data["local_steps"] = 2
    return validate_config(deep_merge(data, overrides))


def weights(state: TrainState) -> list[torch.Tensor]:
    return [t.clone() for m in [state.upper, *state.lowers, *(state.auxes or [])] for t in m.state_dict().values()]


def same_weights(a: TrainState, b: TrainState) -> bool:
    return all(torch.equal(x, y) for x, y in zip(weights(a), weights(b), strict=True))


def untimed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


# ---- the registry ---------------------------------------------------------------------------------

OLD_ORDER = ("mixup", "split_lr", "split_avg", "local_loss", "averaging")


def old_active(cfg) -> list[str]:
    """What active_techniques returned when it listed the techniques and their order itself."""
    enabled = {"mixup": cfg.mixup.enabled, "split_lr": cfg.split_lr.enabled,
               "split_avg": cfg.split_avg.enabled and cfg.global_backward,
               "local_loss": cfg.local_loss.enabled, "averaging": cfg.averaging.enabled}
    return [name for name in OLD_ORDER if enabled[name]]


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_technique_says_when_it_runs_and_the_presets_get_what_they_got(name):
    cfg = validate_config(deep_merge(PRESETS[name].overrides(), {"num_clients": 4}))
    assert [t.name for t in active_techniques(cfg)] == old_active(cfg)
    with_ss = validate_config(deep_merge(techniques_to_config("1,2,3,4p,5,splitlr,splitavg"), {"num_clients": 4}))
    assert [t.name for t in active_techniques(with_ss)] == list(OLD_ORDER)


def test_the_defenses_come_in_their_place_in_a_round():
    cfg = tiny("1,2,3,4p,5", defense={"noise": 0.1, "nopeek": 0.1, "bits": 8})
    assert [t.name for t in active_techniques(cfg)] == [
        "defense_noise", "defense_bits", "mixup", "local_loss", "defense_nopeek", "averaging"]
    assert [t.name for t in active_techniques(cfg) if t.defense] == ["defense_noise", "defense_bits", "defense_nopeek"]


class Doubling(Technique):
    """A test's own technique: the clients send twice their smashed data; counts the round ends."""

    name = "test_doubling"
    order = 15  # between the noise and the quantisation

    @classmethod
    def enabled(cls, cfg) -> bool:
        return cfg.name == "doubling"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.rounds_ended = []

    def describe(self) -> str:
        return "doubles the smashed data"

    def upload(self, state, clients, smashed):
        return 2 * smashed

    def end_round(self, state, round_):
        self.rounds_ended.append(round_)


@pytest.fixture
def doubling():
    register(Doubling)
    try:
        yield Doubling
    finally:
        unregister(Doubling.name)
    assert Doubling.name not in REGISTRY


def test_a_technique_registered_from_outside_runs_in_a_round(doubling):
    data = tiny_dataset()
    plain = TrainState(tiny(name="plain"), data)
    state = TrainState(tiny(name="doubling", defense={"noise": 0.1, "bits": 8}), data)
    assert [t.name for t in state.techniques] == ["defense_noise", "test_doubling", "defense_bits"]
    assert not any(isinstance(t, Doubling) for t in plain.techniques)
    result = traced_round(state)
    ours = state.techniques[1]
    assert ours.rounds_ended == [1]
    assert "doubles the smashed data" not in result.trace.get("upload")[0].values["defenses"]  # not a defense
    # the server received 2 (s + noise), quantised to 8 bits: within one step of the grid
    forward, up = result.trace.get("forward")[0].values, result.trace.get("upload")[0].values
    noise = up["received"] / 2 - forward["smashed"]
    assert 0.05 < float(noise.std()) < 0.15  # sigma 0.1, doubled then halved
    with pytest.raises(ValueError, match="registered twice"):
        register(Doubling)


def test_the_wire_codec_must_come_last():
    class Late(Doubling):
        name, order = "test_late", 25

        @classmethod
        def enabled(cls, cfg) -> bool:
            return True

    register(Late)
    try:
        cfg = tiny(defense={"bits": 8})
        with pytest.raises(ValueError, match="test_late changes the smashed data after defense_bits"):
            TrainState(cfg, tiny_dataset())
    finally:
        unregister(Late.name)


# ---- defaults, and every preset --------------------------------------------------------------------

def test_by_default_no_defense_runs_and_the_server_receives_the_smashed_data_itself():
    cfg = tiny("1,2,3,4p,5")
    assert cfg.defense.codes() == [] and not any(t.defense for t in active_techniques(cfg))
    result = traced_round(TrainState(cfg, tiny_dataset()))
    up = result.trace.get("upload")[0].values
    assert up["defenses"] == [] and up["snr_db"] is None
    assert torch.equal(up["received"], result.trace.get("forward")[0].values["smashed"])


@pytest.fixture(scope="module")
def undefended(digits):
    """Each preset's 2 rounds without a defense (last history row, weights), trained once for the module."""
    done = {}

    def get(preset: str):
        if preset not in done:
            trainer = Trainer(on_digits(preset), digits)
            done[preset] = (trainer.run()["history"][-1], weights(trainer.state))
        return done[preset]
    return get


@pytest.mark.parametrize("defense", list(DEFENSES))
@pytest.mark.parametrize("preset", list(PRESETS))
def test_each_defense_trains_every_preset(preset, defense, digits, undefended):
    cfg = on_digits(preset, defense=DEFENSES[defense])
    plain_row, plain_weights = undefended(preset)
    trainer = Trainer(cfg, digits)
    row = trainer.run()["history"][-1]
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["test_loss"])
    assert [t.name for t in trainer.state.techniques if t.defense] == [f"defense_{defense}"]
    # the defense changes what is trained (the clients' models too, where a gradient or NoPeek reaches them)
    changed = [not torch.equal(a, b) for a, b in zip(weights(trainer.state), plain_weights, strict=True)]
    assert changed[0] and (any(changed[1:]) or not (cfg.global_backward or defense == "nopeek"))
    if defense == "bits":  # codes of 4 bits and two floats a client message, instead of 4 bytes an element
        b, elements = cfg.batch_size, cfg.batch_size * math.prod(trainer.state.smashed_shape)
        messages, rest = divmod(plain_row["bytes_smashed_up"], elements * 4 + b * 8)
        assert rest == 0 and messages > 0
        assert row["bytes_smashed_up"] == messages * (elements // 2 + 8 + b * 8)
    else:
        assert row["bytes_smashed_up"] == plain_row["bytes_smashed_up"]


# ---- the upload hook and the gradient through it ---------------------------------------------------

def test_noise_and_quantisation_pass_the_gradient_unchanged():
    cfg = tiny(defense={"noise": 0.3, "bits": 3})
    s = torch.randn(3, 8, 6, 4, 4, requires_grad=True)
    g = torch.randn(3, 8, 6, 4, 4)
    for tech in active_techniques(cfg):
        s.grad = None
        out = tech.upload(None, [0, 1, 2], s)
        assert not torch.equal(out.detach(), s.detach())
        out.backward(g)
        assert torch.equal(s.grad, g), tech.name


@pytest.mark.parametrize("defense", list(DEFENSES) + ["all"])
def test_batched_execution_equals_the_loop_with_a_defense(defense):
    extra = {"noise": 0.2, "nopeek": 0.5, "bits": 6} if defense == "all" else DEFENSES[defense]
    states = {}
    for execution in ("loop", "batched"):
        states[execution] = TrainState(tiny("1,2,3,4p,5", execution=execution, defense=extra), tiny_dataset())
        for _ in range(3):
            run_round(states[execution])
    for a, b in zip(weights(states["loop"]), weights(states["batched"]), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_the_walkthrough_shows_what_the_server_receives():
    cfg = tiny(defense={"noise": 0.5, "bits": 2})
    state = TrainState(cfg, tiny_dataset())
    result = traced_round(state)
    forward, up = result.trace.get("forward")[0].values, result.trace.get("upload")[0].values
    assert up["received"].shape == forward["smashed"].shape == (3, 8, *state.smashed_shape)
    assert up["defenses"] == [t.describe() for t in state.techniques]
    assert "sigma=0.5" in up["defenses"][0] and "2-bit" in up["defenses"][1]
    assert up["snr_db"] == pytest.approx(snr_db(forward["smashed"], 0.5))
    for j in range(3):  # 2 bits: at most four values per client
        assert len(torch.unique(up["received"][j])) <= 4
    assert up["bytes"] == result.ledger_after["bytes_smashed_up"] - result.ledger_before["bytes_smashed_up"]


# ---- noise ------------------------------------------------------------------------------------------

def test_snr_is_signal_power_over_noise_power_in_db():
    assert snr_db(torch.ones(10), 0.1) == pytest.approx(20.0)
    assert snr_db(torch.full((4, 4), 2.0), 2.0) == pytest.approx(0.0)
    assert snr_db(torch.tensor([3.0, -4.0]), 1.0) == pytest.approx(10 * math.log10(12.5))


def test_each_client_draws_its_own_noise_the_same_alone_or_together():
    cfg = tiny(defense={"noise": 1.0})
    together, alone = NoiseDefense(cfg), NoiseDefense(cfg)
    zeros = torch.zeros(3, 8, 6)
    both = together.upload(None, [0, 1, 2], zeros)
    one_by_one = torch.stack([alone.upload(None, [i], zeros[:1])[0] for i in (0, 1, 2)])
    assert torch.equal(both, one_by_one)
    assert not torch.equal(both[0], both[1])
    assert abs(float(both.std()) - 1.0) < 0.2


def test_noise_resumes_bit_identically_from_a_checkpoint(tmp_path):
    cfg = tiny("1,2,3,4p,5", rounds=6, defense={"noise": 0.3})
    data = tiny_dataset()
    whole = Trainer(cfg, data)
    whole.run()
    half = Trainer(cfg, data)
    for _ in range(3):
        half.step(Callbacks())
    half.save_checkpoint(tmp_path / "ck.pt")
    resumed = Trainer.from_checkpoint(tmp_path / "ck.pt", data)
    resumed.run()
    assert same_weights(whole.state, resumed.state)
    assert untimed(whole.history) == untimed(resumed.history)
    # and the streams matter: a checkpoint that lost them would not resume exactly
    stale = Trainer.from_checkpoint(tmp_path / "ck.pt", data)
    stale.state.techniques[0].reseed(cfg.seed)
    stale.run()
    assert not same_weights(whole.state, stale.state)


def test_every_evaluation_records_the_noise_as_a_signal_to_noise_ratio():
    data = tiny_dataset()
    trainer = Trainer(tiny(defense={"noise": 0.5}), data)
    history = trainer.run()["history"]
    state = trainer.state
    with torch.no_grad():
        signal = torch.cat([state.lowers[i](data.train_x[torch.as_tensor(state.clients[i].indices[:256])]).flatten()
                            for i in range(3)])
    assert history[-1]["defense_snr_db"] == pytest.approx(snr_db(signal, 0.5), abs=1e-6)
    assert "defense_snr_db" not in Trainer(tiny(), data).run()["history"][-1]


def test_the_servers_view_of_a_lower_model_goes_through_the_defenses_with_streams_of_its_own():
    cfg = tiny(batch_size=8, defense={"noise": 0.5, "bits": 3})
    state = TrainState(cfg, tiny_dataset())
    streams = [state.techniques[0].client_state(i).clone() for i in range(3)]
    x = tiny_dataset().train_x[:20]
    view = ServerView(state.lowers[0], cfg, seed=7)
    with torch.no_grad():
        seen, own = view(x), state.lowers[0](x)
        again = ServerView(state.lowers[0], cfg, seed=7)(x)
    assert seen.shape == own.shape and torch.equal(seen, again)
    for lo in range(0, 20, 8):  # each upload of b = 8 images quantised with its own range: at most 2^3 values
        assert len(torch.unique(seen[lo:lo + 8])) <= 8
    assert 0.3 < float((seen - own).std()) < 0.8
    assert all(torch.equal(s, state.techniques[0].client_state(i)) for i, s in enumerate(streams))


def mean_image_psnr(aux_x: torch.Tensor, target_x: torch.Tensor) -> float:
    """The data-mean baseline: every target predicted as the attacker's mean image (PSNR of the pooled MSE,
    as engine.privacy reports its attacks)."""
    return -10 * math.log10(float((aux_x.mean(0, keepdim=True) - target_x).pow(2).mean()))


def test_a_large_sigma_leaves_the_attacker_no_more_than_the_data_mean(digits):
    """sigma = 10 on smashed data of RMS about 0.3 (SNR about -30 dB): the black-box attacker, trained on
    what the server receives, rebuilds the client's images no better than their mean image does; the
    headline is then the data-mean guess itself (the decoder ends about 1 dB below it: under pure noise it
    does not quite learn to output the mean), never a figure below what a server gets for free."""
    from engine.privacy import AttackBudget, measure

    trainer = Trainer(on_digits("parallel_sl", rounds=4, eval_every=4), digits)
    trainer.run()
    lower = trainer.state.lowers[0]
    aux, target = digits.test_x, digits.train_x[torch.as_tensor(trainer.state.clients[0].indices[:256])]
    baseline = mean_image_psnr(aux, target)
    budget = AttackBudget(steps=200)
    plain = measure(lower, aux, target, budget=budget, seed=3)
    noisy_cfg = trainer.cfg.model_copy(update={"defense": trainer.cfg.defense.model_copy(update={"noise": 10.0})})
    with torch.no_grad():
        assert snr_db(lower(aux), 10.0) < -25
    noisy = measure(lower, aux, target, budget=budget, seed=3, received=ServerView(lower, noisy_cfg, seed=11))
    assert plain.psnr > baseline + 3  # the attack works on what the undefended server receives
    assert noisy.attacks["blackbox"].psnr < baseline + 0.5, (noisy.attacks["blackbox"].psnr, baseline)
    assert noisy.strongest == "mean" and noisy.psnr == pytest.approx(baseline, abs=1e-4)


# ---- NoPeek ----------------------------------------------------------------------------------------

def plain_dcor(x: np.ndarray, z: np.ndarray) -> float:
    """The sample distance correlation written out, loop by loop (Szekely, Rizzo and Bakirov 2007)."""
    n = len(x)

    def centred(a):
        d = np.array([[np.linalg.norm(a[j] - a[k]) for k in range(n)] for j in range(n)])
        return d - d.mean(0, keepdims=True) - d.mean(1, keepdims=True) + d.mean()

    a, b = centred(x.reshape(n, -1).astype(np.float64)), centred(z.reshape(n, -1).astype(np.float64))
    return math.sqrt((a * b).mean() / math.sqrt((a * a).mean() * (b * b).mean()))


def test_distance_correlation_is_the_sample_statistic():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, 3, 3, generator=g)
    z = torch.rand(12, 5, generator=g)
    assert float(distance_correlation(x, z)) == pytest.approx(plain_dcor(x.numpy(), z.numpy()), abs=1e-9)
    assert float(distance_correlation(x, 3 * x.flatten(1) + 1)) == pytest.approx(1.0, abs=1e-6)
    curved = distance_correlation(x, x.flatten(1) ** 2)
    assert 0.5 < float(curved) < 1.0
    # differentiable, and the gradient is the one of the written-out statistic
    zz = z.clone().double().requires_grad_(True)
    distance_correlation(x, zz).backward()
    step = 1e-6
    bumped = z.double().clone()
    bumped[0, 0] += step
    numeric = (plain_dcor(x.double().numpy(), bumped.numpy()) - plain_dcor(x.double().numpy(), z.double().numpy())) / step
    assert float(zz.grad[0, 0]) == pytest.approx(numeric, rel=1e-3)


def test_nopeek_lowers_the_distance_correlation_of_the_same_run(digits):
    """Cut 2 (a lower model with room to decorrelate), 40 rounds on digits, the same seed with and without
    NoPeek: the measured dCor of held-out images drops (about 0.97 -> 0.89 here) while the run still learns."""
    from engine.privacy import distance_correlation as measured_dcor

    dcor, acc = {}, {}
    x = digits.test_x[:256]
    for alpha in (0.0, 10.0):
        cfg = on_digits("parallel_sl", rounds=40, eval_every=40, batch_size=32, cut_layer=2,
                        optim={"lr": 3e-3}, defense={"nopeek": alpha})
        trainer = Trainer(cfg, digits)
        acc[alpha] = trainer.run()["history"][-1]["test_acc"]
        with torch.no_grad():
            dcor[alpha] = measured_dcor(x, trainer.state.lowers[0](x))
    assert dcor[10.0] < dcor[0.0] - 0.04, dcor
    assert acc[10.0] > 0.5, acc  # chance is 0.1


# ---- bits -----------------------------------------------------------------------------------------

def test_quantisation_by_hand():
    s = torch.tensor([[0.0, 0.5, 1.0, 0.26], [2.0, 2.0, 2.0, 2.0]])
    codes, lo, hi = quantize(s, 2)  # scale 1/3: 0, 1.5 -> 2 (half to even), 3, 0.78 -> 1; a constant row: 0
    assert codes.tolist() == [[0, 2, 3, 1], [0, 0, 0, 0]]
    assert lo.tolist() == [0.0, 2.0] and hi.tolist() == [1.0, 2.0]
    assert torch.allclose(dequantize(codes, lo, hi, 2), torch.tensor([[0, 2 / 3, 1, 1 / 3], [2.0, 2, 2, 2]]))


@pytest.mark.parametrize("bits", range(1, 17))
def test_codes_pack_into_k_bits_each(bits):
    g = torch.Generator().manual_seed(bits)
    for count in (1, 7, 64, 1001):
        codes = torch.randint(0, 2 ** bits, (count,), generator=g)
        data = pack(codes, bits)
        assert data.dtype == torch.uint8 and len(data) == packed_bytes(count, bits) == math.ceil(count * bits / 8)
        assert torch.equal(unpack(data, bits, count), codes)


def test_what_the_wire_carries_decodes_to_what_the_server_receives():
    cfg = tiny(defense={"bits": 5})
    tech = BitsDefense(cfg)
    s = torch.randn(2, 8, 6, 4, 4)
    received = tech.upload(None, [0, 1], s)
    for j in range(2):
        payload = tech.encode(s[j])
        assert [(tuple(p.shape), p.dtype) for p in payload] == tech.wire(tuple(s[j].shape))
        assert torch.equal(tech.decode(payload, tuple(s[j].shape)), received[j])
    assert float((received - s).abs().max()) <= float((s.max() - s.min()) / 31 / 2) + 1e-6


def test_four_bits_cut_the_smashed_bytes_eightfold_in_the_ledger():
    data = tiny_dataset()
    plain, quantised = Trainer(tiny(), data), Trainer(tiny(defense={"bits": 4}), data)
    plain.run()
    quantised.run()
    cfg, elements = plain.cfg, math.prod(plain.state.smashed_shape)
    messages = cfg.rounds * cfg.num_clients  # one upload per client per round
    labels = messages * cfg.batch_size * 8
    ranges = messages * 2 * 4
    full = plain.state.ledger.smashed_up - labels
    assert full == messages * cfg.batch_size * elements * 4
    assert (quantised.state.ledger.smashed_up - labels - ranges) * 8 == full


# ---- the run's description --------------------------------------------------------------------------

def test_the_defenses_show_in_the_runs_description_and_the_technique_codes_stay_the_papers():
    cfg = tiny("1,2,3,4p,5", defense={"noise": 0.5, "nopeek": 1, "bits": 4})
    assert cfg.defense.codes() == ["noise0.5", "nopeek1", "bits4"]
    assert cfg.techniques() == ["1", "2", "3", "4p", "5"]
    assert [t.describe() for t in active_techniques(cfg) if t.defense] == [
        "noise: Gaussian, sigma=0.5, added to the smashed data before upload",
        "quantisation: 4-bit codes of the smashed data on the wire (8x fewer bytes), straight-through gradient",
        "NoPeek: alpha=1 x dCor(inputs, smashed data) added to each client's loss"]
