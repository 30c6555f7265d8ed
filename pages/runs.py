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
    "time": st.column_config.TextColumn("time", width=125, help=(
        "from the run's start to its end (or to now), everything included: training, evaluation, leakage "
        "measurement, snapshots, checkpoints; and the estimated time left. The result page shows this figure "
        "too, beside the training rounds' time alone.")),
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
        st.session_state.pop(NOTICE, None)
        st.rerun()


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


NOTICE = "runs_notice"  # session state: (run id, level, text) of the last action's outcome


def notify(run_id: int, level: str, text: str) -> None:
    """Keep an action's outcome on screen (below the table) until the next action or selection."""
    st.session_state[NOTICE] = (run_id, level, text)


def cancel(run_id: int) -> None:
    """Cancel the run as it is now: a run that ended meanwhile says how it ended instead. (The Cancel
    button's callback: the page's next run shows the outcome and the run's new state.)"""
    with common.db().write() as s:
        try:
            before = queries.get_run(s, run_id).status.value
            now = queries.request_cancel(s, run_id).value
        except queries.RunNotFound:
            now = None
    if now is None:
        notify(run_id, "warning", f"Run #{run_id} was deleted before it could be cancelled.")
    elif now == "running":
        notify(run_id, "success", f"Cancel requested: run #{run_id} stops after its current round.")
    elif now == "cancelled" and before == "queued":
        notify(run_id, "success", f"Run #{run_id} cancelled before it started.")
    elif now == "cancelled":
        notify(run_id, "warning", f"Run #{run_id} was already cancelled.")
    else:
        notify(run_id, "warning", f"Run #{run_id} {now} before it could be cancelled.")
    common.clear_caches()


def delete(run_id: int) -> None:
    """Delete the run unless it became active meanwhile (then say so: cancel it first)."""
    with common.db().write() as s:
        try:
            run = queries.get_run(s, run_id)
        except queries.RunNotFound:
            run = None
        if run is not None and not run.status.is_terminal and not run.cancel_requested:
            notify(run_id, "warning", f"Run #{run_id} is {run.status.value} now: cancel it before deleting it.")
            return
        if run is not None:
            queries.delete_run(s, run_id)
    notify(run_id, "success" if run is not None else "warning",
           f"Run #{run_id} deleted." if run is not None else f"Run #{run_id} was already deleted.")
    select(None)


def queue_again(run_id: int) -> int | None:
    """Queue a new run with this run's config, as stored now; None if the run was deleted meanwhile."""
    with common.db().write() as s:
        try:
            config = queries.get_run(s, run_id).config
        except queries.RunNotFound:
            notify(run_id, "warning", f"Run #{run_id} was deleted before it could be re-run.")
            return None
        return queries.create_run(s, validate_config(config))


def show_notice() -> None:
    notice = st.session_state.get(NOTICE)
    if notice is not None:
        _, level, text = notice
        (st.success if level == "success" else st.warning)(text)


def actions(row: pd.Series) -> None:
    """The selected run as the table shows it now, and what can be done with it: open, share and
    (unless read-only) cancel, re-run, delete. Each button names its run; each action reads the run
    again when clicked and says what happened if it changed meanwhile."""
    run_id = int(row["id"])
    st.subheader(f"#{run_id} {row['name'] or 'run'}")
    st.caption(f"{row['state']} · round {int(row['round'])} / {int(row['rounds'])} · techniques "
               f"{row['techniques']} · {common.plural(int(row['clients']), 'client')}")
    if row["worker_lost"]:
        st.warning(f"The worker training #{run_id} stopped reporting. The next worker to look takes the run over "
                   f"and resumes it from its checkpoint at round {int(row['resume_round'])}.")
    if row["status"] == "failed" and row["error"]:
        st.error(f"Run #{run_id} failed: {common.error_text(row['error'])}")
    c = st.columns(5)
    if c[0].button(f"Live view #{run_id}", key=f"open_{run_id}"):
        st.switch_page("pages/live.py", query_params={"run": str(run_id)})
    if c[1].button(f"Result page #{run_id}", key=f"share_{run_id}"):
        st.switch_page("pages/run.py", query_params={"run": str(run_id)})
    if common.readonly():
        return
    active = row["status"] in ("queued", "running")
    # A callback, not the button's value: Streamlit drops a click on a button that this run draws disabled, so
    # a click on Cancel just before the refresh that disables it (the run finished) would do nothing visible.
    # A callback runs with the button as the clicked screen showed it, and cancel() says what happened.
    c[2].button(f"Cancel #{run_id}", disabled=not active or bool(row["cancel_requested"]), key=f"cancel_{run_id}",
                on_click=cancel, args=(run_id,))
    if c[3].button(f"Re-run #{run_id}", key=f"rerun_{run_id}", help="queue a new run with the same config"):
        new_id = queue_again(run_id)
        common.clear_caches()
        if new_id is None:
            st.rerun()
        st.switch_page("pages/live.py", query_params={"run": str(new_id)})
    with c[4].popover(f"Delete #{run_id}", disabled=active and not row["cancel_requested"]):
        st.write(f"Delete run #{run_id} with all its metrics and images? This cannot be undone.")
        if st.button(f"Yes, delete #{run_id}", type="primary", key=f"confirm_delete_{run_id}"):
            delete(run_id)
            common.clear_caches()
            st.rerun()


@st.fragment(run_every=2)
def live_runs() -> None:
    """The table and the selected run's panel, refreshed together every 2 s from one read: the panel
    never shows a state the table has left (a run that finished says finished, with Delete enabled)."""
    frame = common.runs_frame()
    if frame.empty:
        st.info("No runs yet." + ("" if common.readonly() else " Queue one on the New run page."))
        show_notice()
        return
    counts = frame["status"].value_counts()
    lost = int(frame["worker_lost"].sum())
    parts = [f"{counts[s]} {s}" for s in common.STATUSES if s in counts]
    st.caption(" · ".join(parts) + (f" ({lost} with a lost worker)" if lost else ""))
    runs_table(frame)
    show_notice()
    selected = st.session_state.get(SELECTED)
    row = frame.loc[frame["id"] == selected]
    if selected is None:
        st.caption("Select a row to open its live view or result page." if common.readonly() else
                   "Select a row to open it, share it, cancel it, re-run it or delete it.")
    elif row.empty:
        st.info(f"Run #{selected} no longer exists.")
    else:
        actions(row.iloc[0])


st.header("Runs")
follow_link()
live_runs()
