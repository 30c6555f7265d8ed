"""Leakage measures (engine.privacy) on cases with known answers, and measuring inside a run."""

import numpy as np
import pytest
import torch
from torch import nn

from engine import privacy
from engine.config import ConfigError, validate_config
from engine.data import load_dataset
from engine.trainer import Trainer

FAST = privacy.AttackBudget(steps=150)
SHORT = privacy.AttackBudget(steps=40, check_every=10)
TINY = privacy.AttackBudget(steps=20, inversion_steps=30, tv_weights=(0.0, 0.01), tv_images=4)


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits, 1x28x28: real images, no download."""
    return load_dataset("digits")


# ---- distance correlation --------------------------------------------------------------------
def test_distance_correlation_of_x_with_itself_and_a_similarity_transform_is_one():
    x = torch.randn(300, 20, generator=torch.Generator().manual_seed(0))
    assert privacy.distance_correlation(x, x) == pytest.approx(1.0, abs=1e-9)
    assert privacy.distance_correlation(x, 3 * x + 1) == pytest.approx(1.0, abs=1e-9)


def test_distance_correlation_of_independent_samples_is_near_zero_even_in_high_dimension():
    """The bias-corrected dCor^2 is within 0.01 of 0 (its sampling sd is about sqrt(2 / n^2) = 0.003 here); its
    clipped square root, the reported figure, below 0.1 (the plain sample dCor is 0.3-0.9 here)."""
    g = torch.Generator().manual_seed(1)
    for dx, dz in ((1, 1), (20, 20), (784, 1176)):
        x, z = torch.rand(512, dx, generator=g), torch.rand(512, dz, generator=g)
        squared = privacy.distance_correlation_sq(x, z)
        assert abs(squared) < 0.01, (dx, dz, squared)
        assert privacy.distance_correlation(x, z) == pytest.approx(max(squared, 0.0) ** 0.5)
        assert privacy.distance_correlation(x, z) < 0.1


def test_distance_correlation_is_the_square_root_of_the_bias_corrected_statistic():
    """A partly dependent pair: the reported dCor is sqrt(dCor^2), and clearly above the squared value."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(400, 5, generator=g)
    z = x[:, :2] + 2 * torch.randn(400, 2, generator=g)
    squared = privacy.distance_correlation_sq(x, z)
    assert 0.02 < squared < 0.5
    assert privacy.distance_correlation(x, z) == pytest.approx(squared ** 0.5, rel=1e-12)


def test_distance_correlation_sees_a_nonlinear_dependence_that_correlation_misses():
    x = torch.randn(500, 1, generator=torch.Generator().manual_seed(2))
    assert abs(float(torch.corrcoef(torch.cat([x, x ** 2], 1).T)[0, 1])) < 0.15
    assert privacy.distance_correlation(x, x ** 2) > 0.1


# ---- mutual information ----------------------------------------------------------------------
def correlated_gaussians(d: int, rho: float, n: int = 1000, seed: int = 0):
    """x, z with z_j = rho x_j + sqrt(1 - rho^2) e_j: I(x; z) = -d/2 log(1 - rho^2) nats."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    z = rho * x + np.sqrt(1 - rho ** 2) * rng.standard_normal((n, d))
    return x, z, -0.5 * d * np.log(1 - rho ** 2)


@pytest.mark.parametrize("d, rho", [(1, 0.3), (1, 0.6), (1, 0.9), (2, 0.6)])
def test_ksg_matches_the_closed_form_for_correlated_gaussians(d, rho):
    """Stated tolerance (1,000 samples, k = 3): each draw within 0.1 nats, the mean of 5 draws within 0.05."""
    errors = []
    for seed in range(5):
        x, z, true = correlated_gaussians(d, rho, seed=seed)
        errors.append(privacy.ksg_mutual_information(x, z) - true)
    assert max(map(abs, errors)) < 0.1
    assert abs(np.mean(errors)) < 0.05


def test_ksg_agrees_with_scikit_learns_estimator_in_one_dimension():
    """scikit-learn's mutual_info_regression is the same estimator (k = 3) for one continuous feature."""
    from sklearn.feature_selection import mutual_info_regression

    x, z, _ = correlated_gaussians(1, 0.7, seed=7)
    theirs = mutual_info_regression(x, z.ravel(), n_neighbors=3, random_state=0)[0]
    assert privacy.ksg_mutual_information(x, z) == pytest.approx(theirs, abs=0.01)


def test_ksg_is_near_zero_for_independent_samples():
    rng = np.random.default_rng(3)
    assert privacy.ksg_mutual_information(rng.standard_normal((1000, 3)), rng.standard_normal((1000, 3))) < 0.03


def test_ksg_underestimates_strong_dependence_in_four_dimensions_as_documented():
    x, z, true = correlated_gaussians(4, 0.8)
    estimate = privacy.ksg_mutual_information(x, z)
    assert 0.7 * true < estimate < true


def test_mutual_information_on_principal_components_keeps_the_closed_form():
    """PCA to as many components as there are dimensions is a rotation and scaling: the MI is unchanged."""
    x, z, true = correlated_gaussians(2, 0.6)
    assert privacy.mutual_information(torch.tensor(x), torch.tensor(z), dims=2) == pytest.approx(true, abs=0.06)


# ---- the inversion attack --------------------------------------------------------------------
def mean_image_psnr(aux: torch.Tensor, target: torch.Tensor) -> float:
    mean = aux.mean(0, keepdim=True).expand_as(target)
    return float(privacy.image_quality(mean, target)[0].mean())


def split(digits, small: bool = False):
    """Attacker's data, client images, shown images; ``small``: at 14x14, a quarter of the attack's cost
    when the smashed data keep the input's size."""
    def size(x):
        return torch.nn.functional.avg_pool2d(x, 2) if small else x
    return size(digits.test_x[-300:]), size(digits.train_x[:300]), size(digits.test_x[:4])


def test_an_identity_lower_model_is_reconstructed_almost_perfectly(digits):
    aux, target, shown = split(digits, small=True)
    report = privacy.measure(nn.Identity(), aux, target, shown, budget=FAST)
    assert list(report.attacks) == ["blackbox", "mean"]  # the server does not hold the lower model
    assert report.psnr > 25 and report.ssim > 0.85
    assert report.psnr > mean_image_psnr(aux, target) + 10
    assert report.shown_reconstruction.shape == shown.shape
    assert privacy.distance_correlation(target, target) == pytest.approx(1.0)
    assert report.dcor == pytest.approx(1.0, abs=1e-6)


class Constant(nn.Module):
    """A lower model whose output ignores its input."""

    def __init__(self):
        super().__init__()
        self.value = nn.Parameter(torch.randn(6, 7, 7, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return self.value.expand(len(x), -1, -1, -1)


def test_a_lower_model_that_ignores_its_input_leaks_nothing_beyond_the_data_mean(digits):
    aux, target, shown = split(digits, small=True)
    report = privacy.measure(Constant(), aux, target, shown, budget=FAST)
    assert report.psnr <= mean_image_psnr(aux, target) + 0.05
    assert report.dcor < 1e-4 and report.mi < 0.05  # sqrt of float noise around 0


def test_the_data_mean_is_an_attack_so_the_headline_never_falls_below_it(digits):
    """The server may always guess the mean of its own images: that guess is scored like any attack
    (pooled MSE, PSNR from it, SSIM), and the headline is at least as strong as it."""
    aux, target, shown = split(digits, small=True)
    report = privacy.measure(Constant(), aux, target[:privacy.TARGET_IMAGES], shown, budget=FAST)
    guess = aux.mean(0, keepdim=True).expand_as(target[:privacy.TARGET_IMAGES])
    mse = float((guess - target[:privacy.TARGET_IMAGES]).pow(2).mean())
    assert report.attacks["mean"].mse == pytest.approx(mse, rel=1e-5)
    assert report.attacks["mean"].psnr == pytest.approx(-10 * np.log10(mse), rel=1e-5)
    assert report.attacks["mean"].shown.shape == shown.shape
    assert report.psnr >= report.attacks["mean"].psnr and report.mse <= mse


def test_a_real_lower_model_leaks_between_the_two(digits):
    from engine.models import split_lenet5

    torch.manual_seed(0)
    lower, _ = split_lenet5((1, 28, 28), 10, cut_layer=1)
    aux, target, shown = split(digits)
    report = privacy.measure(lower, aux, target, shown, budget=FAST)
    assert mean_image_psnr(aux, target) + 1 < report.psnr
    assert 0.2 < report.dcor < 1 and report.mi > 0.5


def needs_native_bfloat16():
    if not privacy.bfloat16_native(torch.device("cpu")):
        pytest.skip("this CPU has no native bfloat16: the attacker runs in float32 only")


@pytest.mark.parametrize("cut", [1, 2])
def test_the_white_box_attack_in_bfloat16_scores_what_it_scores_in_float32(digits, cut, monkeypatch):
    """Where the CPU computes bfloat16 natively, the white-box optimisation runs its lower-model passes
    in it (the loss, the images and Adam stay float32). From the same starts, through the same lower
    model, it must reach the same PSNR to 0.3 dB (measured here: within 0.05 dB)."""
    from engine.models import split_lenet5

    needs_native_bfloat16()
    torch.manual_seed(0)
    lower, _ = split_lenet5((1, 28, 28), 10, cut_layer=cut)
    aux, target, _ = split(digits)
    target = target[:48]
    observed = privacy.smash(lower, target)
    noisy = (target + 0.3 * torch.randn(target.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    starts = {"mean image": aux.mean(0, keepdim=True).expand_as(target), "a noisy guess": noisy}
    budget = privacy.AttackBudget(inversion_steps=60)
    for name, start in starts.items():
        psnr = {}
        for bfloat16 in (False, True):
            monkeypatch.setattr(privacy, "BFLOAT16", bfloat16)
            recon = privacy.invert_whitebox(lower, observed, start, 0.003, budget)
            psnr[bfloat16] = privacy.psnr_of(float((recon - target).pow(2).mean()))
        assert psnr[True] > psnr[False] - 0.3, (name, psnr)
        assert psnr[False] > privacy.psnr_of(float((start - target).pow(2).mean())) + 1  # it did optimise


def test_the_decoder_trained_in_bfloat16_is_no_weaker_than_in_float32(digits, monkeypatch):
    """The decoder's training steps in bfloat16 (mixed precision, channels-last) from the same seed:
    its reconstructions of images it never saw score what the float32 decoder's do, to 0.3 dB (a
    different path of rounding, not a weaker decoder: measured on the study's trained models,
    docs/privacy.md, the same figures within 0.05 dB after 2,000 steps)."""
    from engine.models import split_lenet5

    needs_native_bfloat16()
    torch.manual_seed(0)
    lower, _ = split_lenet5((1, 28, 28), 10, cut_layer=1)
    aux, target, _ = split(digits)
    s_aux, s_target = privacy.smash(lower, aux), privacy.smash(lower, target)
    psnr = {}
    for bfloat16 in (False, True):
        monkeypatch.setattr(privacy, "BFLOAT16", bfloat16)
        decoder, steps = privacy.train_inversion(s_aux, aux, (1, 28, 28), privacy.AttackBudget(steps=100))
        assert next(decoder.parameters()).dtype == torch.float32 and decoder.training is False
        with torch.no_grad():
            psnr[bfloat16] = privacy.psnr_of(float((decoder(s_target) - target).pow(2).mean()))
    assert psnr[True] > psnr[False] - 0.3, psnr
    assert psnr[True] > mean_image_psnr(aux, target) + 5


def test_the_same_seed_gives_the_same_figures_and_the_global_generator_is_untouched(digits):
    from engine.models import split_lenet5

    torch.manual_seed(0)
    lower, _ = split_lenet5((1, 28, 28), 10, cut_layer=2)
    aux, target, shown = split(digits)
    before = torch.random.get_rng_state()
    one = privacy.measure(lower, aux, target, shown, budget=SHORT, seed=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    two = privacy.measure(lower, aux, target, shown, budget=SHORT, seed=4)
    assert one.metrics() == two.metrics()
    np.testing.assert_array_equal(one.shown_reconstruction, two.shown_reconstruction)
    other = privacy.measure(lower, aux, target, shown, budget=SHORT, seed=5)
    assert other.metrics()["leak_mse"] != one.metrics()["leak_mse"]


# ---- inside a run ----------------------------------------------------------------------------
def run_config(every: int, **extra):
    """A short LocFedMix-style run on digits without ⑤ (black-box only); the attacker's decoder gets
    at most 20 steps (the budget is part of the config)."""
    return validate_config({"data": {"dataset": "digits"}, "num_clients": 3, "rounds": 12, "eval_every": 4,
                            "batch_size": 16, "optim": {"name": "adam", "lr": 0.001},
                            "privacy": {"every": every, "attack_steps": 20},
                            "local_loss": {"enabled": True}, "mixup": {"enabled": True}, **extra})


def comparable(history):
    return [{k: v for k, v in row.items() if not k.startswith("leak_") and k not in ("wall_s", "round_s")}
            for row in history]


class Images:
    def __init__(self):
        self.rounds = {}

    def on_images(self, trainer, round_, snapshot):
        self.rounds[round_] = snapshot

    def __getattr__(self, name):  # the other callbacks do nothing
        return lambda *args: False


def test_measuring_does_not_change_the_training(digits):
    off = Trainer(run_config(0), digits)
    off_result = off.run()
    on = Trainer(run_config(8), digits)
    images = Images()
    on_result = on.run(images)
    assert comparable(on_result["history"]) == comparable(off_result["history"])
    for a, b in zip(off.state.client_modules() + [off.state.upper], on.state.client_modules() + [on.state.upper]):
        for p, q in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(p, q)
    measured = [row["round"] for row in on_result["history"] if "leak_mse" in row]
    assert measured == [8, 12]  # every 8 rounds and at the end
    assert not any("leak_mse" in row for row in off_result["history"])
    summary = on_result["summary"]
    last = on_result["history"][-1]
    assert {k: summary[k] for k in privacy.LEAK_KEYS} == {k: last[k] for k in privacy.LEAK_KEYS}
    assert summary["leak_round"] == 12 and "leak_mse" not in off_result["summary"]
    # the snapshots of the measured rounds carry the attacker's view of the shown images
    assert sorted(images.rounds) == [8, 12]
    entry = images.rounds[12]["clients"][last["leak_client"]]
    assert entry["attack"].shape == images.rounds[12]["inputs"].shape
    assert entry["attack_psnr"].shape == entry["psnr"].shape == (4,)


def test_a_resumed_run_measures_the_same_leakage(digits, tmp_path):
    whole = Trainer(run_config(4), digits).run()
    first = Trainer(run_config(4), digits)
    for _ in range(6):
        first.step(Images())
    first.save_checkpoint(tmp_path / "ck.pt")
    resumed = Trainer.from_checkpoint(tmp_path / "ck.pt", digits).run()
    keys = (*privacy.LEAK_KEYS, "leak_client")
    assert [{k: r.get(k) for k in keys} for r in resumed["history"]] == \
        [{k: r.get(k) for k in keys} for r in whole["history"]]


def test_privacy_every_must_fall_on_evaluation_rounds():
    with pytest.raises(ConfigError, match=r"privacy.every must be a multiple of eval_every \(4\).*got 6"):
        run_config(6)
    with pytest.raises(ConfigError, match="privacy.every must be between 0 and"):
        run_config(-1)


def test_a_client_with_three_images_gets_attack_figures_but_no_dependence_estimate(digits):
    from engine.models import split_lenet5

    torch.manual_seed(0)
    lower, _ = split_lenet5((1, 28, 28), 10, cut_layer=2)
    aux, target, shown = split(digits)
    report = privacy.measure(lower, aux, target[:3], shown, budget=privacy.AttackBudget(steps=5))
    assert report.dcor is None and report.mi is None and report.psnr > 0


# ---- image quality ---------------------------------------------------------------------------
def test_ssim_matches_scikit_image_within_0_005_on_fixed_images(digits):
    """Wang et al.'s SSIM as scikit-image computes it (Gaussian window, sigma 1.5, population
    covariances), on grey pairs (noise, blur, shift, an unrelated image) and on colour pairs."""
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    clean = digits.test_x[:4]
    blurred = torch.nn.functional.avg_pool2d(clean, 3, stride=1, padding=1)
    pairs = [(clean, (clean + 0.1 * torch.randn(clean.shape, generator=g)).clamp(0, 1)), (clean, blurred),
             (clean, torch.roll(clean, 2, dims=-1)), (clean, digits.test_x[4:8])]
    colour = torch.rand(3, 3, 32, 32, generator=g)
    pairs.append((colour, (colour + 0.2 * torch.rand(colour.shape, generator=g)).clamp(0, 1)))
    for a, b in pairs:
        ours = privacy.ssim(b, a)
        theirs = [structural_similarity(a[i].numpy(), b[i].numpy(), gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, data_range=1, channel_axis=0)
                  for i in range(len(a))]
        np.testing.assert_allclose(ours.numpy(), theirs, atol=0.005)
    assert privacy.ssim(clean, clean).tolist() == pytest.approx([1.0] * 4)


def test_psnr_is_ten_log10_of_one_over_the_mse():
    a = torch.zeros(2, 1, 12, 12)
    b = a.clone()
    b[0] += 0.1   # MSE 0.01 -> 20 dB
    b[1, :, :6] += 0.2  # MSE 0.02 -> 16.99 dB
    psnr, _ = privacy.image_quality(b, a)
    assert psnr.tolist() == pytest.approx([20.0, 10 * np.log10(50)], abs=1e-4)
    assert privacy.psnr_of(0.01) == pytest.approx(20.0)


# ---- the black-box decoder -------------------------------------------------------------------
@pytest.mark.parametrize("in_shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("cut", [1, 2, 3, 4])
def test_the_decoder_rebuilds_the_input_resolution_at_every_cut_without_interpolation(in_shape, cut, monkeypatch):
    from engine.models import split_lenet5

    def no_interpolation(*args, **kwargs):
        raise AssertionError("the decoder must upsample with learned layers only")

    monkeypatch.setattr(torch.nn.functional, "interpolate", no_interpolation)
    torch.manual_seed(0)
    lower, _ = split_lenet5(in_shape, 10, cut)
    s = privacy.smash(lower, torch.rand(5, *in_shape))
    decoder = privacy.InversionDecoder(tuple(s.shape[1:]), in_shape)
    assert decoder(s).shape == (5, *in_shape)
    assert not any(isinstance(m, nn.Upsample) for m in decoder.modules())
    # the upsampling is learned: every resolution change is a (transposed) convolution or a sub-pixel shuffle
    if cut <= 2:
        assert any(isinstance(m, nn.PixelShuffle) for m in decoder.modules())


def test_the_decoder_stops_when_its_held_out_loss_stops_improving_and_keeps_its_best_state(digits):
    """A lower model that ignores its input leaves only the mean image to learn: the held-out loss
    flattens early and training stops long before the cap. A tight cap is a cap."""
    aux = digits.test_x[-300:]
    s = privacy.smash(Constant(), aux)
    budget = privacy.AttackBudget(steps=3000, check_every=10, patience=3, lr=0.01)
    decoder, steps = privacy.train_inversion(s, aux, (1, 28, 28), budget)
    assert steps < 1000
    held = aux[-60:]
    with torch.no_grad():
        loss = float(torch.nn.functional.mse_loss(decoder(s[-60:]), held))
    mean_loss = float(torch.nn.functional.mse_loss(aux[:-60].mean(0, keepdim=True).expand_as(held), held))
    assert loss < mean_loss + 0.002  # it learned the mean image, no worse
    _, capped = privacy.train_inversion(s, aux, (1, 28, 28), privacy.AttackBudget(steps=7))
    assert capped == 7


# ---- the white-box attacks -------------------------------------------------------------------
def near_identity() -> nn.Module:
    """A 3x3 convolution that is the identity up to small perturbations of its weights."""
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(0.02 * torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(0)))
        conv.weight[0, 0, 1, 1] += 1.0
    return conv


def test_the_white_box_attack_recovers_a_near_identity_lower_models_inputs_almost_exactly(digits):
    aux, target, shown = split(digits)
    budget = privacy.AttackBudget(steps=20, tv_images=8)
    report = privacy.measure(near_identity(), aux, target[:64], shown, budget=budget, white_box=True)
    white = report.attacks["whitebox"]
    assert white.psnr > 40 and white.ssim > 0.99
    assert white.tv_weight <= 0.003  # the attacker's own images told it the prior only hurts here
    assert report.attacks["hybrid"].psnr > 40
    assert report.psnr == max(a.psnr for a in report.attacks.values())
    assert report.attacks["blackbox"].psnr < white.psnr  # 20 decoder steps are nowhere near


@pytest.mark.parametrize("bfloat16", [False, True], ids=["float32", "bfloat16"])
def test_images_in_one_white_box_batch_do_not_interact(digits, bfloat16, monkeypatch):
    monkeypatch.setattr(privacy, "BFLOAT16", bfloat16)
    if bfloat16 and not privacy.bfloat16_native(torch.device("cpu")):
        pytest.skip("this CPU has no native bfloat16: the attacker runs in float32")
    lower = near_identity()
    target = digits.test_x[:6]
    observed = privacy.smash(lower, target)
    start = torch.full_like(target, 0.5)
    budget = privacy.AttackBudget(inversion_steps=25)
    together = privacy.invert_whitebox(lower, observed, start, torch.tensor([0.0, 0.1] * 3), budget)
    alone = privacy.invert_whitebox(lower, observed[1:2], start[1:2], 0.1, budget)
    other_weight = privacy.invert_whitebox(lower, observed[1:2], start[1:2], 0.0, budget)
    # float32: the same to rounding; bfloat16: oneDNN blocks a batch of 6 and of 1 differently, and its
    # rounding differs by under 0.01 of a pixel (measured 0.004), where a row with its neighbour's
    # prior weight ends 0.2 away (measured 0.21): so a row is still its own optimisation
    tolerance = 0.01 if bfloat16 else 1e-5
    torch.testing.assert_close(together[1:2], alone, atol=tolerance, rtol=0)
    assert (other_weight - alone).abs().max() > 5 * tolerance


class Moody(nn.Module):
    """A lower model with BatchNorm and dropout that records the mode of every forward pass."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.drop(self.norm(self.conv(x)))


def test_measuring_runs_the_lower_model_in_eval_mode_and_restores_every_submodules_mode(digits):
    aux, target, shown = split(digits)
    lower = Moody()
    lower.drop.eval()  # mixed modes come back mixed
    state = {k: v.clone() for k, v in lower.state_dict().items()}  # weights and BatchNorm statistics
    before = torch.random.get_rng_state()
    privacy.measure(lower, aux, target[:40], shown, budget=TINY, white_box=True)
    assert lower.modes and not any(lower.modes)
    assert lower.training and lower.conv.training and lower.norm.training and not lower.drop.training
    assert all(torch.equal(v, lower.state_dict()[k]) for k, v in state.items())
    assert all(p.grad is None for p in lower.parameters())  # the white-box steps differentiate the image only
    assert torch.equal(torch.random.get_rng_state(), before)


# ---- several clients, and which attacks apply ------------------------------------------------
def test_identical_lower_models_are_attacked_once():
    a, b = near_identity(), near_identity()
    c = near_identity()
    with torch.no_grad():
        c.weight[0, 0, 0, 0] += 1e-3
    lowers = [a, b, c, b]
    assert privacy.distinct_clients(lowers, [0, 1, 2, 3], limit=3) == [0, 2]
    assert privacy.distinct_clients(lowers, [1, 2, 3], limit=1) == [1]


def test_a_report_over_clients_gives_the_mean_the_worst_client_and_each_attacks_figures():
    def client(i, black, white):
        attacks = {"blackbox": privacy.AttackResult(black, 0.5), "whitebox": privacy.AttackResult(white, 0.7),
                   "hybrid": privacy.AttackResult(white / 2, 0.8)}
        return privacy.ClientLeakage(i, attacks, 0.9, 2.0, attack_steps=100 * (i + 1), whitebox_steps=300)

    report = privacy.LeakageReport([client(0, 0.02, 0.01), client(3, 0.04, 0.03)])
    m = report.metrics()
    assert set(m) == {*privacy.LEAK_KEYS, *privacy.LEAK_EXTRA_KEYS}
    assert m["leak_mse"] == pytest.approx(0.01) and m["leak_psnr"] == pytest.approx(20.0)  # hybrid, mean MSE
    assert m["leak_ssim"] == pytest.approx(0.8)
    assert m["leak_psnr_blackbox"] == pytest.approx(10 * np.log10(1 / 0.03))
    assert m["leak_psnr_whitebox"] == pytest.approx(10 * np.log10(1 / 0.02))
    assert m["leak_psnr_worst"] == pytest.approx(10 * np.log10(1 / 0.005)) and m["leak_client_worst"] == 0
    assert m["leak_clients"] == 2 and m["leak_attack_steps"] == 400 and m["leak_whitebox_steps"] == 300
    assert report.client == 0


def white_box_config(**privacy_settings):
    return run_config(4, rounds=4, privacy={"every": 4, "attack_steps": 10, "budget": "fast", **privacy_settings})


def test_white_box_attacks_apply_when_the_server_averages_the_lower_models(digits, monkeypatch):
    monkeypatch.setattr(privacy, "TARGET_IMAGES", 32)
    cfg = validate_config({**white_box_config(clients=3).model_dump(), "averaging": {"enabled": True}})
    row = Trainer(cfg, digits).run()["history"][-1]
    assert row["leak_clients"] == 1  # averaged every round: one model, attacked once
    assert row["leak_psnr_whitebox"] is not None and row["leak_psnr_hybrid"] is not None
    assert row["leak_psnr"] == pytest.approx(max(row[f"leak_psnr_{a}"] for a in privacy.ATTACKS))
    assert row["leak_psnr"] == pytest.approx(10 * np.log10(1 / row["leak_mse"]))
    assert row["leak_whitebox_steps"] == 100 and 1 <= row["leak_attack_steps"] <= 10
    elsewhere = validate_config({**cfg.model_dump(), "privacy": {**cfg.privacy.model_dump(),
                                                                  "averaging_at_server": False}})
    row = Trainer(elsewhere, digits).run()["history"][-1]
    assert row["leak_psnr_whitebox"] is None and row["leak_psnr_hybrid"] is None
    # the black-box decoder (10 steps here) or the data-mean guess, whichever is stronger
    assert row["leak_psnr"] == pytest.approx(max(row["leak_psnr_blackbox"], row["leak_psnr_mean"]))


def test_white_box_attacks_apply_where_the_server_relays_vanilla_sl_s_lower_model(digits, monkeypatch):
    monkeypatch.setattr(privacy, "TARGET_IMAGES", 32)
    cfg = validate_config({**white_box_config(clients=2).model_dump(), "schedule": "sequential",
                           "mixup": {"enabled": False}, "local_loss": {"enabled": False}})
    assert not cfg.averaging.enabled  # no ⑤: the server holds the one lower model as it hands it on
    row = Trainer(cfg, digits).run()["history"][-1]
    assert row["leak_clients"] == 1  # one lower model, shared by every client
    assert row["leak_psnr_whitebox"] is not None and row["leak_psnr_hybrid"] is not None
    assert row["leak_psnr"] == pytest.approx(max(row[f"leak_psnr_{a}"] for a in privacy.ATTACKS))
    direct = validate_config({**cfg.model_dump(),
                              "privacy": {**cfg.privacy.model_dump(), "averaging_at_server": False}})
    row = Trainer(direct, digits).run()["history"][-1]  # clients hand the model on directly
    assert row["leak_psnr_whitebox"] is None and row["leak_psnr_hybrid"] is None


def test_without_averaging_several_clients_are_attacked_and_the_worst_is_reported(digits, monkeypatch):
    monkeypatch.setattr(privacy, "TARGET_IMAGES", 32)
    result = Trainer(white_box_config(clients=2), digits).run()
    row = result["history"][-1]
    assert row["leak_clients"] == 2 and row["leak_psnr_whitebox"] is None
    assert row["leak_psnr_worst"] >= row["leak_psnr"] - 1e-9  # the worst client's MSE is at most the mean
    assert row["leak_client_worst"] in (0, 1)
    assert {k: result["summary"][k] for k in privacy.LEAK_EXTRA_KEYS} == {k: row[k] for k in privacy.LEAK_EXTRA_KEYS}
