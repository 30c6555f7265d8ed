"""Compare: a Table-3-style grid of finished runs (technique combinations x n), and accuracy vs n."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.paper import TABLE3_TECHNIQUES, table3_rows
from engine.presets import without_mixup
from pages import common
from pages.figures import accuracy_vs_n

ROW_OF = {codes: row for row, codes in TABLE3_TECHNIQUES.items()}


def rounds_to(history: pd.DataFrame, target: float) -> float:
    """First evaluated round with test accuracy >= target (NaN if never)."""
    hit = history.loc[history["test_acc"] >= target, "round"]
    return float(hit.iloc[0]) if len(hit) else float("nan")


def finished_results(frame: pd.DataFrame, target: float) -> pd.DataFrame:
    """One row per finished run: techniques, n, final accuracy, rounds to target."""
    rows = []
    for _, r in frame.loc[frame["status"] == "finished"].iterrows():
        rows.append({"techniques": r["techniques"], "n": int(r["clients"]), "dataset": r["dataset"],
                     "accuracy": r["final_acc"], "rounds_to_target": rounds_to(common.history(int(r["id"])), target)})
    return pd.DataFrame(rows, columns=["techniques", "n", "dataset", "accuracy", "rounds_to_target"])


def row_label(codes: str) -> str:
    row = ROW_OF.get(codes)
    return f"{row}: {codes}" if row else codes


def grid(results: pd.DataFrame, value: str) -> pd.DataFrame:
    """Rows = technique combinations (Table 3 order first), columns = n, mean over repeated runs."""
    table = results.pivot_table(index="techniques", columns="n", values=value, aggfunc="mean", dropna=False)
    order = sorted(table.index, key=lambda c: (ROW_OF.get(c, 99), c))
    table = table.loc[order]
    table.index = [row_label(c) for c in table.index]
    table.columns = [f"n={n}" for n in table.columns]
    return table


def mixup_effect(results: pd.DataFrame) -> pd.DataFrame:
    """Accuracy points gained by adding ③ alone: mean accuracy of each combination with mixup minus
    that of the same combination without it, per n (rows only where both were run)."""
    mean = results.groupby(["techniques", "n"])["accuracy"].mean()
    effect: dict[str, dict[str, float]] = {}
    for (codes, n), acc in mean.items():
        base = without_mixup(codes)
        if base is not None and (base, n) in mean.index:
            effect.setdefault(f"{row_label(codes)} vs {row_label(base)}", {})[f"n={n}"] = 100 * (acc - mean[(base, n)])
    return pd.DataFrame.from_dict(effect, orient="index")


st.header("Compare")
runs = common.runs_frame()
finished = runs.loc[runs["status"] == "finished"]
if finished.empty:
    st.info("No finished runs yet. Queue a sweep (New run → Sweep) to build a Table 3 grid.")
    st.stop()
c1, c2 = st.columns(2)
dataset = c1.selectbox("data set", sorted(finished["dataset"].unique()))
target = c2.slider("target accuracy for 'rounds to target'", 0.1, 1.0, 0.75, 0.01)
results = finished_results(runs.loc[runs["dataset"] == dataset], target)
acc = grid(results, "accuracy")
speed = grid(results, "rounds_to_target")
st.markdown("**Final test accuracy** (best per column highlighted)")
st.dataframe(acc.style.highlight_max(axis=0, color="#c8e6c9").format("{:.4f}", na_rep="–"))
st.markdown(f"**Rounds to {target:.0%}** (fewest per column highlighted; – never reached)")
st.dataframe(speed.style.highlight_min(axis=0, color="#c8e6c9").format("{:.0f}", na_rep="–"))
paper = pd.DataFrame(table3_rows())
st.markdown("**Accuracy against n** (dotted: the paper's Table 3, LeNet-5 on CIFAR-10)")
shown_paper = paper.loc[paper["techniques"].isin(results["techniques"].unique())]
st.plotly_chart(accuracy_vs_n(results, shown_paper), key="acc_vs_n")
effect = mixup_effect(results)
if not effect.empty:
    st.markdown("**What adding ③ mixup changes** (accuracy points, the same combination with and without ③; "
                "mean over repeated runs)")
    st.dataframe(effect.style.format("{:+.1f}", na_rep="–"))
with st.expander("The paper's Table 3 (CIFAR-10, n = 20..100), and what ③ adds there"):
    st.dataframe(grid(paper.rename(columns={"comm_rounds": "rounds_to_target"}), "accuracy")
                 .style.highlight_max(axis=0, color="#c8e6c9").format("{:.4f}"))
    st.dataframe(mixup_effect(paper).style.format("{:+.1f}"))
