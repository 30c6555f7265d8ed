"""Helpers shared by the storage and worker tests: tiny configs, throwaway databases, worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.config import RunConfig, validate_config
from engine.presets import deep_merge
from storage import db as storage_db
from storage.db import Database
from storage.queries import create_run

ROOT = Path(__file__).resolve().parents[2]
WALL_CLOCK = ("wall_s", "round_s")

# LocFedMix-SL on synthetic data: mixup, InfoPro decoders and averaging all draw on the RNGs and optimisers.
TINY = {"num_clients": 3, "rounds": 20, "batch_size": 8, "eval_every": 5, "image_every": 10, "seed": 2,
        "data": {"dataset": "synthetic", "eval_subset": 64}, "optim": {"name": "momentum", "lr": 0.05},
        "mixup": {"enabled": True, "num_partners": 1, "reduction": "mean"},
        "local_loss": {"enabled": True, "average_aux": True}, "averaging": {"enabled": True}}


# Bad run flags and the one line each gets (after "error: "), from `run` and `submit` alike.
BAD_RUN_FLAGS = [
    (["--n-s", "-1"], "--n-s must be between 0 and n-1 = 9 (n = 10 clients), got -1"),
    (["--tc", "0"], "--tc must be between 1 and 100,000, got 0"),
    (["--rounds", "1000000000"], "--rounds must be between 1 and 100,000, got 1,000,000,000"),
    (["--lr", "-1"], "--lr must be greater than 0 and at most 10, got -1"),
    (["--batch-size", "0"], "--batch-size must be between 1 and 4096, got 0"),
    (["--clients", "0"], "--clients must be between 1 and 1000, got 0"),
    (["--clients", "100000"], "--clients must be between 1 and 1000, got 100,000"),
    (["--set", "foo=1"], "--set foo is not a setting SplitLab knows"),
    (["--set", "mixup.alpha=0"], "--set mixup.alpha must be greater than 0 and at most 100, got 0"),
    (["--lr", "0.1", "--set", "optim.lr=20"], "--set optim.lr must be greater than 0 and at most 10, got 20"),
]


def tiny_config(**overrides: Any) -> RunConfig:
    return validate_config(deep_merge(TINY, overrides))


def without_wall_clock(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: value for key, value in row.items() if key not in WALL_CLOCK} for row in rows]


def queue(db: Database, cfg: RunConfig) -> int:
    with db.write() as session:
        return create_run(session, cfg)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path: Path) -> Iterator[Database]:
    """A fresh database, closed afterwards: a SQLite file in ``tmp_path``, and a PostgreSQL database on the
    session's throwaway server (tests/postgres.py). Every storage and worker test runs on both."""
    url = f"sqlite:///{tmp_path / 'splitlab.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    yield storage_db.connect(url)
    storage_db.close(url)


@pytest.fixture(autouse=True)
def single_torch_thread() -> Iterator[None]:
    """One torch thread, as the worker processes get: fast on a shared machine, and results are
    bit-identical only between runs with the same thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def worker_process(db_url: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``worker --db URL ARGS`` in a process of its own (one torch thread), its log captured."""
    command = [sys.executable, "-c", "from storage.cli import main; raise SystemExit(main())",
               "worker", "--db", db_url, *args]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(command, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped): no process has it, until the system reuses it."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def wait_for(condition: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout} s")
