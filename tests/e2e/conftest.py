"""Fixtures for the browser tests: the real app (``start_app``) and a headless Chromium (``browser``)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.support import CHROMIUM, CHROMIUM_ARGS, ROOT, App, keep_logs, launch_app, playwright, stop_app


@pytest.fixture
def start_app(tmp_path) -> Iterator[Callable[..., App]]:
    """Start the real app: ``start_app(worker=True, readonly=False)``. Everything it started is
    stopped afterwards, and its logs are copied next to the screenshots."""
    started: list[App] = []

    def start(worker: bool = False, readonly: bool = False, db_name: str = "e2e.db") -> App:
        db_url = f"sqlite:///{tmp_path / db_name}"
        env = {**os.environ, "SPLITLAB_DB": db_url, "SPLITLAB_WORKER_LOG": str(tmp_path / "worker.log")}
        for name in ("SPLITLAB_NO_WORKER", "SPLITLAB_READONLY"):
            env.pop(name, None)
        if not worker:
            env["SPLITLAB_NO_WORKER"] = "1"
        if readonly:
            env["SPLITLAB_READONLY"] = "1"
        app = launch_app(ROOT, env, db_url, tmp_path, tmp_path / "server.log")
        started.append(app)
        return app

    yield start
    for app in started:
        stop_app(app)
        subprocess.run(["pkill", "-KILL", "-f", f"worker --db {app.db_url}"], check=False)
    keep_logs(tmp_path)


@pytest.fixture(scope="session")
def _chromium() -> Iterator:
    """One headless Chromium per test process (launching one costs about 0.7 CPU s)."""
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def browser(_chromium) -> Iterator:
    """Headless Chromium. Each ``browser.new_page()`` opens in a context of its own (no cookies, storage or
    cache shared with another test), and every page a test opened is closed after it."""
    yield _chromium
    for context in _chromium.contexts:
        context.close()


