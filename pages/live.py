"""Live: learning curves of one or several runs, updating while they train."""

from __future__ import annotations

import streamlit as st

from pages import common
from pages.figures import communication, learning_curves, loss_terms, with_simulated_latency

REFRESH_S = 2


def default_selection(frame) -> list[int]:
    """The run in the link, else the running runs, else the newest one."""
    linked = common.query_run_id()
    if linked is not None:
        return [linked]
    running = frame.loc[frame["status"] == "running", "id"].astype(int).tolist()
    return running or frame["id"].astype(int).head(1).tolist()


def progress_lines(frame, run_ids: list[int]) -> None:
    for run_id in run_ids:
        row = frame.loc[frame["id"] == run_id]
        if row.empty:
            continue
        r = row.iloc[0]
        eta = f", about {common.fmt_seconds(r['remaining_s'])} left" if r["status"] == "running" else ""
        st.progress(float(r["progress"]), text=f"{common.run_label(r)}: round {r['round']}/{r['rounds']}{eta}")


@st.fragment(run_every=REFRESH_S)
def live_view(run_ids: list[int], x_axis: str, t_comp: float, mbit_s: float) -> None:
    """Redrawn every few seconds; plotly keeps zoom across redraws (uirevision), so no flicker."""
    frame = common.runs_frame()
    progress_lines(frame, run_ids)
    histories, configs = {}, {}
    for run_id in run_ids:
        info = common.run_info(run_id)
        if info is None:
            continue
        configs[run_id] = info["config"]
        h = with_simulated_latency(common.history(run_id), info["config"], t_comp, mbit_s * 1e6 / 8)
        histories[f"#{run_id} {info['name']}"] = h
    if not any(len(h) for h in histories.values()):
        st.info("No evaluation step recorded yet: the first point appears after the first evaluation.")
        return
    x = "latency_s" if x_axis.startswith("simulated") else "round"
    c1, c2 = st.columns(2)
    c1.markdown("**Test accuracy**")
    c1.plotly_chart(learning_curves(histories, "test_acc", x), key="acc")
    c2.markdown("**Test loss**")
    c2.plotly_chart(learning_curves(histories, "test_loss", x), key="loss")
    first_label, first = next((k, v) for k, v in histories.items() if len(v))
    c3, c4 = st.columns(2)
    c3.markdown(f"**Training-loss terms** ({first_label})")
    c3.plotly_chart(loss_terms(first), key="terms")
    c4.markdown(f"**Communication so far** ({first_label})")
    c4.plotly_chart(communication(first), key="comm")
    last = first.iloc[-1]
    m = st.columns(4)
    m[0].metric("round", int(last["round"]))
    m[1].metric("test accuracy", f"{last['test_acc']:.4f}")
    m[2].metric("uploaded", f"{last['bytes_up'] / 1e6:,.1f} MB")
    m[3].metric("downloaded", f"{last['bytes_down'] / 1e6:,.1f} MB")


st.header("Live")
runs = common.runs_frame()
if runs.empty:
    st.info("No runs yet." + ("" if common.readonly() else " Queue one on the New run page."))
    st.stop()
chosen = common.pick_runs("runs", runs, default_selection(runs), key="live_runs")
c1, c2, c3 = st.columns([2, 1, 1])
axis = c1.radio("x axis", ["round", "simulated latency (Table 4 model)"], horizontal=True)
t_comp = c2.number_input("client compute per step (s)", 0.0, 100.0, 0.05, disabled=not axis.startswith("simulated"))
mbit = c3.number_input("shared uplink (Mbit/s)", 0.1, 100_000.0, 100.0, disabled=not axis.startswith("simulated"))
if chosen:
    live_view(chosen, axis, t_comp, mbit)
