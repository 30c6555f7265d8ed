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
    g = torch.Generator().manual_seed(1)
    for dx, dz in ((1, 1), (20, 20), (784, 1176)):
        d = privacy.distance_correlation(torch.rand(512, dx, generator=g), torch.rand(512, dz, generator=g))
        assert abs(d) < 0.02, (dx, dz, d)


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
    assert abs(report.dcor) < 1e-6 and report.mi < 0.05


def test_a_real_lower_model_leaks_between_the_two(digits):
    from engine.models import split_lenet5

    torch.manual_seed(0)
    lower, _ = split_lenet5((1, 28, 28), 10, cut_layer=1)
    aux, target, shown = split(digits)
    report = privacy.measure(lower, aux, target, shown, budget=FAST)
    assert mean_image_psnr(aux, target) + 1 < report.psnr
    assert 0.2 < report.dcor < 1 and report.mi > 0.5


def test_the_same_seed_gives_the_same_figures_and_the_global_generator_is_untouched(digits):
    from engine.models import split_lenet5

    torch.manual_seed(0)
    lower, _ = split_lenet5((1, 28, 28), 10, cut_layer=2)
    aux, target, shown = split(digits)
    before = torch.random.get_rng_state()
    one = privacy.measure(lower, aux, target, shown, budget=FAST, seed=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    two = privacy.measure(lower, aux, target, shown, budget=FAST, seed=4)
    assert one.metrics() == two.metrics()
    np.testing.assert_array_equal(one.shown_reconstruction, two.shown_reconstruction)
    other = privacy.measure(lower, aux, target, shown, budget=FAST, seed=5)
    assert other.metrics()["leak_mse"] != one.metrics()["leak_mse"]


# ---- inside a run ----------------------------------------------------------------------------
def run_config(every: int, **extra):
    """A short LocFedMix-style run on digits; the attacker gets 20 steps (the budget is part of the config)."""
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
