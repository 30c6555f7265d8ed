"""Plotly figures built from stored runs. Pure functions: no Streamlit, so the standalone HTML
report uses exactly the figures the pages show.

Every figure names its template and every trace its colour. Streamlit replaces plotly's default
template in its server process with one whose colours are placeholders (``#000001``, ...) that only
its own front end resolves; a figure that relied on the default came out black and grey in the
HTML report, which is written inside that process.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engine.config import SPLITFED_SCHEDULES
from engine.latency import BEST_CASE_LABEL, WORST_CASE_LABEL, latency_curve_for_run
from engine.presets import PRESETS
from engine.studies.paper import TABLE3_TECHNIQUES

TEMPLATE = "plotly_white"
PALETTE = ("#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B", "#E377C2", "#7F7F7F",
           "#BCBD22", "#17BECF")  # D3's category10: distinct on white, and in the report
BYTE_KINDS = {"bytes_smashed_up": "smashed data up", "bytes_grads_down": "gradients down",
              "bytes_model_up": "models up", "bytes_model_down": "models down"}
BYTE_COLORS = dict(zip(BYTE_KINDS, ("#1F77B4", "#FF7F0E", "#2CA02C", "#9467BD")))
LOSS_TERMS = {"train_loss": "L (server)", "train_loss_mixup": "L~ (mixup)", "train_loss_local": "L^ (local)"}
LOSS_COLORS = dict(zip(LOSS_TERMS, ("#1F77B4", "#D62728", "#2CA02C")))
METRIC_LABELS = {"test_acc": "test accuracy", "test_loss": "test loss"}
DASHES = ("solid", "dash", "dot", "dashdot")
SYMBOLS = ("square-open", "diamond-open", "circle", "x", "triangle-up")
LEGEND_BELOW = {"orientation": "h", "yref": "container", "y": 0.0, "yanchor": "bottom", "x": 0.0, "xanchor": "left"}

# Table 4's methods as people name them, and how each is drawn. Curves that lie on one another
# (see latency_overlaps) get wider, paler lines underneath and thinner dashed ones on top, each
# with its own marker, so every one stays visible. (name, colour, dash, marker, width, marker size)
LATENCY_STYLE = {
    "vanilla_sl": ("Vanilla SL", "#1F77B4", "solid", "circle", 2.0, 7),
    "splitfed": ("SplitFed", "#FF7F0E", "solid", "square-open", 7.0, 12),
    "locsplitfed": ("LocSplitFed", "#2CA02C", "solid", "diamond-open", 7.0, 13),
    "locfedmix_sl": ("LocFedMix-SL (T_c = {interval})", "#D62728", "dot", "circle", 1.5, 5),
    BEST_CASE_LABEL: ("LocFedMix-SL best case (T_c = T)", "#9467BD", "dash", "triangle-up", 3.0, 9),
    WORST_CASE_LABEL: ("LocFedMix-SL worst case (T_c = 1)", "#8C564B", "dash", "x", 3.5, 9),
}
LATENCY_DRAW_ORDER = ("splitfed", "locsplitfed", WORST_CASE_LABEL, "vanilla_sl", BEST_CASE_LABEL, "locfedmix_sl")
WHY_THEY_COINCIDE = {
    frozenset({"splitfed", BEST_CASE_LABEL}): "SplitFed's per-round model upload |w_c| is tiny next to |s|, "
                                              "and the best case averages only once",
    frozenset({"locsplitfed", WORST_CASE_LABEL}): "once n·T_comm ≥ T_comp, LocSplitFed's second compute step "
                                                  "hides behind the upload: both pay T_comp + n·T_comm + the "
                                                  "model exchange every round",
    frozenset({"locfedmix_sl", WORST_CASE_LABEL}): "with T_c = 1, LocFedMix-SL is its own worst case",
    frozenset({"locfedmix_sl", BEST_CASE_LABEL}): "with T_c ≥ T, LocFedMix-SL averages once: its best case",
}

TECHNIQUE_NAMES = {"3": "mixup", "4": "local loss", "4p": "local loss (aux averaged)", "5": "averaging",
                   "splitlr": "SplitLr", "splitavg": "SplitAvg"}
ROW_OF = {codes: row for row, codes in TABLE3_TECHNIQUES.items()}
CUT_MARK = "@cut"  # a setting key "1,2,5@cut2": the combination at another cut than the paper's (block 1)
SCHEDULE_MARK = "#"  # a setting key "1,2,5#splitfed_v1": the combination under a SplitFed schedule
SCHEDULE_NAMES = {"splitfed_v1": "SplitFed V1", "splitfed_v2": "SplitFed V2"}


DEFENSE_MARK = " | "  # a setting key "1,2,5 | noise σ=0.5": the combination with a defense on


def setting_key(codes: str, cut_layer: int = 1, schedule: str = "parallel", defense: str = "") -> str:
    """The key that groups runs on the Compare page: the technique codes, a SplitFed schedule (SplitFed
    V1 and V2 share row 4's codes), the cut when it is not the paper's, and the defenses when any is on
    (``defense``: :func:`defense_label`'s words), so that runs cut after different blocks, served on
    different schedules or defended differently never share a cell."""
    if schedule in SPLITFED_SCHEDULES:
        codes = f"{codes}{SCHEDULE_MARK}{schedule}"
    key = codes if cut_layer == 1 else f"{codes}{CUT_MARK}{cut_layer}"
    return with_defense(key, defense)


def with_defense(key: str, defense: str) -> str:
    """A setting key with ``defense`` (:func:`defense_label`'s words; "" or "none": undefended) added."""
    return f"{key}{DEFENSE_MARK}{defense}" if defense and defense != "none" else key


def split_defense(key: str) -> tuple[str, str]:
    """(the setting key without its defenses, the defenses' words or "") of a :func:`setting_key`."""
    base, _, defense = key.partition(DEFENSE_MARK)
    return base, defense


def split_setting(key: str) -> tuple[str, int]:
    """(technique codes, with their SplitFed schedule if any, and the cut layer) of a :func:`setting_key`
    (its defenses, if any, left out: :func:`split_defense` gives them)."""
    codes, _, cut = split_defense(key)[0].partition(CUT_MARK)
    return codes, int(cut) if cut else 1


PRESET_TITLES: dict[str, str] = {}
for _p in PRESETS.values():  # the first preset of a technique set names it (the plain one before variants)
    if not _p.title.startswith("Table 3"):
        PRESET_TITLES.setdefault(setting_key(_p.techniques, schedule=_p.overrides()["schedule"]), _p.title)


def combination_name(codes: str) -> str:
    """A technique combination as people name it: 'LocFedMix-SL (row 8)', 'SplitFed (row 4)',
    'Parallel SL + mixup (row 2)'; a combination no preset names is built from technique names.
    A :func:`setting_key` with another cut gets it named: 'SplitFed (row 4), cut after block 2'; one with
    defenses, them: 'SplitFed (row 4), noise σ=0.5'."""
    base, defense = split_defense(codes)
    if defense:
        return f"{combination_name(base)}, {defense}"
    codes, cut = split_setting(codes)
    if cut != 1:
        return f"{combination_name(codes)}, cut after block {cut}"
    name = PRESET_TITLES.get(codes)
    if name is None:
        plain, _, schedule = codes.partition(SCHEDULE_MARK)
        parts = plain.split(",")
        base = "Vanilla SL" if parts == ["1"] else "Parallel SL" if "2" in parts else "Parallel SL without ②"
        if schedule:
            base = f"{SCHEDULE_NAMES[schedule]} schedule" + ("" if "2" in parts else " without ②")
        name = " + ".join([base] + [TECHNIQUE_NAMES[c] for c in parts if c in TECHNIQUE_NAMES])
    row = ROW_OF.get(codes)
    return f"{name} (row {row})" if row else name


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _style(fig: go.Figure, title: str, **layout) -> go.Figure:
    """The look every figure shares: an explicit template, a title, the legend under the plot."""
    layout = {"margin": {"t": 50, "b": 10, "l": 60, "r": 20}, "legend": LEGEND_BELOW, **layout}
    fig.update_layout(template=TEMPLATE, title={"text": title, "x": 0.01, "xanchor": "left"}, **layout)
    return fig


def compute_steps_in_turn(config: dict) -> int:
    """Client compute steps of a round that run one after another (T_comp each): one when the clients
    compute in parallel, n for Vanilla SL, n * local_steps for SplitFed (clients in turn, as the authors'
    code serves them)."""
    schedule, n = config.get("schedule", "parallel"), int(config["num_clients"])
    if schedule in SPLITFED_SCHEDULES:
        return n * int(config.get("local_steps", 1))
    return n if schedule == "sequential" else 1


def with_simulated_latency(history: pd.DataFrame, config: dict, t_comp: float = 0.05,
                           uplink_bytes_per_s: float = 12.5e6) -> pd.DataFrame:
    """Add ``latency_s``: the Table 4 view of time (client compute per round plus the bytes uploaded
    so far over one shared uplink; defaults: 50 ms a step, 100 Mbit/s)."""
    out = history.copy()
    if out.empty:
        out["latency_s"] = []
        return out
    if "compute_units" in out and out["compute_units"].notna().all():
        # clients that come and go, stragglers, a deadline: the run counted its own compute, in T_comp
        out["latency_s"] = out["compute_units"] * t_comp + out["bytes_up"] / uplink_bytes_per_s
        return out
    steps = compute_steps_in_turn(config)  # T_comp times this, per round
    out["latency_s"] = latency_curve_for_run(out["round"], out["bytes_up"], steps, t_comp, uplink_bytes_per_s,
                                             sequential=True)
    return out


def learning_curves(histories: dict[str, pd.DataFrame], metric: str = "test_acc", x: str = "round", *,
                    title: str | None = None) -> go.Figure:
    """One line per run: ``metric`` against ``x`` (``round`` or ``latency_s``); min-max band for accuracy."""
    fig = go.Figure()
    for i, (label, h) in enumerate(histories.items()):
        if h.empty:
            continue
        color = PALETTE[i % len(PALETTE)]
        if metric == "test_acc" and {"test_acc_min", "test_acc_max"} <= set(h.columns) and len(histories) <= 3:
            fig.add_trace(go.Scatter(x=pd.concat([h[x], h[x][::-1]]),
                                     y=pd.concat([h["test_acc_max"], h["test_acc_min"][::-1]]),
                                     fill="toself", line={"width": 0, "color": color}, fillcolor=_rgba(color, 0.15),
                                     hoverinfo="skip", showlegend=False, name=f"{label} (client min-max)"))
        fig.add_trace(go.Scatter(x=h[x], y=h[metric], mode="lines+markers", name=label, line={"color": color},
                                 marker={"size": 4, "color": color}))
    label = METRIC_LABELS.get(metric, metric)
    if title is None:
        title = label.capitalize() + (" against simulated latency" if x == "latency_s" else "")
    fig = _style(fig, title, xaxis_title="simulated latency (s)" if x == "latency_s" else "round",
                 yaxis_title=label, uirevision="keep")
    if metric.endswith("_acc"):  # an accuracy lies in [0, 1]: one early point must not draw the axis from -0.5
        fig.update_yaxes(range=[0, 1.02])
    return fig


def loss_terms(history: pd.DataFrame, *, title: str = "Training-loss terms") -> go.Figure:
    """The training-loss terms L, L~ and L^ against round (terms that stay zero are left out)."""
    fig = go.Figure()
    for col, name in LOSS_TERMS.items():
        if col in history and history[col].abs().sum() > 0:
            fig.add_trace(go.Scatter(x=history["round"], y=history[col], mode="lines+markers", name=name,
                                     line={"color": LOSS_COLORS[col]}, marker={"size": 4, "color": LOSS_COLORS[col]}))
    return _style(fig, title, xaxis_title="round", yaxis_title="loss", uirevision="keep", showlegend=True)


def communication(history: pd.DataFrame, *, title: str = "Communication so far") -> go.Figure:
    """Cumulative megabytes exchanged by kind, stacked, against round."""
    fig = go.Figure()
    for col, name in BYTE_KINDS.items():
        if col in history:
            fig.add_trace(go.Scatter(x=history["round"], y=history[col] / 1e6, name=name, mode="lines",
                                     stackgroup="bytes", line={"color": BYTE_COLORS[col], "width": 1},
                                     fillcolor=_rgba(BYTE_COLORS[col], 0.55)))
    return _style(fig, title, xaxis_title="round", yaxis_title="MB exchanged so far", uirevision="keep",
                  showlegend=True, legend={**LEGEND_BELOW, "traceorder": "normal"})  # bottom layer first


def bytes_exchanged(totals: pd.DataFrame, per_round: bool = True, *,
                    title: str = "Bytes exchanged by finished runs") -> go.Figure:
    """Stacked bars, one per run: ``totals`` has columns run, kind (a BYTE_KINDS key), MB, rounds."""
    fig = go.Figure()
    for col, name in BYTE_KINDS.items():
        part = totals.loc[totals["kind"] == col]
        y = part["MB"] / part["rounds"].clip(lower=1) if per_round else part["MB"]
        fig.add_trace(go.Bar(x=part["run"], y=y, name=name, marker={"color": BYTE_COLORS[col]}))
    return _style(fig, title, barmode="stack", yaxis_title="MB per round" if per_round else "MB in all",
                  xaxis={"title": "run", "type": "category", "automargin": True}, showlegend=True,
                  legend={**LEGEND_BELOW, "traceorder": "normal"})


def beta_density(alpha: float, beta: float, *, title: str = "Mixing ratio λ ~ Beta(α, β)") -> go.Figure:
    """The density of lambda ~ Beta(alpha, beta) on (0, 1)."""
    lam = np.linspace(0.005, 0.995, 199)
    log_b = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)
    density = np.exp((alpha - 1) * np.log(lam) + (beta - 1) * np.log1p(-lam) - log_b)
    fig = go.Figure(go.Scatter(x=lam, y=density, fill="tozeroy", mode="lines", line={"color": PALETTE[0]},
                               fillcolor=_rgba(PALETTE[0], 0.3)))
    fig.update_layout(template=TEMPLATE, height=185, title={"text": title, "x": 0.01, "font": {"size": 13}},
                      margin={"t": 30, "b": 30, "l": 30, "r": 10}, xaxis_title="lambda",
                      yaxis={"showticklabels": False}, showlegend=False)
    return fig


def latency_name(method: str, avg_interval: int | None = None) -> str:
    """'locfedmix_sl (T_c=T)' -> 'LocFedMix-SL best case (T_c = T)'; unknown methods stay as they are."""
    style = LATENCY_STYLE.get(method)
    if style is None:
        return method
    return style[0].format(interval=avg_interval) if avg_interval else style[0].replace(" (T_c = {interval})", "")


def latency_figure(rows: list[dict], *, title: str = "Latency against the number of clients (Fig. 8)",
                   avg_interval: int | None = None) -> go.Figure:
    """Fig. 8: latency against n for each T_comp:T_comm ratio, one panel each (log scale)."""
    df = pd.DataFrame(rows, columns=["ratio", "method", "n", "latency"])
    ratios = list(dict.fromkeys(df["ratio"]))
    fig = make_subplots(rows=1, cols=max(len(ratios), 1), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[f"T_comp : T_comm = {r}" for r in ratios])
    order = [m for m in LATENCY_DRAW_ORDER if m in set(df["method"])]
    order += [m for m in dict.fromkeys(df["method"]) if m not in order]
    for i, method in enumerate(order):
        _, color, dash, symbol, width, size = LATENCY_STYLE.get(
            method, (method, PALETTE[i % len(PALETTE)], "solid", "circle", 2.0, 6))
        wide = width > 5  # drawn underneath, pale, so what lies on top shows through
        for col, ratio in enumerate(ratios, start=1):
            part = df.loc[(df["method"] == method) & (df["ratio"] == ratio)].sort_values("n")
            fig.add_trace(go.Scatter(
                x=part["n"], y=part["latency"], mode="lines+markers", name=latency_name(method, avg_interval),
                legendgroup=method, showlegend=col == 1, legendrank=list(LATENCY_STYLE).index(method)
                if method in LATENCY_STYLE else 100, opacity=0.45 if wide else 1.0,
                line={"color": color, "dash": dash, "width": width},
                marker={"symbol": symbol, "size": size, "color": color, "maxdisplayed": 12,
                        "line": {"width": 1.5, "color": color}}), row=1, col=col)
    fig.update_yaxes(type="log", dtick=1)  # one tick a decade
    fig.update_yaxes(title_text="latency (s)", row=1, col=1)
    fig.update_xaxes(title_text="clients n")
    return _style(fig, title, height=480, margin={"t": 80, "b": 10, "l": 60, "r": 20})


LATENCY_PARTS = {"latency_client_s": "client compute", "latency_upload_s": "upload",
                 "latency_server_s": "server compute", "latency_download_s": "download",
                 "latency_averaging_s": "model exchange"}


def measured_latency(parts: dict[str, float], round_s: float, predictions: dict[str, float], *,
                     title: str = "One round, measured and modeled") -> go.Figure:
    """A networked run's measured round, part by part, beside what the Table 4 model and the bytes model predict."""
    fig = go.Figure()
    for i, (key, label) in enumerate(LATENCY_PARTS.items()):
        fig.add_trace(go.Bar(x=[parts.get(key, 0.0) * 1000], y=["measured"], orientation="h", name=label,
                             marker_color=PALETTE[i % len(PALETTE)]))
    other = max(0.0, round_s - sum(parts.get(k, 0.0) for k in LATENCY_PARTS))
    fig.add_trace(go.Bar(x=[other * 1000], y=["measured"], orientation="h", name="rest of the round",
                         marker_color="#cccccc"))
    for name, label in (("table4_s", "Table 4 model"), ("bytes_s", "bytes model")):
        fig.add_trace(go.Bar(x=[predictions[name] * 1000], y=[label], orientation="h", name=label, showlegend=False,
                             marker_color="#555555" if name == "table4_s" else "#999999",
                             text=[f"{predictions[name] * 1000:.1f} ms"], textposition="auto"))
    fig.update_layout(barmode="stack", legend_traceorder="normal")
    fig.update_xaxes(title_text="milliseconds per round")
    fig.update_yaxes(categoryorder="array", categoryarray=["bytes model", "Table 4 model", "measured"])
    return _style(fig, title, height=300, margin={"t": 60, "b": 10, "l": 110, "r": 20})


def latency_overlaps(rows: list[dict], rel_tol: float = 0.01, avg_interval: int | None = None) -> list[str]:
    """Which curves of ``rows`` lie on one another, where, and why: one sentence per pair, for a note
    under the figure. Identical curves are named together; two curves "coincide" where they are
    within ``rel_tol`` at three or more n >= 2 of a panel (a mere crossing is not reported)."""
    from engine.studies.latency_study import ranges

    table: dict[str, dict[tuple[str, int], float]] = {}
    for r in rows:
        if r["n"] >= 2:
            table.setdefault(r["method"], {})[(r["ratio"], r["n"])] = r["latency"]
    ratios = list(dict.fromkeys(r["ratio"] for r in rows))

    def close(a: str, b: str, key: tuple[str, int], tol: float) -> bool:
        return key in table[b] and math.isclose(table[a][key], table[b][key], rel_tol=tol)

    groups: list[list[str]] = []  # methods whose curves are the same everywhere
    for m, points in table.items():
        same = next((g for g in groups if all(close(m, g[0], k, 1e-9) for k in points)), None)
        same.append(m) if same else groups.append([m])

    def why(a: list[str], b: list[str]) -> str | None:  # the first reason listed for a pair across a and b
        return next((reason for pair, reason in WHY_THEY_COINCIDE.items()
                     if any(frozenset({x, y}) == pair for x in a for y in b)), None)

    def named(g: list[str]) -> str:
        return " = ".join(latency_name(m, avg_interval) for m in g)

    notes = [f"{' and '.join(latency_name(m, avg_interval) for m in g)} are one curve"
             + (f": {reason}." if (reason := why(g[:1], g[1:])) else ".") for g in groups if len(g) > 1]
    for a, b in combinations(groups, 2):
        full, partial = [], []
        for ratio in ratios:
            ns = [n for (q, n) in table[a[0]] if q == ratio and (q, n) in table[b[0]]]
            same = [n for n in ns if close(a[0], b[0], (ratio, n), rel_tol)]
            if len(same) == len(ns) and ns:
                full.append(ratio)
            elif len(same) >= 3:
                partial.append(f"at {ratio} for n = {ranges(same)}")
        if full or partial:
            where = " and ".join(([f"at {' and '.join(full)} (every n)"] if full else []) + partial)
            if len(full) == len(ratios):
                where = "in every panel"
            notes.append(f"{named(a)} and {named(b)} coincide {where}" + (f": {r}." if (r := why(a, b)) else "."))
    return notes


def _fitted_unit_range(values: pd.Series) -> list[float]:
    """A y range inside [0, 1] around ``values``, with a little room below and above."""
    lo, hi = float(values.min()), float(values.max())
    pad = max(0.02, 0.08 * (hi - lo))
    return [max(0.0, lo - pad), min(1.0, hi + pad)]


def accuracy_vs_n(measured: pd.DataFrame, paper: pd.DataFrame | None = None, *,
                  title: str = "Final test accuracy against n") -> go.Figure:
    """The paper's scalability view: final accuracy against n, one line per technique combination,
    named as people know it. ``measured`` has columns techniques, n, accuracy; ``paper`` the same (dotted)."""
    fig = go.Figure()
    paper = paper if paper is not None else measured.iloc[:0]
    combos = list(dict.fromkeys(list(measured["techniques"]) + list(paper["techniques"])))
    color = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(combos)}  # one colour per combination
    shown = []
    for tech, g in measured.dropna(subset=["accuracy"]).groupby("techniques", sort=False):
        g = g.groupby("n", as_index=False)["accuracy"].mean()
        fig.add_trace(go.Scatter(x=g["n"], y=g["accuracy"], mode="lines+markers",
                                 name=f"{combination_name(tech)} (measured)", line={"color": color[tech], "width": 2.5},
                                 marker={"color": color[tech], "size": 8}))
        shown.append(g)
    for tech, g in paper.sort_values("n").groupby("techniques", sort=False):
        fig.add_trace(go.Scatter(x=g["n"], y=g["accuracy"], mode="lines+markers",
                                 name=f"{combination_name(tech)} (paper, CIFAR-10)",
                                 line={"dash": "dot", "color": color[tech]}, marker={"color": color[tech], "size": 5}))
        shown.append(g)
    layout = {}
    if shown:  # ticks only at the n that were run; a log axis when small and large n share it
        everything = pd.concat(shown)
        ns = sorted({int(n) for n in everything["n"]})
        layout = {"yaxis_range": _fitted_unit_range(everything["accuracy"]), "xaxis_tickmode": "array",
                  "xaxis_tickvals": ns, "xaxis_type": "log" if ns[-1] >= 8 * ns[0] else "linear"}
    return _style(fig, title, yaxis_title="final test accuracy", xaxis_title="clients n", showlegend=True, **layout)


def reconstruction_mse(mse: pd.DataFrame, *, title: str = "Reconstruction MSE over rounds") -> go.Figure:
    """One line per client: ``mse`` has columns round, client (a label), mse. Clients whose models were
    just averaged have the same MSE: each line is narrower than the one before and has its own dash and
    marker, so lines on top of one another all show."""
    fig = go.Figure()
    for i, (client, g) in enumerate(mse.groupby("client", sort=True)):
        color = PALETTE[i % len(PALETTE)]
        line = {"color": color, "width": max(1.5, 6 - 1.5 * i), "dash": DASHES[i % len(DASHES)]}
        marker = {"color": color, "size": max(5, 13 - 3 * i), "symbol": SYMBOLS[i % len(SYMBOLS)]}
        fig.add_trace(go.Scatter(x=g["round"], y=g["mse"], mode="lines+markers", name=str(client), line=line,
                                 marker=marker))
    return _style(fig, title, xaxis_title="round", yaxis_title="MSE", showlegend=True)


# ---- privacy leakage (engine.privacy): what an honest-but-curious server learns from smashed data -----
LEAK_LABELS = {"leak_ssim": "attack SSIM", "leak_psnr": "attack PSNR (dB)", "leak_dcor": "distance correlation",
               "leak_mi": "mutual information (nats)", "leak_mse": "attack MSE"}
LEAK_FORMATS = {"leak_ssim": "{:.3f}", "leak_psnr": "{:.2f}", "leak_dcor": "{:.3f}", "leak_mi": "{:.3f}",
                "leak_mse": "{:.4f}"}
LEAK_COLORS = {"leak_psnr": "#D62728", "leak_ssim": "#1F77B4", "leak_dcor": "#9467BD", "leak_mi": "#2CA02C",
               "leak_mse": "#FF7F0E"}
LESS_LEAKAGE = {"leak_mse": "max"}  # the best (least leaking) value of each measure; "min" for the others
BOUNDED_LEAKAGE = ("leak_ssim", "leak_dcor")  # at most 1; the other measures have no upper bound
LEAK_TITLES = {("leak_psnr", "leak_ssim"): "What the server reconstructs, over rounds",
               ("leak_dcor", "leak_mi"): "How much the smashed data depend on the inputs, over rounds"}


def leakage_direction(metric: str) -> str:
    """Which way of the measure means more leakage, for an axis title."""
    return "lower: the server sees more" if LESS_LEAKAGE.get(metric) == "max" else "higher: the server sees more"


def leakage_over_rounds(history: pd.DataFrame, metrics: tuple[str, str] = ("leak_psnr", "leak_ssim"), *,
                        title: str | None = None) -> go.Figure:
    """Two leakage measures against round at the rounds they were measured, the first on the left axis
    and the second on the right, each axis in its trace's colour."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for right, metric in enumerate(metrics):
        part = history.dropna(subset=[metric]) if metric in history else pd.DataFrame({"round": [], metric: []})
        color = LEAK_COLORS[metric]
        fig.add_trace(go.Scatter(x=part["round"], y=part[metric], mode="lines+markers", name=LEAK_LABELS[metric],
                                 line={"color": color, "dash": DASHES[right]},
                                 marker={"color": color, "size": 8, "symbol": SYMBOLS[right]}),
                      secondary_y=bool(right))
        fig.update_yaxes(title_text=LEAK_LABELS[metric], title_font_color=color, tickfont_color=color,
                         secondary_y=bool(right), showgrid=not right, tickmode="auto",
                         range=_leakage_range(part[metric], metric))
    fig.update_xaxes(title_text="round")
    return _style(fig, title or LEAK_TITLES.get(tuple(metrics), "Leakage over rounds"), showlegend=True,
                  margin={"t": 50, "b": 10, "l": 60, "r": 60})


def _leakage_range(values: pd.Series, metric: str) -> list[float] | None:
    """An axis from zero (or below, for a negative SSIM) to 1 for bounded measures, else to a little above the
    largest value: runs and rounds compare on one honest scale, not a zoom into a small change."""
    if values.empty:
        return [0.0, 1.0] if metric in BOUNDED_LEAKAGE else None
    lo, hi = min(0.0, float(values.min())), float(values.max())
    if metric in BOUNDED_LEAKAGE:
        return [lo - 0.02 if lo < 0 else 0.0, 1.02]
    return [lo, hi * 1.15 if hi > 0 else 1.0]


# ---- defenses (engine/techniques): what a client does to its smashed data before the server sees it ----
DEFENSE_KEYS = ("noise", "nopeek", "bits")  # the config's ``defense`` section, in the order they are named
UPLOAD_DEFENSES = ("noise", "bits")  # the defenses that change what is uploaded (NoPeek changes the training)
DEFENSE_NAMES = {"noise": "noise", "nopeek": "NoPeek", "bits": "quantisation"}
NO_DEFENSE = "none"
SEVERAL_DEFENSES = "several"
DEFENSE_SYMBOLS = {NO_DEFENSE: "circle", "noise": "diamond", "NoPeek": "square", "quantisation": "triangle-up",
                   SEVERAL_DEFENSES: "star"}  # one marker per defense on the trade-off scatter


def defenses(config: dict | None) -> dict[str, float]:
    """The defenses a stored config turns on, by key ({"noise": 0.5, "bits": 4}); empty for none, and for
    runs stored before defenses existed (their configs have no ``defense`` section)."""
    section = (config or {}).get("defense") or {}
    return {key: section[key] for key in DEFENSE_KEYS if section.get(key)}


def _number(value: float) -> str:
    return f"{value:g}"


def defense_strengths(config: dict | None) -> list[str]:
    """Each defense on, with its strength: 'σ=0.5', 'α=1', '4-bit'."""
    return [f"{value:g}-bit" if key == "bits" else f"{'σ' if key == 'noise' else 'α'}={_number(value)}"
            for key, value in defenses(config).items()]


def defense_strength(config: dict | None) -> str:
    """The scatter's label of a run: 'σ=0.5', 'α=1, 4-bit'; 'none' for an undefended run."""
    return ", ".join(defense_strengths(config)) or NO_DEFENSE


def defense_kind(config: dict | None) -> str:
    """Which defense a run uses, for its marker: 'noise', 'NoPeek', 'quantisation', 'several', 'none'."""
    on = list(defenses(config))
    return NO_DEFENSE if not on else DEFENSE_NAMES[on[0]] if len(on) == 1 else SEVERAL_DEFENSES


def defense_label(config: dict | None) -> str:
    """The defenses in a few words, for a name: 'noise σ=0.5', 'NoPeek α=1 + 4-bit quantisation'; 'none'."""
    parts = []
    for key, value in defenses(config).items():
        parts.append(f"{value:g}-bit quantisation" if key == "bits" else
                     f"{DEFENSE_NAMES[key]} {'σ' if key == 'noise' else 'α'}={_number(value)}")
    return " + ".join(parts) or NO_DEFENSE


def defense_words(config: dict | None) -> str:
    """The defenses in a sentence's words, for a run's description: 'Gaussian noise σ = 0.5 on the smashed
    data, 4-bit quantisation of the smashed data'; 'no defense' for none."""
    said = {"noise": lambda v: f"Gaussian noise σ = {_number(v)} on the smashed data",
            "nopeek": lambda v: f"NoPeek α = {_number(v)} (a distance-correlation penalty on the client's loss)",
            "bits": lambda v: f"{v:g}-bit quantisation of the smashed data"}
    return ", ".join(said[key](value) for key, value in defenses(config).items()) or "no defense"


def more_leakage_is_higher(metric: str) -> bool:
    """Whether a higher value of the measure means the server sees more (all but the attack's MSE)."""
    return LESS_LEAKAGE.get(metric) != "max"


def pareto_front(points: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The runs of ``points`` that no other run beats on both counts: none has at least their accuracy for at
    most their leakage, better in one of the two. Sorted from the least leakage to the most (for ``leak_mse``,
    less leakage is a higher MSE)."""
    sign = 1.0 if more_leakage_is_higher(metric) else -1.0
    leak, acc = sign * points[metric].to_numpy(float), points["accuracy"].to_numpy(float)
    keep = [not np.any((leak <= leak[i]) & (acc >= acc[i]) & ((leak < leak[i]) | (acc > acc[i])))
            for i in range(len(points))]
    front = points.loc[keep].assign(_leak=leak[keep]).sort_values(["_leak", "accuracy"])
    return front.drop(columns="_leak")


def _column(points: pd.DataFrame, name: str, default: str) -> pd.Series:
    return points[name].fillna(default).astype(str) if name in points else pd.Series(default, index=points.index)


def shared_labels(g: pd.DataFrame, metric: str) -> list[str]:
    """The strength labels of one trace's points; points drawn on the same spot share one label
    ("σ=0.5, σ=8" on the first, nothing on the others) instead of printing over each other."""
    spots = list(zip(g[metric].round(4), g["accuracy"].round(4)))
    together: dict[tuple, list[str]] = {}
    for spot, label in zip(spots, g["strength"]):
        together.setdefault(spot, []).append(str(label))
    seen: set[tuple] = set()
    out = []
    for spot in spots:
        out.append("" if spot in seen else ", ".join(together[spot]))
        seen.add(spot)
    return out


def accuracy_vs_leakage(points: pd.DataFrame, metric: str, combinations: list[str] | None = None, *,
                        title: str | None = None) -> go.Figure:
    """The privacy-utility trade-off: one point per run, final test accuracy against a leakage measure, one
    colour per technique combination, one marker per defense (``defense``: :func:`defense_kind`; a circle for
    none) labelled with its strength (``strength``: :func:`defense_strength`, "none" undefended), and the Pareto
    front (:func:`pareto_front`) as a dashed line. ``points`` has columns id, name, techniques (the combination
    without its defense), accuracy, ``metric`` and, optionally, defense and strength; ``combinations`` fixes the
    colours (the i-th gets the i-th palette colour, as in :func:`accuracy_vs_n`)."""
    fig = go.Figure()
    points = points.assign(defense=_column(points, "defense", NO_DEFENSE),
                           strength=_column(points, "strength", NO_DEFENSE))
    order = list(combinations or [])
    order += [c for c in dict.fromkeys(points["techniques"]) if c not in order]
    defended = (points["defense"] != NO_DEFENSE).any()
    if len(points) > 1:  # first, so the markers and their labels are drawn over it; last in the legend
        front = pareto_front(points, metric)
        fig.add_trace(go.Scatter(
            x=front[metric], y=front["accuracy"], mode="lines", name="Pareto front (no run beats these on both)",
            line={"color": "#555555", "dash": "dash", "width": 1.5,
                  "shape": "hv" if more_leakage_is_higher(metric) else "vh"}, hoverinfo="skip", legendrank=2000))
    for (codes, kind), g in points.groupby(["techniques", "defense"], sort=False):
        color = PALETTE[order.index(codes) % len(PALETTE)]
        name = combination_name(codes) + (f" · {'no defense' if kind == NO_DEFENSE else kind}" if defended else "")
        fig.add_trace(go.Scatter(
            x=g[metric], y=g["accuracy"], mode="markers+text" if defended else "markers", name=name,
            text=shared_labels(g, metric) if defended else None, textposition="top center", textfont={"color": color},
            line={"color": color},
            marker={"color": color, "size": 12, "symbol": DEFENSE_SYMBOLS.get(kind, "star") + "-open",
                    "line": {"width": 2, "color": color}},
            customdata=np.stack([g["id"].astype(int), g["name"].fillna("").astype(str), g["strength"]], axis=-1),
            hovertemplate=f"run #%{{customdata[0]}} %{{customdata[1]}}<br>defense: %{{customdata[2]}}"
                          f"<br>{LEAK_LABELS[metric]}: %{{x:.3g}}<br>final test accuracy: %{{y:.4f}}"
                          "<extra>%{fullData.name}</extra>"))
    layout = {"yaxis_range": _fitted_unit_range(points["accuracy"])} if len(points) else {}
    if metric in BOUNDED_LEAKAGE:  # SSIM and distance correlation are at most 1: the axis never runs past it
        layout["xaxis_range"] = _leakage_range(points[metric] if len(points) else pd.Series(dtype=float), metric)
    better = "left" if more_leakage_is_higher(metric) else "right"
    return _style(fig, title or f"Privacy-utility trade-off: accuracy against {LEAK_LABELS[metric]}",
                  xaxis_title=f"{LEAK_LABELS[metric]} ({leakage_direction(metric)}; {better} is better)",
                  yaxis_title="final test accuracy (higher is better)", showlegend=True, **layout)


# The attacks a leakage measurement may run (engine.privacy), by the suffix of their figures' keys
# (``leak_psnr_whitebox``): a short name for a picture's header, and what the server does.
ATTACKS = {
    "blackbox": ("black-box", "a decoder the server trains on data of its own, from smashed data back to images"),
    "whitebox": ("white-box", ("holding the lower model (as averaging, or Vanilla SL's handoff, gives it), the "
                               "server optimises an image that the lower model maps to the smashed data it received")),
    "hybrid": ("hybrid", "the white-box optimisation, started from the black-box decoder's output"),
    "mean": ("data mean", "no use of the smashed data: every image guessed as the mean of the server's own images, "
                          "the floor any server reaches"),
}


def _finite(value) -> bool:
    return value is not None and isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def attack_figures(values: dict) -> dict[str, tuple[float, float | None]]:
    """Attack -> (PSNR, SSIM) of the attacks a measurement ran (a history row or a summary with the keys
    ``leak_psnr_<attack>``); empty for a run measured before attacks were reported one by one."""
    out = {}
    for attack in ATTACKS:
        psnr, ssim = values.get(f"leak_psnr_{attack}"), values.get(f"leak_ssim_{attack}")
        if _finite(psnr):
            out[attack] = (float(psnr), float(ssim) if _finite(ssim) else None)
    return out


def strongest_attack(values: dict) -> str | None:
    """The attack whose reconstructions are the headline: the one the measurement names (``leak_attack``),
    else the one of :func:`attack_figures` with the highest PSNR; None when the attacks are not reported."""
    named = values.get("leak_attack")
    if isinstance(named, str) and named:
        return named
    figures = attack_figures(values)
    return max(figures, key=lambda a: figures[a][0]) if figures else None


def attack_name(attack: str | None) -> str:
    """'white-box' for an attack key; an unknown name as it is; 'inverse network' when unknown (older runs)."""
    if attack is None:
        return "inverse network"
    return ATTACKS[attack][0] if attack in ATTACKS else attack.replace("_", " ")


ONE_ATTACK = ("it trains an inverse network from smashed data back to images on data of its own (no client holds "
              "it), with the same fixed budget for every run, and decodes the client's smashed data with it")


def attack_words(values: dict, subject: str = "it") -> str:
    """What the server did, for a caption after 'the server attacks client 0 at round 4: ': every attack it
    ran with its figures and which one the headline figures and pictures come from (a measurement made before
    attacks were reported one by one: the one attack it ran). ``subject`` starts the sentence ("the server")."""
    figures = attack_figures(values)
    if not figures:
        return subject + ONE_ATTACK.removeprefix("it")
    parts = [f"{ATTACKS[a][0]}, {ATTACKS[a][1]} (PSNR {psnr:.2f} dB" + (f", SSIM {ssim:.3f})" if ssim is not None
                                                                       else ")") for a, (psnr, ssim) in figures.items()]
    count = f"{len(figures)} attack{'' if len(figures) == 1 else 's'}"
    return (f"{subject} mounts {count}: {'; '.join(parts)}. The headline figures and the pictures are the strongest "
            f"attack's ({attack_name(strongest_attack(values))})")


def worst_client_words(values: dict) -> str:
    """' The server attacked 3 clients (the figures above are their mean); the most exposed, client 2, gives PSNR
    22.10 dB, SSIM 0.710.' where the measurement attacked more than one client; '' otherwise."""
    psnr, ssim, count = values.get("leak_psnr_worst"), values.get("leak_ssim_worst"), values.get("leak_clients")
    if not _finite(psnr) or not _finite(count) or count < 2:
        return ""
    client = values.get("leak_client_worst")
    who = f", client {int(client)}," if _finite(client) else ""
    said = f"PSNR {psnr:.2f} dB" + (f", SSIM {ssim:.3f}" if _finite(ssim) else "")
    return (f" The server attacked {int(count)} clients whose lower models differ (the figures above are their "
            f"mean); the most exposed{who} gives {said}.")


def leakage_values(values: dict, metrics: tuple[str, ...] = ("leak_psnr", "leak_ssim", "leak_dcor", "leak_mi")
                   ) -> dict[str, str]:
    """Label -> formatted value of the leakage measures in ``values`` (a history row or a summary); "–" for none."""
    out = {}
    for metric in metrics:
        value = values.get(metric)
        ok = value is not None and isinstance(value, int | float) and math.isfinite(value)
        out[LEAK_LABELS[metric]] = LEAK_FORMATS[metric].format(value) if ok else "–"
    return out
