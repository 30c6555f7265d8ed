"""SplitLab's dashboard entry point (``make run``).

Pages read only through ``storage/`` and the engine's pure modules (config, presets, latency);
training happens in the worker. This first version shows the algorithms and the latency model.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from engine.latency import LatencyParams, latency_curves
from engine.presets import PRESETS, TECHNIQUE_CODES

st.set_page_config(page_title="SplitLab", layout="wide")
st.title("SplitLab")
st.caption("Parallel split learning, one technique at a time: Vanilla SL, SplitFed, LocSplitFed, "
           "LocFedMix-SL and SGLR on one engine.")

st.subheader("Algorithms")
st.dataframe(pd.DataFrame([{"preset": p.name, "algorithm": p.title, "techniques": p.techniques,
                            "Table 3 row": p.table3_row, "what it does": p.description}
                           for p in PRESETS.values()]), hide_index=True, width="stretch")
st.markdown("  \n".join(f"`{code}` {text}" for code, text in TECHNIQUE_CODES.items()))
st.info("Train any of them from a terminal: `python -m engine run --preset locfedmix_sl --out run.json`.")

st.subheader("Latency model (the paper's Table 4 and Fig. 8)")
c1, c2, c3 = st.columns(3)
rounds = c1.number_input("rounds T", 1, 100_000, 10_000)
interval = c2.number_input("averaging interval T_c", 1, 100_000, 1)
max_n = c3.number_input("largest n", 2, 1000, 100)
params = LatencyParams(t_comp=1.0, t_comm=1.0, smashed_size=64 * 6 * 14 * 14, lower_size=156,
                       aux_size=793, avg_interval=int(interval))
rows = pd.DataFrame(latency_curves(list(range(1, int(max_n) + 1)), int(rounds), params))
fig = px.line(rows, x="n", y="latency", color="method", facet_col="ratio", log_y=True,
              labels={"latency": "latency (units of T_comm)"})
st.plotly_chart(fig, width="stretch")
