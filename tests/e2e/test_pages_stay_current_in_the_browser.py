"""Pages that stay current and a worker that comes back, in Chromium (issue 26, items 4, 5 and the favicon).

- The Runs page's panel follows its run without a reload: queued -> finished (Cancel off, Delete on);
  worker lost -> resumed. A Cancel clicked as the run finishes says it finished.
- Live, where Queue lands, shows why a run failed (its stored error), not "No evaluation step recorded yet".
- ``make run`` starts the worker with the server, before any visit; after ``kill -9`` the app starts a
  new one within seconds, and the open page's sidebar says so, without a reload.
- No page asks any host but the app's own for anything (the favicon included).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.config import validate_config
from storage import queries
from storage.db import close, connect
from storage.worker import process_gone
from tests.e2e.support import ROOT, free_port, playwright, settle, shoot, wait_for_http

TINY = {"num_clients": 2, "rounds": 5, "batch_size": 8, "eval_every": 5, "image_every": 0,
        "data": {"dataset": "synthetic", "eval_subset": 32}}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # two cores, shared with the server and the browser


def queue(db_url: str, **overrides) -> int:
    with connect(db_url).write() as s:
        return queries.create_run(s, validate_config({**TINY, **overrides}))


def run_state(db_url: str, run_id: int) -> queries.RunInfo:
    with connect(db_url).read() as s:
        return queries.get_run(s, run_id)


def wait_until(check, timeout: float, what: str, interval: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not within {timeout} s: {what}")


def worker(db_url: str, log: Path, *flags: str) -> subprocess.Popen:
    """A worker process started by hand (``python -m engine worker``)."""
    return subprocess.Popen([sys.executable, "-m", "engine", "worker", "--db", db_url, *flags], cwd=ROOT, env=ENV,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115


def stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def panel(page) -> str:
    """The selected run's caption ("finished · round 5 / 5 · ...")."""
    return page.locator("[data-testid='stCaptionContainer']", has_text=" · round ").first.inner_text()


def mark_page(page) -> None:
    """A mark in the page's window: a reload would remove it."""
    page.evaluate("window.__splitlab_mark = 'not reloaded'")


def not_reloaded(page) -> bool:
    return page.evaluate("window.__splitlab_mark") == "not reloaded"


def open_runs(page, app, run_id: int) -> None:
    page.goto(f"{app.url}/runs?run={run_id}")
    page.get_by_role("button", name=f"Live view #{run_id}").wait_for(timeout=60_000)
    settle(page)


# ---- item 4 -----------------------------------------------------------------------------------------------
def test_the_panel_of_a_queued_run_says_finished_when_it_finishes(start_app, browser, tmp_path):
    app = start_app()
    run_id = queue(app.db_url, name="soon done")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    open_runs(page, app, run_id)
    assert panel(page).startswith("queued · round 0 / 5")
    assert page.get_by_role("button", name=f"Cancel #{run_id}").is_enabled()
    assert page.get_by_role("button", name=f"Delete #{run_id}").is_disabled()
    mark_page(page)
    done = subprocess.run([sys.executable, "-m", "engine", "worker", "--db", app.db_url, "--once"], cwd=ROOT,
                          env=ENV, capture_output=True, timeout=300)
    assert done.returncode == 0 and run_state(app.db_url, run_id).status.value == "finished", done.stderr[-2000:]
    page.get_by_text(re.compile(r"^finished · round 5 / 5")).wait_for(timeout=20_000)
    assert not_reloaded(page)
    assert page.get_by_role("button", name=f"Cancel #{run_id}").is_disabled()
    assert page.get_by_role("button", name=f"Delete #{run_id}").is_enabled()
    shoot(page, "runs-panel-finished")
    page.get_by_role("button", name=f"Delete #{run_id}").click()
    page.get_by_role("button", name=f"Yes, delete #{run_id}").click()
    page.get_by_text(f"Run #{run_id} deleted.").wait_for(timeout=20_000)
    with connect(app.db_url).read() as s:
        assert queries.list_runs(s) == []
    close(app.db_url)


def test_the_panel_stops_saying_worker_lost_once_the_run_resumes(start_app, browser, tmp_path):
    app = start_app()
    run_id = queue(app.db_url, name="long", rounds=100_000, eval_every=1000)
    first = worker(app.db_url, tmp_path / "first-worker.log", "--checkpoint-every", "5")
    second = None
    try:
        wait_until(lambda: run_state(app.db_url, run_id).last_round >= 10, 120, "the first worker trains")
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        open_runs(page, app, run_id)
        page.get_by_text(re.compile(r"^running · round")).wait_for(timeout=20_000)
        mark_page(page)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        page.get_by_text(re.compile(r"^worker lost \(resumes at \d+\) · round")).wait_for(timeout=30_000)
        page.get_by_text("stopped reporting").wait_for(timeout=10_000)
        shoot(page, "runs-panel-worker-lost")
        second = worker(app.db_url, tmp_path / "second-worker.log")
        page.get_by_text(re.compile(r"^running · round")).wait_for(timeout=120_000)  # taken over, resumed
        wait_until(lambda: "worker lost" not in panel(page), 10, "the panel leaves 'worker lost'")
        assert page.get_by_text("stopped reporting").count() == 0
        assert not_reloaded(page)
        shoot(page, "runs-panel-resumed")
        with open(tmp_path / "second-worker.log") as log:
            assert f"run {run_id} resumes from its checkpoint" in log.read()
        with connect(app.db_url).write() as s:
            queries.request_cancel(s, run_id)
        page.get_by_text(re.compile(r"^cancelled · round")).wait_for(timeout=60_000)
    finally:
        for proc in (first, second):
            if proc is not None:
                stop(proc)
    close(app.db_url)


def test_cancel_clicked_as_the_run_finishes_says_it_finished(start_app, browser):
    """The panel shows the run running; it finishes (the database says so) and the user clicks Cancel before
    the next refresh: the page says the run finished, instead of doing nothing. When the refresh wins the
    race instead, the button is off already; then the next attempt tries again."""
    app = start_app()
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    for attempt in range(4):
        run_id = queue(app.db_url, name=f"racing {attempt}")
        with connect(app.db_url).write() as s:
            assert queries.claim_next_run(s, "elsewhere:1").id == run_id
        open_runs(page, app, run_id)
        page.get_by_text(re.compile(r"^(running|worker lost).* · round 0 / 5")).wait_for(timeout=20_000)
        cancel = page.get_by_role("button", name=f"Cancel #{run_id}")
        cancel.wait_for()
        assert cancel.is_enabled()
        with connect(app.db_url).write() as s:
            queries.mark_finished(s, run_id, "elsewhere:1", {"rounds_done": 5, "stopped": False}, 5)
        try:
            cancel.click(timeout=1500)
        except playwright.TimeoutError:  # the refresh came first: the panel says finished, Cancel is off
            page.get_by_text(re.compile(r"^finished · round 5 / 5")).wait_for(timeout=10_000)
            assert cancel.is_disabled()
            continue
        page.get_by_text(f"Run #{run_id} finished before it could be cancelled.").wait_for(timeout=20_000)
        page.get_by_text(re.compile(r"^finished · round 5 / 5")).wait_for(timeout=10_000)
        assert cancel.is_disabled()
        assert run_state(app.db_url, run_id).status.value == "finished"
        shoot(page, "runs-cancel-after-finish")
        break
    else:
        pytest.fail("the refresh came first in every attempt: no click reached a run that had just finished")
    close(app.db_url)


def test_live_shows_why_a_run_failed_where_queue_lands(start_app, browser, tmp_path):
    from engine.data import available

    if available("cifar10"):
        pytest.skip("CIFAR-10 is on this machine: the run would train instead of failing")
    app = start_app()
    run_id = queue(app.db_url, name="no data", data={"dataset": "cifar10", "data_dir": str(tmp_path / "empty")})
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{app.url}/live?run={run_id}")
    page.get_by_text("No evaluation step recorded yet").wait_for(timeout=60_000)  # queued: a point is to come
    mark_page(page)
    done = subprocess.run([sys.executable, "-m", "engine", "worker", "--db", app.db_url, "--once"], cwd=ROOT,
                          env=ENV, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    error = page.get_by_text(f"Run #{run_id} no data failed:")
    error.wait_for(timeout=20_000)
    shown = page.locator("[data-testid='stAlertContentError']").first.inner_text()
    stored = run_state(app.db_url, run_id).error
    assert "cifar10" in shown.lower() and "cifar10" in stored.lower()
    assert not re.search(r"\w+(Error|NotFound|Exception):", shown), shown
    wait_until(lambda: page.get_by_text("No evaluation step recorded yet").count() == 0, 10,
               "the waiting note goes")
    assert not_reloaded(page)
    shoot(page, "live-failed-run")
    close(app.db_url)


# ---- item 5 -----------------------------------------------------------------------------------------------
def live_worker_ids(db_url: str) -> list[str]:
    with connect(db_url).read() as s:
        return [w.worker_id for w in queries.live_workers(s, 10) if not process_gone(w.worker_id)]


def parent_command(pid: int) -> str:
    ppid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    return Path(f"/proc/{ppid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


NAVIGATION = {"New run", "Runs", "Live", "Compare", "InfoPro", "Latency", "Round walkthrough", "Result page"}
# every page name the sidebar's navigation shows, from the first paint on
RECORD_NAVIGATION = """window.__splitlab_nav = new Set();
new MutationObserver(() => document.querySelectorAll("[data-testid='stSidebarNavLink']").forEach(
    link => window.__splitlab_nav.add(link.innerText.trim().split("\\n").pop()))
).observe(document, {subtree: true, childList: true, characterData: true});"""


def test_make_run_starts_the_worker_with_the_server_and_starts_a_new_one_after_kill_9(browser, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'make-run.db'}"
    run_id = queue(db_url, name="waiting for a worker")
    port = free_port()
    env = {**ENV, "SPLITLAB_DB": db_url, "SPLITLAB_WORKER_LOG": str(tmp_path / "worker.log")}
    for name in ("SPLITLAB_NO_WORKER", "SPLITLAB_READONLY"):
        env.pop(name, None)
    server_log = open(tmp_path / "make-run.log", "wb")  # noqa: SIM115
    # the Makefile's own `run` recipe, with this interpreter and without its install step (no network here)
    make = ["make", "--no-print-directory", "-o", ".venv/.installed", "run", "VENV=.venv", f"PY={sys.executable}",
            f"PORT={port}"]
    server = subprocess.Popen(make, cwd=ROOT, env=env, stdout=server_log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    workers: list[int] = []
    try:
        wait_for_http(f"http://127.0.0.1:{port}/_stcore/health", timeout=120)
        # no page has been opened: the worker started with the server and trains the queued run
        wait_until(lambda: run_state(db_url, run_id).status.value == "finished", 180, "the queued run is trained")
        (first,) = wait_until(lambda: live_worker_ids(db_url), 30, "a live worker")
        workers.append(int(first.rpartition(":")[2]))
        assert "app.py" in parent_command(workers[0])  # the server's own child: it stops with the server

        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.add_init_script(RECORD_NAVIGATION)
        page.goto(f"http://127.0.0.1:{port}/runs")
        sidebar = page.locator("[data-testid='stSidebar']")
        sidebar.get_by_text(f"Worker {first}: idle").wait_for(timeout=60_000)
        # the server's first visitor never sees the files of pages/ listed (common, figures, form fields, ...)
        assert set(page.evaluate("[...window.__splitlab_nav]")) == NAVIGATION
        mark_page(page)
        os.kill(workers[0], signal.SIGKILL)
        killed_at = time.time()
        notice = sidebar.get_by_text(re.compile(rf"The worker \(pid {workers[0]}\) stopped \(killed by SIGKILL\) "
                                                r"at [\d:]+; started a new one \(pid (\d+)\)\."))
        notice.wait_for(timeout=15_000)
        noticed_after = time.time() - killed_at
        workers.append(int(re.search(r"new one \(pid (\d+)\)", notice.inner_text()).group(1)))
        sidebar.get_by_text(re.compile(rf"Worker \S+:{workers[1]}: idle")).wait_for(timeout=90_000)
        assert not_reloaded(page)
        assert noticed_after < 8, noticed_after  # the supervisor looks every second; the sidebar every 3 s
        shoot(page, "sidebar-worker-restarted")
        assert live_worker_ids(db_url) == [f"{first.rpartition(':')[0]}:{workers[1]}"]

        os.killpg(server.pid, signal.SIGINT)  # Ctrl-C on `make run`
        server.wait(timeout=60)
        wait_until(lambda: process_gone(f"{first.rpartition(':')[0]}:{workers[1]}"), 30,
                   "the new worker stops with the server")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        close(db_url)


# ---- item 7: the favicon, and nothing else from another host ------------------------------------------------
PAGES = ["", "runs", "live", "compare", "infopro", "latency", "run", "walkthrough"]


def test_no_page_asks_another_host_for_anything(start_app, browser):
    app = start_app()
    queue(app.db_url, name="listed")
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    for path in PAGES:
        page.goto(f"{app.url}/{path}")
        page.locator("[data-testid='stSidebar']").get_by_text("SplitLab").first.wait_for(timeout=60_000)
        settle(page, timeout_ms=120_000)
        page.wait_for_load_state("networkidle")
    elsewhere = [u for u in requests if not u.startswith((app.url, "data:", "blob:"))]
    assert elsewhere == []
    icon = page.evaluate("document.querySelector(\"link[rel~='icon']\").href")
    assert icon.startswith(app.url), icon
    answer = page.request.get(icon)
    assert answer.ok and answer.headers["content-type"].startswith("image/")
    assert any(u == icon for u in requests)  # the tab asked this server for it
    shoot(page, "favicon-local")
    close(app.db_url)
