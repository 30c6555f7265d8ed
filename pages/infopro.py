"""InfoPro: what the clients send and what their decoders recover, round by round."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from pages import common
from pages.images import snapshot_grid

st.header("InfoPro reconstructions")
runs = common.runs_frame()
with_images = [int(i) for i in runs["id"] if common.image_rounds(int(i))]
if not with_images:
    st.info("No run has recorded snapshots yet. Runs record them every `image_every` rounds "
            "(the demo profile: every 50); runs with the InfoPro local loss (④) also show reconstructions.")
    st.stop()
labels = {int(r["id"]): common.run_label(r) for _, r in runs.iterrows()}
linked = common.query_run_id()
run_id = st.selectbox("run", with_images, with_images.index(linked) if linked in with_images else 0,
                      format_func=labels.get)
rounds = common.image_rounds(run_id)
round_ = st.select_slider("round", rounds, rounds[-1]) if len(rounds) > 1 else rounds[0]
records = common.images(run_id, round_)
st.caption("Each row: a test image | its first smashed-data channels (what the client uploads) | "
           "the client's InfoPro decoder reconstruction (only with the InfoPro local loss).")
cols = st.columns(len(records))
for col, rec in zip(cols, records):
    title = f"client {rec.client}" + (f" · MSE {rec.mse:.4f}" if rec.mse is not None else "")
    col.image(snapshot_grid(rec.inputs, rec.smashed, rec.reconstruction), caption=title)
mse = pd.DataFrame([{"round": r, "client": f"client {rec.client}", "mse": rec.mse}
                    for r in rounds for rec in common.images(run_id, r) if rec.mse is not None])
if not mse.empty:
    st.markdown("**Reconstruction MSE over rounds**")
    st.plotly_chart(px.line(mse, x="round", y="mse", color="client", markers=True), key="mse")
