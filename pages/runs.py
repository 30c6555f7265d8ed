"""Runs: every run with its status and progress, and what can be done with it."""

from __future__ import annotations

import streamlit as st

from engine.config import validate_config
from pages import common
from storage import queries

COLUMNS = {
    "id": st.column_config.NumberColumn("id", width="small"),
    "status": st.column_config.TextColumn("status"),
    "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
    "final_acc": st.column_config.NumberColumn("final acc", format="%.4f"),
    "elapsed": st.column_config.TextColumn("elapsed"),
    "remaining": st.column_config.TextColumn("remaining"),
}


def runs_table(frame):
    shown = frame.assign(elapsed=frame["elapsed_s"].map(common.fmt_seconds),
                         remaining=frame["remaining_s"].map(common.fmt_seconds))
    cols = ["id", "name", "status", "progress", "round", "rounds", "clients", "techniques", "dataset", "final_acc",
            "elapsed", "remaining"]
    return st.dataframe(shown[cols], hide_index=True, column_config=COLUMNS, on_select="rerun",
                        selection_mode="single-row", key="runs_table")


def actions(run: dict) -> None:
    """Open, share, and (unless read-only) cancel, re-run, delete."""
    st.subheader(f"#{run['id']} {run['name']}")
    if run["error"]:
        st.error(run["error"])
    c = st.columns(5)
    if c[0].button("Open live view", key="open"):
        st.switch_page("pages/live.py", query_params={"run": str(run["id"])})
    if c[1].button("Result page", key="share"):
        st.switch_page("pages/run.py", query_params={"run": str(run["id"])})
    if common.readonly():
        return
    active = run["status"] in ("queued", "running")
    if c[2].button("Cancel", disabled=not active or run["cancel_requested"], key="cancel"):
        with common.db().write() as s:
            queries.request_cancel(s, run["id"])
        common.clear_caches()
        st.rerun()
    if c[3].button("Re-run", key="rerun", help="queue a new run with the same config"):
        with common.db().write() as s:
            new_id = queries.create_run(s, validate_config(run["config"]))
        common.clear_caches()
        st.switch_page("pages/live.py", query_params={"run": str(new_id)})
    with c[4].popover("Delete", disabled=active and not run["cancel_requested"]):
        st.write(f"Delete run #{run['id']} with all its metrics and images? This cannot be undone.")
        if st.button("Yes, delete", type="primary", key="confirm_delete"):
            with common.db().write() as s:
                queries.delete_run(s, run["id"])
            common.clear_caches()
            st.rerun()


@st.fragment(run_every=2)
def live_table() -> None:
    frame = common.runs_frame()
    if frame.empty:
        st.info("No runs yet." + ("" if common.readonly() else " Queue one on the New run page."))
        return
    counts = frame["status"].value_counts()
    st.caption(" · ".join(f"{counts[s]} {s}" for s in common.STATUSES if s in counts))
    event = runs_table(frame)
    rows = event.selection.rows if event is not None else []
    selected = int(frame.iloc[rows[0]]["id"]) if rows and rows[0] < len(frame) else None
    if selected != st.session_state.get("selected_run"):
        st.session_state["selected_run"] = selected
        st.rerun()  # the actions below the table belong to the whole page, not this fragment


st.header("Runs")
live_table()
selected = st.session_state.get("selected_run") or common.query_run_id()
if selected is None:
    st.caption("Select a row to open, share, cancel, re-run or delete it.")
else:
    info = common.run_info(selected)
    if info is not None:
        actions(info)
