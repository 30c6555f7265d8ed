"""The standalone HTML report (pages/report.py): read back the figure JSON it embeds, the way a
browser gets it, including when it is written inside a Streamlit server process."""

from __future__ import annotations

import json
import re

import numpy as np
import plotly.io as pio
import pytest

from engine.config import validate_config
from pages.report import run_report
from storage.queries import ImageRecord
from tests.pages.test_figures import PLACEHOLDER, history

CONFIG = validate_config({"num_clients": 2, "rounds": 4, "mixup": {"enabled": True},
                          "local_loss": {"enabled": True, "average_aux": True},
                          "averaging": {"enabled": True, "interval": 2}}).model_dump(mode="json")


def run(summary: dict | None = None) -> dict:
    return {"id": 7, "name": "lfm", "status": "finished", "last_round": 4, "rounds": 4, "config": CONFIG,
            "summary": summary if summary is not None else {"final_test_acc": 0.81, "rounds_to_target": None,
                                                             "wall_s": float("nan")}}


def snapshots(round_: int = 4) -> list[ImageRecord]:
    rng = np.random.default_rng(0)
    x = rng.random((2, 1, 28, 28)).astype(np.float32)
    return [ImageRecord(round_, c, x, np.array([3, 5]), rng.random((2, 4, 14, 14)).astype(np.float32), x, 0.01 * c)
            for c in (0, 1)]


def embedded_figures(report: str) -> list[dict]:
    """The data and layout of every ``Plotly.newPlot(id, data, layout, config)`` in the page."""
    decoder, out = json.JSONDecoder(), []
    for m in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', report):
        data, end = decoder.raw_decode(report, m.end())
        layout, _ = decoder.raw_decode(report, report.index("{", end))
        out.append({"data": data, "layout": layout})
    return out


def colours(figure: dict, names: list[str]) -> list[str]:
    by_name = {t.get("name"): t for t in figure["data"]}
    return [by_name[n].get("fillcolor") or by_name[n]["line"]["color"] for n in names]


@pytest.fixture(params=["plain", "streamlit"])
def template_default(request, monkeypatch):
    """Write the report with plotly's own default template, and as a Streamlit server has it."""
    if request.param == "streamlit":
        from streamlit.elements import plotly_chart  # noqa: F401  (installs and selects Streamlit's template)

        monkeypatch.setattr(pio.templates, "default", "streamlit")
    else:
        monkeypatch.setattr(pio.templates, "default", "plotly")
    return request.param


def test_report_gives_loss_terms_and_byte_kinds_distinct_real_colours(template_default):
    figs = embedded_figures(run_report(run(), history(), snapshots()))
    by_title = {f["layout"]["title"]["text"]: f for f in figs}
    terms = colours(by_title["Training-loss terms"], ["L (server)", "L~ (mixup)", "L^ (local)"])
    kinds = colours(by_title["Communication so far"], ["smashed data up", "gradients down", "models up", "models down"])
    for found, count in ((terms, 3), (kinds, 4)):
        assert len(set(found)) == count, found
        assert not any(PLACEHOLDER.match(c) for c in found), found
    for f in figs:  # the template travels with each figure, so the browser needs no default
        assert f["layout"]["template"]["layout"]["colorway"][0] == pio.templates["plotly_white"].layout.colorway[0]


def test_report_figures_have_titles(template_default):
    figs = embedded_figures(run_report(run(), history(), snapshots()))
    assert [f["layout"]["title"]["text"] for f in figs] == ["Test accuracy", "Test loss", "Training-loss terms",
                                                          "Communication so far"]


def test_report_shows_no_none_or_nan():
    report = run_report(run(), history(), snapshots())
    text = re.sub(r"<script.*?</script>", "", report, flags=re.DOTALL)  # what a reader sees, not plotly.js
    text = re.sub(r"<pre>.*?</pre>", "", text, flags=re.DOTALL)  # the config is JSON (null, false)
    assert not re.search(r"\bNone\b", text) and not re.search(r"\bnan\b", text, flags=re.IGNORECASE)
    assert "<th>rounds to the target accuracy</th><td>–</td>" in report
    assert "<th>training time (the rounds alone: evaluation and leakage measurement excluded)</th><td>–</td>" in report


def test_report_snapshots_have_headers_and_the_averaging_note():
    report = run_report(run(), history(), snapshots(round_=4))
    assert report.count("<img ") == 2 and "client 1, round 4, reconstruction MSE 0.01" in report
    assert "Why the clients look alike" in report  # T_c = 2 divides round 4
    assert "Why the clients look alike" not in run_report(run(), history(), snapshots(round_=3))


def test_report_without_history_or_snapshots_has_no_empty_sections():
    report = run_report(run(summary={}), history().iloc[:0], [])
    assert "<h2>Curves</h2>" not in report and "InfoPro snapshots" not in report


def leaky_run() -> dict:
    summary = {"final_test_acc": 0.81, "leak_mse": 0.02, "leak_psnr": 17.25, "leak_ssim": 0.5, "leak_dcor": 0.9,
               "leak_mi": 1.75, "leak_client": 0, "leak_round": 4}
    return run(summary)


def leaky_history():
    nan = float("nan")
    return history().assign(leak_psnr=[nan, 15.0, nan, 17.25], leak_ssim=[nan, 0.4, nan, 0.5],
                            leak_dcor=[nan, 0.8, nan, 0.9], leak_mi=[nan, 1.5, nan, 1.75])


def attack_record(with_infopro: bool = True) -> ImageRecord:
    x = snapshots()[0].inputs
    scores = {"psnr": np.array([20.0, 21.0]), "ssim": np.array([0.7, 0.75])} if with_infopro else {}
    return ImageRecord(4, 0, x, np.array([3, 5]), np.zeros((2, 4, 14, 14), np.float32),
                       x if with_infopro else None, 0.01 if with_infopro else None, attack=x * 0.9,
                       attack_psnr=np.array([17.0, 17.5]), attack_ssim=np.array([0.5, 0.5]), **scores)


def test_report_shows_what_the_server_can_see(template_default):
    report = run_report(leaky_run(), leaky_history(), snapshots(), attack_record())
    assert "<h2>What the server can see</h2>" in report and "Leakage measured at round 4 on client 0" in report
    for row in ("<th>attack PSNR (dB)</th><td>17.25</td>", "<th>attack SSIM</th><td>0.500</td>",
                "<th>distance correlation</th><td>0.900</td>", "<th>mutual information (nats)</th><td>1.750</td>",
                "<th>attack MSE</th><td>0.0200</td>"):
        assert row in report, row
    figs = {f["layout"]["title"]["text"]: f for f in embedded_figures(report)}
    quality = figs["What the server reconstructs, over rounds"]
    dependence = figs["How much the smashed data depend on the inputs, over rounds"]
    assert [t["name"] for t in quality["data"]] == ["attack PSNR (dB)", "attack SSIM"]
    assert [t["name"] for t in dependence["data"]] == ["distance correlation", "mutual information (nats)"]
    for f in (quality, dependence):
        found = [t["line"]["color"] for t in f["data"]]
        assert len(set(found)) == 2 and not any(PLACEHOLDER.match(c) for c in found)
        assert f["layout"]["xaxis"]["title"]["text"] == "round"
    assert "alt='what the server reconstructs, round 4'" in report
    assert "the input, the client's own InfoPro reconstruction and the server's attack reconstruction" in report
    text = re.sub(r"<script.*?</script>|<pre>.*?</pre>", "", report, flags=re.DOTALL)
    assert not re.search(r"\bNone\b", text) and not re.search(r"\bnan\b", text, flags=re.IGNORECASE)


def test_report_of_a_run_without_infopro_shows_input_and_attack_only():
    report = run_report(leaky_run(), leaky_history(), [], attack_record(with_infopro=False))
    assert "the input and the server's attack reconstruction" in report and "InfoPro reconstruction" not in report
    assert report.count("<img ") == 1


def test_report_inlines_plotly_once_for_the_curves_and_the_leakage_figures():
    report = run_report(leaky_run(), leaky_history(), [], None)
    assert len(embedded_figures(report)) == 6 and report.count("Plotly.newPlot") == 6
    assert report.count("* plotly.js v") == 1  # the library inlined once, before the first figure


def test_report_of_a_run_that_never_measured_has_no_leakage_section():
    assert "What the server can see" not in run_report(run(), history(), snapshots(), None)
