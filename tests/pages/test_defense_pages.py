"""Defenses on the dashboard (issue 27, parts 2 and 3), through AppTest and the pure figure helpers:

- the New run form's Defenses group reads noise σ, NoPeek α and k bits exactly, refuses a bad value naming
  the field as labelled (nothing queued), says the defenses in the summary line and queues them;
- the Sweep tab sweeps one defense's strengths (0: the undefended twin) and refuses bad strengths;
- Compare's trade-off scatter marks each run's defense (marker) and strength (label), draws the Pareto
  front and says which way is better; its grids keep defended runs apart from undefended ones;
- InfoPro's "What the server can see" names the strongest attack and, for a defended run, shows its
  undefended twin's pictures (found in storage: the same settings with every defense off);
- the result page and its HTML report say the run's defenses;
- the walkthrough offers a defense and its upload step shows what the server receives.

Runs the pages read are written straight into storage (a config, history rows with leakage figures, an
attacked client's pictures, a summary), so no test here waits for training.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from engine.config import validate_config
from pages import figures
from pages import walkthrough_pictures as wp
from pages import walkthrough_steps as ws
from pages.common import comparable_config
from pages.report import config_line, run_report
from storage import queries
from storage.db import connect
from storage.models import METRIC_COLUMNS
from tests.pages.support import LEAKAGE_TINY, button, errors, field, page, runs_in_db
from tests.pages.test_compare_page import numbers, shown_text

LFM = {"mixup": {"enabled": True, "num_partners": 1}, "local_loss": {"enabled": True, "average_aux": True},
       "averaging": {"enabled": True}, "privacy": {"every": 2, "attack_steps": 30}}
ATTACK_KEYS = ("blackbox", "whitebox", "hybrid", "mean")


def history_row(round_: int, acc: float, leak: dict | None) -> dict:
    row = {column: 0 for column in METRIC_COLUMNS} | {"round": round_, "test_acc": acc, "test_loss": 1.0,
                                                      "test_acc_min": acc, "test_acc_max": acc, "round_s": 0.1}
    return row | (leak or {})


def leak_figures(psnr: float, ssim: float, attacks: dict[str, float] | None = None) -> dict:
    """A measurement's figures: the headline (the strongest attack's) and, with ``attacks``, each attack's PSNR."""
    out = {"leak_mse": 10 ** (-psnr / 10), "leak_psnr": psnr, "leak_ssim": ssim, "leak_dcor": 0.9, "leak_mi": 1.2,
           "leak_client": 0}
    for attack, value in (attacks or {}).items():
        out[f"leak_psnr_{attack}"], out[f"leak_ssim_{attack}"] = value, ssim * value / psnr
    return out


def snapshot(shade: float) -> dict:
    """Four 8x8 test images and the attacked client's smashed data, attack reconstruction and scores."""
    inputs = np.linspace(0, 1, 4 * 64, dtype=np.float32).reshape(4, 1, 8, 8)
    entry = {"smashed": np.ones((4, 6, 4, 4), np.float32), "attack": np.full_like(inputs, shade),
             "attack_psnr": np.full(4, 20.0, np.float32), "attack_ssim": np.full(4, 0.5, np.float32)}
    return {"inputs": inputs, "labels": np.arange(4), "clients": {0: entry}}


def store_run(url: str, name: str, overrides: dict, acc: float, leak: dict | None, shade: float = 0.5,
              finish: bool = True) -> int:
    """A finished run of ``overrides`` on digits (3 clients, 4 rounds), written straight into storage: history
    rows at rounds 2 and 4 (leakage figures ``leak`` at both when given), the attacked client's pictures at
    both, and its summary."""
    db = connect(url)
    with db.write() as s:
        run_id = queries.create_run(s, validate_config({**LEAKAGE_TINY, "name": name, **overrides}))
        claimed = queries.claim_next_run(s, "fabricated")
        assert claimed.id == run_id
        queries.append_metrics(s, run_id, "fabricated", [history_row(r, acc, leak) for r in (2, 4)])
        if leak:
            for round_ in (2, 4):
                queries.append_images(s, run_id, "fabricated", round_, snapshot(shade))
        summary = {"final_test_acc": acc, "rounds_done": 4}
        if leak:
            summary |= {k: v for k, v in leak.items() if k in ("leak_mse", "leak_psnr", "leak_ssim", "leak_dcor",
                                                              "leak_mi", "leak_client")} | {"leak_round": 4}
        if finish:
            queries.mark_finished(s, run_id, "fabricated", summary, 4)
        else:
            queries.release_run(s, run_id, "fabricated", 4)
    return run_id


def charts(at) -> dict[str, dict]:
    return {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec)
            for c in at.get("plotly_chart")}


# --------------------------------------------------------------------------- naming a run's defenses


@pytest.mark.parametrize(("defense", "strength", "kind", "label"), [
    ({}, "none", "none", "none"),
    ({"noise": 0.5}, "σ=0.5", "noise", "noise σ=0.5"),
    ({"nopeek": 1.0, "noise": 0.0}, "α=1", "NoPeek", "NoPeek α=1"),
    ({"bits": 4}, "4-bit", "quantisation", "4-bit quantisation"),
    ({"noise": 0.05, "bits": 8}, "σ=0.05, 8-bit", "several", "noise σ=0.05 + 8-bit quantisation"),
])
def test_a_runs_defenses_are_named_by_kind_and_strength(defense, strength, kind, label):
    config = {"defense": {"noise": 0.0, "nopeek": 0.0, "bits": 0} | defense}
    assert figures.defense_strength(config) == strength
    assert figures.defense_kind(config) == kind
    assert figures.defense_label(config) == label


def test_a_run_stored_before_defenses_existed_has_none():
    assert figures.defenses({"num_clients": 3}) == {} and figures.defense_words({"num_clients": 3}) == "no defense"


def test_setting_keys_keep_defended_runs_apart_and_name_them():
    key = figures.setting_key("1,2,3,4p,5", 2, defense="noise σ=0.5")
    assert key != figures.setting_key("1,2,3,4p,5", 2)
    assert figures.split_setting(key) == ("1,2,3,4p,5", 2)  # the cut still reads with a defense after it
    assert figures.combination_name(key) == "LocFedMix-SL (row 8), cut after block 2, noise σ=0.5"
    assert figures.setting_key("1,2,5", defense="none") == "1,2,5"  # undefended: the key it always had


# --------------------------------------------------------------------------- the Pareto front


def trade_off_points(metric: str = "leak_psnr") -> pd.DataFrame:
    """A (10, .80), B (12, .85), C (11, .79: A has less leakage and more accuracy), D (15, .85: B has the same
    accuracy for less leakage), E (20, .90). The front, from the least leakage: A, B, E."""
    return pd.DataFrame({"id": [1, 2, 3, 4, 5], "name": list("ABCDE"), "techniques": "1,2,3,4p,5",
                         "accuracy": [0.80, 0.85, 0.79, 0.85, 0.90], metric: [10.0, 12.0, 11.0, 15.0, 20.0],
                         "defense": ["none", "noise", "noise", "quantisation", "none"],
                         "strength": ["none", "σ=0.5", "σ=1", "4-bit", "none"]})


def test_the_pareto_front_keeps_the_runs_no_other_beats_on_both():
    assert figures.pareto_front(trade_off_points(), "leak_psnr")["name"].tolist() == ["A", "B", "E"]


def test_for_the_attacks_mse_less_leakage_is_a_higher_value():
    # read as MSE, a higher value leaks less: E (20, .90) beats every other run on both counts
    assert figures.pareto_front(trade_off_points("leak_mse"), "leak_mse")["name"].tolist() == ["E"]


def test_the_scatter_marks_defense_and_strength_and_draws_the_front():
    fig = figures.accuracy_vs_leakage(trade_off_points(), "leak_psnr")
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"LocFedMix-SL (row 8) · no defense", "LocFedMix-SL (row 8) · noise",
                            "LocFedMix-SL (row 8) · quantisation", "Pareto front (no run beats these on both)"}
    assert fig.data[0].name.startswith("Pareto front")  # drawn first: the markers and labels lie over it
    noise = by_name["LocFedMix-SL (row 8) · noise"]
    assert noise.marker.symbol == "diamond-open" and list(noise.text) == ["σ=0.5", "σ=1"]
    assert list(by_name["LocFedMix-SL (row 8) · no defense"].text) == ["none", "none"]
    assert by_name["LocFedMix-SL (row 8) · quantisation"].marker.symbol == "triangle-up-open"
    assert len({t.marker.color for t in fig.data if t.mode != "lines"}) == 1  # one combination: one colour
    front = by_name["Pareto front (no run beats these on both)"]
    assert list(front.x) == [10.0, 12.0, 20.0] and list(front.y) == [0.80, 0.85, 0.90]
    assert front.line.shape == "hv" and front.line.dash == "dash"
    assert fig.layout.xaxis.title.text == "attack PSNR (dB) (higher: the server sees more; left is better)"
    assert fig.layout.yaxis.title.text == "final test accuracy (higher is better)"
    mse = figures.accuracy_vs_leakage(trade_off_points("leak_mse"), "leak_mse")
    assert mse.layout.xaxis.title.text == "attack MSE (lower: the server sees more; right is better)"


def test_a_scatter_of_undefended_runs_has_no_strength_labels():
    points = trade_off_points().assign(defense="none", strength="none")
    fig = figures.accuracy_vs_leakage(points, "leak_psnr")
    runs = [t for t in fig.data if t.mode != "lines"]
    assert [t.name for t in runs] == ["LocFedMix-SL (row 8)"] and runs[0].mode == "markers" and runs[0].text is None


# --------------------------------------------------------------------------- the New run form


def test_the_defenses_typed_are_the_defenses_queued_and_said(db_url):
    at = page("new_run")
    for label, typed in (("noise σ (0: off)", "0.25"), ("NoPeek α (0: off)", "1e-1"),
                         ("quantise to k bits (0: off)", "4")):
        field(at, label).set_value(typed).run()
    assert not at.error
    summary = next(c.value for c in at.caption if "× b=" in c.value)
    assert ("defenses: Gaussian noise σ = 0.25 on the smashed data, NoPeek α = 0.1 (a distance-correlation penalty "
            "on the client's loss), 4-bit quantisation of the smashed data") in summary
    button(at, "Queue run").click().run()
    (run,) = runs_in_db(db_url)
    assert run.config["defense"] == {"noise": 0.25, "nopeek": 0.1, "bits": 4}


def test_an_undefended_run_says_no_defense_in_its_summary_line_and_queues_none(db_url):
    at = page("new_run")
    assert [field(at, label).value for label in ("noise σ (0: off)", "NoPeek α (0: off)",
                                                 "quantise to k bits (0: off)")] == ["0.0", "0.0", "0"]
    assert not any("defenses" in c.value for c in at.caption)
    helps = {w.label: w.help for w in at.text_input}
    assert "s + N(0, σ²)" in helps["noise σ (0: off)"] and "32/k times smaller" in helps["quantise to k bits (0: off)"]
    assert "distance correlation" in helps["NoPeek α (0: off)"]
    button(at, "Queue run").click().run()
    (run,) = runs_in_db(db_url)
    assert run.config["defense"] == {"noise": 0.0, "nopeek": 0.0, "bits": 0}


@pytest.mark.parametrize(("label", "typed", "message"), [
    ("noise σ (0: off)", "-1", "noise σ (0: off) must be between 0 and 100, got -1"),
    ("noise σ (0: off)", "abc", "noise σ (0: off) must be a finite number, got abc"),
    ("NoPeek α (0: off)", "1e999", "NoPeek α (0: off) must be a finite number, got 1e999"),
    ("NoPeek α (0: off)", "-0.5", "NoPeek α (0: off) must be between 0 and 100, got -0.5"),
    ("quantise to k bits (0: off)", "40", "quantise to k bits (0: off) must be between 0 and 16, got 40"),
    ("quantise to k bits (0: off)", "4.5", "quantise to k bits (0: off) must be a whole number, got 4.5"),
])
def test_a_bad_defense_is_refused_naming_the_field_and_nothing_is_queued(db_url, label, typed, message):
    at = page("new_run")
    field(at, label).set_value(typed).run()
    assert field(at, label).value == typed  # the text stays as typed
    assert message in errors(at) and "defense." not in errors(at)
    assert "Not queued: 1 value to fix above." in errors(at)
    assert button(at, "Queue run").disabled
    assert not any("× b=" in c.value for c in at.caption)
    assert runs_in_db(db_url) == []


# --------------------------------------------------------------------------- the Sweep tab


def sweep_defense(at, defense: str, strengths: str | None = None):
    next(w for w in at.selectbox if w.label == "defense to sweep").set_value(defense).run()
    if strengths is not None:
        at.text_input(key=f"sweep_strengths_{defense}").set_value(strengths).run()
    return at


def small_sweep(at):
    next(w for w in at.multiselect if w.label.startswith("technique combinations")).set_value([8]).run()
    next(w for w in at.selectbox if w.label == "data set" and w.key.startswith("sweep")).set_value("digits").run()
    for name, typed in (("rounds", "4"), ("eval_every", "2"), ("privacy_every", "4")):
        at.text_input(key=f"sweep_{name}").set_value(typed).run()
    field(at, "clients n (comma-separated)").set_value("3").run()
    return at


def test_the_sweep_sweeps_a_defenses_strengths_with_its_undefended_twin(db_url):
    at = sweep_defense(small_sweep(page("new_run")), "noise", "0, 0.5,2")
    assert any(c.value.startswith("3 runs: 1 combination × 1 value of n (3) × 3 values of noise σ (0, 0.5, 2; "
                                  "0: no defense) · digits · 4 rounds each") for c in at.caption)
    button(at, "Queue sweep").click().run()
    runs = sorted(runs_in_db(db_url), key=lambda r: r.id)
    assert [r.config["defense"]["noise"] for r in runs] == [0.0, 0.5, 2.0]
    assert [r.name for r in runs] == ["T3 row 8 n=3", "T3 row 8 n=3 noise σ=0.5", "T3 row 8 n=3 noise σ=2"]
    twins = {comparable_config(r.config) == comparable_config(runs[0].config) for r in runs}
    assert twins == {True}  # the same settings but for the defense: each defended run has its twin


def test_the_sweep_of_bits_queues_whole_numbers(db_url):
    at = sweep_defense(small_sweep(page("new_run")), "bits", "8,2")
    button(at, "Queue sweep").click().run()
    assert sorted(r.config["defense"]["bits"] for r in runs_in_db(db_url)) == [2, 8]


@pytest.mark.parametrize(("defense", "typed", "message"), [
    ("noise", "0,abc",
     "noise σ: abc is not a finite number; give finite numbers separated by commas, e.g. 0,0.1,0.5,1"),
    ("noise", "-1", "noise σ must be between 0 and 100, got -1 (every row)"),
    ("nopeek", "1,1.0", "NoPeek α: 1 appears more than once; give each value once"),
    ("bits", "4,4.5", "quantise to k bits: 4.5 is not a whole number; give whole numbers separated by commas"),
    ("bits", "40", "quantise to k bits must be between 0 and 16, got 40 (every row)"),
    ("bits", " , ", "quantise to k bits: give at least one value, e.g. 0,8,4,2"),
])
def test_the_sweep_refuses_bad_strengths_naming_the_field(db_url, defense, typed, message):
    at = sweep_defense(page("new_run"), defense, typed)
    assert message in errors(at)
    assert button(at, "Queue sweep").disabled
    assert runs_in_db(db_url) == []


# --------------------------------------------------------------------------- Compare


@pytest.fixture
def trade_off(db_url) -> dict[str, int]:
    """LocFedMix-SL undefended, with noise at two strengths and with 4-bit quantisation; the strongest
    attack reported per attack. Noise σ=2 leaks least but costs the most accuracy; 4-bit is beaten by
    σ=0.5 on both counts."""
    runs = {"none": ({}, 0.90, 24.0), "σ=0.5": ({"noise": 0.5}, 0.88, 18.0), "σ=2": ({"noise": 2.0}, 0.70, 12.0),
            "4-bit": ({"bits": 4}, 0.87, 20.0)}
    return {label: store_run(db_url, f"lfm {label}", {**LFM, "defense": defense}, acc,
                             leak_figures(psnr, psnr / 30, {"blackbox": psnr - 2, "whitebox": psnr}))
            for label, (defense, acc, psnr) in runs.items()}


def test_compare_marks_each_defense_and_draws_the_pareto_front(trade_off):
    at = page("compare")
    assert not at.exception
    next(w for w in at.selectbox if w.label == "leakage measure").set_value("leak_psnr").run()
    spec = charts(at)["Privacy-utility trade-off: accuracy against attack PSNR (dB)"]
    traces = {t["name"]: t for t in spec["data"]}
    noise = traces["LocFedMix-SL (row 8) · noise"]
    assert sorted(noise["text"]) == ["σ=0.5", "σ=2"] and noise["marker"]["symbol"] == "diamond-open"
    assert traces["LocFedMix-SL (row 8) · no defense"]["text"] == ["none"]
    assert traces["LocFedMix-SL (row 8) · quantisation"]["text"] == ["4-bit"]
    front = traces["Pareto front (no run beats these on both)"]
    assert numbers(front["x"]) == [12.0, 18.0, 24.0] and numbers(front["y"]) == [0.70, 0.88, 0.90]
    assert spec["layout"]["xaxis"]["title"]["text"].endswith("left is better)")
    text = shown_text(at)
    ids = trade_off
    assert (f"The dashed line is the Pareto front, the runs no other run beats on both: #{ids['σ=2']} (σ=2), "
            f"#{ids['σ=0.5']} (σ=0.5), #{ids['none']} (no defense).") in text
    assert "Best is the top left" in text and "square: NoPeek" in text


def test_compare_grids_keep_defended_runs_in_rows_of_their_own(trade_off):
    at = page("compare")
    rows = list(at.dataframe[0].value.index)
    assert rows == ["LocFedMix-SL (row 8)", "LocFedMix-SL (row 8), 4-bit quantisation",
                    "LocFedMix-SL (row 8), noise σ=0.5", "LocFedMix-SL (row 8), noise σ=2"]
    assert at.dataframe[0].value.loc["LocFedMix-SL (row 8)", "n=3"] == pytest.approx(0.90)  # not averaged with them


# --------------------------------------------------------------------------- InfoPro


def test_infopro_names_the_strongest_attack_and_shows_the_undefended_twin(db_url):
    twin = store_run(db_url, "lfm", LFM, 0.90, leak_figures(24.0, 0.8, {"blackbox": 22.0, "whitebox": 24.0}),
                     shade=0.9)
    other_seed = store_run(db_url, "lfm seed 1", {**LFM, "seed": 1}, 0.91, leak_figures(25.0, 0.8), shade=0.2)
    defended = store_run(db_url, "lfm noise", {**LFM, "defense": {"noise": 0.5}}, 0.88,
                         leak_figures(18.0, 0.6, {"blackbox": 17.0, "whitebox": 16.5, "hybrid": 18.0}), shade=0.1)
    at = page("infopro", defended)
    assert not at.exception
    text = shown_text(at)
    assert ("it mounts 3 attacks: black-box, a decoder the server trains on data of its own, from smashed data back "
            "to images (PSNR 17.00 dB, SSIM 0.567)") in text
    assert "The headline figures and the pictures are the strongest attack's (hybrid)" in text
    assert "**Defense**: Gaussian noise σ = 0.5 on the smashed data." in text
    assert (f"**Without the defense**: run #{twin}, the same settings with every defense off, at round 4, the same "
            "test images.") in text
    assert ("attack PSNR (dB): 24.00 without the defense, 18.00 with it; attack SSIM: 0.800 without the defense, "
            "0.600 with it; final test accuracy: 0.9000 without the defense, 0.8800 with it.") in text
    assert f"#{other_seed}" not in text  # another seed is not the same settings
    captions = [i.proto.imgs[0].caption for i in at.get("image")]
    # the client's snapshot, then side by side the strongest attack's pictures with the defense and without
    assert captions[1:] == [f"with the defense: run #{defended}, round 4", f"without the defense: run #{twin}, round 4"]


def test_infopro_of_a_defended_run_without_a_twin_says_how_to_get_one(db_url):
    defended = store_run(db_url, "lfm bits", {**LFM, "defense": {"bits": 2}}, 0.8, leak_figures(15.0, 0.4))
    at = page("infopro", defended)
    text = shown_text(at)
    assert "**Defense**: 2-bit quantisation of the smashed data." in text
    assert "No undefended twin of this run here" in text and "queue one (New run, every defense 0)" in text
    assert "The headline figures" not in text  # a measurement without per-attack figures: the one attack it ran
    assert "it trains an inverse network" in text


def test_infopro_of_an_undefended_run_shows_no_defense_and_no_twin(db_url):
    store_run(db_url, "lfm noise", {**LFM, "defense": {"noise": 0.5}}, 0.88, leak_figures(18.0, 0.6))
    plain = store_run(db_url, "lfm", LFM, 0.90, leak_figures(24.0, 0.8))
    text = shown_text(page("infopro", plain))
    assert "Defense" not in text and "twin" not in text and "Without the defense" not in text


def test_a_twin_differs_only_in_name_defense_and_where_it_ran():
    base = validate_config({**LEAKAGE_TINY, **LFM}).model_dump(mode="json")
    same = {**base, "name": "other", "device": "cuda", "defense": {"noise": 1.0, "nopeek": 0.0, "bits": 0}}
    assert comparable_config(same) == comparable_config(base)
    old = {k: v for k, v in base.items() if k != "defense"}  # stored before defenses existed
    assert comparable_config(old) == comparable_config(base)
    assert comparable_config({**base, "rounds": 5}) != comparable_config(base)


# --------------------------------------------------------------------------- result page and report


def test_the_result_page_and_its_report_say_the_defenses(db_url):
    defended = store_run(db_url, "lfm noise", {**LFM, "defense": {"noise": 0.5, "bits": 8}}, 0.88,
                         leak_figures(18.0, 0.6, {"blackbox": 18.0}))
    at = page("run", defended)
    assert not at.exception
    caption = at.caption[0].value
    assert ("digits · defenses: Gaussian noise σ = 0.5 on the smashed data, 8-bit quantisation of the smashed data "
            "· link") in caption
    with connect(db_url).read() as s:
        run = queries.get_run(s, defended).as_dict()
        history = queries.run_history(s, defended)
    html = run_report(run, history, [])
    assert ("LocFedMix-SL (row 8) (techniques 1,2,3,4p,5) · 3 clients · digits · defenses: Gaussian noise σ = 0.5 on "
            "the smashed data, 8-bit quantisation of the smashed data") in html
    assert "Leakage measured at round 4 on client 0: the server mounts 1 attack: black-box" in html


def test_the_report_of_an_undefended_run_says_no_defense():
    config = validate_config({**LEAKAGE_TINY, "num_clients": 1}).model_dump(mode="json")
    assert config_line(config) == "Parallel SL (techniques 1,2) · 1 client · digits · no defense"


# --------------------------------------------------------------------------- the walkthrough


def traced_upload(received_delta: float | None) -> tuple[dict, dict, dict]:
    """A batch, forward and upload event of two clients (b = 2, 3 channels of 2x2), the server receiving the
    smashed data plus ``received_delta`` (None: the upload did not record what the server receives)."""
    rng = np.random.default_rng(0)
    smashed = rng.random((2, 2, 3, 2, 2)).astype(np.float32) + 1.0
    batch = {"clients": [0, 1], "x": rng.random((2, 2, 1, 28, 28)).astype(np.float32), "y": np.zeros((2, 2), int)}
    forward = {"clients": [0, 1], "smashed": smashed, "shape": (3, 2, 2)}
    upload = {"clients": [0, 1], "bytes": 100, "bytes_per_client": 50}
    if received_delta is not None:
        upload |= {"received": smashed + received_delta, "defenses": ["noise σ = 0.5 on the smashed data"]}
    return batch, forward, upload


def test_the_signal_to_noise_ratio_of_what_the_server_receives():
    _, forward, upload = traced_upload(0.1)
    signal = float(np.mean(forward["smashed"].astype(np.float64) ** 2))
    assert ws.received_snr_db(upload, forward) == pytest.approx(10 * np.log10(signal / 0.01), rel=1e-4)
    assert ws.received_changes(upload, forward) is True
    assert ws.received_changes(traced_upload(0.0)[2], forward) is False  # NoPeek: sent as computed
    assert ws.received_changes(traced_upload(None)[2], forward) is None


def test_the_received_picture_shows_computed_and_received_channels_side_by_side():
    batch, forward, upload = traced_upload(0.1)
    picture = wp.received_picture(batch, forward, upload, channels=2)
    two_rows = wp.received_picture(batch, forward, upload, channels=1)
    assert picture.shape[0] == two_rows.shape[0]  # one row per client
    assert picture.shape[1] - two_rows.shape[1] == 2 * (wp.MIN_COLUMN_PX + wp.GAP_PX)  # a computed/received pair


def test_the_defense_line_comes_from_the_round_else_from_the_config():
    cfg = ws.walkthrough_config("locfedmix_sl", 3, "digits", defense="bits:4")
    assert cfg.defense.bits == 4
    assert ws.defense_lines({"defenses": ["4-bit quantisation (straight-through)"]}, cfg) == [
        "4-bit quantisation (straight-through)"]
    assert ws.defense_lines({}, cfg) == ["4-bit quantisation of the smashed data"]
    assert ws.defense_lines({}, ws.walkthrough_config("locfedmix_sl", 3, "digits")) == []


def walkthrough_at(**params):
    from streamlit.testing.v1 import AppTest

    from tests.pages.support import ROOT, TIMEOUT

    at = AppTest.from_file(str(ROOT / "pages" / "walkthrough.py"), default_timeout=3 * TIMEOUT)
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def test_the_walkthrough_takes_a_defense_from_its_link_and_shows_what_the_server_receives(db_url):
    at = walkthrough_at(algo="locfedmix_sl", n="2", data="digits", defense="noise:0.5", step="3")
    assert not at.exception
    assert next(w for w in at.selectbox if w.label == "defense").value == "noise:0.5"
    assert any("Defense: Gaussian noise σ = 0.5 on the smashed data." in c.value for c in at.caption)
    words = " ".join(m.value for m in at.markdown)
    assert "the smashed data pass through its defense: noise: Gaussian, sigma=0.5" in words  # the engine's line
    captions = [i.proto.imgs[0].caption for i in at.get("image")]
    assert any("as the server receives them after the defense" in c for c in captions)
    snr = next(m for m in at.metric if m.label == "received vs computed, SNR")
    assert snr.value.endswith(" dB")


def test_the_walkthrough_says_nopeek_sends_the_smashed_data_as_computed(db_url):
    at = walkthrough_at(algo="locfedmix_sl", n="2", data="digits", defense="nopeek:1", step="3")
    assert any("acts on the client's loss" in c.value for c in at.caption)
    assert not any(m.label == "received vs computed, SNR" for m in at.metric)
    assert not any("as the server receives" in i.proto.imgs[0].caption for i in at.get("image"))


def test_without_a_defense_the_upload_step_is_as_before(db_url):
    at = walkthrough_at(algo="locfedmix_sl", n="2", data="digits", step="3")
    assert next(w for w in at.selectbox if w.label == "defense").value == ""
    assert not at.get("image") and "defense" not in " ".join(m.value for m in at.markdown)
    assert [m.label for m in at.metric] == ["smashed data up, this step", "per client"]


def test_a_walkthrough_link_with_an_unknown_defense_says_so_and_shows_none(db_url):
    at = walkthrough_at(algo="locfedmix_sl", n="2", data="digits", defense="noise:7", step="3")
    assert any("defense = noise:7 in the link is not one the walkthrough shows" in i.value.replace("\\", "")
               for i in at.info)
    assert next(w for w in at.selectbox if w.label == "defense").value == ""
    assert "pass through its defense" not in " ".join(m.value for m in at.markdown)


# --------------------------------------------------------------------------- the attacker's other figures


def test_the_most_exposed_client_is_said_only_when_several_were_attacked():
    several = {"leak_psnr_worst": 22.1, "leak_ssim_worst": 0.71, "leak_clients": 3, "leak_client_worst": 2}
    assert figures.worst_client_words(several) == (
        " The server attacked 3 clients whose lower models differ (the figures above are their mean); the most "
        "exposed, client 2, gives PSNR 22.10 dB, SSIM 0.710.")
    assert figures.worst_client_words({**several, "leak_clients": 1}) == ""  # one lower model: nothing more to say
    assert figures.worst_client_words({}) == ""


def test_the_strongest_attack_is_the_one_with_the_highest_psnr_unless_named():
    values = {"leak_psnr_blackbox": 21.0, "leak_psnr_whitebox": 26.0, "leak_psnr_hybrid": 28.0,
              "leak_ssim_hybrid": None}
    assert figures.strongest_attack(values) == "hybrid"
    assert figures.attack_figures(values)["hybrid"] == (28.0, None)
    assert figures.strongest_attack({**values, "leak_psnr_hybrid": None}) == "whitebox"  # not applicable: None
    assert figures.strongest_attack({}) is None and figures.attack_name(None) == "inverse network"


def test_the_summary_names_every_attack_figure_the_engine_writes():
    from engine.privacy import LEAK_EXTRA_KEYS
    from pages.report import SUMMARY_LABELS, summary_rows

    assert set(LEAK_EXTRA_KEYS) <= set(SUMMARY_LABELS)
    rows = dict(summary_rows({"leak_psnr_whitebox": 24.123, "leak_ssim_hybrid": None, "leak_clients": 3,
                              "leak_ssim_worst": 0.71234}))
    assert rows == {"last leakage measurement: white-box attack PSNR (dB)": "24.12",
                    "last leakage measurement: hybrid attack SSIM": "–",
                    "last leakage measurement: attack SSIM, most exposed client": "0.712",
                    "last leakage measurement: clients attacked": "3"}


# --------------------------------------------------------------------------- with a real worker


def test_a_trained_defended_run_and_its_twin_on_infopro_and_compare(db_url):
    """Two tiny LocFedMix-SL runs a real worker trains, measuring leakage at the end (the fast attacker budget),
    one with noise σ = 0.5: the engine's own figures and configs reach the pages."""
    from tests.pages.support import train_runs

    measured = {**LFM, "privacy": {"every": 4, "attack_steps": 30, "budget": "fast"}}
    plain, noisy = train_runs(db_url, [("plain", measured), ("noisy", {**measured, "defense": {"noise": 0.5}})])
    at = page("infopro", noisy)
    assert not at.exception
    text = shown_text(at)
    assert re.search(r"\*\*Defense\*\*: Gaussian noise σ = 0\.5 on the smashed data \(a signal-to-noise ratio of "
                     r"-?[0-9.]+ dB on the smashed data at this round\)\.", text)
    assert f"**Without the defense**: run #{plain}, the same settings with every defense off, at round 4" in text
    assert "The headline figures and the pictures are the strongest attack's (" in text
    assert "None" not in text and "nan" not in text
    compare = page("compare")
    next(w for w in compare.selectbox if w.label == "leakage measure").set_value("leak_psnr").run()
    spec = charts(compare)["Privacy-utility trade-off: accuracy against attack PSNR (dB)"]
    labels = sorted(x for t in spec["data"] if t.get("text") for x in t["text"])
    assert labels == ["none", "σ=0.5"]


def test_infopro_says_its_smashed_data_are_before_the_defenses_that_change_the_upload(db_url):
    noisy = store_run(db_url, "noisy", {**LFM, "defense": {"noise": 0.5, "nopeek": 1.0}}, 0.5,
                      leak_figures(14.0, 0.3))
    peek = store_run(db_url, "nopeek only", {**LFM, "defense": {"nopeek": 1.0}}, 0.5, leak_figures(20.0, 0.6))
    captions = [c.value for c in page("infopro", noisy).caption if c.value.startswith("Each row")]
    assert len(captions) == 1
    assert ("(the lower model's output, before this run's defenses: the server receives it with Gaussian noise "
            "σ = 0.5 on the smashed data (What the server can see, below))") in captions[0]
    assert "NoPeek" not in captions[0]  # NoPeek changes the training, not the upload
    captions = [c.value for c in page("infopro", peek).caption if c.value.startswith("Each row")]
    assert "(what the client uploads)" in captions[0]


def test_points_on_the_same_spot_share_one_strength_label():
    import pandas as pd

    from pages.figures import shared_labels

    g = pd.DataFrame({"leak_ssim": [0.315, 0.31500001, 0.6], "accuracy": [0.1, 0.1, 0.1],
                      "strength": ["σ=0.5", "σ=8", "σ=0.1"]})
    assert shared_labels(g, "leak_ssim") == ["σ=0.5, σ=8", "", "σ=0.1"]
