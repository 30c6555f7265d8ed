"""Compare: a Table-3-style grid of finished runs (technique combinations, each defense apart, x n), the
privacy-utility trade-off (accuracy against leakage, each run marked by its defense and strength, with the
Pareto front), and accuracy vs n."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.presets import without_mixup
from engine.studies.paper import table3_rows
from pages import common
from pages.figures import (
    LEAK_FORMATS,
    LEAK_LABELS,
    LESS_LEAKAGE,
    ROW_OF,
    accuracy_vs_leakage,
    accuracy_vs_n,
    combination_name,
    defense_kind,
    defense_label,
    defense_strength,
    more_leakage_is_higher,
    pareto_front,
    setting_key,
    split_defense,
    split_setting,
    with_defense,
)

common.run_through_app_py()  # first thing: a deep link on a fresh server reruns through app.py


def rounds_to(history: pd.DataFrame, target: float) -> float:
    """First evaluated round with test accuracy >= target (NaN if never)."""
    hit = history.loc[history["test_acc"] >= target, "round"]
    return float(hit.iloc[0]) if len(hit) else float("nan")


RESULT_COLUMNS = ["id", "name", "techniques", "combination", "defense", "strength", "n", "dataset", "accuracy",
                  "rounds_to_target", *LEAK_LABELS]


def finished_results(frame: pd.DataFrame, target: float) -> pd.DataFrame:
    """One row per finished run: id, name, techniques (a setting key: the codes, a SplitFed schedule, the cut
    when it is not block 1 and the defenses when any is on), combination (the same key without the defenses),
    defense (which: "none", "noise", ...) and strength ("σ=0.5", "none"), n, final accuracy, rounds to target,
    and the leakage measures of its summary (NaN for a run that did not measure them)."""
    rows = []
    for _, r in frame.loc[frame["status"] == "finished"].iterrows():
        info = common.run_info(int(r["id"])) or {}
        summary = info.get("summary") or {}
        config = info.get("config") or {}
        key = setting_key(r["techniques"], int(config.get("cut_layer", 1)), config.get("schedule", "parallel"))
        rows.append({"id": int(r["id"]), "name": r["name"], "techniques": with_defense(key, defense_label(config)),
                     "combination": key, "defense": defense_kind(config), "strength": defense_strength(config),
                     "n": int(r["clients"]),
                     "dataset": r["dataset"], "accuracy": r["final_acc"],
                     "rounds_to_target": rounds_to(common.history(int(r["id"])), target),
                     **{key: summary.get(key) for key in LEAK_LABELS}})
    out = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    for column in ("accuracy", *LEAK_LABELS):  # a run without a summary or a measure: NaN, shown "–"
        out[column] = pd.to_numeric(out[column], errors="coerce")
    return out


def leakage_measures(results: pd.DataFrame) -> list[str]:
    """The leakage measures at least one of ``results`` has."""
    return [key for key in LEAK_LABELS if results[key].notna().any()]


def leakage_section(results: pd.DataFrame, dataset: str) -> None:
    """Leakage beside accuracy: a grid of one measure (least leaking highlighted) and the trade-off scatter."""
    measures = leakage_measures(results)
    if not measures:
        how = "" if common.readonly() else (" Runs measure it when **leakage every (rounds, 0: off)** on the New run "
                                            "form (`privacy.every` in a config) is above 0.")
        st.info(f"No finished run on {dataset} measured privacy leakage.{how}")
        return
    metric = st.selectbox("leakage measure", measures, format_func=LEAK_LABELS.get, key="leak_metric")
    least = LESS_LEAKAGE.get(metric, "min")
    label = LEAK_LABELS[metric]
    st.markdown(f"**{label[0].upper() + label[1:]}** at the last measurement (least leakage per column "
                f"highlighted; {'lower' if least == 'max' else 'higher'} means the server sees more)")
    show(grid(results, metric), LEAK_FORMATS[metric], least)
    points = results.dropna(subset=[metric, "accuracy"])
    st.markdown("**Privacy-utility trade-off**: one point per finished run")
    trade_off_caption(points, metric)
    combinations = list(dict.fromkeys(results["combination"]))  # one colour per combination, defended or not
    st.plotly_chart(accuracy_vs_leakage(points.assign(techniques=points["combination"]), metric, combinations),
                    key="acc_vs_leak")
    left_out = int(results[metric].isna().sum())
    if left_out:
        runs = "run" if left_out == 1 else "runs"
        st.caption(f"{left_out} finished {runs} on {dataset} left out: no leakage measurement (set **leakage every "
                   "(rounds, 0: off)** on the New run form to measure it).")


def trade_off_caption(points: pd.DataFrame, metric: str) -> None:
    """What the scatter's colours, markers, labels and dashed line mean, and which runs make the front."""
    corner = "top left" if more_leakage_is_higher(metric) else "top right"
    defended = (points["defense"] != "none").any()
    marks = (" A marker's shape is its defense (circle: none; diamond: noise; square: NoPeek; triangle: "
             "quantisation; star: several), its label the defense's strength." if defended else
             " No run here has a defense." + ("" if common.readonly() else " New run's **Defenses** (or a defense "
                                             "swept on the Sweep tab) adds some."))
    text = (f"Colour: the technique combination.{marks} Best is the {corner}: more accuracy for less leakage.")
    if len(points) > 1:
        front = pareto_front(points, metric)
        names = ", ".join(f"#{int(r['id'])} ({r['strength'] if r['strength'] != 'none' else 'no defense'})"
                          for _, r in front.iterrows())
        text += f" The dashed line is the Pareto front, the runs no other run beats on both: {names}."
    st.caption(text)  # run ids and strengths are numbers: no markdown in them


def default_dataset(finished: pd.DataFrame) -> str:
    """The data set with the most finished runs; on a tie, the newest finished run's."""
    counts = finished["dataset"].value_counts()
    most = set(counts[counts == counts.max()].index)
    newest_first = finished.sort_values(["created", "id"], ascending=False)
    return next(d for d in newest_first["dataset"] if d in most)


def grid(results: pd.DataFrame, value: str) -> pd.DataFrame:
    """Rows = technique combinations by name (Table 3 order first), columns = n, mean over repeated runs."""
    table = results.pivot_table(index="techniques", columns="n", values=value, aggfunc="mean", dropna=False)
    # the paper's cut first, Table 3's order within a cut
    order = sorted(table.index, key=lambda c: (split_setting(c)[1], ROW_OF.get(split_setting(c)[0], 99),
                                                split_defense(c)[0], bool(split_defense(c)[1]), c))
    table = table.loc[order].astype(float)
    table.index = [combination_name(c) for c in table.index]
    table.columns = [f"n={n}" for n in table.columns]
    return table


def mixup_effect(results: pd.DataFrame) -> pd.DataFrame:
    """Accuracy points gained by adding ③ alone: mean accuracy of each combination with mixup minus
    that of the same combination without it, per n (rows only where both were run)."""
    mean = results.groupby(["techniques", "n"])["accuracy"].mean()
    effect: dict[str, dict[str, float]] = {}
    for (key, n), acc in mean.items():
        codes, cut = split_setting(key)
        base = without_mixup(codes)
        base = with_defense(setting_key(base, cut), split_defense(key)[1]) if base is not None else None
        if base is not None and (base, n) in mean.index:
            effect.setdefault(f"{combination_name(key)} vs {combination_name(base)}", {})[f"n={n}"] = \
                100 * (acc - mean[(base, n)])
    return pd.DataFrame.from_dict(effect, orient="index")


def show(table: pd.DataFrame, fmt: str, best: str | None = None, label: str = "technique combination") -> None:
    """A grid with its row names in full (the index column sized to the longest), every empty cell
    "–", and the best value per column highlighted (``best``: "max", "min" or None)."""
    styled = table.style.format(fmt, na_rep="–")
    if best == "max":
        styled = styled.highlight_max(axis=0, color="#c8e6c9")
    elif best == "min":
        styled = styled.highlight_min(axis=0, color="#c8e6c9")
    width = 24 + 8 * max([len(label)] + [len(str(i)) for i in table.index])
    st.dataframe(styled, column_config={"_index": st.column_config.TextColumn(label, width=width)}, placeholder="–")


st.header("Compare")
runs = common.runs_frame()
finished = runs.loc[runs["status"] == "finished"]
if finished.empty:
    st.info("No finished runs yet. Queue a sweep (New run → Sweep) to build a Table 3 grid.")
    st.stop()
c1, c2 = st.columns(2)
datasets = sorted(finished["dataset"].unique())
dataset = c1.selectbox("data set", datasets, datasets.index(default_dataset(finished)),
                       key="compare_dataset")  # keyed: a run finishing on another data set keeps the pick
target = c2.slider("target accuracy for 'rounds to target'", 0.1, 1.0, 0.75, 0.01)
results = finished_results(runs.loc[runs["dataset"] == dataset], target)
st.markdown("**Final test accuracy** (best per column highlighted)")
show(grid(results, "accuracy"), "{:.4f}", "max")
st.markdown(f"**Rounds to {target:.0%}** (fewest per column highlighted; – never reached)")
show(grid(results, "rounds_to_target"), "{:.0f}", "min")
leakage_section(results, dataset)
paper = pd.DataFrame(table3_rows())
shown_paper = paper.loc[paper["techniques"].isin(results["techniques"].unique())]
dotted = " (dotted: the paper's Table 3, LeNet-5 on CIFAR-10)" if len(shown_paper) else ""
st.markdown(f"**Accuracy against n**{dotted}")
st.plotly_chart(accuracy_vs_n(results, shown_paper), key="acc_vs_n")
effect = mixup_effect(results)
if not effect.empty:
    st.markdown("**What adding ③ mixup changes** (accuracy points, the same combination with and without ③; "
                "mean over repeated runs)")
    show(effect, "{:+.1f}", label="with ③ vs without")
with st.expander("The paper's Table 3 (CIFAR-10, n = 20..100), and what ③ adds there"):
    show(grid(paper.rename(columns={"comm_rounds": "rounds_to_target"}), "accuracy"), "{:.4f}", "max")
    show(mixup_effect(paper), "{:+.1f}", label="with ③ vs without")
