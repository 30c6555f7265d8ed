"""Tests for engine.latency: the LocFedMix-SL Table 4 latency model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine.latency import (
    METHODS,
    LatencyParams,
    latency,
    latency_curve_for_run,
    latency_curves,
    latency_from_bytes,
    method_for_techniques,
)

# Hand-worked reference: n=4, T=10, T_comp=2, T_comm=0.5, |s|=100, |w_c|=50,
# |ŵ_c|=25, T_c=3.  Shared quantities: n T_comm = 2,
# (|s|+|w_c|)/|s| = 150/100 = 1.5, (|ŵ_c|+|w_c|)/|w_c| = 75/50 = 1.5,
# floor(T/T_c) = floor(10/3) = 3.
HAND = LatencyParams(t_comp=2.0, t_comm=0.5, smashed_size=100.0, lower_size=50.0,
                     aux_size=25.0, avg_interval=3)

# LeNet-5 / Fashion-MNIST sizes in element/parameter counts.
S_LENET = 64 * 6 * 14 * 14                         # 75264 smashed floats (b=64)
W_LENET = 6 * 1 * 5 * 5 + 6                        # 156 lower-model params
A_LENET = (6 * 12 * 9 + 12) + 2 * 12 + (12 * 9 + 1)  # 660 + 24 + 109 = 793
NS_FIG8 = np.arange(10, 101)


def _lenet(avg_interval: int = 1) -> LatencyParams:
    """LeNet-5 sizes at T_comp:T_comm = 10:1."""
    return LatencyParams(10.0, 1.0, S_LENET, W_LENET, A_LENET, avg_interval)


# --------------------------------------------------------------- Table 4 rows
def test_vanilla_sl_hand_worked():
    """(T_comp + n T_comm) n T = (2 + 2) * 4 * 10 = 160."""
    assert latency("vanilla_sl", 4, 10, HAND) == pytest.approx(160.0)


def test_splitfed_hand_worked():
    """(T_comp + n T_comm (|s|+|w_c|)/|s|) T = (2 + 2*1.5) * 10 = 50."""
    assert latency("splitfed", 4, 10, HAND) == pytest.approx(50.0)


@pytest.mark.parametrize("n, expected", [
    (4, 70.0),   # (2 + max(2, 2) + 2*1.5) * 10 = 7 * 10
    (2, 55.0),   # n T_comm = 1 < T_comp: (2 + max(2, 1) + 1*1.5) * 10 = 5.5 * 10
    (8, 120.0),  # n T_comm = 4 > T_comp: (2 + max(2, 4) + 4*1.5) * 10 = 12 * 10
])
def test_locsplitfed_hand_worked(n, expected):
    """LocSplitFed's max(T_comp, n T_comm) picks whichever side is slower."""
    assert latency("locsplitfed", n, 10, HAND) == pytest.approx(expected)


def test_locfedmix_sl_hand_worked():
    """(T_comp + n T_comm) T + n T_comm 1.5 floor(T/T_c) = 4*10 + 2*1.5*3 = 49."""
    assert latency("locfedmix_sl", 4, 10, HAND) == pytest.approx(49.0)


@pytest.mark.parametrize("t_c, expected", [
    (10, 43.0),  # T_c = T: floor(10/10) = 1 exchange -> 40 + 3*1
    (5, 46.0),   # floor(10/5) = 2 -> 40 + 3*2
    (3, 49.0),   # floor(10/3) = 3 -> 40 + 3*3
    (1, 70.0),   # T_c = 1: 10 exchanges -> 40 + 3*10
    (11, 40.0),  # T_c > T: no exchange at all -> 40
])
def test_locfedmix_floor_of_rounds_over_interval(t_c, expected):
    """The model-exchange term is counted floor(T / T_c) times."""
    p = dataclasses.replace(HAND, avg_interval=t_c)
    assert latency("locfedmix_sl", 4, 10, p) == pytest.approx(expected)


def test_locfedmix_worst_case_equals_locsplitfed_when_upload_dominates():
    """With T_c = 1 and n T_comm >= T_comp the two formulas coincide (n=4: both 70)."""
    p = dataclasses.replace(HAND, avg_interval=1)
    assert latency("locfedmix_sl", 4, 10, p) == pytest.approx(latency("locsplitfed", 4, 10, p))


@pytest.mark.parametrize("method", METHODS)
def test_zero_rounds_is_zero(method):
    """No rounds, no latency."""
    assert latency(method, 7, 0, HAND) == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_vectorised_n_equals_scalar_loop(method):
    """An array of n gives the same values (and shape) as a scalar loop."""
    ns = np.array([[1, 2, 3], [4, 17, 100]])
    vec = latency(method, ns, 10, HAND)
    assert isinstance(vec, np.ndarray) and vec.shape == ns.shape
    loop = np.array([[latency(method, int(n), 10, HAND) for n in row] for row in ns])
    np.testing.assert_allclose(vec, loop, rtol=1e-12)


def test_scalar_n_returns_python_float():
    """Scalar inputs (python or numpy ints) give a plain float."""
    assert type(latency("splitfed", 4, 10, HAND)) is float
    assert type(latency("splitfed", np.int64(4), np.int64(10), HAND)) is float


# ------------------------------------------------------- Fig. 8 claims (10:1)
def test_fig8_best_case_below_vanilla_and_locsplitfed():
    """Best-case LocFedMix-SL (T_c = T) beats Vanilla SL and LocSplitFed at every n."""
    for rounds in (100, 1000, 5000):
        best = latency("locfedmix_sl", NS_FIG8, rounds, _lenet(rounds))
        for method in ("vanilla_sl", "locsplitfed"):
            assert np.all(best < latency(method, NS_FIG8, rounds, _lenet()))


def test_fig8_best_case_vs_splitfed_needs_long_runs():
    """Best case beats SplitFed only when T > (|ŵ_c|+|w_c|)|s| / |w_c|^2 ~ 2934.97.

    best - splitfed = n T_comm ((|ŵ_c|+|w_c|)/|w_c| - T |w_c|/|s|)
                    = n (6.0833 - 0.0020727 T), independent of T_comp.
    So "best case lowest of all" holds for T >= 2935 only; at T = 100 best
    case is 5.876 n seconds (2.9 % at n=10 .. 5.3 % at n=100) above SplitFed.
    """
    threshold = (A_LENET + W_LENET) * S_LENET / W_LENET ** 2
    assert threshold == pytest.approx(2934.974, abs=1e-3)
    for rounds, lower in ((100, False), (2934, False), (2935, True), (10000, True)):
        best = latency("locfedmix_sl", NS_FIG8, rounds, _lenet(rounds))
        split = latency("splitfed", NS_FIG8, rounds, _lenet())
        assert np.all((best < split) == lower), rounds
    gap = (latency("locfedmix_sl", NS_FIG8, 100, _lenet(100))
           - latency("splitfed", NS_FIG8, 100, _lenet()))
    np.testing.assert_allclose(gap, NS_FIG8 * ((A_LENET + W_LENET) / W_LENET - 100 * W_LENET / S_LENET))


def test_fig8_best_case_lowest_of_all_for_long_runs():
    """At T = 5000 rounds best-case LocFedMix-SL is the lowest curve at every n in 10..100."""
    rounds = 5000
    best = latency("locfedmix_sl", NS_FIG8, rounds, _lenet(rounds))
    for method in METHODS:
        assert np.all(best <= latency(method, NS_FIG8, rounds, _lenet()))
        if method != "locfedmix_sl":
            assert np.all(best < latency(method, NS_FIG8, rounds, _lenet()))


def test_fig8_worst_case_below_vanilla_sl():
    """Worst-case LocFedMix-SL (T_c = 1) is strictly below Vanilla SL at every n."""
    worst = latency("locfedmix_sl", NS_FIG8, 100, _lenet(1))
    assert np.all(worst < latency("vanilla_sl", NS_FIG8, 100, _lenet()))


def test_fig8_worst_case_ties_locsplitfed_for_n_at_least_10():
    """Worst case equals LocSplitFed once n T_comm >= T_comp (n >= 10 at 10:1),
    and is below it by (T_comp - n T_comm) T for n < 10."""
    worst = latency("locfedmix_sl", NS_FIG8, 100, _lenet(1))
    np.testing.assert_allclose(worst, latency("locsplitfed", NS_FIG8, 100, _lenet()), rtol=1e-12)
    small = np.arange(1, 10)
    diff = latency("locsplitfed", small, 100, _lenet()) - latency("locfedmix_sl", small, 100, _lenet(1))
    np.testing.assert_allclose(diff, (10.0 - small) * 100)


# ------------------------------------------------------------------ validation
def test_default_params_are_valid_and_frozen():
    """Defaults construct; the dataclass is immutable."""
    p = LatencyParams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.t_comp = 3.0  # type: ignore[misc]


@pytest.mark.parametrize("field, value", [
    ("t_comp", -1.0), ("t_comp", float("nan")), ("t_comm", -0.1), ("t_comm", float("inf")),
    ("smashed_size", 0.0), ("lower_size", 0.0), ("lower_size", -5.0), ("aux_size", -1.0),
    ("avg_interval", 0), ("avg_interval", 1.5), ("avg_interval", True),
])
def test_params_validation_names_field(field, value):
    """Bad fields raise ValueError naming the field."""
    with pytest.raises(ValueError, match=field):
        LatencyParams(**{field: value})


def test_params_boundary_values_accepted():
    """Zero times, zero aux size and T_c = 1 are allowed."""
    LatencyParams(t_comp=0.0, t_comm=0.0, aux_size=0.0, avg_interval=1)


def test_unknown_method_lists_methods():
    """Unknown method names are rejected with the valid ones listed."""
    with pytest.raises(ValueError, match="locfedmix_sl"):
        latency("fedavg", 4, 10, HAND)


@pytest.mark.parametrize("n", [0, -3, np.array([1, 0, 2]), np.array([]), float("nan")])
def test_latency_rejects_bad_n(n):
    """Every client count must be >= 1."""
    with pytest.raises(ValueError, match="n must"):
        latency("splitfed", n, 10, HAND)


@pytest.mark.parametrize("rounds", [-1, 2.5, True])
def test_latency_rejects_bad_rounds(rounds):
    """Rounds must be an integer >= 0."""
    with pytest.raises(ValueError, match="rounds"):
        latency("splitfed", 4, rounds, HAND)


# ------------------------------------------------------------------ curves
def test_latency_curves_rows_and_scaling():
    """Rows cover ratio x (4 methods + best + worst) x n; t_comp = t_comm * a / b."""
    p = dataclasses.replace(HAND, t_comm=0.5)
    rows = latency_curves([1, 3], 2, p)
    assert len(rows) == 3 * 6 * 2
    assert {r["ratio"] for r in rows} == {"10:1", "1:1", "1:10"}
    assert {r["method"] for r in rows} == set(METHODS) | {"locfedmix_sl (T_c=T)", "locfedmix_sl (T_c=1)"}
    look = {(r["ratio"], r["method"], r["n"]): r["latency"] for r in rows}
    # 10:1 -> t_comp = 5: vanilla n=3, T=2: (5 + 1.5) * 3 * 2 = 39
    assert look[("10:1", "vanilla_sl", 3)] == pytest.approx(39.0)
    # 1:10 -> t_comp = 0.05: (0.05 + 1.5) * 3 * 2 = 9.3
    assert look[("1:10", "vanilla_sl", 3)] == pytest.approx(9.3)
    assert all(type(r["n"]) is int and type(r["latency"]) is float for r in rows)


def test_latency_curves_best_and_worst_cases():
    """Best/worst rows equal LocFedMix-SL with T_c = T and T_c = 1; plain row uses p.avg_interval."""
    rounds = 10
    rows = latency_curves([4], rounds, HAND, ratios=((4, 1),))  # t_comp = 2 = HAND.t_comp
    look = {r["method"]: r["latency"] for r in rows}
    assert look["locfedmix_sl"] == pytest.approx(49.0)
    assert look["locfedmix_sl (T_c=T)"] == pytest.approx(43.0)
    assert look["locfedmix_sl (T_c=1)"] == pytest.approx(70.0)
    assert look["splitfed"] == pytest.approx(50.0)


def test_latency_curves_edge_inputs():
    """Empty ns gives no rows; zero rounds still works for the best case."""
    assert latency_curves([], 10, HAND) == []
    rows = latency_curves([2], 0, HAND)
    assert rows and all(r["latency"] == 0.0 for r in rows)


# --------------------------------------------------------- technique mapping
@pytest.mark.parametrize("global_backward", [False, True])
@pytest.mark.parametrize("local_loss", [False, True])
@pytest.mark.parametrize("averaging", [False, True])
def test_method_for_techniques_sequential(global_backward, local_loss, averaging):
    """A sequential schedule is always Vanilla SL."""
    assert method_for_techniques("sequential", global_backward, local_loss, averaging) == "vanilla_sl"


@pytest.mark.parametrize("averaging", [False, True])
@pytest.mark.parametrize("global_backward, local_loss, expected", [
    (True, False, "splitfed"),
    (False, False, "splitfed"),
    (False, True, "locsplitfed"),
    (True, True, "locfedmix_sl"),
])
def test_method_for_techniques_parallel(global_backward, local_loss, expected, averaging):
    """Parallel: no local loss -> SplitFed; local loss -> LocSplitFed / LocFedMix-SL by global backward."""
    assert method_for_techniques("parallel", global_backward, local_loss, averaging) == expected


def test_method_for_techniques_rejects_non_string_schedule():
    """The schedule must be a string."""
    with pytest.raises(ValueError, match="schedule"):
        method_for_techniques(None, True, True, True)  # type: ignore[arg-type]


# ------------------------------------------------------------- from bytes
def test_latency_from_bytes_hand_worked():
    """3e6 B/round at 1e6 B/s = 3 s; parallel (0.2 + 3) * 4 = 12.8; sequential (5*0.2 + 3) * 4 = 16."""
    assert latency_from_bytes(3e6, 5, 4, 0.2, 1e6) == pytest.approx(12.8)
    assert latency_from_bytes(3e6, 5, 4, 0.2, 1e6, sequential=True) == pytest.approx(16.0)


def test_latency_from_bytes_matches_splitfed_formula():
    """Uploading n(|s|+|w_c|) bytes per round at |s|/T_comm B/s reproduces SplitFed's row."""
    n, rounds = 4, 10
    bw = HAND.smashed_size / HAND.t_comm
    got = latency_from_bytes(n * (HAND.smashed_size + HAND.lower_size), n, rounds, HAND.t_comp, bw)
    assert got == pytest.approx(latency("splitfed", n, rounds, HAND))


@pytest.mark.parametrize("kwargs, field", [
    ({"bytes_up_per_round": -1.0}, "bytes_up_per_round"),
    ({"num_clients": 0}, "num_clients"),
    ({"rounds": -1}, "rounds"),
    ({"t_comp": -0.1}, "t_comp"),
    ({"uplink_bytes_per_s": 0.0}, "uplink_bytes_per_s"),
])
def test_latency_from_bytes_validation(kwargs, field):
    """Bad inputs raise ValueError naming the argument."""
    args = dict(bytes_up_per_round=1.0, num_clients=2, rounds=3, t_comp=0.1, uplink_bytes_per_s=10.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=field):
        latency_from_bytes(**args)


def test_latency_curve_for_run_hand_worked():
    """rounds*t_comp(*n) + cum/bw with n=4, t_comp=0.5, bw=500."""
    rounds = [0, 1, 2, 5]
    cum = [0, 1000, 2500, 7000]  # /500 -> 0, 2, 5, 14
    np.testing.assert_allclose(latency_curve_for_run(rounds, cum, 4, 0.5, 500.0),
                               [0.0, 2.5, 6.0, 16.5])
    np.testing.assert_allclose(latency_curve_for_run(rounds, cum, 4, 0.5, 500.0, sequential=True),
                               [0.0, 4.0, 9.0, 24.0])


@pytest.mark.parametrize("rounds, cum, bw, match", [
    ([1, 2], [10.0], 1.0, "equal length"),
    ([-1, 2], [1.0, 2.0], 1.0, "history_rounds"),
    ([1, 2], [1.0, -2.0], 1.0, "bytes_up_cumulative"),
    ([1, 2], [1.0, 2.0], 0.0, "uplink_bytes_per_s"),
])
def test_latency_curve_for_run_validation(rounds, cum, bw, match):
    """Mismatched lengths, negatives and zero bandwidth are rejected."""
    with pytest.raises(ValueError, match=match):
        latency_curve_for_run(rounds, cum, 2, 0.1, bw)
