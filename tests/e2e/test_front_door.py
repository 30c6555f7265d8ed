"""The front door in a real browser (issue 26, items 1-3 and the Sweep tab of item 7).

- A fresh clone with no data folder opens New run on the built-in digits, and its first run trains.
- A number the browser cannot hold exactly (huge integers, decimals or exponents in whole-number
  fields) is refused as typed, naming the field as labelled; Queue is off and no run is created.
- A run certain to fail (more items per client than the data has) is refused under the data section.
- A data set that is not here says so, blocks Queue, and its Get button downloads it with a progress
  bar (from a mirror on loopback), or says in one line where to put the files.
- The Sweep tab names its fields, feeds the leakage scatter, and a double click queues its grid once.

Screenshots go to ``artifacts/screenshots/front-door-*.png``.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storage import queries
from storage.db import close, connect
from storage.worker import process_gone
from tests.e2e.support import (
    ROOT,
    App,
    choose,
    keep_logs,
    launch_app,
    playwright,
    run_count,
    settle,
    shoot,
    stop_app,
    type_into,
    wait_for_run_end,
)

expect = playwright.expect  # waits for what the next script run draws, instead of reading the last one's

CLONE_PARTS = ("app.py", "pages", "engine", "storage", ".streamlit")  # what `make run` serves
SHARED_FASHION = ROOT.parent / "shared" / "data" / "FashionMNIST" / "raw"
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz")
ONE_RUN, SWEEP = "One run", "Sweep (techniques × n × defense)"
VIEW = {"width": 1400, "height": 1600}


def body_text(page) -> str:
    return page.locator("[data-testid='stMain']").inner_text()


def selectbox_text(scope, label: str) -> str:
    """What the selectbox called ``label`` shows (its chosen option, or the text typed to search)."""
    box = scope.locator("[data-testid='stSelectbox']").filter(has=scope.page.get_by_label(label, exact=True)).first
    return box.inner_text().removeprefix(label).strip() or box.get_by_label(label, exact=True).input_value()


def open_new_run(page, url: str):
    """New run, drawn; its One run tab's panel."""
    page.goto(url)
    try:
        page.get_by_role("button", name="Queue run").wait_for(timeout=60_000)
    except Exception:
        shoot(page, "front-door-new-run-not-drawn")
        raise
    settle(page)
    return page.get_by_role("tabpanel", name=ONE_RUN)


# --------------------------------------------------------------------------- an app on a fresh clone


@pytest.fixture
def start_clone(tmp_path) -> Iterator[Callable[..., App]]:
    """Start the app from a copy of the project with no data folder beside it, as on a fresh clone:
    ``$SPLITLAB_DATA`` is an empty folder, and neither ``./data`` nor ``../shared/data`` exists.
    ``start_clone(worker=True, env={...})``; the app, and the worker it started, stop afterwards."""
    started: list[App] = []
    clone = tmp_path / "clone" / "main"
    for part in CLONE_PARTS:
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, clone / part, ignore=shutil.ignore_patterns("__pycache__", "*.db*"))
        else:
            clone.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, clone / part)
    data = tmp_path / "data"
    data.mkdir()

    def start(worker: bool = True, env: dict[str, str] | None = None) -> App:
        db_url = f"sqlite:///{tmp_path / 'front-door.db'}"
        run_env = {k: v for k, v in os.environ.items()
                   if k not in ("SPLITLAB_NO_WORKER", "SPLITLAB_READONLY", "SPLITLAB_DATA_MIRROR")}
        run_env.update(SPLITLAB_DB=db_url, SPLITLAB_DATA=str(data), SPLITLAB_WORKER_LOG=str(tmp_path / "worker.log"),
                       **(env or {}))
        if not worker:
            run_env["SPLITLAB_NO_WORKER"] = "1"
        app = launch_app(clone, run_env, db_url, data, tmp_path / "front-door-server.log")
        started.append(app)
        return app

    yield start
    for app in started:
        stop_app(app)
        stop_workers(app.db_url)
        close(app.db_url)
    keep_logs(tmp_path)


def stop_workers(db_url: str) -> None:
    """The workers the app started stop with it; any that has not within 20 s is killed, by its pid."""
    with connect(db_url).read() as s:
        workers, _ = queries.all_workers(s)
    deadline = time.time() + 20
    for w in workers:
        while not process_gone(w.worker_id) and time.time() < deadline:
            time.sleep(0.2)
        pid = w.worker_id.rpartition(":")[2]
        if not process_gone(w.worker_id) and pid.isdigit():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def test_a_fresh_clone_opens_on_digits_and_its_first_run_trains(start_clone, browser):
    app = start_clone(worker=True)
    page = browser.new_page(viewport=VIEW)
    one_run = open_new_run(page, app.url)
    assert selectbox_text(one_run, "data set") == "digits (here)"
    one_run.get_by_label("data set", exact=True).click()
    options = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    assert options == ["fashion-mnist (not downloaded)", "cifar10 (not downloaded)", "digits (here)",
                       "synthetic (here)"]
    for label, text in (("clients n", "2"), ("rounds T", "4"), ("evaluate every (rounds)", "2"),
                        ("images every (rounds, 0: never)", "0")):
        type_into(page, label, text, one_run)
    one_run.get_by_text(re.compile(r"· digits · 2 clients × 4 rounds × b=64")).wait_for(timeout=10_000)
    shoot(page, "front-door-1-fresh-clone")
    page.get_by_role("button", name="Queue run").click()
    page.wait_for_url("**/live?run=*", timeout=30_000)
    run_id = int(page.url.rsplit("run=", 1)[1])
    run = wait_for_run_end(app.db_url, run_id, 180)  # the worker the app started trains it
    assert (run.status.value, run.error) == ("finished", None)
    assert run.config["data"]["dataset"] == "digits"
    page.get_by_text("round 4/4").first.wait_for(timeout=30_000)
    shoot(page, "front-door-2-first-run-finished")


# --------------------------------------------------------------------------- numbers, exactly

REFUSED = [  # (form label, typed, the message)
    ("clients n", "99999999999999999999", "clients n must be between 1 and 1000, got 99,999,999,999,999,999,999"),
    ("seed", "99999999999999999999", "seed must be between 0 and 2,147,483,647, got 99,999,999,999,999,999,999"),
    ("rounds T", "9007199254740993", "rounds T must be between 1 and 100,000, got 9,007,199,254,740,993"),
    ("clients n", "1.5", "clients n must be a whole number, got 1.5"),
    ("clients n", "1e3", "clients n must be a whole number, got 1e3"),
    ("rounds T", "2.7", "rounds T must be a whole number, got 2.7"),
]


def test_numbers_the_browser_cannot_hold_are_refused_as_typed(start_app, browser):
    app = start_app()
    page = browser.new_page(viewport=VIEW)
    one_run = open_new_run(page, app.url)
    for i, (label, typed, message) in enumerate(REFUSED):  # one after another on one page, each put right
        type_into(page, "clients n", "7", one_run)  # a value first, so the summary has something to hold on to
        one_run.get_by_text(re.compile(r"7 clients × 300 rounds")).wait_for(timeout=10_000)
        before = one_run.get_by_label(label, exact=True).input_value()
        type_into(page, label, typed, one_run)
        assert one_run.get_by_label(label, exact=True).input_value() == typed, (label, typed)  # as typed
        one_run.get_by_text(message).first.wait_for(timeout=10_000)
        settle(page)
        assert typed in message.replace(",", "")  # the text typed, digit for digit (9,007,199,254,740,993)
        queue = page.get_by_role("button", name="Queue run")
        expect(queue).to_be_disabled()
        assert "× b=" not in body_text(page), (label, typed)  # no summary: no other value is claimed
        queue.click(force=True)
        page.wait_for_timeout(500)
        assert run_count(app.db_url) == 0, (label, typed)
        if i in (2, 3):
            shoot(page, f"front-door-refused-{label.replace(' ', '-')}-{typed}")
        type_into(page, label, before, one_run)  # put right: the message goes and Queue is on again
        expect(one_run.get_by_text(message)).to_have_count(0)
        expect(queue).to_be_enabled()
    close(app.db_url)


def test_items_per_client_beyond_the_data_is_refused_under_the_data_section(start_app, browser):
    app = start_app()
    page = browser.new_page(viewport=VIEW)
    one_run = open_new_run(page, app.url)
    choose(page, "data set", "digits")
    settle(page)
    type_into(page, "items per client (0: default)", "1000000000", one_run)
    message = one_run.get_by_text("items per client (0: default) must be at most the 1,437 training samples of "
                                  "digits (each client draws distinct items), got 1,000,000,000")
    message.wait_for(timeout=10_000)
    settle(page)
    data_top = one_run.get_by_text("Data", exact=True).bounding_box()["y"]
    scale_top = one_run.get_by_text("Scale and optimiser", exact=True).bounding_box()["y"]
    assert data_top < message.bounding_box()["y"] < scale_top  # under the data section
    expect(page.get_by_role("button", name="Queue run")).to_be_disabled()
    page.get_by_role("button", name="Queue run").click(force=True)
    page.wait_for_timeout(500)
    assert run_count(app.db_url) == 0
    shoot(page, "front-door-items-per-client")
    close(app.db_url)


# --------------------------------------------------------------------------- getting a data set


class Mirror:
    """Fashion-MNIST's distribution files on loopback (the real ones, so torchvision's checksums hold),
    as torchvision's mirror. ``up`` False: every request answers 503, as a mirror that cannot be reached.
    The first file stops half way until ``go_on`` is set, so the test sees the progress bar mid-way."""

    def __init__(self, folder: Path):
        self.folder, self.up, self.go_on = folder, False, threading.Event()
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):
                self.answer(body=False)

            def do_GET(self):
                self.answer(body=True)

            def answer(self, body: bool) -> None:
                path = mirror.folder / self.path.strip("/")
                if not mirror.up or not path.is_file():
                    self.send_error(503 if not mirror.up else 404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not body:
                    return
                half = len(data) // 2 if path.name == FASHION_FILES[0] else len(data)
                self.wfile.write(data[:half])
                self.wfile.flush()
                mirror.go_on.wait(timeout=120)
                self.wfile.write(data[half:])

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def mirror(tmp_path) -> Iterator[Mirror]:
    if not all((SHARED_FASHION / f).is_file() for f in FASHION_FILES):
        pytest.skip(f"Fashion-MNIST's distribution files are not in {SHARED_FASHION}")
    served = tmp_path / "mirror"
    served.mkdir()
    for f in FASHION_FILES:
        shutil.copy(SHARED_FASHION / f, served)
    m = Mirror(served)
    m.thread.start()
    yield m
    m.go_on.set()
    m.server.shutdown()
    m.thread.join()


def test_a_missing_data_set_is_got_with_a_progress_bar_or_said_where_to_put(start_clone, mirror, browser):
    app = start_clone(worker=False, env={"SPLITLAB_DATA_MIRROR": mirror.url})
    page = browser.new_page(viewport=VIEW)
    one_run = open_new_run(page, app.url)
    choose(page, "data set", "fashion-mnist")
    settle(page)
    assert selectbox_text(one_run, "data set") == "fashion-mnist (not downloaded)"
    one_run.get_by_text("data set must be a data set this host has: Fashion-MNIST is in none of its data folders",
                        exact=False).wait_for(timeout=10_000)
    queue = page.get_by_role("button", name="Queue run")
    expect(queue).to_be_disabled()
    get = one_run.get_by_role("button", name="Get Fashion-MNIST")

    get.click()  # the mirror is down: one line says where to put the files
    failed = one_run.locator("[data-testid='stAlert']").filter(has_text="Fashion-MNIST was not downloaded")
    failed.wait_for(timeout=60_000)
    line = failed.inner_text()
    assert "\n" not in line.strip() and "HTTP 503" in line
    assert f"in {app.folder / 'FashionMNIST' / 'raw'}" in line  # the folder the worker reads first
    expect(queue).to_be_disabled()
    assert run_count(app.db_url) == 0
    shoot(page, "front-door-get-failed")

    mirror.up = True
    get.click()
    bar = one_run.locator("[data-testid='stProgress']")
    bar.wait_for(timeout=60_000)
    page.get_by_text(re.compile(r"Downloading Fashion-MNIST: \d+\.\d of 30\.9 MB")).wait_for(timeout=30_000)
    expect(one_run.get_by_text("was not downloaded", exact=False)).to_have_count(0)  # the bar took its place
    shoot(page, "front-door-get-progress")
    mirror.go_on.set()
    get.wait_for(state="detached", timeout=120_000)  # here now: nothing left to get
    settle(page)
    assert selectbox_text(one_run, "data set") == "fashion-mnist (here)"  # still the data set chosen
    assert bar.count() == 0 and "was not downloaded" not in body_text(page)
    expect(queue).to_be_enabled()
    assert all((app.folder / "FashionMNIST" / "raw" / f).is_file() for f in FASHION_FILES)
    shoot(page, "front-door-get-done")
    queue.click()
    page.wait_for_url("**/live?run=*", timeout=30_000)
    with connect(app.db_url).read() as s:
        (run,) = queries.list_runs(s)
    assert run.config["data"]["dataset"] == "fashion-mnist"


# --------------------------------------------------------------------------- the Sweep tab


def test_sweep_names_its_fields_feeds_the_leakage_scatter_and_queues_once(start_app, browser):
    app = start_app()
    page = browser.new_page(viewport=VIEW)
    open_new_run(page, app.url)
    page.get_by_role("tab", name=SWEEP).click()
    sweep = page.get_by_role("tabpanel", name=SWEEP)
    queue = sweep.get_by_role("button", name="Queue sweep")
    queue.wait_for()
    for typed, message in (("-2", "clients n must be between 1 and 1000, got -2 (every row)"),
                           ("5,1.5", "clients n: 1.5 is not a whole number; give whole numbers separated by commas"),
                           ("5,5", "clients n: 5 appears more than once; give each n once")):
        type_into(page, "clients n (comma-separated)", typed, sweep)
        sweep.get_by_text(message, exact=False).wait_for(timeout=10_000)
        settle(page)
        expect(queue).to_be_disabled()
        assert "-2 is not a whole number" not in body_text(page)  # -2 is one: out of range, and said so
        queue.click(force=True)
        page.wait_for_timeout(300)
        assert run_count(app.db_url) == 0, typed
    shoot(page, "front-door-sweep-refused")
    type_into(page, "clients n (comma-separated)", "3", sweep)
    for label, text in (("rounds", "20"), ("evaluate every", "5"), ("leakage every (rounds, 0: off)", "10")):
        type_into(page, label, text, sweep)
    sweep.get_by_text(re.compile(r"^8 runs: 8 combinations × 1 value of n \(3\)")).wait_for(timeout=10_000)
    expect(queue).to_be_enabled()
    queue.dblclick()  # a double click queues the grid once
    sweep.get_by_text("Queued 8 runs: #1–#8.", exact=False).wait_for(timeout=30_000)
    settle(page)
    expect(queue).to_be_disabled()
    assert run_count(app.db_url) == 8
    with connect(app.db_url).read() as s:
        runs = queries.list_runs(s)
    assert {(r.config["num_clients"], r.config["rounds"], r.config["eval_every"], r.config["privacy"]["every"])
            for r in runs} == {(3, 20, 5, 10)}
    shoot(page, "front-door-sweep-queued")
    type_into(page, "seed", "1", sweep)  # another grid: Queue sweep is on again
    expect(queue).to_be_enabled()
    expect(sweep.get_by_text("Queued 8 runs", exact=False)).to_have_count(0)
    assert run_count(app.db_url) == 8
    close(app.db_url)
