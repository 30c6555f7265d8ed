"""Helpers for the browser tests: the app's processes, Chromium, and Streamlit's widgets as a person
uses them. Headless Debian Chromium driven by Playwright (its own browser download does not work
here). Screenshots go to ``artifacts/screenshots/``."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
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


@dataclass
class App:
    url: str
    db_url: str
    server: subprocess.Popen
    folder: Path


def launch_app(cwd: Path, env: dict[str, str], db_url: str, folder: Path, log: Path) -> App:
    """Start ``streamlit run app.py`` in ``cwd`` with exactly ``env`` on a free port, its output in
    ``log``, in its own process group (so :func:`stop_app` stops whatever it started); returns once it answers."""
    port = free_port()
    out = open(log.with_name(f"{log.stem}-{port}{log.suffix}"), "wb")  # noqa: SIM115 (closed with the server)
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                               "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                              cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    app = App(f"http://127.0.0.1:{port}", db_url, server, folder)
    wait_for_http(f"{app.url}/_stcore/health")
    return app


def stop_app(app: App) -> None:
    """Kill the app's process group (a test may have stopped it already) and wait for the server."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(app.server.pid, signal.SIGKILL)
    app.server.wait(timeout=20)


def keep_logs(folder: Path) -> None:
    """Copy the ``*.log`` files of ``folder`` next to the screenshots."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for log in folder.glob("*.log"):
        shutil.copy(log, SHOTS / log.name)


# Drawn: no element still loading its code (Streamlit's Suspense skeleton), every Plotly chart has its SVG,
# every image has loaded.
_DRAWN = """() => !document.querySelector("[data-testid='stSkeleton']")
    && [...document.querySelectorAll("[data-testid='stPlotlyChart']")].every(c => c.querySelector('.main-svg'))
    && [...document.images].every(i => i.complete)"""


def wait_drawn(page, timeout_ms: int = 30_000) -> None:
    """Wait until what the page shows is drawn (charts, images), instead of pausing for a fixed time."""
    page.wait_for_function(_DRAWN, timeout=timeout_ms)


def shoot(page, name: str) -> None:
    """A full-page screenshot once what is shown is drawn (a page that keeps loading is shot after 10 s)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(300)  # Streamlit fades elements back in after a script run
    with contextlib.suppress(playwright.TimeoutError):
        wait_drawn(page, 10_000)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def set_number(page, label: str, value: float | str) -> None:
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


def settle(page, timeout_ms: int = 30_000) -> None:
    """Wait until the script run is over (Streamlit shows a 'running' status widget meanwhile)."""
    page.wait_for_timeout(300)
    page.locator("[data-testid='stStatusWidget']").wait_for(state="hidden", timeout=timeout_ms)


def type_into(page, label: str, text: str, scope=None) -> None:
    """Type ``text`` into the field called ``label`` (inside ``scope``, e.g. one tab's panel, where two
    tabs have a field of that name), press Enter and wait for the page to settle."""
    box = (scope or page).get_by_label(label, exact=True)
    box.fill(text)
    box.press("Enter")
    settle(page)


def run_count(db_url: str) -> int:
    """How many runs the app's database holds."""
    from storage import queries
    from storage.db import connect

    with connect(db_url).read() as s:
        return len(queries.list_runs(s))


def wait_for_run_end(db_url: str, run_id: int, timeout: float):
    """The run once it has finished, failed or been cancelled (a worker trains it), or as it stands at ``timeout``."""
    from storage import queries
    from storage.db import connect

    deadline = time.time() + timeout
    while True:
        with connect(db_url).read() as s:
            run = queries.get_run(s, run_id)
        if run.status.value in ("finished", "failed", "cancelled") or time.time() > deadline:
            return run
        time.sleep(0.5)
