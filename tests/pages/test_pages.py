"""Every page through ``streamlit.testing.v1.AppTest`` against a real database: SQLite, and PostgreSQL on
the session's throwaway server.

A finished run is trained for real by the worker (tiny synthetic data) before the pages read it.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from sqlalchemy import update
from streamlit.testing.v1 import AppTest

from engine.config import validate_config
from storage import queries
from storage.db import connect
from storage.models import Run
from storage.worker import Worker, WorkerOptions
from tests.pages.conftest import dashboard_on
from tests.pages.support import ROOT, TIMEOUT, page

TINY = {"num_clients": 3, "rounds": 6, "batch_size": 8, "eval_every": 2, "image_every": 3,
        "data": {"dataset": "synthetic", "eval_subset": 32}, "optim": {"name": "adam", "lr": 0.001},
        "mixup": {"enabled": True, "num_partners": 1}, "local_loss": {"enabled": True, "average_aux": True},
        "averaging": {"enabled": True}}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path, monkeypatch):
    """This file's tests run on both databases."""
    url = f"sqlite:///{tmp_path / 'dashboard.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    yield from dashboard_on(url, monkeypatch)


@pytest.fixture
def finished_run(db_url) -> int:
    """One LocFedMix-SL run on synthetic data, trained to the end by a real worker."""
    db = connect(db_url)
    with db.write() as s:
        run_id = queries.create_run(s, validate_config({**TINY, "name": "tiny lfm"}))
    assert Worker(db, WorkerOptions(once=True, poll=0.1)).run() == 1
    with db.read() as s:
        assert queries.get_run(s, run_id).status.value == "finished"
    return run_id


def runs_in_db(url: str) -> list[queries.RunInfo]:
    with connect(url).read() as s:
        return queries.list_runs(s)


def test_new_run_has_every_control(db_url):
    at = page("new_run")
    assert not at.exception
    labels = {w.label for w in [*at.text_input, *at.slider, *at.selectbox, *at.checkbox, *at.toggle, *at.radio]}
    for expected in ("clients n", "rounds T", "batch size b", "learning rate η", "seed", "n_s, mixup partners per client",
                     "λ ~ Beta(α, β): α", "λ ~ Beta(α, β): β", "T_c, average every (rounds)", "local loss",
                     "③ smashed-data mixup", "④' average the auxiliary networks too", "SGLR SplitAvg",
                     "SplitLr α (η_s = η·n^α)", "partition", "data set", "optimiser", "mixing", "over partners"):
        assert expected in labels, expected
    assert len(at.get("plotly_chart")) >= 1  # the live Beta density


def test_new_run_bounds_n_s_by_n_minus_one(db_url):
    at = page("new_run")
    n_input = next(w for w in at.text_input if w.label == "clients n")
    n_input.set_value("4").run()
    slider = next(w for w in at.slider if w.label.startswith("n_s"))
    assert slider.max == 3


def test_new_run_explains_invalid_input_and_blocks_submit(db_url):
    at = page("new_run")
    next(w for w in at.text_input if w.label == "learning rate η").set_value("0").run()
    errors = " ".join(e.value for e in at.error)
    assert "learning rate η must be greater than 0 and at most 10, got 0" in errors.replace("\\", "")
    assert next(b for b in at.button if b.label == "Queue run").disabled
    assert runs_in_db(db_url) == []


@pytest.mark.parametrize(("label", "value", "message"), [
    ("clients n", "100000", "clients n must be between 1 and 1000, got 100,000"),
    ("clients n", "-5", "clients n must be between 1 and 1000, got -5"),
    ("rounds T", "1000000000", "rounds T must be between 1 and 100,000, got 1,000,000,000"),
    ("batch size b", "0", "batch size b must be between 1 and 4096, got 0"),
    ("learning rate η", "1e9", "learning rate η must be greater than 0 and at most 10, got 1e+09"),
    ("T_c, average every (rounds)", "0", "T_c, average every (rounds) must be between 1 and 100,000, got 0"),
    ("evaluate every (rounds)", "0", "evaluate every (rounds) must be between 1 and 100,000, got 0"),
])
def test_new_run_refuses_an_out_of_range_value_in_the_form_s_words(db_url, label, value, message):
    at = page("new_run")
    next(w for w in at.text_input if w.label == label).set_value(value).run()
    assert next(w for w in at.text_input if w.label == label).value == value  # kept as typed, never replaced
    errors = " ".join(e.value for e in at.error).replace("\\", "")
    assert message in errors
    assert next(b for b in at.button if b.label == "Queue run").disabled
    assert not any("clients ×" in c.value for c in at.caption)  # no summary of numbers that would not be queued
    assert runs_in_db(db_url) == []


def test_sweep_refuses_repeated_n_and_says_a_shared_problem_once(db_url):
    at = page("new_run")
    ns = next(w for w in at.text_input if w.label == "clients n (comma-separated)")
    ns.set_value("5,5,10").run()
    assert any("5 appears more than once" in e.value for e in at.error)
    assert next(b for b in at.button if b.label == "Queue sweep").disabled
    next(w for w in at.text_input if w.label == "clients n (comma-separated)").set_value("0,10").run()
    errors = [e.value.replace("\\", "") for e in at.error]
    assert errors == ["clients n must be between 1 and 1000, got 0 (every row)"]
    assert next(b for b in at.button if b.label == "Queue sweep").disabled
    assert runs_in_db(db_url) == []


def test_new_run_queues_a_run_with_the_chosen_config(db_url):
    at = page("new_run")
    next(w for w in at.text_input if w.label == "clients n").set_value("6").run()
    next(w for w in at.text_input if w.label == "rounds T").set_value("40").run()
    next(w for w in at.slider if w.label.startswith("n_s")).set_value(2).run()
    next(b for b in at.button if b.label == "Queue run").click().run()
    runs = runs_in_db(db_url)
    assert len(runs) == 1 and runs[0].status.value == "queued"
    cfg = runs[0].config
    assert cfg["num_clients"] == 6 and cfg["rounds"] == 40 and cfg["mixup"]["num_partners"] == 2
    assert cfg["mixup"]["enabled"] and cfg["local_loss"]["average_aux"] and cfg["averaging"]["enabled"]


@pytest.mark.parametrize("preset", ["splitfed_v1", "splitfed_v2"])
def test_new_run_keeps_a_splitfed_presets_schedule_and_settings(db_url, preset):
    at = page("new_run")
    next(w for w in at.selectbox if w.label == "start from a preset").set_value(preset).run()
    assert next(w for w in at.selectbox if w.label == "① schedule").value == preset
    assert next(w for w in at.text_input if w.label == "batches per client per round").value == "20"
    assert next(w for w in at.checkbox if w.label == "re-create the optimisers").value
    assert any("20 batches per client" in c.value for c in at.caption)
    next(b for b in at.button if b.label == "Queue run").click().run()
    (run,) = runs_in_db(db_url)
    cfg = run.config
    assert (cfg["schedule"], cfg["local_steps"], cfg["reset_optimizers"]) == (preset, 20, True)
    assert cfg["averaging"]["enabled"] and cfg["global_backward"] and not cfg["mixup"]["enabled"]


def test_new_run_says_what_a_splitfed_schedule_cannot_run(db_url):
    at = page("new_run")
    next(w for w in at.selectbox if w.label == "start from a preset").set_value("splitfed_v1").run()
    next(w for w in at.checkbox if w.label == "③ smashed-data mixup").check().run()
    errors = " ".join(e.value for e in at.error).replace("\\", "")
    assert "mixup needs the parallel schedule" in errors
    next(w for w in at.checkbox if w.label == "③ smashed-data mixup").uncheck().run()
    next(w for w in at.checkbox if w.label == "re-create the optimisers").uncheck().run()  # under Adam (demo)
    errors = " ".join(e.value for e in at.error).replace("\\", "")
    assert "re-create the optimisers must be true for splitfed_v1 with the adam optimiser" in errors
    assert next(b for b in at.button if b.label == "Queue run").disabled
    next(w for w in at.selectbox if w.label == "① schedule").set_value("parallel").run()
    assert not at.error  # the parallel schedule: one batch per client, nothing re-created
    assert next(w for w in at.text_input if w.label == "batches per client per round").disabled
    next(b for b in at.button if b.label == "Queue run").click().run()
    (run,) = runs_in_db(db_url)
    assert (run.config["schedule"], run.config["local_steps"], run.config["reset_optimizers"]) == ("parallel", 1, False)


def test_sweep_queues_the_grid(db_url):
    at = page("new_run")
    next(w for w in at.multiselect if w.label.startswith("technique combinations")).set_value([4, 8]).run()
    next(w for w in at.text_input if w.label == "clients n (comma-separated)").set_value("3,5").run()
    next(b for b in at.button if b.label == "Queue sweep").click().run()
    runs = runs_in_db(db_url)
    assert sorted((r.config["num_clients"], r.name) for r in runs) == [
        (3, "T3 row 4 n=3"), (3, "T3 row 8 n=3"), (5, "T3 row 4 n=5"), (5, "T3 row 8 n=5")]


def test_runs_page_lists_runs_with_progress(finished_run, db_url):
    at = page("runs")
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["id"]) == [finished_run]
    assert table["progress"].iloc[0] == 100 and table["state"].iloc[0] == "finished"
    assert table["rounds_done"].iloc[0] == "6 / 6" and "left" not in table["time"].iloc[0]
    assert not table.astype(str).isin(["None", "nan", "NaN"]).any().any()


def test_runs_page_offers_actions_for_the_linked_run_by_its_id(finished_run):
    at = page("runs", finished_run)
    labels = {b.label for b in at.button}
    assert {f"Live view #{finished_run}", f"Result page #{finished_run}", f"Cancel #{finished_run}",
            f"Re-run #{finished_run}"} <= labels
    next(b for b in at.button if b.label == f"Re-run #{finished_run}").click().run()
    assert len(runs_in_db(os.environ["SPLITLAB_DB"])) == 2


def test_runs_page_says_when_a_worker_is_lost_and_where_its_run_resumes(db_url):
    db = connect(db_url)
    with db.write() as s:
        run_id = queries.create_run(s, validate_config({**TINY, "name": "orphan", "rounds": 60}))
        queries.claim_next_run(s, "elsewhere:1")
        queries.save_checkpoint(s, run_id, "elsewhere:1", 40, b"not a real checkpoint")
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=queries.db_now(s) - timedelta(seconds=60),
                                                             last_round=47))
    at = page("runs", run_id)
    assert not at.exception
    table = at.dataframe[0].value
    assert table["state"].iloc[0] == "worker lost (resumes at 40)"
    assert "left" not in table["time"].iloc[0]  # no time left is promised for a run nobody trains
    assert any("1 running (1 with a lost worker)" in c.value for c in at.caption)
    assert any("resumes it from its checkpoint at round 40" in w.value for w in at.warning)


@pytest.mark.parametrize(("name", "link"), [
    *[("run", link) for link in ("abc", "1.5", "", "99999999999999999999999", "1';DROP TABLE runs", "999")],
    ("live", "abc"), ("live", "999"), ("runs", "1.5"), ("runs", "")])
def test_a_link_that_names_no_run_says_so_and_lists_the_runs(name, link, finished_run):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)  # through app.py: the links resolve
    at.switch_page(f"pages/{name}.py")
    at.query_params["run"] = link
    at.run()
    assert not at.exception
    shown = " ".join(e.value for e in at.error).replace("\\", "")
    assert ("This link names no run" in shown) if not link else (f"There is no run {link}" in shown)
    assert not at.get("plotly_chart") and at.query_params["run"] in (link, [link])  # no other run shown, link kept


def test_live_page_draws_the_curves_of_the_linked_run(finished_run):
    at = page("live", finished_run)
    assert not at.exception
    assert len(at.get("plotly_chart")) == 4
    assert any(m.label == "test accuracy" for m in at.metric)


def test_compare_page_builds_the_grid(finished_run):
    at = page("compare")
    assert not at.exception
    grid = at.dataframe[0].value
    assert "n=3" in grid.columns and grid.index[0] == "LocFedMix-SL (row 8)"


def test_compare_page_shows_what_adding_mixup_changes(finished_run, db_url):
    db = connect(db_url)
    with db.write() as s:  # the same run without ③: LocSplitFed + ② (row 7)
        row7 = queries.create_run(s, validate_config({**TINY, "name": "tiny row 7", "mixup": {"enabled": False}}))
    assert Worker(db, WorkerOptions(once=True, poll=0.1)).run() == 1
    with db.read() as s:
        acc8, acc7 = (queries.get_run(s, r).summary["final_test_acc"] for r in (finished_run, row7))
    at = page("compare")
    assert not at.exception
    effect = at.dataframe[2].value
    row8_vs_7 = "LocFedMix-SL (row 8) vs LocSplitFed + ② (row 7)"
    assert list(effect.index) == [row8_vs_7]
    assert effect.loc[effect.index[0], "n=3"] == pytest.approx(100 * (acc8 - acc7))
    paper = at.dataframe[-1].value  # the paper's own mixup effect, in the expander
    assert set(paper.index) == {"Parallel SL + mixup + local loss (row 5) vs Parallel SL + local loss (row 3)",
                                "Parallel SL + mixup + averaging (row 6) vs SplitFed (row 4)", row8_vs_7}
    assert paper.loc[row8_vs_7, "n=100"] == pytest.approx(100 * (0.6810 - 0.6381))


def test_infopro_page_shows_reconstructions(finished_run):
    at = page("infopro", finished_run)
    assert not at.exception
    assert len(at.get("image")) == 3  # one grid per client shown
    assert len(at.select_slider[0].options) == 2  # snapshots at rounds 3 and 6
    assert len(at.get("plotly_chart")) == 1  # reconstruction MSE over rounds


def test_latency_page_plots_the_model_and_finished_runs(finished_run):
    at = page("latency")
    assert not at.exception
    assert len(at.get("plotly_chart")) == 2
    claims = at.dataframe[0].value
    assert len(claims) == 4 and set(claims["holds"]) == {"yes", "no"}  # the 10:1 worst-case claim fails
    assert "not below LocSplitFed at n = 10–100" in claims["numbers"][2]
    at.number_input[2].set_value(9).run()  # n <= 9 < T_comp / T_comm: LocSplitFed waits on its compute
    evidence = at.dataframe[0].value["numbers"][2]
    assert "not below LocSplitFed" not in evidence and "not below Vanilla SL at n = 2" in evidence


def test_result_page_offers_downloads(finished_run):
    at = page("run", finished_run)
    assert not at.exception
    assert any("tiny lfm" in h.value for h in at.header)
    assert len(at.get("download_button")) == 3


@pytest.mark.parametrize("name", ["new_run", "runs", "live", "compare", "infopro", "latency", "run"])
def test_read_only_mode_has_no_control_that_changes_anything(name, finished_run, monkeypatch):
    monkeypatch.setenv("SPLITLAB_READONLY", "1")
    at = page(name, finished_run)
    assert not at.exception
    forbidden = ("Queue run", "Queue sweep", "Cancel", "Re-run", "Delete", "Yes, delete")
    assert not [b.label for b in at.button if b.label.startswith(forbidden)]
