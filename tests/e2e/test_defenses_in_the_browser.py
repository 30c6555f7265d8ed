"""Defenses in a real browser (issue 27, parts 2 and 3), at 1400 px wide and on a 1280 x 720 screen:

- New run's Defenses group refuses a bad value as typed, naming the field as labelled (no run queued);
  a defended run typed there is queued with its defenses said, and a real worker trains it;
- the Sweep tab sweeps a defense's strengths and refuses a strength that is no number;
- Compare's trade-off scatter, InfoPro's "What the server can see" (with the undefended twin) and the
  result page, on runs written straight into storage;
- the walkthrough's upload step with a defense on.

Screenshots go to ``artifacts/screenshots/defense-*.png``.
"""

from __future__ import annotations

import re

import pytest

from storage.db import close
from tests.e2e.support import choose, run_count, settle, shoot, type_into, wait_drawn, wait_for_run_end
from tests.pages.test_defense_pages import LFM, leak_figures, store_run

expect = pytest.importorskip("playwright.sync_api").expect
playwright_errors = pytest.importorskip("playwright.sync_api")
WIDE = {"width": 1400, "height": 1600}
TALL = {"width": 1400, "height": 3200}  # Streamlit scrolls inside its main block: a tall window shows it all
SCREEN = {"width": 1280, "height": 720}
ONE_RUN, SWEEP = "One run", "Sweep (techniques × n × defense)"
NOISE, NOPEEK, BITS = "noise σ (0: off)", "NoPeek α (0: off)", "quantise to k bits (0: off)"


def main_text(page) -> str:
    return page.locator("[data-testid='stMain']").inner_text()


def no_traceback(page) -> str:
    text = main_text(page)
    assert "Traceback" not in text and page.locator("[data-testid='stException']").count() == 0
    assert not re.search(r"\bNone\b|\bnan\b", text)
    return text


def selectbox_shows(page, label: str) -> str:
    """The option the selectbox called ``label`` shows."""
    box = page.locator("[data-testid='stSelectbox']").filter(has=page.get_by_label(label, exact=True)).first
    return box.inner_text().removeprefix(label).strip() or box.get_by_label(label, exact=True).input_value()


def open_new_run(page, url: str):
    """New run, drawn; its One run tab's panel. On a loaded machine a fresh server's first page can stay blank
    (app.py's sidebar fragment overtaking the page's first run, "Bad delta path index"): then it is loaded again."""
    page.goto(url)
    queue = page.get_by_role("button", name="Queue run")
    try:
        queue.wait_for(timeout=60_000)
    except playwright_errors.TimeoutError:
        page.reload()
        queue.wait_for(timeout=60_000)
    settle(page)
    return page.get_by_role("tabpanel", name=ONE_RUN)


def test_bad_defenses_are_refused_and_a_defended_run_trains(start_app, browser):
    app = start_app(worker=True)
    page = browser.new_page(viewport=WIDE)
    one_run = open_new_run(page, app.url)
    queue = page.get_by_role("button", name="Queue run")
    for label, typed, message in ((NOISE, "-1", "noise σ (0: off) must be between 0 and 100, got -1"),
                                  (NOPEEK, "abc", "NoPeek α (0: off) must be a finite number, got abc"),
                                  (BITS, "40", "quantise to k bits (0: off) must be between 0 and 16, got 40")):
        type_into(page, label, typed, one_run)
        assert one_run.get_by_label(label, exact=True).input_value() == typed  # kept as typed
        one_run.get_by_text(message).first.wait_for(timeout=20_000)
        one_run.get_by_text("Not queued: 1 value to fix above.").wait_for(timeout=10_000)
        expect(queue).to_be_disabled()
        assert "× b=" not in main_text(page)  # no summary line claims a run
        queue.click(force=True)
        page.wait_for_timeout(300)
        assert run_count(app.db_url) == 0, (label, typed)
        shoot(page, f"defense-1-refused-{label.split()[0]}-{typed}")
        type_into(page, label, "0", one_run)
        expect(one_run.get_by_text(message)).to_have_count(0)

    choose(page, "data set", "digits")
    settle(page)
    for label, text in ((NOISE, "0.5"), (NOPEEK, "0"), (BITS, "4"), ("clients n", "2"), ("rounds T", "2"),
                        ("evaluate every (rounds)", "2"), ("images every (rounds, 0: never)", "0"),
                        ("leakage every (rounds, 0: off)", "0")):
        type_into(page, label, text, one_run)
    summary = re.compile(r"digits · 2 clients × 2 rounds × b=64 · defenses: Gaussian noise σ = 0\.5 on the smashed "
                         r"data, 4-bit quantisation of the smashed data")
    one_run.get_by_text(summary).wait_for(timeout=10_000)
    shoot(page, "defense-2-typed")
    queue.click()
    page.wait_for_url("**/live?run=*", timeout=30_000)
    run_id = int(page.url.rsplit("run=", 1)[1])
    run = wait_for_run_end(app.db_url, run_id, 300)  # the worker the app started trains it
    assert (run.status.value, run.error) == ("finished", None)
    assert run.config["defense"] == {"noise": 0.5, "nopeek": 0.0, "bits": 4}
    finished = page.get_by_text(re.compile(r"^finished · 2/2 rounds · .* · digits · defenses: Gaussian noise σ = 0\.5 "
                                           r"on the smashed data, 4-bit quantisation of the smashed data · link"))
    for _ in range(20):  # the page reads the run through a cache of a few seconds: load it until it is current
        page.goto(f"{app.url}/run?run={run_id}")
        page.get_by_role("heading", name=f"Run #{run_id}").first.wait_for(timeout=60_000)
        settle(page)
        if finished.count():
            break
        page.wait_for_timeout(1000)
    expect(finished).to_have_count(1)
    no_traceback(page)
    shoot(page, "defense-3-trained-result-page")
    close(app.db_url)


def test_the_sweep_sweeps_a_defense_and_refuses_a_bad_strength(start_app, browser):
    app = start_app()
    page = browser.new_page(viewport=WIDE)
    open_new_run(page, app.url)
    page.get_by_role("tab", name=SWEEP).click()
    sweep = page.get_by_role("tabpanel", name=SWEEP)
    queue = sweep.get_by_role("button", name="Queue sweep")
    queue.wait_for()
    choose(page, "defense to sweep", "Gaussian noise")
    settle(page)
    type_into(page, "noise σ (comma-separated)", "0,abc", sweep)
    sweep.get_by_text("noise σ: abc is not a finite number; give finite numbers separated by commas",
                      exact=False).wait_for(timeout=10_000)
    expect(queue).to_be_disabled()
    shoot(page, "defense-4-sweep-refused")
    type_into(page, "noise σ (comma-separated)", "0,0.5", sweep)
    sweep.get_by_text(re.compile(r"^48 runs: 8 combinations × 3 values of n \(5, 10, 20\) × 2 values of noise σ "
                                 r"\(0, 0\.5; 0: no defense\)")).wait_for(timeout=10_000)
    expect(queue).to_be_enabled()
    shoot(page, "defense-5-sweep-grid")
    assert run_count(app.db_url) == 0
    close(app.db_url)


@pytest.fixture
def trade_off(start_app, tmp_path):
    """LocFedMix-SL undefended, with noise σ = 0.5 and 2 and with 4-bit quantisation, in storage; the app on it."""
    url = f"sqlite:///{tmp_path / 'e2e.db'}"
    ids = {}
    for label, defense, acc, psnr, shade in (("none", {}, 0.90, 24.0, 0.9), ("σ=0.5", {"noise": 0.5}, 0.88, 18.0, 0.5),
                                             ("σ=2", {"noise": 2.0}, 0.70, 12.0, 0.2),
                                             ("4-bit", {"bits": 4}, 0.87, 20.0, 0.7)):
        ids[label] = store_run(url, f"lfm {label}", {**LFM, "defense": defense}, acc,
                               leak_figures(psnr, psnr / 30, {"blackbox": psnr - 2, "whitebox": psnr}), shade=shade)
    close(url)
    return start_app(), ids


@pytest.mark.parametrize("view", [TALL, SCREEN], ids=["1400", "1280x720"])
def test_the_trade_off_pages_in_the_browser(trade_off, browser, view):
    app, ids = trade_off
    size = "1400" if view is TALL else "1280x720"
    page = browser.new_page(viewport=view)
    page.goto(f"{app.url}/compare")
    page.get_by_role("heading", name="Compare").first.wait_for(timeout=60_000)
    settle(page, 60_000)
    choose(page, "leakage measure", "attack PSNR (dB)")
    settle(page)
    page.get_by_text(re.compile("The dashed line is the Pareto front")).first.wait_for(timeout=20_000)
    chart = page.locator(".js-plotly-plot").filter(has_text="Privacy-utility trade-off").first
    chart.scroll_into_view_if_needed()
    wait_drawn(page)
    text = no_traceback(page)
    assert f"#{ids['σ=2']} (σ=2), #{ids['σ=0.5']} (σ=0.5), #{ids['none']} (no defense)" in text
    assert "Pareto front (no run beats these on both)" in chart.inner_text()
    shoot(page, f"defense-6-compare-{size}")

    page.goto(f"{app.url}/infopro?run={ids['σ=0.5']}")
    page.get_by_role("heading", name="What the server can see").first.wait_for(timeout=60_000)
    settle(page, 60_000)
    twin = page.get_by_text(re.compile(r"Without the defense: run #1, the same settings")).first
    twin.wait_for(timeout=20_000)
    text = no_traceback(page)
    assert "strongest attack's (white-box)" in text and "Defense: Gaussian noise σ = 0.5 on the smashed data" in text
    twin.scroll_into_view_if_needed()
    page.wait_for_timeout(800)
    shoot(page, f"defense-7-infopro-twin-{size}")
    close(app.db_url)


@pytest.mark.parametrize("view", [WIDE, SCREEN], ids=["1400", "1280x720"])
def test_the_walkthrough_upload_step_with_a_defense(start_app, browser, view):
    app = start_app()
    size = "1400" if view is WIDE else "1280x720"
    page = browser.new_page(viewport=view)
    page.goto(f"{app.url}/walkthrough?algo=locfedmix_sl&n=3&data=digits&defense=noise:0.5&step=3")
    page.get_by_text("pass through its defense", exact=False).first.wait_for(timeout=120_000)
    settle(page, 60_000)
    text = no_traceback(page)
    assert "Defense: Gaussian noise σ = 0.5 on the smashed data." in text
    assert "received vs computed, SNR" in text
    assert selectbox_shows(page, "defense") == "Gaussian noise σ = 0.5"
    shoot(page, f"defense-8-walkthrough-top-{size}")
    received = page.get_by_text("as the server receives them after the defense", exact=False).first
    received.wait_for(timeout=20_000)
    received.scroll_into_view_if_needed()
    shoot(page, f"defense-9-walkthrough-received-{size}")
