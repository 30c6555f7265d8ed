"""Fixtures for the browser tests: the real app (``start_app``) and a headless Chromium (``browser``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.support import CHROMIUM, CHROMIUM_ARGS, ROOT, SHOTS, App, free_port, playwright, wait_for_http


@pytest.fixture
def start_app(tmp_path) -> Iterator[Callable[..., App]]:
    """Start the real app: ``start_app(worker=True, readonly=False)``. Everything it started is
    stopped afterwards, and its logs are copied next to the screenshots."""
    started: list[App] = []

    def start(worker: bool = False, readonly: bool = False, db_name: str = "e2e.db") -> App:
        port = free_port()
        db_url = f"sqlite:///{tmp_path / db_name}"
        env = {**os.environ, "SPLITLAB_DB": db_url, "SPLITLAB_WORKER_LOG": str(tmp_path / "worker.log")}
        for name in ("SPLITLAB_NO_WORKER", "SPLITLAB_READONLY"):
            env.pop(name, None)
        if not worker:
            env["SPLITLAB_NO_WORKER"] = "1"
        if readonly:
            env["SPLITLAB_READONLY"] = "1"
        log = open(tmp_path / f"server-{port}.log", "wb")  # noqa: SIM115 (closed with the server)
        server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                   "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                                  cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        app = App(f"http://127.0.0.1:{port}", db_url, server, tmp_path)
        started.append(app)
        wait_for_http(f"{app.url}/_stcore/health")
        return app

    yield start
    for app in started:
        with contextlib.suppress(ProcessLookupError):  # a test may have stopped it already
            os.killpg(app.server.pid, signal.SIGKILL)
        app.server.wait(timeout=20)
        subprocess.run(["pkill", "-KILL", "-f", f"worker --db {app.db_url}"], check=False)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for log in tmp_path.glob("*.log"):
        shutil.copy(log, SHOTS / log.name)


@pytest.fixture
def browser() -> Iterator:
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


