"""Live: learning curves of one or several runs, updating while they train.

Cheap for many viewers: a small fragment polls every 2 s for progress and for the latest
evaluated round of each shown run (one cached read for all viewers). The charts are drawn only
when that changes (at most every 6 s), from figures built once per (run, evaluated round) for
every viewer: a viewer of a run that has not moved receives no chart again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages import common, projector
from pages.figures import communication, learning_curves, loss_terms, with_simulated_latency
from storage import queries

common.run_through_app_py()  # first thing: a deep link on a fresh server reruns through app.py

REFRESH_S = 2       # progress, and the check for a new evaluation
MIN_REDRAW_S = 6    # charts at most this often per viewer: a run that evaluates every 2 s costs a third
DRAWN_AT = "live_charts_drawn_at"
PROJECTOR_CURVES_PX = 540  # the curves' height on a 1280 x 720 projector, for one run's progress line above
PROGRESS_PX = 56           # each further run's progress line


@dataclass(frozen=True)
class LiveFigures:
    """What the page draws for one state of the shown runs."""

    accuracy: go.Figure
    loss: go.Figure
    terms: go.Figure
    communication: go.Figure
    first_label: str
    last: dict  # the first run's latest evaluation row


def default_selection(frame) -> list[int]:
    """The run in the link, else the running runs, else the newest one."""
    linked = common.linked_run_id()  # a bad link says so and stops the page
    if linked is not None:
        return [linked]
    running = frame.loc[frame["status"] == "running", "id"].astype(int).tolist()
    return running or frame["id"].astype(int).head(1).tolist()


def failures(frame, run_ids: list[int]) -> None:
    """Why each failed run failed (its stored error), first and in red: where Queue lands, a run that
    failed at once (its data set is not here) must not look like one still waiting for its first point."""
    failed = frame.loc[frame["id"].isin(run_ids) & (frame["status"] == "failed")]
    for _, r in failed.iterrows():
        reason = common.error_text(r["error"]) or "its worker recorded no reason"
        st.error(f"**Run #{int(r['id'])} {r['name'] or 'run'} failed:** {reason}")


def waiting_note(frame, run_ids: list[int]) -> str | None:
    """What to expect when the chosen runs have no evaluation yet (None: nothing will come, e.g. they failed)."""
    status = frame.loc[frame["id"].isin(run_ids), "status"]
    if status.isin(["queued", "running"]).any():
        return "No evaluation step recorded yet: the first point appears after the first evaluation."
    if status.isin(["cancelled", "finished"]).any():
        return "These runs ended without recording an evaluation step."
    return None


def progress_lines(frame, run_ids: list[int]) -> None:
    for run_id in run_ids:
        row = frame.loc[frame["id"] == run_id]
        if row.empty:
            st.caption(f"Run #{run_id} no longer exists.")
            continue
        r = row.iloc[0]
        eta = f", about {common.fmt_seconds(r['remaining_s'])} left" if pd.notna(r["remaining_s"]) else ""
        st.progress(float(r["progress"]), text=f"#{r['id']} {r['name'] or 'run'}: {r['state']} · "
                                                f"round {r['round']}/{r['rounds']}{eta}")


@st.cache_resource(max_entries=64, show_spinner=False, ttl=600)
def live_figures(signature: tuple[tuple[int, int], ...], x: str, t_comp: float, mbit_s: float) -> LiveFigures | None:
    """The figures for runs at these evaluated rounds, built once for every viewer (read straight
    from the database, so they hold exactly the rounds of ``signature`` or later)."""
    histories = {}
    with common.db().read() as s:
        for run_id, _ in signature:
            try:
                info = queries.get_run(s, run_id)
            except queries.RunNotFound:
                continue
            h = with_simulated_latency(queries.run_history(s, run_id), info.config, t_comp, mbit_s * 1e6 / 8)
            histories[f"#{run_id} {info.name or 'run'}"] = h
    if not any(len(h) for h in histories.values()):
        return None
    first_label, first = next((k, v) for k, v in histories.items() if len(v))
    return LiveFigures(learning_curves(histories, "test_acc", x), learning_curves(histories, "test_loss", x),
                       loss_terms(first), communication(first), first_label, first.iloc[-1].to_dict())


def large(fig: go.Figure, height: int) -> go.Figure:
    """A copy of a cached figure (shared by every viewer: never changed in place) for a projector: taller,
    thicker lines, text at 16 px or more."""
    big = go.Figure(fig).update_layout(height=height, font={"size": 16}, title={"font": {"size": 20}},
                                       legend={"font": {"size": 16}})
    big.update_xaxes(tickfont={"size": 16}, title={"font": {"size": 18}})
    big.update_yaxes(tickfont={"size": 16}, title={"font": {"size": 18}})
    return big.update_traces(line={"width": 3}, marker={"size": 7}, selector={"mode": "lines+markers"})


def draw(figs: LiveFigures, big: bool = False, shown: int = 1) -> None:
    """The curves; on a projector, accuracy and loss fill the screen below the ``shown`` runs' progress lines."""
    c1, c2 = st.columns(2)
    height = max(PROJECTOR_CURVES_PX - PROGRESS_PX * (shown - 1), 360)
    c1.plotly_chart(large(figs.accuracy, height) if big else figs.accuracy, key="acc")
    c2.plotly_chart(large(figs.loss, height) if big else figs.loss, key="loss")
    c3, c4 = st.columns(2)
    c3.plotly_chart(figs.terms, key="terms")
    c4.plotly_chart(figs.communication, key="comm")
    st.caption(f"Loss terms and communication: {figs.first_label}.")
    last = figs.last
    present = last.get("clients_present")
    coming = present is not None and not pd.isna(present)  # clients come and go (cfg.participation)
    lost = last.get("clients_lost")
    losing = lost is not None and not pd.isna(lost)  # a networked run that goes on without a lost client
    m = st.columns(4 + coming + losing)
    m[0].metric("round", int(last["round"]))
    m[1].metric("test accuracy", common.fmt_float(last["test_acc"]))
    m[2].metric("uploaded", f"{last['bytes_up'] / 1e6:,.1f} MB")
    m[3].metric("downloaded", f"{last['bytes_down'] / 1e6:,.1f} MB")
    if coming:
        m[4].metric("clients per round", f"{present:.3g}",
                    help=f"{figs.first_label}: the mean number of clients that took part in a round since the "
                         f"evaluation before (fewest: {int(last['clients_present_min'])}; drawn before dropouts: "
                         f"{last['clients_selected']:.3g}).")
    if losing:
        m[-1].metric("clients lost", int(lost),
                     help=f"{figs.first_label}: clients whose process died or stopped answering and has not come "
                          "back, at this evaluation. The run goes on without them (on_client_loss = continue); the "
                          "worker's log names each one, with the round and the reason.")


@st.fragment(run_every=REFRESH_S)
def watch(run_ids: list[int], drawn: tuple[tuple[int, int], ...], charted: bool) -> None:
    """Failures and progress every 2 s; the whole page (and so the charts) only when a new evaluation
    arrived, and at most every ``MIN_REDRAW_S`` seconds. ``charted``: the page below shows charts."""
    frame = common.runs_frame()
    failures(frame, run_ids)
    progress_lines(frame, run_ids)
    note = None if charted else waiting_note(frame, run_ids)
    if note:
        st.info(note)
    due = time.monotonic() - st.session_state.get(DRAWN_AT, 0.0) >= MIN_REDRAW_S
    if due and common.eval_signature(tuple(run_ids)) != drawn:
        st.rerun()


projector.from_link("live_projector")
big = st.session_state.live_projector
if big:  # the settings behind one button, the curves large
    projector.style()
    top = st.container(horizontal=True, vertical_alignment="center")
    settings = top.popover("runs and x axis", icon=":material/tune:")
else:
    top = st.container(horizontal=True, vertical_alignment="bottom")
    top.header("Live", width="stretch")
    settings = st.container()
projector.toggle(top, "live_projector")
runs = common.runs_frame()
if runs.empty:
    st.info("No runs yet." + ("" if common.readonly() else " Queue one on the New run page."))
    st.stop()
with settings:
    chosen = common.pick_runs("runs", runs, default_selection(runs), key="live_runs")
    c1, c2, c3 = st.columns([2, 1, 1]) if not big else (st.container(), st.container(), st.container())
    axis = c1.radio("x axis", ["round", "simulated latency (Table 4 model)"], horizontal=True)
simulated = axis.startswith("simulated")
t_comp = c2.number_input("client compute per step (s)", 0.0, 100.0, 0.05, disabled=not simulated)
mbit = c3.number_input("shared uplink (Mbit/s)", 0.1, 100_000.0, 100.0, disabled=not simulated)
if not chosen:
    st.info("Choose one or more runs above.")
    st.stop()
signature = common.eval_signature(tuple(chosen))
figures = live_figures(signature, "latency_s" if simulated else "round", float(t_comp), float(mbit))
watch(chosen, signature, figures is not None)
if figures is not None:
    draw(figures, big, len(chosen))
    st.session_state[DRAWN_AT] = time.monotonic()
