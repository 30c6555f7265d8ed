"""The figures and pictures the pages and the HTML report share (pages/figures.py, pages/images.py).

Streamlit, once imported, makes its own plotly template the default; that template's colours are
placeholders (#000001, ...) only Streamlit's front end resolves. Every figure must name its own.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import plotly.io as pio
import pytest

from engine.latency import LatencyParams, latency_curves
from pages import figures
from pages.images import (
    LEAK_COLUMN_PX,
    MIN_TILE_PX,
    ROW_LABEL_PX,
    identical_clients_note,
    labelled_snapshot_grid,
    leakage_grid,
    quality_caption,
    snapshot_grid,
    tile_scale,
)

PLACEHOLDER = re.compile(r"^#0000\d\d$")


@pytest.fixture
def streamlit_template(monkeypatch):
    """plotly's default template as a Streamlit server process has it."""
    from streamlit.elements import plotly_chart  # noqa: F401  (importing it installs the template)

    assert pio.templates.default == "streamlit"
    monkeypatch.setattr(pio.templates, "default", "streamlit")


def history(rounds: int = 4) -> pd.DataFrame:
    r = np.arange(1, rounds + 1)
    return pd.DataFrame({"round": r, "test_acc": 0.1 * r, "test_acc_min": 0.08 * r, "test_acc_max": 0.12 * r,
                         "test_loss": 2.0 / r, "train_loss": 2.0 / r, "train_loss_mixup": 2.2 / r,
                         "train_loss_local": 0.3 / r, "bytes_smashed_up": 100 * r, "bytes_grads_down": 100 * r,
                         "bytes_model_up": 10 * r, "bytes_model_down": 10 * r, "bytes_up": 110 * r})


def leak_history() -> pd.DataFrame:
    """history() with leakage measured at rounds 2 and 4 only (NaN elsewhere, as in a run's DataFrame)."""
    nan = float("nan")
    return history().assign(leak_psnr=[nan, 12.0, nan, 14.0], leak_ssim=[nan, 0.3, nan, 0.4],
                            leak_dcor=[nan, 0.9, nan, 0.95], leak_mi=[nan, 1.5, nan, 2.0])


def leak_points() -> pd.DataFrame:
    return pd.DataFrame({"id": [3, 4, 5], "name": ["lfm", "sf", ""], "techniques": ["1,2,3,4p,5", "1,2,5", "1,2,5"],
                         "accuracy": [0.8, 0.85, 0.83], "leak_ssim": [0.3, 0.6, 0.5]})


def trace_colors(fig) -> list[str]:
    return [t.line.color if t.type == "scatter" else t.marker.color for t in fig.data]


def all_figures() -> dict[str, object]:
    h = history()
    rows = latency_curves(range(1, 21), 100, LatencyParams(smashed_size=1000, lower_size=10, aux_size=50))
    totals = pd.DataFrame([{"run": "#1", "kind": k, "MB": 1.0, "rounds": 4} for k in figures.BYTE_KINDS])
    measured = pd.DataFrame({"techniques": ["1,2,5", "1,2,5"], "n": [2, 4], "accuracy": [0.8, 0.82]})
    mse = pd.DataFrame({"round": [1, 2, 1, 2], "client": ["client 0"] * 2 + ["client 1"] * 2, "mse": [0.1, 0.05] * 2})
    return {"Test accuracy": figures.learning_curves({"a": h, "b": h}, "test_acc"),
            "Test loss": figures.learning_curves({"a": h}, "test_loss"),
            "Training-loss terms": figures.loss_terms(h), "Communication so far": figures.communication(h),
            "Bytes exchanged by finished runs": figures.bytes_exchanged(totals),
            "Mixing ratio λ ~ Beta(α, β)": figures.beta_density(2.0, 2.0),
            "Latency against the number of clients (Fig. 8)": figures.latency_figure(rows),
            "Final test accuracy against n": figures.accuracy_vs_n(measured),
            "Reconstruction MSE over rounds": figures.reconstruction_mse(mse),
            "What the server reconstructs, over rounds": figures.leakage_over_rounds(leak_history()),
            "How much the smashed data depend on the inputs, over rounds":
                figures.leakage_over_rounds(leak_history(), ("leak_dcor", "leak_mi")),
            "Privacy-utility trade-off: accuracy against attack SSIM":
                figures.accuracy_vs_leakage(leak_points(), "leak_ssim")}


def test_every_figure_has_a_default_title_and_takes_another():
    for title, fig in all_figures().items():
        assert fig.layout.title.text == title
    assert figures.loss_terms(history(), title="Losses of run 3").layout.title.text == "Losses of run 3"
    h = figures.with_simulated_latency(history(), {"num_clients": 2})
    assert figures.learning_curves({"a": h}, "test_acc", "latency_s").layout.title.text == \
        "Test accuracy against simulated latency"


def test_simulated_latency_counts_the_client_steps_a_round_takes_one_after_another():
    """T_comp once a round in parallel, n times for Vanilla SL, n * local_steps times for SplitFed."""
    def compute(config: dict) -> np.ndarray:
        h = figures.with_simulated_latency(history(), config, t_comp=0.5, uplink_bytes_per_s=1e3)
        return (h["latency_s"] - h["bytes_up"] / 1e3).to_numpy()

    parallel = compute({"num_clients": 4})
    np.testing.assert_allclose(parallel, 0.5 * np.arange(1, 5))
    np.testing.assert_allclose(compute({"num_clients": 4, "schedule": "sequential"}), 4 * parallel)
    for schedule in ("splitfed_v1", "splitfed_v2"):
        config = {"num_clients": 4, "schedule": schedule, "local_steps": 20}
        np.testing.assert_allclose(compute(config), 80 * parallel)


def test_figures_name_their_template_and_colours_under_streamlits_default(streamlit_template):
    for title, fig in all_figures().items():
        assert fig.layout.template.layout.colorway == pio.templates[figures.TEMPLATE].layout.colorway, title
        colors = trace_colors(fig)
        assert all(c and not PLACEHOLDER.match(c) for c in colors), (title, colors)


def test_loss_terms_and_byte_kinds_get_distinct_colours(streamlit_template):
    terms = figures.loss_terms(history())
    assert [t.name for t in terms.data] == ["L (server)", "L~ (mixup)", "L^ (local)"]
    assert len(set(trace_colors(terms))) == 3
    comm = figures.communication(history())
    assert [t.name for t in comm.data] == list(figures.BYTE_KINDS.values())
    assert len({t.line.color for t in comm.data}) == 4 and len({t.fillcolor for t in comm.data}) == 4


def test_loss_terms_leave_out_terms_that_stay_zero():
    h = history().assign(train_loss_mixup=0.0)
    assert [t.name for t in figures.loss_terms(h).data] == ["L (server)", "L^ (local)"]


@pytest.mark.parametrize(("codes", "name"), [
    ("1,2,3,4p,5", "LocFedMix-SL (row 8)"), ("1,2,5", "SplitFed (row 4)"), ("1", "Vanilla SL (row 1)"),
    ("1,2", "Parallel SL"), ("1,2,4p,5", "LocSplitFed + ② (row 7)"), ("1,2,3", "Parallel SL + mixup (row 2)"),
    ("1,2,3,4", "Parallel SL + mixup + local loss (row 5)"), ("1,2,splitavg", "Parallel SL + SplitAvg"),
    ("1,3", "Parallel SL without ② + mixup"),
])
def test_combinations_are_named_as_people_know_them(codes, name):
    assert figures.combination_name(codes) == name


def test_a_splitfed_schedule_is_a_setting_of_its_own():
    """SplitFed V1 and V2 share row 4's codes: on the Compare page they get cells of their own."""
    keys = {figures.setting_key("1,2,5", 1, s) for s in ("parallel", "splitfed_v1", "splitfed_v2")}
    assert len(keys) == 3 and figures.setting_key("1,2,5", 1, "sequential") == "1,2,5"
    assert figures.combination_name(figures.setting_key("1,2,5")) == "SplitFed (row 4)"
    assert figures.combination_name(figures.setting_key("1,2,5", 1, "splitfed_v1")) == "SplitFed V1"
    assert figures.combination_name(figures.setting_key("1,2,5", 2, "splitfed_v2")) == \
        "SplitFed V2, cut after block 2"
    assert figures.combination_name(figures.setting_key("1,2,4,5", 1, "splitfed_v2")) == \
        "SplitFed V2 schedule + local loss + averaging"
    assert figures.split_setting(figures.setting_key("1,2,5", 3, "splitfed_v1")) == ("1,2,5#splitfed_v1", 3)


def test_accuracy_vs_n_fits_y_inside_unit_range_and_ticks_only_measured_n():
    measured = pd.DataFrame({"techniques": ["1,2,3,4p,5", "1,2,3,4p,5", "1,2,5", "1,2,5"], "n": [2, 3, 2, 3],
                             "accuracy": [0.78, 0.77, 0.81, 0.82]})
    fig = figures.accuracy_vs_n(measured)
    lo, hi = fig.layout.yaxis.range
    assert 0 <= lo < 0.77 and 0.82 < hi <= 1 and lo > 0.5  # fitted to the data, not -0.5..1
    assert list(fig.layout.xaxis.tickvals) == [2, 3]
    assert [t.name for t in fig.data] == ["LocFedMix-SL (row 8) (measured)", "SplitFed (row 4) (measured)"]


def test_accuracy_vs_n_gives_a_combination_one_colour_measured_and_paper():
    measured = pd.DataFrame({"techniques": ["1,2,5"], "n": [2], "accuracy": [0.99]})
    paper = pd.DataFrame({"techniques": ["1,2,5", "1,2,5"], "n": [20, 40], "accuracy": [0.62, 0.63]})
    fig = figures.accuracy_vs_n(measured, paper)
    assert fig.data[0].line.color == fig.data[1].line.color and fig.data[1].line.dash == "dot"
    assert fig.layout.yaxis.range[1] == 1.0 and list(fig.layout.xaxis.tickvals) == [2, 20, 40]


def test_latency_figure_names_methods_and_draws_each_differently():
    rows = latency_curves(range(1, 31), 1000, LatencyParams(smashed_size=75264, lower_size=156, aux_size=793))
    fig = figures.latency_figure(rows, avg_interval=1)
    legend = [t for t in fig.data if t.showlegend]
    assert sorted(t.name for t in legend) == sorted([
        "Vanilla SL", "SplitFed", "LocSplitFed", "LocFedMix-SL (T_c = 1)", "LocFedMix-SL best case (T_c = T)",
        "LocFedMix-SL worst case (T_c = 1)"])
    assert len({(t.line.dash, t.marker.symbol, t.line.width) for t in legend}) == 6
    assert len({t.line.color for t in legend}) == 6
    assert not any("_" in t.name.replace("T_c", "") for t in legend)  # no code names left


def test_latency_overlaps_say_which_curves_coincide_and_why():
    rows = latency_curves(range(1, 101), 10_000, LatencyParams(t_comp=0.01, t_comm=0.01, smashed_size=75264,
                                                               lower_size=156, aux_size=793, avg_interval=1))
    notes = figures.latency_overlaps(rows, avg_interval=1)
    assert len(notes) == 3
    assert notes[0].startswith("LocFedMix-SL (T_c = 1) and LocFedMix-SL worst case (T_c = 1) are one curve")
    assert notes[1].startswith("SplitFed and LocFedMix-SL best case (T_c = T) coincide in every panel")
    # LocSplitFed waits on its compute only while n * T_comm < T_comp, i.e. n < 10 at 10:1
    assert "at 1:1 and 1:10 (every n) and at 10:1 for n = 10–100" in notes[2]
    assert "hides behind the upload" in notes[2] and "|w_c| is tiny next to |s|" in notes[1]


def test_latency_overlaps_ignore_a_mere_crossing():
    rows = latency_curves(range(1, 101), 10_000, LatencyParams(t_comp=0.01, t_comm=0.01, smashed_size=75264,
                                                               lower_size=156, aux_size=793, avg_interval=5))
    assert not any(n.startswith("Vanilla SL") for n in figures.latency_overlaps(rows, avg_interval=5))


@pytest.mark.parametrize("side", [8, 28, 32])
def test_snapshot_tiles_are_large_enough_to_read(side):
    assert side * tile_scale(side) >= MIN_TILE_PX
    inputs = np.random.default_rng(0).random((2, 1, side, side))
    smashed = np.random.default_rng(1).random((2, 3, side // 2, side // 2))
    grid = snapshot_grid(inputs, smashed, inputs)
    assert grid.shape[0] >= 2 * MIN_TILE_PX and grid.shape[1] >= 5 * MIN_TILE_PX


def test_labelled_grid_adds_a_header_row_and_a_label_column():
    inputs = np.random.default_rng(0).random((2, 1, 28, 28))
    smashed = np.random.default_rng(1).random((2, 4, 14, 14))
    plain = snapshot_grid(inputs, smashed, inputs)
    labelled = labelled_snapshot_grid(inputs, smashed, inputs, np.array([3, 7]))
    assert labelled.shape[0] > plain.shape[0] and labelled.shape[1] > plain.shape[1]
    assert (labelled[:20] < 128).any()  # the column headers are drawn in black on white


@pytest.mark.parametrize(("averaging", "local", "round_", "expected"), [
    ({"enabled": True, "interval": 1}, {"enabled": True, "average_aux": True}, 10, "reconstructions"),
    ({"enabled": True, "interval": 5}, {"enabled": True, "average_aux": False}, 10, "smashed data"),
    ({"enabled": True, "interval": 4}, {"enabled": True, "average_aux": True}, 10, None),
    ({"enabled": False, "interval": 1}, {"enabled": True, "average_aux": True}, 10, None),
])
def test_identical_clients_note_only_when_averaging_fell_on_the_round(averaging, local, round_, expected):
    note = identical_clients_note({"averaging": averaging, "local_loss": local}, round_)
    if expected is None:
        assert note is None
    else:
        assert expected in note and f"T_c = {averaging['interval']}" in note
        assert ("decoder" in note) == local["average_aux"]


def test_identical_clients_note_for_vanilla_sl_s_one_lower_model():
    note = identical_clients_note({"schedule": "sequential", "averaging": {"enabled": False}}, 7)
    assert note is not None and "Vanilla SL trains one lower model" in note
    assert identical_clients_note({"schedule": "parallel", "averaging": {"enabled": False}}, 7) is None


def test_reconstruction_mse_keeps_identical_clients_visible():
    mse = pd.DataFrame({"round": [2, 4] * 3, "client": [f"client {c}" for c in (0, 0, 1, 1, 2, 2)],
                        "mse": [0.1, 0.05] * 3})
    lines = figures.reconstruction_mse(mse).data
    assert len({(t.line.dash, t.marker.symbol) for t in lines}) == 3
    assert [t.line.width for t in lines] == sorted((t.line.width for t in lines), reverse=True)  # wider ones first


def test_leakage_over_rounds_draws_the_measured_rounds_from_zero_with_an_axis_each():
    fig = figures.leakage_over_rounds(leak_history())
    assert [t.name for t in fig.data] == ["attack PSNR (dB)", "attack SSIM"]
    assert list(fig.data[0].x) == [2, 4] and list(fig.data[1].y) == [0.3, 0.4]  # NaN rounds left out
    assert fig.data[1].yaxis == "y2" and fig.layout.yaxis2.title.text == "attack SSIM"
    assert fig.layout.yaxis.title.font.color == fig.data[0].line.color  # each axis in its line's colour
    assert list(fig.layout.yaxis.range) == [0.0, pytest.approx(14.0 * 1.15)]  # from zero: no zoom into noise
    assert list(fig.layout.yaxis2.range) == [0.0, 1.02]  # SSIM is at most 1
    assert fig.layout.xaxis.title.text == "round"


def test_leakage_over_rounds_of_a_run_that_never_measured_is_empty_not_an_error():
    fig = figures.leakage_over_rounds(history())
    assert all(len(t.x) == 0 for t in fig.data)


def test_accuracy_vs_leakage_colours_as_accuracy_vs_n_and_hovers_the_run():
    order = ["1,2,5", "1,2,3,4p,5"]  # SplitFed first, as accuracy against n would colour them
    fig = figures.accuracy_vs_leakage(leak_points(), "leak_ssim", order)
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"SplitFed (row 4)", "LocFedMix-SL (row 8)", "Pareto front (no run beats these on both)"}
    assert by_name["SplitFed (row 4)"].marker.color == figures.PALETTE[0]
    assert by_name["LocFedMix-SL (row 8)"].marker.color == figures.PALETTE[1]
    assert [list(c) for c in by_name["SplitFed (row 4)"].customdata] == [[4, "sf", "none"], [5, "", "none"]]
    assert "run #%{customdata[0]} %{customdata[1]}" in by_name["SplitFed (row 4)"].hovertemplate
    assert fig.layout.xaxis.title.text == "attack SSIM (higher: the server sees more; left is better)"
    assert fig.layout.yaxis.title.text == "final test accuracy (higher is better)"
    mse = figures.accuracy_vs_leakage(leak_points().rename(columns={"leak_ssim": "leak_mse"}), "leak_mse")
    assert mse.layout.xaxis.title.text == "attack MSE (lower: the server sees more; right is better)"


def test_leakage_values_format_each_measure_and_dash_a_missing_one():
    values = figures.leakage_values({"leak_psnr": 12.345, "leak_ssim": 0.41234, "leak_dcor": float("nan")})
    assert values == {"attack PSNR (dB)": "12.35", "attack SSIM": "0.412", "distance correlation": "–",
                      "mutual information (nats)": "–"}


def test_the_leakage_grid_has_a_column_for_infopro_only_when_the_client_has_it():
    rng = np.random.default_rng(0)
    x = rng.random((4, 1, 28, 28)).astype(np.float32)
    scores = np.array([10.0, 11.0, 12.0, 13.0]), np.array([0.1, 0.2, 0.3, 0.4])
    with_infopro = leakage_grid(x, x, *scores, reconstruction=x, psnr=scores[0], ssim=scores[1])
    attack_only = leakage_grid(x, x, *scores)
    assert with_infopro.shape[1] == ROW_LABEL_PX + 3 * LEAK_COLUMN_PX
    assert attack_only.shape[1] == ROW_LABEL_PX + 2 * LEAK_COLUMN_PX
    assert with_infopro.shape[0] == attack_only.shape[0] > 4 * 112  # four rows of tiles, each with its caption
    assert quality_caption(*scores, 1) == "PSNR 11.0 dB\nSSIM 0.20"
    assert quality_caption(scores[0], None, 0) == "PSNR 10.0 dB"  # a missing score is left out, never "None"


def test_accuracy_axes_stay_within_zero_and_one_while_loss_axes_fit_the_data():
    """One early evaluation must not draw an accuracy axis from -0.5 to 1 (seen on Live after the first point)."""
    h = pd.DataFrame({"round": [10], "test_acc": [0.2], "test_loss": [2.3]})
    assert tuple(figures.learning_curves({"a": h}, "test_acc").layout.yaxis.range) == (0, 1.02)
    assert figures.learning_curves({"a": h}, "test_loss").layout.yaxis.range is None
