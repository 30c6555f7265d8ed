"""SplitLab's dashboard (``make run``): the sidebar, the navigation, and a worker that stays alive.

Pages hold only UI. They read and write through ``storage`` and the engine's pure modules;
training happens in a separate worker process (``python -m engine worker``), never here.

``python app.py [streamlit options]`` (what ``make run`` does) starts the worker's supervisor
first and then serves this file with Streamlit in the same process, so the worker starts with the
server, not at the first page visit. ``streamlit run app.py`` works too; its worker starts at the
first page. Either way the supervisor starts a new worker within seconds when it stops (``kill -9``),
and the sidebar says so.
"""

from __future__ import annotations

import sys
from pathlib import Path

from streamlit.runtime.scriptrunner import get_script_run_ctx

from storage.supervisor import LIVE_WORKER_S, autostart_disabled, dashboard_supervisor, serve_dashboard

if __name__ == "__main__" and get_script_run_ctx(suppress_warning=True) is None:  # `python app.py`: the server's start
    raise SystemExit(serve_dashboard(Path(__file__).resolve(), sys.argv[1:]))

import streamlit as st  # noqa: E402 (from here on: a page run)
from PIL import Image, ImageDraw  # noqa: E402

from pages import common  # noqa: E402
from storage import queries  # noqa: E402


def configure_host() -> None:
    """A read-only host for public result pages shows no traceback and no developer menu (Deploy, Rerun)."""
    if common.readonly():
        st.set_option("client.showErrorDetails", "none")


@st.cache_resource(show_spinner=False)
def favicon() -> Image.Image:
    """The tab's icon, drawn here and served by this server: a Material icon name would make every
    page ask fonts.gstatic.com for it (which fails offline, in a classroom without internet)."""
    size, ink = 64, (255, 75, 75)
    icon = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(icon)
    draw.rounded_rectangle((2, 2, size - 3, size - 3), radius=12, fill=(255, 255, 255, 255), outline=ink, width=4)
    for end in ((16, 14), (48, 14)):  # one path splitting in two: split learning's cut
        draw.line(((32, 52), (32, 34), end), fill=ink, width=7, joint="curve")
    return icon


@st.cache_data(ttl=2, show_spinner=False)
def live_workers() -> list[queries.WorkerInfo]:
    """The workers that reported lately, less those whose process on this host has ended (``kill -9``)."""
    from storage.worker import process_gone

    with common.db().read() as s:
        return [w for w in queries.live_workers(s, LIVE_WORKER_S) if not process_gone(w.worker_id)]


# Every 3 s, not 2: with 2 a freshly started server's first page often stayed blank in Chromium
# ("Bad delta path index": the sidebar fragment's rerun overtaking the page's first full run).
@st.fragment(run_every=3)
def worker_status() -> None:
    """What each worker is doing, and what happened to this server's own worker, refreshed every 3 s
    (without a page reload: a worker started again after ``kill -9`` shows up here)."""
    sup = dashboard_supervisor()
    state = sup.state() if sup else None
    if state is not None and state.event:
        (st.error if state.problem else st.warning)(state.event)
    workers = live_workers()
    for w in workers:
        doing = f"training run #{w.run_id}" if w.run_id else "idle, waiting for runs"
        st.success(f"Worker {w.worker_id}: {doing}")
    if workers:
        return
    if state is None:
        st.warning("No worker is running. Start one: `python -m engine worker`")
    elif state.pid is not None:
        st.info(f"Starting a worker (pid {state.pid})…")
    elif not state.problem:
        st.info("Looking for a worker…")


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


def main() -> None:
    st.set_page_config(page_title="SplitLab", page_icon=favicon(), layout="wide")
    configure_host()
    dashboard_supervisor()  # already watching when `python app.py` started the server; else from this first page on
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


main()
