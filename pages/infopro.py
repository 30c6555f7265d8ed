"""InfoPro: what the clients send and what their decoders recover, round by round."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages import common
from pages.figures import reconstruction_mse
from pages.images import identical_clients_note, labelled_snapshot_grid

common.run_through_app_py()  # first thing: a deep link on a fresh server reruns through app.py


def mse_text(mse: float | None) -> str:
    return f"{mse:.4f}" if mse is not None and pd.notna(mse) else "–"


st.header("InfoPro reconstructions")
linked = common.linked_run_id()  # a link that names no run says so and stops here
runs = common.runs_frame()
with_images = [int(i) for i in runs["id"] if common.image_rounds(int(i))]
if not with_images:
    st.info("No run has recorded snapshots yet. Runs record them every `image_every` rounds "
            "(the demo profile: every 50); runs with the InfoPro local loss (④) also show reconstructions.")
    st.stop()
labels = {int(r["id"]): common.run_label(r) for _, r in runs.iterrows()}
if linked is not None and linked not in with_images:
    st.info(f"Run #{linked} has recorded no snapshots yet; choose a run that has.")
run_id = st.selectbox("run", with_images, with_images.index(linked) if linked in with_images else 0,
                      format_func=labels.get)
rounds = common.image_rounds(run_id)
round_ = st.select_slider("round", rounds, rounds[-1]) if len(rounds) > 1 else rounds[0]
records = common.images(run_id, round_)
st.caption("Each row: a test image | the first channels of its smashed data (what the client uploads), each "
           "scaled to its own range (black: the channel is constant, usually all zero after the ReLU) | the "
           "client's InfoPro decoder reconstruction (only with the InfoPro local loss).")
info = common.run_info(run_id) or {}
note = identical_clients_note(info.get("config") or {}, round_)
if note and len(records) > 1:
    st.info(note)
for rec in records:
    st.markdown(f"**Client {rec.client}**, round {rec.round} · reconstruction MSE {mse_text(rec.mse)}")
    st.image(labelled_snapshot_grid(rec.inputs, rec.smashed, rec.reconstruction, rec.labels), width="content")
mse = pd.DataFrame([{"round": r, "client": f"client {rec.client}", "mse": rec.mse}
                    for r in rounds for rec in common.images(run_id, r) if rec.mse is not None])
if not mse.empty:
    st.plotly_chart(reconstruction_mse(mse), key="mse")
