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
LIVE_WORKER_S = 10  # a worker whose heartbeat is newer than this counts as alive (it beats every 1-2 s)


def configure_host() -> None:
    """A read-only host for public result pages shows no traceback and no developer menu (Deploy, Rerun)."""
    if common.readonly():
        st.set_option("client.showErrorDetails", "none")


def autostart_disabled() -> bool:
    return os.environ.get("SPLITLAB_NO_WORKER", "") not in ("", "0", "false") or common.readonly()


@st.cache_resource(show_spinner=False)
def start_worker(db_url: str) -> subprocess.Popen:
    """Start one background worker for this server (once; it outlives page reloads). It stops with
    the server (``--exit-with-parent``): after Ctrl-C on ``make run`` it checkpoints its run and exits."""
    log = open(os.environ.get("SPLITLAB_WORKER_LOG", ROOT / "worker.log"), "ab")  # noqa: SIM115 (the child owns it)
    return subprocess.Popen([sys.executable, "-m", "engine", "worker", "--db", db_url, "--exit-with-parent"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@st.cache_data(ttl=2, show_spinner=False)
def live_workers() -> list[queries.WorkerInfo]:
    with common.db().read() as s:
        return queries.live_workers(s, LIVE_WORKER_S)


def ensure_worker() -> None:
    if autostart_disabled() or live_workers():
        return
    proc = start_worker(common.db().url)
    live_workers.clear()
    if proc.poll() is not None:  # it died: let the next page load try again, and say so
        start_worker.clear()
        st.sidebar.error(f"The background worker exited (code {proc.returncode}); see worker.log.")


@st.fragment(run_every=3)
def worker_status() -> None:
    """What each worker is doing, refreshed every 3 s (a cached read shared by all viewers)."""
    workers = live_workers()
    if workers:
        for w in workers:
            doing = f"training run #{w.run_id}" if w.run_id else "idle, waiting for runs"
            st.success(f"Worker {w.worker_id}: {doing}")
    elif autostart_disabled():
        st.warning("No worker is running. Start one: `python -m engine worker`")
    else:
        st.info("Starting a worker…")


def sidebar() -> None:
    st.sidebar.title("SplitLab")
    st.sidebar.caption("Parallel split learning, one technique at a time.")
    if common.readonly():
        st.sidebar.info("Read-only: result pages only.")
        return
    with st.sidebar:
        worker_status()
    if not autostart_disabled():
        st.sidebar.caption("The worker this app started stops with the app (Ctrl-C): its run is checkpointed "
                           "and resumes at the next start. Workers started by hand keep running.")
    st.sidebar.caption(f"Database: `{common.db().display_url()}`")


def results_home() -> None:
    """The landing page of a read-only host: what it is, and links to the runs' result pages."""
    st.header("SplitLab results")
    st.caption("Read-only: every run's curves, reconstructions and downloads, by link. Nothing can be "
               "submitted, cancelled or deleted here.")
    common.run_links()


st.set_page_config(page_title="SplitLab", page_icon=":material/call_split:", layout="wide")
configure_host()
ensure_worker()
sidebar()
pages = [
    st.Page("pages/new_run.py", title="New run", icon=":material/add_circle:", default=True),
    st.Page("pages/runs.py", title="Runs", icon=":material/list:", url_path="runs"),
    st.Page("pages/live.py", title="Live", icon=":material/show_chart:", url_path="live"),
    st.Page("pages/compare.py", title="Compare", icon=":material/table_chart:", url_path="compare"),
    st.Page("pages/infopro.py", title="InfoPro", icon=":material/image:", url_path="infopro"),
    st.Page("pages/latency.py", title="Latency", icon=":material/timer:", url_path="latency"),
    st.Page("pages/walkthrough.py", title="Round walkthrough", icon=":material/school:", url_path="walkthrough"),
    st.Page("pages/run.py", title="Result page", icon=":material/link:", url_path="run"),
]
if common.readonly():  # every page keeps its address; the default one ("/") lists the results
    pages[0] = st.Page(results_home, title="Results", icon=":material/home:", default=True)
st.navigation(pages).run()
