"""SplitLab's dashboard (``make run``): the sidebar, the navigation, and a worker when none is alive.

Pages hold only UI. They read and write through ``storage`` and the engine's pure modules;
training happens in a separate worker process (``python -m engine worker``), never here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import streamlit as st

from pages import common
from storage import queries

ROOT = Path(__file__).resolve().parent
LIVE_WORKER_S = 30  # a worker whose heartbeat is newer than this counts as alive


def autostart_disabled() -> bool:
    return os.environ.get("SPLITLAB_NO_WORKER", "") not in ("", "0", "false") or common.readonly()


@st.cache_resource(show_spinner=False)
def start_worker(db_url: str) -> subprocess.Popen:
    """Start one background worker for this server (once; it outlives page reloads)."""
    log = open(os.environ.get("SPLITLAB_WORKER_LOG", ROOT / "worker.log"), "ab")  # noqa: SIM115 (the child owns it)
    return subprocess.Popen([sys.executable, "-m", "engine", "worker", "--db", db_url], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def live_workers() -> list[queries.WorkerInfo]:
    with common.db().read() as s:
        return queries.live_workers(s, LIVE_WORKER_S)


def ensure_worker() -> None:
    if autostart_disabled() or live_workers():
        return
    proc = start_worker(common.db().url)
    if proc.poll() is not None:  # it died: let the next page load try again, and say so
        start_worker.clear()
        st.sidebar.error(f"The background worker exited (code {proc.returncode}); see worker.log.")


def sidebar() -> None:
    st.sidebar.title("SplitLab")
    st.sidebar.caption("Parallel split learning, one technique at a time.")
    if common.readonly():
        st.sidebar.info("Read-only: result pages only.")
        return
    workers = live_workers()
    if workers:
        for w in workers:
            doing = f"training run #{w.run_id}" if w.run_id else "idle, waiting for runs"
            st.sidebar.success(f"Worker {w.worker_id}: {doing}")
    elif autostart_disabled():
        st.sidebar.warning("No worker is running. Start one: `python -m engine worker`")
    else:
        st.sidebar.info("Starting a worker…")
    st.sidebar.caption(f"Database: `{common.db().display_url()}`")


st.set_page_config(page_title="SplitLab", page_icon=":material/call_split:", layout="wide")
ensure_worker()
sidebar()
pages = [
    st.Page("pages/new_run.py", title="New run", icon=":material/add_circle:", default=not common.readonly()),
    st.Page("pages/runs.py", title="Runs", icon=":material/list:", default=common.readonly()),
    st.Page("pages/live.py", title="Live", icon=":material/show_chart:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/table_chart:"),
    st.Page("pages/infopro.py", title="InfoPro", icon=":material/image:"),
    st.Page("pages/latency.py", title="Latency", icon=":material/timer:"),
    st.Page("pages/run.py", title="Result page", icon=":material/link:", url_path="run"),
]
if common.readonly():
    pages = pages[1:]
st.navigation(pages).run()
