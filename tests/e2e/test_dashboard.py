"""The dashboard does exactly what its user asked, in a real browser (issue 13, items 1-4).

- An action applies to the run the user picked, even after new runs were inserted above it.
- A value outside its range blocks Queue with a message naming the field, and no run is created.
- No URL shows a traceback, and a link that names no run says so instead of showing another run.
"""

from __future__ import annotations

import re
import signal
import time

import pytest

from engine.config import validate_config
from storage import queries
from storage.db import close, connect
from storage.worker import process_gone
from tests.e2e.support import playwright, set_number, settle, shoot

expect = playwright.expect

QUEUED = {"num_clients": 2, "rounds": 5, "batch_size": 8, "data": {"dataset": "synthetic"}}
ROW_HEIGHT, HEADER_HEIGHT = 35, 35  # Streamlit's data grid, in CSS pixels


def queue_runs(db_url: str, *names: str) -> list[int]:
    with connect(db_url).write() as s:
        return [queries.create_run(s, validate_config({**QUEUED, "name": name})) for name in names]


def statuses(db_url: str) -> dict[int, str]:
    with connect(db_url).read() as s:
        return {r.id: r.status.value for r in queries.list_runs(s)}


def click_row(page, index: int) -> None:
    """Click the selection box of the ``index``-th data row of the (first) data grid."""
    grid = page.locator("[data-testid='stDataFrame']").first
    grid.wait_for()
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 14, box["y"] + HEADER_HEIGHT + index * ROW_HEIGHT + ROW_HEIGHT / 2)


def page_text(page) -> str:
    return page.locator("body").inner_text()


def test_cancel_hits_the_selected_run_after_a_new_run_appears_above_it(start_app, browser):
    app = start_app()
    queue_runs(app.db_url, "first", "second", "third")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{app.url}/runs")
    page.get_by_role("heading", name="Runs").wait_for(timeout=60_000)
    settle(page)
    click_row(page, 1)  # newest first: #3, #2, #1
    cancel = page.get_by_role("button", name="Cancel #2")
    cancel.wait_for(timeout=20_000)
    assert "runs?run=2" in page.url

    queue_runs(app.db_url, "fourth")  # appears at the top of the table at the next refresh
    page.locator("[data-testid='stDataFrame'] td", has_text="fourth").wait_for(state="attached", timeout=20_000)
    page.wait_for_timeout(2500)  # one more refresh with the new row above the selection
    shoot(page, "runs-selection-after-insert")
    assert page.get_by_role("heading", name="#2 second").count() == 1
    assert page.get_by_role("button", name=re.compile(r"^Cancel #")).all_inner_texts() == ["Cancel #2"]
    cancel.click()
    page.get_by_text("queued, cancel requested").or_(page.get_by_text("cancelled")).first.wait_for(timeout=20_000)
    assert statuses(app.db_url) == {1: "queued", 2: "cancelled", 3: "queued", 4: "queued"}
    close(app.db_url)


OUT_OF_RANGE = [  # (form label, typed value, what the message must say)
    ("clients n", "100000", "clients n must be between 1 and 1000, got 100,000"),
    ("clients n", "0", "clients n must be between 1 and 1000, got 0"),
    ("clients n", "-5", "clients n must be between 1 and 1000, got -5"),
    ("rounds T", "1000000000", "rounds T must be between 1 and 100,000, got 1,000,000,000"),
    ("rounds T", "0", "rounds T must be between 1 and 100,000, got 0"),
    ("learning rate η", "-1", "learning rate η must be greater than 0 and at most 10, got -1"),
    ("learning rate η", "1000000000", "learning rate η must be greater than 0 and at most 10, got 1e+09"),
    ("batch size b", "0", "batch size b must be between 1 and 4096, got 0"),
]


def test_every_out_of_range_field_blocks_queue_and_creates_no_run(start_app, browser):
    app = start_app()
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.goto(app.url)
    page.get_by_role("button", name="Queue run").wait_for(timeout=60_000)
    settle(page)
    for label, value, message in OUT_OF_RANGE:  # one after another on one page, each put right before the next
        before = page.get_by_label(label, exact=True).input_value()
        set_number(page, label, value)
        settle(page)
        assert page.get_by_label(label, exact=True).input_value().replace(",", "") in (value, f"{float(value):g}")
        page.get_by_text(message, exact=False).first.wait_for(timeout=10_000)
        assert page.get_by_role("button", name="Queue run").is_disabled(), (label, value)
        assert "clients ×" not in page_text(page)  # no summary of a config that would not be queued
        page.get_by_role("button", name="Queue run").click(force=True)
        page.wait_for_timeout(800)
        assert statuses(app.db_url) == {}, (label, value)
        if label == OUT_OF_RANGE[-1][0]:
            shoot(page, "new-run-out-of-range")
        set_number(page, label, before)  # put right, the message goes and Queue is on again
        settle(page)
        expect(page.get_by_text(message, exact=False)).to_have_count(0)
        expect(page.get_by_role("button", name="Queue run")).to_be_enabled()
        assert "clients ×" in page_text(page), (label, before)
    # a value in range is queued exactly as typed
    set_number(page, "clients n", 7)
    set_number(page, "rounds T", 12)
    settle(page)
    assert "7 clients × 12 rounds" in page_text(page)
    page.get_by_role("button", name="Queue run").click()
    page.wait_for_url("**/live?run=*", timeout=30_000)
    with connect(app.db_url).read() as s:
        (run,) = queries.list_runs(s)
    assert (run.config["num_clients"], run.rounds) == (7, 12)
    close(app.db_url)


BAD_LINKS = ["run?run=99999999999999999999999", "run?run=abc", "run?run=1.5", "run?run=", "run?run=1';DROP TABLE runs",
             "run?run=-1", "live?run=999", "live?run=abc", "runs?run=999", "infopro?run=x", "run?run=0"]


@pytest.mark.parametrize("readonly", [True, False], ids=["read-only", "full"])
def test_no_url_shows_a_traceback_and_a_bad_link_says_so(start_app, browser, readonly):
    app = start_app(readonly=readonly)
    (run_id,) = queue_runs(app.db_url, "the only run")
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    for path in BAD_LINKS:
        page.goto(f"{app.url}/{path}")
        try:
            page.get_by_text(re.compile(r"There is no run|This link names no run")).first.wait_for(timeout=30_000)
            page.get_by_role("link", name=re.compile(rf"#{run_id} the only run")).wait_for(timeout=30_000)
        except playwright.TimeoutError:
            shoot(page, "bad-link-failed")
            raise AssertionError(f"{path}: no 'there is no run' message with a link to #{run_id}") from None
        settle(page)
        text = page_text(page)
        assert "Traceback" not in text, path
        assert not re.findall(r".{0,60}\w+(?:Error|Exception)\b.{0,60}", text, re.DOTALL), path
        assert "site-packages" not in text, path
        assert not readonly or str(app.folder) not in text, path  # a public host shows no server path
        assert page.locator("[data-testid='stException']").count() == 0, path
        assert page.get_by_role("link", name=re.compile(rf"#{run_id} the only run")).count() == 1, path
        assert "run=" + path.split("run=")[1] in page.url.replace("%27", "'").replace("%20", " "), path  # not rewritten
        if path == "run?run=abc":
            assert "There is no run abc" in text
            shoot(page, f"bad-link-{'readonly' if readonly else 'full'}")
    # the list's link opens the run
    page.get_by_role("link", name=re.compile(rf"#{run_id} the only run")).click()
    page.get_by_role("heading", name=f"Run #{run_id}: the only run").wait_for(timeout=30_000)
    if readonly:
        assert page.get_by_role("button", name=re.compile("Cancel|Delete|Re-run")).count() == 0
        page.goto(f"{app.url}/runs")
        page.get_by_text("Select a row to open its live view or result page.").wait_for(timeout=30_000)
        assert page.get_by_text("Deploy").count() == 0
    close(app.db_url)


def test_stopping_the_app_with_ctrl_c_stops_the_worker_it_started(start_app, browser):
    app = start_app(worker=True)
    page = browser.new_page()
    page.goto(app.url)
    page.get_by_text(re.compile(r"Worker \S+: idle")).wait_for(timeout=60_000)  # the app started one
    with connect(app.db_url).read() as s:
        (worker,) = queries.live_workers(s, 30)
    app.server.send_signal(signal.SIGINT)  # what Ctrl-C on `make run` sends to the server
    app.server.wait(timeout=30)
    deadline = time.time() + 20
    while time.time() < deadline and not process_gone(worker.worker_id):
        time.sleep(0.2)
    assert process_gone(worker.worker_id), "the worker outlived the app"
    with connect(app.db_url).read() as s:
        assert queries.live_workers(s, 30) == []  # it removed itself on the way out
    close(app.db_url)

