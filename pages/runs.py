"""Runs: every run with its status and progress, and what can be done with it.

A selection is a run id, never a row position: the table refreshes every 2 s and new runs
appear at its top, so a position would point at another run. Each action button names the id it
acts on ("Cancel #3") and its key holds that id, so a click can only ever reach that run.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import streamlit as st

from engine.config import validate_config
from pages import common
from storage import queries

common.run_through_app_py()  # first thing: a deep link on a fresh server reruns through app.py

SELECTED = "selected_run"  # session state: the id of the run the user picked (None: none)
COLUMNS = {  # sized to fit beside the sidebar on a 1400-px-wide screen
    "id": st.column_config.NumberColumn("id", width=40, format="%d"),
    "name": st.column_config.TextColumn("name", width=120),
    "state": st.column_config.TextColumn("status", width=195),
    "progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=100, format="%.0f%%", width=75),
    "rounds_done": st.column_config.TextColumn("rounds", width=85),
    "clients": st.column_config.NumberColumn("n", width=36, help="clients"),
    "techniques": st.column_config.TextColumn("techniques", width=95),
    "dataset": st.column_config.TextColumn("data", width=95),
    "accuracy": st.column_config.TextColumn("final acc", width=70),
    "time": st.column_config.TextColumn("time", width=125, help="elapsed, and the estimated time left"),
}


def time_text(status: str, elapsed_s: float, remaining_s: float | None) -> str:
    """"0:43", or "1:23, 4:56 left" while running; "–" before a run starts."""
    if status == "queued" and not elapsed_s:
        return "–"
    left = common.fmt_seconds(remaining_s)
    return common.fmt_seconds(elapsed_s) + (f", {left} left" if left != "–" else "")


def shown_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as people read it: every cell text or a number, "–" where there is nothing."""
    return pd.DataFrame({
        "id": frame["id"].astype(int),
        "name": frame["name"].fillna("").replace("", "–"),
        "state": frame["state"],
        "progress": (frame["progress"] * 100).round(0),
        "rounds_done": [f"{int(a)} / {int(b)}" for a, b in zip(frame["round"], frame["rounds"])],
        "clients": frame["clients"].astype(int),
        "techniques": frame["techniques"],
        "dataset": frame["dataset"],
        "accuracy": frame["final_acc"].map(common.fmt_float),
        "time": [time_text(*v) for v in zip(frame["status"], frame["elapsed_s"], frame["remaining_s"])],
    })


def table_key(ids: list[int]) -> str:
    """One widget per order of ids: when runs are added or deleted the table is a new widget, whose
    selection is set from the selected id (never carried over by position)."""
    return "runs_table_" + hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()[:12]


def runs_table(frame: pd.DataFrame) -> None:
    """The table; a click selects a run by its id (read from the rows this very widget showed)."""
    ids = [int(i) for i in frame["id"]]
    key = table_key(ids)
    selected = st.session_state.get(SELECTED)
    default = {"selection": {"rows": [ids.index(selected)] if selected in ids else []}}
    event = st.dataframe(shown_frame(frame), hide_index=True, column_config=COLUMNS, on_select="rerun",
                         selection_mode="single-row", key=key, selection_default=default, width="stretch",
                         placeholder="–")
    rows = event.selection.rows
    picked = ids[rows[0]] if rows and rows[0] < len(ids) else None
    if st.session_state.get("runs_table_key") != key:  # a new widget: its selection came from SELECTED
        st.session_state["runs_table_key"] = key
        return
    if picked != selected:
        select(picked)
        st.rerun()  # the actions below the table belong to the whole page, not this fragment


def select(run_id: int | None) -> None:
    """Remember the picked run, and put it in the link (``?run=3``) so the page can be shared or reloaded."""
    st.session_state[SELECTED] = run_id
    if run_id is None:
        st.query_params.pop("run", None)
    else:
        st.query_params["run"] = str(run_id)
    st.session_state["runs_link"] = st.query_params.get("run")


def follow_link() -> None:
    """A link ``?run=3`` selects run 3 (once per link, so a later click wins); a bad link says so and stops."""
    link = st.query_params.get("run")
    if link is None or st.session_state.get("runs_link") == link:
        return
    select(common.linked_run_id())


def act(label: str, run_id: int, write) -> None:
    with common.db().write() as s:
        write(s, run_id)
    common.clear_caches()
    st.toast(f"{label} #{run_id}")


def actions(run: dict) -> None:
    """Open, share, and (unless read-only) cancel, re-run, delete: each button names its run."""
    run_id = run["id"]
    st.subheader(f"#{run_id} {run['name'] or 'run'}")
    frame = common.runs_frame()
    row = frame.loc[frame["id"] == run_id]
    state = row.iloc[0]["state"] if not row.empty else run["status"]
    st.caption(f"{state} · round {run['last_round']} / {run['rounds']} · techniques "
               f"{common.technique_codes(run['config'])} · {run['config']['num_clients']} clients")
    if not row.empty and row.iloc[0]["worker_lost"]:
        st.warning(f"The worker training #{run_id} stopped reporting. The next worker to look takes the run over "
                   f"and resumes it from its checkpoint at round {row.iloc[0]['resume_round']}.")
    if run["error"]:
        st.error(run["error"])
    c = st.columns(5)
    if c[0].button(f"Live view #{run_id}", key=f"open_{run_id}"):
        st.switch_page("pages/live.py", query_params={"run": str(run_id)})
    if c[1].button(f"Result page #{run_id}", key=f"share_{run_id}"):
        st.switch_page("pages/run.py", query_params={"run": str(run_id)})
    if common.readonly():
        return
    active = run["status"] in ("queued", "running")
    if c[2].button(f"Cancel #{run_id}", disabled=not active or run["cancel_requested"], key=f"cancel_{run_id}"):
        act("Cancel requested for", run_id, queries.request_cancel)
        st.rerun()
    if c[3].button(f"Re-run #{run_id}", key=f"rerun_{run_id}", help="queue a new run with the same config"):
        with common.db().write() as s:
            new_id = queries.create_run(s, validate_config(run["config"]))
        common.clear_caches()
        st.switch_page("pages/live.py", query_params={"run": str(new_id)})
    with c[4].popover(f"Delete #{run_id}", disabled=active and not run["cancel_requested"]):
        st.write(f"Delete run #{run_id} with all its metrics and images? This cannot be undone.")
        if st.button(f"Yes, delete #{run_id}", type="primary", key=f"confirm_delete_{run_id}"):
            act("Deleted", run_id, queries.delete_run)
            select(None)
            st.rerun()


@st.fragment(run_every=2)
def live_table() -> None:
    frame = common.runs_frame()
    if frame.empty:
        st.info("No runs yet." + ("" if common.readonly() else " Queue one on the New run page."))
        return
    counts = frame["status"].value_counts()
    lost = int(frame["worker_lost"].sum())
    parts = [f"{counts[s]} {s}" for s in common.STATUSES if s in counts]
    st.caption(" · ".join(parts) + (f" ({lost} with a lost worker)" if lost else ""))
    runs_table(frame)


st.header("Runs")
follow_link()
live_table()
selected = st.session_state.get(SELECTED)
if selected is None:
    st.caption("Select a row to open its live view or result page." if common.readonly() else
               "Select a row to open it, share it, cancel it, re-run it or delete it.")
else:
    info = common.run_info(selected)
    if info is None:
        st.info(f"Run #{selected} no longer exists.")
    else:
        actions(info)
