"""Session-wide fixtures, each built on first use: a throwaway PostgreSQL server (tests/postgres.py),
and the leakage runs a real worker trained (shared by the AppTest and the browser files)."""

from __future__ import annotations

import fcntl
import os
import sys

import pytest

from tests.postgres import PostgresServer, PostgresUnavailable

# Files that start processes of their own (a browser and the app, client processes, workers, a
# process pool) or train for long: ``make test-fast`` leaves them out (they are marked ``slow``), and
# ``make test`` hands them to its workers first, longest first, so that the two workers end together.
SLOW_FILES = ("tests/engine/test_network.py", "tests/e2e/", "tests/load/", "tests/engine/test_client_loss.py",
              "tests/engine/test_learning.py", "tests/worker/test_resume.py", "tests/worker/test_networked_worker.py",
              "tests/engine/test_network_shaping.py", "tests/worker/test_queue_load.py", "tests/worker/test_claim.py",
              "tests/engine/test_reproduce.py", "tests/pages/test_live_while_training.py",
              "tests/worker/test_workers_listing.py", "tests/pages/test_latency_measured_page.py",
              "tests/worker/test_exit_with_parent.py")


def pytest_collection_modifyitems(config, items):
    def slow_rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return next((i for i, prefix in enumerate(SLOW_FILES) if path.startswith(prefix)), len(SLOW_FILES))

    for item in items:
        if slow_rank(item) < len(SLOW_FILES):
            item.add_marker(pytest.mark.slow)
    items.sort(key=slow_rank)  # stable: the order within a file, and of the other files, is kept


@pytest.fixture(autouse=True)
def main_module_restored():
    """Streamlit's AppTest leaves the page it ran as ``sys.modules["__main__"]``; a process pool
    started later with the spawn method would then run that page in each child (some children died of it).
    Serially the pools' tests happen to run before the page tests; under pytest-xdist they may not."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def postgres():
    """The session's PostgreSQL server; skips (fails under CI) where none can be started."""
    try:
        server = PostgresServer()
    except PostgresUnavailable as err:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is needed under CI: {err}")
        pytest.skip(f"PostgreSQL not available: {err}")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres):
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    url = postgres.new_database()
    yield url
    from storage.db import close

    close(url)
    postgres.drop_database(url)


@pytest.fixture(scope="session")
def leakage_db(tmp_path_factory):
    """A SQLite file holding tests.pages.support.LEAKAGE_RUNS (leaky LocFedMix-SL, leaky SplitFed,
    quiet SplitFed; ids 1-3), trained once by a real worker. Tests copy it and never write to it.
    Under pytest-xdist the workers share it: the first to ask trains it while the others wait."""
    from storage.db import close
    from tests.pages.support import LEAKAGE_RUNS, train_runs

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this session's folder, above each worker's own
    folder = root / "leakage-trained"
    folder.mkdir(exist_ok=True)
    path = folder / "trained.db"
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "done").exists():
            url = f"sqlite:///{path}"
            assert train_runs(url, LEAKAGE_RUNS) == [1, 2, 3]
            close(url)  # checkpoints the WAL into the file, so a copy holds everything
            (folder / "done").touch()
    return path
