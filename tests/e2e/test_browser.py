"""End to end in a real browser: start the app, submit a small run, watch its curve appear.

The app, the browser and the screenshot helpers come from ``conftest.py``.
"""

from __future__ import annotations

from tests.e2e.support import choose, set_number, settle, shoot, wait_drawn


def test_submit_a_run_and_watch_it_learn(start_app, browser):
    app_url = start_app(worker=True).url
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.get_by_text("Queue run").wait_for(timeout=60_000)
    page.get_by_text("Worker ").first.wait_for(timeout=60_000)  # the app started a worker by itself
    choose(page, "data set", "digits")
    set_number(page, "clients n", 4)
    set_number(page, "rounds T", 30)
    set_number(page, "evaluate every (rounds)", 5)
    set_number(page, "images every (rounds, 0: never)", 10)
    shoot(page, "1-new-run")
    page.get_by_role("button", name="Queue run").click()
    page.wait_for_url("**/live?run=*", timeout=30_000)
    curve = page.locator(".js-plotly-plot .scatterlayer .trace").first
    curve.wait_for(timeout=120_000)
    page.get_by_text("round 30/30").wait_for(timeout=180_000)
    shoot(page, "2-live")
    for path, heading, name in (("runs?run=1", "Runs", "3-runs"), ("compare", "Compare", "4-compare"),
                                ("infopro?run=1", "InfoPro reconstructions", "5-infopro"),
                                ("latency", "Latency model", "6-latency"),
                                ("run?run=1", "Run #1: LocFedMix-SL", "7-result-page")):
        page.goto(f"{app_url}/{path}")
        page.get_by_role("heading", name=heading).wait_for(timeout=60_000)
        settle(page, 60_000)
        wait_drawn(page)  # the charts and images
        assert not page.get_by_text("Traceback").count(), name
        assert not page.locator("[data-testid='stException']").count(), name
        shoot(page, name)
