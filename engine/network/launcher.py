"""Starting the client processes of a networked run on this machine (``--transport process``).

A fresh Python that imports torch, the engine and torch's compiler front end (the first optimiser
pulls it in) spends about 2.5 s of CPU before it trains. So by default the
clients are forked from one pre-imported launcher process (multiprocessing's fork server, which
imports :mod:`engine.network.zygote` once per server process): each client then costs a fork.
``SPLITLAB_CLIENT_LAUNCH=exec`` (and any platform without a fork server) starts each client as
``python -m engine client`` instead. Either way a client is the same code, :func:`run_client`, with
its output in ``log`` and the part of :class:`subprocess.Popen`'s interface the server uses.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import types
from contextlib import contextmanager
from pathlib import Path

from engine.network.wire import Address

LAUNCHES = ("fork", "exec")


def client_threads() -> str:
    """The compute threads of one client process (``SPLITLAB_CLIENT_THREADS``, 1 by default): n clients
    share the cores."""
    return os.environ.get("SPLITLAB_CLIENT_THREADS", "1")


def launch_method() -> str:
    """``fork`` (from the pre-imported launcher) where the platform has a fork server, else ``exec``.
    The launcher starts with a server's first networked run and keeps the client settings
    (``SPLITLAB_CLIENT_THREADS``) it had then."""
    wanted = os.environ.get("SPLITLAB_CLIENT_LAUNCH", "fork")
    if wanted not in LAUNCHES:
        raise ValueError(f"SPLITLAB_CLIENT_LAUNCH must be 'fork' or 'exec', got {wanted!r}")
    if wanted == "fork" and ("forkserver" not in multiprocessing.get_all_start_methods()
                             or multiprocessing.current_process().daemon):  # a daemon may not have children
        return "exec"
    return wanted


def start_client(server: Address, rank: int, timeout_s: float, log: Path):
    """Start the client of ``rank`` for the server at ``server``; what it prints goes to ``log``."""
    if launch_method() == "fork":
        return ForkedClient(server, rank, timeout_s, log)
    root = str(Path(__file__).resolve().parents[2])  # the clients import this very engine
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": client_threads(), "PYTHONPATH": path,
           "TORCH_CPP_LOG_LEVEL": os.environ.get("TORCH_CPP_LOG_LEVEL", "FATAL")}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "engine", "client", "--server", str(server), "--rank", str(rank),
             "--timeout", f"{timeout_s:g}"],
            stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)


def _forked_client(server: str, rank: int, timeout_s: float, log: str) -> None:
    """The body of a forked client: its output to ``log``, one compute thread, then the client."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    _name_process(f"splitlab-cl-{rank}")
    import torch

    from engine.network.client import run_client

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    sys.exit(run_client(Address.parse(server), rank, None, timeout_s))


def _name_process(name: str) -> None:
    """Show a forked client as ``splitlab-cl-R`` in top and ps (Linux's process name, 15 bytes at most);
    its command line stays the launcher's."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


_main_lock = threading.Lock()


@contextmanager
def _main_module_left_out():
    """multiprocessing runs the parent's ``__main__`` script again in each child it starts (the spawn
    rule), which a user's script without an ``if __name__ == "__main__"`` guard, a Streamlit page or a
    test runner does not expect. A client needs none of it: while the client is handed over, the parent's
    main module reads as an empty one."""
    with _main_lock:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if main is not None:
                sys.modules["__main__"] = main


class ForkedClient:
    """A client forked from the launcher, seen through :class:`subprocess.Popen`'s methods."""

    _context = None

    def __init__(self, server: Address, rank: int, timeout_s: float, log: Path):
        if ForkedClient._context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["engine.network.zygote"])
            ForkedClient._context = context
        self.args = ["engine client", "--server", str(server), "--rank", str(rank)]
        Path(log).touch()
        # daemon: a server process that exits takes its clients with it
        self._process = ForkedClient._context.Process(target=_forked_client, args=(str(server), rank, timeout_s,
                                                      str(log)), name=f"splitlab-client-{rank}", daemon=True)
        with _main_module_left_out():
            self._process.start()
        self.pid = self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return code

    def kill(self) -> None:
        self._process.kill()
