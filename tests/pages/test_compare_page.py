"""The Compare, Latency and InfoPro pages as a user meets them, through AppTest against runs a real
worker trained: names instead of technique codes, the data set with most runs first, readable
axes, and never "None" or "nan" on screen."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import plotly.io as pio
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.config import validate_config
from storage import queries
from storage.db import connect
from storage.worker import Worker, WorkerOptions
from tests.pages.support import page

TINY = {"num_clients": 3, "rounds": 4, "batch_size": 8, "eval_every": 2, "image_every": 2,
        "data": {"dataset": "synthetic", "eval_subset": 32}, "optim": {"name": "adam", "lr": 0.001}}
LOCFEDMIX = {"mixup": {"enabled": True, "num_partners": 1}, "local_loss": {"enabled": True, "average_aux": True},
             "averaging": {"enabled": True}}
SPLITFED = {"averaging": {"enabled": True}}


def train(db_url: str, *configs: dict) -> list[int]:
    """Queue the runs (oldest first) and let a real worker finish them."""
    db = connect(db_url)
    ids = []
    for i, cfg in enumerate(configs):
        with db.write() as s:
            ids.append(queries.create_run(s, validate_config({**TINY, "name": f"run {i}", **cfg})))
    assert Worker(db, WorkerOptions(once=True, poll=0.1)).run() >= 1
    with db.read() as s:
        assert all(queries.get_run(s, i).status.value == "finished" for i in ids)
    return ids


def shown_text(at: AppTest) -> str:
    """Everything the page writes as text, tables included (their formatted cells)."""
    parts = [e.value for kind in ("markdown", "caption", "info", "header", "subheader") for e in at.get(kind)]
    for df in at.dataframe:
        parts += [str(i) for i in df.value.index] + [str(c) for c in df.value.columns]
    return "\n".join(str(p) for p in parts)


def numbers(values) -> list[float]:
    """A trace's values as the browser reads them (plotly sends arrays as typed, base64 blocks)."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return list(values)


def digits(cfg: dict) -> dict:
    return {**cfg, "data": {**TINY["data"], "dataset": "digits"}}


@pytest.fixture
def lab(db_url) -> list[int]:
    """Two SplitFed-like runs on synthetic data (n = 3 and n = 2), then one LocFedMix-SL on digits, newest."""
    return train(db_url, SPLITFED, {**LOCFEDMIX, "num_clients": 2}, digits(LOCFEDMIX))


def test_compare_defaults_to_the_data_set_with_most_finished_runs(lab):
    at = page("compare")
    assert not at.exception
    assert at.selectbox[0].value == "synthetic"  # 2 runs there, though the newest run is on digits


def test_compare_breaks_a_tie_by_the_newest_run(lab, db_url):
    train(db_url, digits(SPLITFED))
    at = page("compare")
    assert at.selectbox[0].value == "digits"  # 2 and 2: the newest finished run's


def test_compare_names_rows_by_technique_and_never_shows_none(lab):
    at = page("compare")
    grid = at.dataframe[0].value
    assert list(grid.index) == ["SplitFed (row 4)", "LocFedMix-SL (row 8)"]
    assert list(grid.columns) == ["n=2", "n=3"]
    at.slider[0].set_value(1.0).run()  # a target no run reaches: every cell of "rounds to" is empty
    assert at.dataframe[1].value.isna().all().all()
    for df in at.dataframe:
        assert df.proto.placeholder == "–"  # what the browser shows for an empty cell (not "None")
        config = json.loads(df.proto.columns)["_index"]
        assert config["width"] >= 8 * max(len(str(i)) for i in df.value.index)  # names in full
    assert not re.search(r"\bNone\b|\bnan\b", shown_text(at))


def test_accuracy_vs_n_uses_names_a_fitted_y_axis_and_integer_n_ticks(lab):
    at = page("compare")
    fig = pio.from_json(at.get("plotly_chart")[0].proto.spec)
    names = [t.name for t in fig.data]
    assert "SplitFed (row 4) (measured)" in names and "LocFedMix-SL (row 8) (paper, CIFAR-10)" in names
    lowest = min(min(numbers(t.y)) for t in fig.data)
    lo, hi = fig.layout.yaxis.range
    assert 0 <= lo < lowest and hi <= 1
    ticks = list(fig.layout.xaxis.tickvals)
    assert all(float(n).is_integer() for n in ticks) and {2, 3} <= set(ticks)


def test_latency_page_names_methods_and_says_which_curves_coincide(lab):
    at = page("latency")
    assert not at.exception
    fig8 = json.loads(at.get("plotly_chart")[0].proto.spec)
    legend = {t["name"] for t in fig8["data"] if t.get("showlegend", True)}
    assert legend == {"Vanilla SL", "SplitFed", "LocSplitFed", "LocFedMix-SL (T_c = 1)",
                      "LocFedMix-SL best case (T_c = T)", "LocFedMix-SL worst case (T_c = 1)"}
    text = shown_text(at)
    assert "are one curve" in text and "coincide" in text
    bytes_chart = json.loads(at.get("plotly_chart")[1].proto.spec)
    assert [t["name"] for t in bytes_chart["data"]] == ["smashed data up", "gradients down", "models up",
                                                         "models down"]
    assert len({t["marker"]["color"] for t in bytes_chart["data"]}) == 4
    assert not re.search(r"\bNone\b|\bnan\b", text)


def test_infopro_shows_large_labelled_snapshots_and_explains_identical_clients(lab):
    at = page("infopro", lab[1])  # LocFedMix-SL, T_c = 1: averaged at the end of every round
    assert not at.exception
    assert len(at.get("image")) == 2  # one labelled grid per client (its size: tests/pages/test_figures.py)
    text = shown_text(at)
    assert "Why the clients look alike" in text and "T_c = 1" in text
    assert "Client 0" in text and "reconstruction MSE" in text
    assert not re.search(r"\bNone\b|\bnan\b", text)


def test_infopro_keeps_the_run_picked_as_a_run_finishes_underneath_and_its_address_follows(lab, db_url):
    at = page("infopro", lab[2])
    (newest,) = train(db_url, digits(LOCFEDMIX))  # the list of runs changes above ...
    st.cache_data.clear()  # ... the page's cached list has expired ...
    at.selectbox[0].select(lab[0]).run()  # ... and the user picks another run from the list on screen
    assert not at.exception
    assert at.selectbox[0].options[0].startswith(f"#{newest} ") and at.selectbox[0].value == lab[0]
    assert at.query_params["run"] == str(lab[0])  # a copied link shows what is on screen


def test_infopro_has_no_averaging_note_for_runs_without_averaging(db_url):
    (run_id,) = train(db_url, {"mixup": {"enabled": True, "num_partners": 1}, "local_loss": {"enabled": True}})
    at = page("infopro", run_id)
    assert not at.exception
    assert "Why the clients look alike" not in shown_text(at)
    assert "MSE" in shown_text(at)


def test_compare_keeps_runs_cut_after_different_blocks_apart(db_url):
    """The same combination at cut 1 and cut 2 is two rows, not one mean of both (leakage differs by cut)."""
    train(db_url, SPLITFED, {**SPLITFED, "cut_layer": 2})
    at = page("compare")
    assert not at.exception
    rows = [str(i) for i in at.dataframe[0].value.index]
    assert rows == ["SplitFed (row 4)", "SplitFed (row 4), cut after block 2"]
