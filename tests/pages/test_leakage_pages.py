"""Privacy leakage on the pages, through AppTest against runs a real worker trained with
``privacy.every``: InfoPro's "What the server can see", Compare's leakage grid and trade-off scatter,
the result page and its HTML report, and the New run form's field. Runs that never measured say how
to turn it on; nothing shows "None" or "nan".

The runs are trained once for the session (``leakage_db``, shared with the browser file) (each leakage measurement trains the server's attack, a
few seconds on a CPU); every test only reads them.
"""

from __future__ import annotations

import json
import re
import shutil

import plotly.io as pio
import pytest
import streamlit as st

from storage import queries
from storage.db import close, connect
from tests.pages.support import LEAKAGE_RUNS, page, train_runs
from tests.pages.test_compare_page import numbers, shown_text


@pytest.fixture(scope="module")
def trained(leakage_db, tmp_path_factory) -> tuple[str, list[int]]:
    """A copy of the session's trained leakage runs (tests/conftest.py), as this module's database."""
    path = tmp_path_factory.mktemp("leakage") / "dashboard.db"
    shutil.copy(leakage_db, path)
    url = f"sqlite:///{path}"
    yield url, [1, 2, 3]
    close(url)


@pytest.fixture
def lab(trained, monkeypatch) -> list[int]:
    """The module's runs (leaky LocFedMix-SL, leaky SplitFed, quiet SplitFed), as the pages' database."""
    url, ids = trained
    monkeypatch.setenv("SPLITLAB_DB", url)
    monkeypatch.setenv("SPLITLAB_NO_WORKER", "1")
    monkeypatch.delenv("SPLITLAB_READONLY", raising=False)
    st.cache_data.clear()
    yield ids
    st.cache_data.clear()


def no_none_or_nan(text: str) -> bool:
    return not re.search(r"\bNone\b|\bnan\b", text)


def charts(at) -> dict[str, dict]:
    """The page's plotly figures by title."""
    out = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        out[spec["layout"]["title"]["text"]] = spec
    return out


def test_the_worker_stores_the_measurements_and_the_attack_pictures(trained):
    url, (leaky, _, quiet) = trained
    db = connect(url)
    with db.read() as s:
        summary = queries.get_run(s, leaky).summary
        history = queries.run_history(s, leaky)
        at_4 = queries.run_images(s, leaky, 4)
        assert "leak_round" not in queries.get_run(s, quiet).summary
    assert summary["leak_round"] == 4 and 0 <= summary["leak_ssim"] <= 1 and summary["leak_psnr"] > 0
    assert history["leak_psnr"].notna().tolist() == [True, True]  # rounds 2 and 4
    attacked = [r for r in at_4 if r.attack is not None]
    assert len(attacked) == 1 and attacked[0].client == summary["leak_client"]
    assert attacked[0].attack.shape == attacked[0].inputs.shape and attacked[0].psnr.shape == (4,)


def test_infopro_shows_what_the_server_can_see_with_scores_and_a_round_choice(lab):
    at = page("infopro", lab[0])
    assert not at.exception
    text = shown_text(at)
    assert "What the server can see" in text and "attacks client 0 at round 4" in text
    slider = next(s for s in at.select_slider if s.label == "round (leakage measured)")
    assert list(slider.options) == ["2", "4"] and slider.value == 4
    metrics = {m.label: m.value for m in at.metric}
    assert set(metrics) == {"attack PSNR (dB)", "attack SSIM", "distance correlation", "mutual information (nats)"}
    assert all(re.fullmatch(r"-?\d+\.\d+", v) for v in metrics.values()), metrics
    assert len(at.get("image")) == 3 + 1  # three clients' snapshots, then the server's view
    leak = charts(at)["What the server reconstructs, over rounds"]
    assert [t["name"] for t in leak["data"]] == ["attack PSNR (dB)", "attack SSIM"]
    assert numbers(leak["data"][0]["x"]) == [2, 4]
    assert leak["layout"]["yaxis"]["title"]["text"] == "attack PSNR (dB)"
    assert leak["layout"]["yaxis2"]["title"]["text"] == "attack SSIM"
    slider.set_value(2).run()
    assert "attacks client 0 at round 2" in shown_text(at)
    assert no_none_or_nan(shown_text(at))


def test_infopro_shows_input_and_attack_for_a_run_without_infopro(lab):
    at = page("infopro", lab[1])
    assert not at.exception
    assert "attacks client 0 at round 4" in shown_text(at)
    assert not at.select_slider or all(s.label != "round (leakage measured)" for s in at.select_slider)
    image = at.get("image")[-1]  # the server's view: two columns (input | attack), no InfoPro column
    assert len(at.get("image")) == 3 + 1
    assert no_none_or_nan(shown_text(at)) and image is not None


def test_infopro_says_how_to_measure_leakage_for_a_run_that_never_did(lab, monkeypatch):
    at = page("infopro", lab[2])
    assert not at.exception
    hint = [i.value for i in at.info if "did not measure privacy leakage" in i.value]
    assert len(hint) == 1 and "leakage every (rounds, 0: off)" in hint[0] and "privacy.every" in hint[0]
    assert not at.metric and "What the server reconstructs, over rounds" not in charts(at)
    monkeypatch.setenv("SPLITLAB_READONLY", "1")  # no New run form there: only why
    at = page("infopro", lab[2])
    hint = [i.value for i in at.info if "did not measure privacy leakage" in i.value]
    assert hint == [f"Run #{lab[2]} did not measure privacy leakage (its config has `privacy.every` = 0)."]


def test_compare_puts_leakage_beside_accuracy_and_plots_the_trade_off(lab):
    at = page("compare")
    assert not at.exception
    measure = next(s for s in at.selectbox if s.label == "leakage measure")
    assert measure.options == ["attack SSIM", "attack PSNR (dB)", "distance correlation", "mutual information (nats)",
                               "attack MSE"]
    leak_grid = at.dataframe[2].value
    assert list(leak_grid.index) == ["SplitFed (row 4)", "LocFedMix-SL (row 8)"]
    assert leak_grid.notna().all().all()  # the quiet SplitFed is averaged out of its cell, not counted
    scatter = charts(at)["Privacy-utility trade-off: accuracy against attack SSIM"]
    runs = [t for t in scatter["data"] if not t["name"].startswith("Pareto front")]  # the front: its own test file
    assert sorted(t["name"] for t in runs) == ["LocFedMix-SL (row 8)", "SplitFed (row 4)"]
    assert sum(len(numbers(t["x"])) for t in runs) == 2  # one point per run that measured
    hover = [c for t in runs for c in t["customdata"]]
    assert sorted(map(tuple, hover)) == [(lab[0], "lfm leaky", "none"), (lab[1], "splitfed leaky", "none")]
    assert scatter["layout"]["xaxis"]["title"]["text"] == "attack SSIM (higher: the server sees more; left is better)"
    assert scatter["layout"]["yaxis"]["title"]["text"] == "final test accuracy (higher is better)"
    text = shown_text(at)
    assert "1 finished run on digits left out: no leakage measurement" in text
    measure.set_value("leak_dcor").run()
    assert "Privacy-utility trade-off: accuracy against distance correlation" in charts(at)
    assert no_none_or_nan(shown_text(at))


def test_compare_without_any_measurement_says_how_to_measure(db_url):
    train_runs(db_url, [LEAKAGE_RUNS[2]])
    at = page("compare")
    assert not at.exception
    assert not any(s.label == "leakage measure" for s in at.selectbox)
    assert any("No finished run on digits measured privacy leakage" in i.value for i in at.info)


def test_result_page_shows_the_leakage_figures_and_the_attack(lab):
    at = page("run", lab[0])
    assert not at.exception
    text = shown_text(at)
    assert "What the server can see (leakage at round 4, client 0)" in text
    assert {m.label for m in at.metric} >= {"attack PSNR (dB)", "attack SSIM", "distance correlation",
                                            "mutual information (nats)"}
    titles = set(charts(at))
    assert {"What the server reconstructs, over rounds",
            "How much the smashed data depend on the inputs, over rounds"} <= titles
    dependence = charts(at)["How much the smashed data depend on the inputs, over rounds"]
    assert [t["name"] for t in dependence["data"]] == ["distance correlation", "mutual information (nats)"]
    assert len(at.get("image")) == 1 + 3  # the server's view, then the three clients' snapshots
    assert no_none_or_nan(text)


def test_result_page_of_a_quiet_run_has_no_leakage_section(lab):
    at = page("run", lab[2])
    assert not at.exception
    assert "What the server can see" not in shown_text(at) and not any(m.label == "attack SSIM" for m in at.metric)


def test_the_report_carries_the_leakage_section(lab):
    from pages import common
    from pages.images import attacked_record
    from pages.report import run_report

    run = common.run_info(lab[0])
    attack = attacked_record(common.images(lab[0], 4))
    report = run_report(run, common.history(lab[0]), common.images(lab[0], 4), attack)
    assert "<h2>What the server can see</h2>" in report and "Leakage measured at round 4 on client 0" in report
    assert "<th>attack SSIM</th>" in report and "<th>mutual information (nats)</th>" in report
    assert "alt='what the server reconstructs, round 4'" in report
    assert "the client's own InfoPro reconstruction" in report
    titles = re.findall(r'"title":\{"text":"([^"]+)"', report)
    assert "What the server reconstructs, over rounds" in titles
    assert "How much the smashed data depend on the inputs, over rounds" in titles
    assert report.count("<script type=\"text/javascript\">/**") <= 1  # plotly.js inlined once
    quiet = run_report(common.run_info(lab[2]), common.history(lab[2]), [])
    assert "What the server can see" not in quiet
    text = re.sub(r"<script.*?</script>|<pre>.*?</pre>", "", report, flags=re.DOTALL)
    assert no_none_or_nan(text)


def test_the_leakage_figures_keep_their_template_in_a_streamlit_process(lab, monkeypatch):
    from streamlit.elements import plotly_chart  # noqa: F401  (installs Streamlit's template)

    monkeypatch.setattr(pio.templates, "default", "streamlit")
    at = page("run", lab[0])
    for title in ("What the server reconstructs, over rounds",
                  "How much the smashed data depend on the inputs, over rounds"):
        fig = charts(at)[title]
        assert all(not t["line"]["color"].startswith("#0000") for t in fig["data"]), title


def test_new_run_has_the_leakage_field_and_queues_it(db_url):
    at = page("new_run")
    field = next(w for w in at.text_input if w.label == "leakage every (rounds, 0: off)")
    assert field.value == "0"
    next(w for w in at.text_input if w.label == "evaluate every (rounds)").set_value("10").run()
    next(w for w in at.text_input if w.label == "leakage every (rounds, 0: off)").set_value("20").run()
    assert not at.error
    next(b for b in at.button if b.label == "Queue run").click().run()
    with connect(db_url).read() as s:
        (run,) = queries.list_runs(s)
    assert run.config["privacy"]["every"] == 20


@pytest.mark.parametrize(("value", "message"), [
    (15, "leakage every (rounds, 0: off) must be a multiple of 'evaluate every (rounds)' (10)"),
    (-1, "leakage every (rounds, 0: off) must be between 0 and 100,000, got -1"),
])
def test_new_run_refuses_a_leakage_interval_in_the_form_s_words(db_url, value, message):
    at = page("new_run")
    next(w for w in at.text_input if w.label == "evaluate every (rounds)").set_value("10").run()
    next(w for w in at.text_input if w.label == "leakage every (rounds, 0: off)").set_value(str(value)).run()
    errors = " ".join(e.value for e in at.error).replace("\\", "")
    assert message in errors and f"got {value}" in errors and "eval_every" not in errors  # the form's words only
    assert next(b for b in at.button if b.label == "Queue run").disabled
    with connect(db_url).read() as s:
        assert queries.list_runs(s) == []
