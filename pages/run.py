"""A run's read-only result page, reached by a link (``?run=42``): config, curves, snapshots,
summary, and downloads (CSV, JSON, standalone HTML report)."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from pages import common
from pages.figures import (
    attack_name,
    attack_words,
    combination_name,
    communication,
    defense_words,
    defenses,
    leakage_over_rounds,
    leakage_values,
    learning_curves,
    loss_terms,
    setting_key,
    strongest_attack,
    with_simulated_latency,
    worst_client_words,
)
from pages.images import attack_grid, attacked_record, identical_clients_note, labelled_snapshot_grid
from pages.report import run_report, summary_rows

common.run_through_app_py()  # first thing: a deep link on a fresh server reruns through app.py

run_id = common.linked_run_id()  # a link that names no run says so and stops here
if run_id is None:
    runs = common.runs_frame()
    if runs.empty:
        st.info("No runs yet.")
        st.stop()
    labels = {int(r["id"]): common.run_label(r) for _, r in runs.iterrows()}
    run_id = st.selectbox("run", list(labels), format_func=labels.get)
    st.query_params["run"] = str(run_id)
run = common.run_info(run_id)
if run is None:  # deleted since the link was checked
    common.no_such_run(str(run_id))
    st.stop()

st.header(f"Run #{run['id']}: {run['name']}")
status = run["status"]
codes = common.technique_codes(run["config"])
name = combination_name(setting_key(codes, schedule=run["config"].get("schedule", "parallel")))
defended = f" · defenses: {defense_words(run['config'])}" if defenses(run["config"]) else ""
st.caption(f"{status} · {run['last_round']}/{run['rounds']} rounds · {name} (techniques "
           f"{codes}) · {common.plural(int(run['config']['num_clients']), 'client')} · "
           f"{run['config']['data']['dataset']}{defended} · link: `?run={run['id']}`")
if run["error"]:
    st.error(f"Run #{run['id']} failed: {common.error_text(run['error'])}")
history = with_simulated_latency(common.history(run_id), run["config"])
summary = run.get("summary") or {}
classes = common.run_classes(run["config"])


def time_figures() -> None:
    """The time the Runs page shows (start to end, everything included) and the training rounds' time alone,
    each named, with what lies between them."""
    runs = common.runs_frame()
    row = runs.loc[runs["id"] == run_id]
    elapsed = float(row.iloc[0]["elapsed_s"]) if not row.empty and run["status"] != "queued" else None
    training = summary.get("wall_s")
    if training is None and not history.empty and "wall_s" in history:
        training = float(history["wall_s"].iloc[-1])
    t = st.columns(2)
    t[0].metric("time, start to end", common.fmt_seconds(elapsed),
                help="as on the Runs page: from the run's start to its end, everything included")
    t[1].metric("training rounds alone", common.fmt_seconds(training),
                help="the rounds' own time, summed: evaluation, leakage measurement, snapshots and checkpoints "
                     "excluded")
    leak_s = float(history["leak_s"].sum()) if "leak_s" in history and history["leak_s"].notna().any() else 0.0
    if elapsed is not None and training is not None:
        leak = f"leakage measurement ({common.fmt_seconds(leak_s)}), " if leak_s else ""
        st.caption(f"The other {common.fmt_seconds(max(elapsed - training, 0))} went to evaluation, {leak}snapshots, "
                   "checkpoints, loading the data, and any time spent queued again after a worker stopped.")


m = st.columns(3)
m[0].metric("final test accuracy", common.fmt_float(summary.get("final_test_acc")))
m[1].metric("best (live subset)", common.fmt_float(summary.get("best_test_acc")))
reached = summary.get("rounds_to_target")
m[2].metric(f"rounds to {run['config']['target_acc']:.0%}", "–" if reached is None else f"{reached:,}")
time_figures()

if history.empty:
    st.info("No evaluation step recorded yet.")
else:
    label = f"#{run['id']} {run['name']}"
    c1, c2 = st.columns(2)
    c1.plotly_chart(learning_curves({label: history}, "test_acc"), key="acc")
    c2.plotly_chart(learning_curves({label: history}, "test_loss"), key="loss")
    c3, c4 = st.columns(2)
    c3.plotly_chart(loss_terms(history), key="terms")
    c4.plotly_chart(communication(history), key="comm")

leak_round = summary.get("leak_round")
attack = attacked_record(common.images(run_id, int(leak_round))) if leak_round is not None else None
if leak_round is not None:
    st.subheader(f"What the server can see (leakage at round {leak_round}, client {summary.get('leak_client', 0)})")
    for col, (label, text) in zip(st.columns(4), leakage_values(summary).items()):
        col.metric(label, text)
    measured = history.dropna(subset=["leak_psnr"]) if "leak_psnr" in history else history.iloc[:0]
    said = {**(measured.iloc[-1].dropna().to_dict() if len(measured) else {}), **summary}  # the last measurement
    strongest = strongest_attack(said)
    st.caption(f"The server attacks client {summary.get('leak_client', 0)}: {attack_words(said)}."
               f"{worst_client_words(said)} Distance correlation and mutual information measure how much the "
               "smashed data depend on the inputs. Higher PSNR, SSIM, distance correlation and mutual information: "
               "the server sees more.")
    l1, l2 = st.columns(2)
    l1.plotly_chart(leakage_over_rounds(history), key="leak_quality")
    l2.plotly_chart(leakage_over_rounds(history, ("leak_dcor", "leak_mi")), key="leak_dependence")
    if attack is not None:
        header = ("strongest attack", f"({attack_name(strongest)})") if strongest else ("server's attack",
                                                                                       "(inverse network)")
        st.image(attack_grid(attack, classes, header), width="content")

rounds = common.image_rounds(run_id)
snapshots = common.images(run_id, rounds[-1]) if rounds else []
if snapshots:
    st.subheader(f"InfoPro snapshots, round {rounds[-1]}")
    note = identical_clients_note(run["config"], rounds[-1])
    if note and len(snapshots) > 1:
        st.info(note)
    for rec in snapshots:
        mse = "" if rec.mse is None else f" · reconstruction MSE {rec.mse:.4f}"
        st.markdown(f"**Client {rec.client}**{mse}")
        st.image(labelled_snapshot_grid(rec.inputs, rec.smashed, rec.reconstruction, rec.labels, classes),
                 width="content")

with st.expander("Configuration"):
    st.json(run["config"])
if summary:
    with st.expander("Summary"):
        st.dataframe(pd.DataFrame(summary_rows(summary), columns=["figure", "value"]), hide_index=True)

d1, d2, d3 = st.columns(3)
d1.download_button("metrics (CSV)", common.history(run_id).to_csv(index=False), f"splitlab-run-{run_id}.csv",
                   "text/csv", key="csv")
d2.download_button("config, history, summary (JSON)", json.dumps(common.export(run_id), indent=1),
                   f"splitlab-run-{run_id}.json", "application/json", key="json")
d3.download_button("standalone report (HTML)", run_report(run, common.history(run_id), snapshots, attack, classes),
                   f"splitlab-run-{run_id}.html", "text/html", key="html")
