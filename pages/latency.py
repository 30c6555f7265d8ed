"""Latency: the paper's Table 4 model against n (its Fig. 8), and what finished runs exchanged."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.config import RunConfig
from engine.latency import LatencyParams, latency_curves
from engine.studies.latency_measured import predictions
from engine.studies.latency_study import fig8_claims, lenet_sizes
from pages import common
from pages.figures import (
    BYTE_KINDS,
    LATENCY_PARTS,
    bytes_exchanged,
    latency_figure,
    latency_overlaps,
    learning_curves,
    measured_latency,
    with_simulated_latency,
)

common.run_through_app_py()  # first thing: a deep link on a fresh server reruns through app.py

st.header("Latency model")
st.caption("Only client compute T_comp and uplink T_comm count; the server is infinitely fast and n clients "
           "share the uplink, so uploading together takes n·T_comm (the paper's Table 4).")
c1, c2, c3, c4 = st.columns(4)
rounds = c1.number_input("rounds T", 1, 1_000_000, 10_000)
interval = c2.number_input("LocFedMix-SL T_c", 1, 1_000_000, 1)
max_n = c3.number_input("largest n", 2, 2000, 100)
t_comm = c4.number_input("T_comm (s, one client uploading |s| alone)", 0.0001, 1000.0, 0.01, format="%.4f")
SIZES = lenet_sizes("fashion-mnist")  # counted from the models: what `engine reproduce latency` uses too
c5, c6, c7 = st.columns(3)
smashed = c5.number_input("|s|: b smashed samples (elements)", 1, 10**9, SIZES.smashed)
lower = c6.number_input("|w_c|: lower model (elements)", 1, 10**9, SIZES.lower,
                        help="parameters and BatchNorm statistics: what averaging sends")
aux = c7.number_input("|ŵ_c|: auxiliary network (elements)", 0, 10**9, SIZES.aux,
                      help="parameters and BatchNorm statistics: what averaging sends")
params = LatencyParams(t_comp=t_comm, t_comm=t_comm, smashed_size=smashed, lower_size=lower, aux_size=aux,
                       avg_interval=int(interval))
curves = latency_curves(range(1, int(max_n) + 1), int(rounds), params)
st.plotly_chart(latency_figure(curves, avg_interval=int(interval)), key="fig8")
overlaps = latency_overlaps(curves, avg_interval=int(interval))
if overlaps:
    st.markdown("**Curves on top of one another** (within 1 %; each keeps its own dash and marker):\n"
                + "\n".join(f"- {line}" for line in overlaps))
st.caption(f"Panels: T_comp : T_comm = 10:1, 1:1, 1:10. Defaults: LeNet-5 on Fashion-MNIST cut after conv1+pool, "
           f"counted from the models (|s| = 64·6·14·14 = {SIZES.smashed:,}, |w_c| = {SIZES.lower:,}, InfoPro "
           f"decoder |ŵ_c| = {SIZES.aux:,}: its parameters and its BatchNorm statistics, which averaging sends too).")
st.subheader("The paper's claims about this figure, checked on these settings")
claims = fig8_claims(curves)
st.markdown("\n".join(f"- {'✓ holds' if c.holds else '✗ does not hold'}: **{c.text}**  \n  {c.evidence}"
                       for c in claims))
with st.expander("The same as a table"):
    st.dataframe(pd.DataFrame([{"claim": c.text, "holds": "yes" if c.holds else "no", "numbers": c.evidence}
                               for c in claims]), hide_index=True, width="stretch")

st.subheader("Bytes exchanged by finished runs")
runs = common.runs_frame()
finished = runs.loc[runs["status"] == "finished"]
if finished.empty:
    st.info("No finished runs yet.")
    st.stop()
rows = []
for _, r in finished.iterrows():
    h = common.history(int(r["id"]))
    if h.empty:
        continue
    last = h.iloc[-1]
    rows += [{"run": common.run_label(r, with_status=False), "kind": kind, "MB": last[kind] / 1e6,
              "rounds": int(last["round"])} for kind in BYTE_KINDS]
per_round = st.toggle("per round", True)
st.plotly_chart(bytes_exchanged(pd.DataFrame(rows, columns=["run", "kind", "MB", "rounds"]), per_round,
                                title="Megabytes per round, by kind" if per_round else "Megabytes in all, by kind"),
                key="bytes")

st.subheader("Stragglers and a deadline: accuracy against simulated time")
st.caption("A run whose clients come and go (participation: a fraction C, dropouts, stragglers with "
           "speed spread σ, a round deadline) counts its own client compute in T_comp: in a parallel round the "
           "slowest present client, or the whole deadline when one was cut off by it. Simulated time = that × "
           "T_comp + the bytes uploaded over the shared uplink. A deadline shortens every round and drops the "
           "slow clients' data: what it buys is read off where the curves cross.")
coming = [int(r["id"]) for _, r in finished.iterrows()
          if (part := common.participation(int(r["id"]))) is not None and part.active]
if not coming:
    st.info("No finished run with clients that come and go yet: queue runs with a speed spread and different "
            "deadlines (New run, or `python -m engine submit --set participation.speed_spread=1 "
            "--set participation.deadline=1.5 ...`).")
else:
    d1, d2 = st.columns(2)
    t_comp_s = d1.number_input("T_comp: client compute per step (s)", 0.0, 100.0, 0.05, key="straggler_tcomp")
    uplink = d2.number_input("shared uplink (Mbit/s)", 0.1, 100_000.0, 100.0, key="straggler_uplink")
    chosen = common.pick_runs("runs", finished.loc[finished["id"].isin(coming)], coming[:6], key="straggler_runs")
    histories, table = {}, []
    for run_id in chosen:
        info, part = common.run_info(run_id) or {}, common.participation(run_id)
        if not info or part is None:  # deleted meanwhile
            continue
        h = with_simulated_latency(common.history(run_id), info["config"], t_comp_s, uplink * 1e6 / 8)
        if h.empty:
            continue
        label = (f"#{run_id} {info.get('name') or 'run'} · "
                 + (f"deadline {part.deadline:g}·T_comp" if part.deadline else "no deadline"))
        histories[label] = h
        table.append({"run": label, "speed spread σ": part.speed_spread, "clients late a round":
                      float(h["clients_late"].iloc[-1]) if "clients_late" in h else 0.0,
                      "client compute a round (T_comp)": float(h["compute_units"].iloc[-1] / h["round"].iloc[-1]),
                      "final live accuracy": float(h["test_acc"].iloc[-1]),
                      "simulated time (s)": float(h["latency_s"].iloc[-1])})
    if histories:
        st.plotly_chart(learning_curves(histories, "test_acc", "latency_s",
                                        title="Accuracy against simulated time"), key="stragglers")
        st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch")

st.subheader("Measured over the network")
st.caption("Runs trained with `--transport process` (a server and n client processes over TCP) time every "
           "round in parts. Beside the measured round: the Table 4 model for the same sizes (T_comp = the "
           "measured client compute, T_comm = one client's smashed data at the uplink rate below) and the bytes "
           "model (the bytes the run uploaded, at that rate).")
networked = []
for _, r in finished.iterrows():
    info = common.run_info(int(r["id"]))
    if info and info["config"].get("transport") == "process":
        networked.append((common.run_label(r, with_status=False), info))
if not networked:
    st.info("No finished networked runs yet: queue one with `python -m engine submit --transport process ...`, "
            "or run `python -m engine reproduce latency --measured` for the shaped-network comparison.")
    st.stop()
label = st.selectbox("networked run", [name for name, _ in networked],
                     key="latency_networked_run")  # keyed: a new networked run keeps the pick
info = dict(networked)[label]
h = common.history(int(info["id"]))
timed = h.dropna(subset=[k for k in LATENCY_PARTS if k in h.columns]) if set(LATENCY_PARTS) <= set(h.columns) else h.iloc[0:0]
if timed.empty:
    st.info("This run recorded no round timings (it was trained before SplitLab measured them).")
    st.stop()
parts = {key: float(timed[key].mean()) for key in LATENCY_PARTS}
round_s = float(timed["round_s"].mean())
summary = info.get("summary") or {}
rounds_done = int(summary.get("rounds_done") or timed["round"].max())
smashed_per_round = float(timed["bytes_smashed_up"].iloc[-1]) / max(int(timed["round"].iloc[-1]), 1)
seen_mbit = smashed_per_round * 8 / max(parts["latency_upload_s"], 1e-9) / 1e6
mbit = st.number_input("uplink rate for the models (Mbit/s; default: what the run's uploads achieved)",
                       0.001, 1e6, float(f"{seen_mbit:.3g}"), key=f"uplink_mbit_{info['id']}")
cfg = RunConfig.model_validate(info["config"])
pred = predictions(cfg, {"latency_client_s": parts["latency_client_s"]},
                   {"rounds_done": rounds_done, "bytes_up": summary.get("bytes_up", float(timed["bytes_up"].iloc[-1]))},
                   mbit)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


m1, m2, m3 = st.columns(3)
m1.metric("measured per round", _ms(round_s))
m2.metric("Table 4 model", _ms(pred["table4_s"]), f"{pred['table4_s'] / round_s - 1:+.0%} against measured",
          delta_color="off")
m3.metric("bytes model", _ms(pred["bytes_s"]), f"{pred['bytes_s'] / round_s - 1:+.0%} against measured",
          delta_color="off")
st.plotly_chart(measured_latency(parts, round_s, pred), key="measured")
