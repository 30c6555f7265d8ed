"""End to end in a real browser: start the app, submit a small run, watch its curve appear.

Headless Debian Chromium driven by Playwright (its own browser download does not work here).
Screenshots of every page go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run installs it (apt-get install chromium chromium-driver)")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium chromium-driver)", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@pytest.fixture
def app_url(tmp_path):
    """The real app (and, through it, a real worker) on a free port with a temporary database."""
    port = free_port()
    env = {**os.environ, "SPLITLAB_DB": f"sqlite:///{tmp_path / 'e2e.db'}",
           "SPLITLAB_WORKER_LOG": str(tmp_path / "worker.log")}
    env.pop("SPLITLAB_NO_WORKER", None)
    env.pop("SPLITLAB_READONLY", None)
    server_log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                               "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                              cwd=ROOT, env=env, stdout=server_log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/_stcore/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=20)
        server_log.close()
        # the worker the app started runs in its own session: stop it too
        subprocess.run(["pkill", "-KILL", "-f", f"worker --db sqlite:///{tmp_path / 'e2e.db'}"], check=False)
        SHOTS.mkdir(parents=True, exist_ok=True)
        for log in ("server.log", "worker.log"):
            if (tmp_path / log).exists():
                shutil.copy(tmp_path / log, SHOTS / log)


def set_number(page, label: str, value: int | float) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_timeout(400)


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the (first) selectbox called ``label``: Streamlit's selectbox is a searchable input."""
    box = page.get_by_label(label, exact=True).first
    box.click()
    box.fill(option)
    box.press("Enter")
    page.wait_for_timeout(400)


def shoot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(800)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_submit_a_run_and_watch_it_learn(app_url):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
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
            page.wait_for_timeout(2500)  # let the charts draw
            assert not page.get_by_text("Traceback").count(), name
            assert not page.locator("[data-testid='stException']").count(), name
            shoot(page, name)
        browser.close()
