"""Plotly figures built from stored runs. Pure functions: no Streamlit, so the standalone HTML
report uses exactly the figures the pages show."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from engine.latency import latency_curve_for_run

BYTE_KINDS = {"bytes_smashed_up": "smashed data up", "bytes_grads_down": "gradients down",
              "bytes_model_up": "models up", "bytes_model_down": "models down"}
LOSS_TERMS = {"train_loss": "L (server)", "train_loss_mixup": "L~ (mixup)", "train_loss_local": "L^ (local)"}
METRIC_LABELS = {"test_acc": "test accuracy", "test_loss": "test loss"}


def with_simulated_latency(history: pd.DataFrame, config: dict, t_comp: float = 0.05,
                           uplink_bytes_per_s: float = 12.5e6) -> pd.DataFrame:
    """Add ``latency_s``: the Table 4 view of time (client compute per round plus the bytes uploaded
    so far over one shared uplink; defaults: 50 ms a step, 100 Mbit/s)."""
    out = history.copy()
    if out.empty:
        out["latency_s"] = []
        return out
    out["latency_s"] = latency_curve_for_run(out["round"], out["bytes_up"], int(config["num_clients"]), t_comp,
                                             uplink_bytes_per_s, config.get("schedule") == "sequential")
    return out


def learning_curves(histories: dict[str, pd.DataFrame], metric: str = "test_acc", x: str = "round") -> go.Figure:
    """One line per run: ``metric`` against ``x`` (``round`` or ``latency_s``); min-max band for accuracy."""
    fig = go.Figure()
    for i, (label, h) in enumerate(histories.items()):
        if h.empty:
            continue
        color = px.colors.qualitative.Plotly[i % 10]
        if metric == "test_acc" and {"test_acc_min", "test_acc_max"} <= set(h.columns) and len(histories) <= 3:
            fig.add_trace(go.Scatter(x=pd.concat([h[x], h[x][::-1]]), y=pd.concat([h["test_acc_max"], h["test_acc_min"][::-1]]),
                                     fill="toself", line={"width": 0}, fillcolor=color, opacity=0.15,
                                     hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(x=h[x], y=h[metric], mode="lines+markers", name=label, line={"color": color},
                                 marker={"size": 4}))
    fig.update_layout(xaxis_title="simulated latency (s)" if x == "latency_s" else "round",
                      yaxis_title=METRIC_LABELS.get(metric, metric), margin={"t": 30, "b": 40},
                      legend={"orientation": "h", "y": -0.2}, uirevision="keep")
    return fig


def loss_terms(history: pd.DataFrame) -> go.Figure:
    """The training-loss terms L, L~ and L^ against round (terms that stay zero are left out)."""
    cols = [c for c in LOSS_TERMS if c in history and history[c].abs().sum() > 0]
    long = history.melt(id_vars="round", value_vars=cols, var_name="term", value_name="loss")
    long["term"] = long["term"].map(LOSS_TERMS)
    fig = px.line(long, x="round", y="loss", color="term", markers=True)
    fig.update_layout(margin={"t": 30, "b": 40}, uirevision="keep")
    return fig


def communication(history: pd.DataFrame) -> go.Figure:
    """Cumulative megabytes exchanged by kind, stacked, against round."""
    cols = [c for c in BYTE_KINDS if c in history]
    long = history.melt(id_vars="round", value_vars=cols, var_name="kind", value_name="bytes")
    long["MB"] = long["bytes"] / 1e6
    long["kind"] = long["kind"].map(BYTE_KINDS)
    fig = px.area(long, x="round", y="MB", color="kind")
    fig.update_layout(yaxis_title="MB exchanged so far", margin={"t": 30, "b": 40}, uirevision="keep")
    return fig


def beta_density(alpha: float, beta: float) -> go.Figure:
    """The density of lambda ~ Beta(alpha, beta) on (0, 1)."""
    lam = np.linspace(0.005, 0.995, 199)
    log_b = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)
    density = np.exp((alpha - 1) * np.log(lam) + (beta - 1) * np.log1p(-lam) - log_b)
    fig = go.Figure(go.Scatter(x=lam, y=density, fill="tozeroy", mode="lines"))
    fig.update_layout(height=160, margin={"t": 10, "b": 30, "l": 30, "r": 10}, xaxis_title="lambda",
                      yaxis={"showticklabels": False}, showlegend=False)
    return fig


def latency_figure(rows: list[dict]) -> go.Figure:
    """Fig. 8: latency against n for each T_comp:T_comm ratio, one panel each."""
    df = pd.DataFrame(rows)
    # several methods tie (e.g. LocSplitFed and LocFedMix-SL at T_c = 1 once n*T_comm >= T_comp):
    # dashes keep every line visible where they overlap
    fig = px.line(df, x="n", y="latency", color="method", line_dash="method", facet_col="ratio", log_y=True,
                  labels={"latency": "latency (s)", "n": "clients n"},
                  color_discrete_sequence=px.colors.qualitative.D3)
    fig.for_each_annotation(lambda a: a.update(text="T_comp:T_comm = " + a.text.split("=")[-1]))
    fig.update_layout(margin={"t": 40, "b": 40}, legend={"orientation": "h", "y": -0.25})
    return fig


def accuracy_vs_n(measured: pd.DataFrame, paper: pd.DataFrame | None = None) -> go.Figure:
    """The paper's scalability view: final accuracy against n, one line per technique combination.
    ``measured`` has columns techniques, n, accuracy; ``paper`` the same (dashed)."""
    fig = go.Figure()
    for i, (tech, g) in enumerate(measured.sort_values("n").groupby("techniques", sort=False)):
        fig.add_trace(go.Scatter(x=g["n"], y=g["accuracy"], mode="lines+markers", name=f"{tech} (measured)",
                                 line={"color": px.colors.qualitative.Plotly[i % 10]}))
    if paper is not None:
        for i, (tech, g) in enumerate(paper.sort_values("n").groupby("techniques", sort=False)):
            fig.add_trace(go.Scatter(x=g["n"], y=g["accuracy"], mode="lines", name=f"{tech} (paper, CIFAR-10)",
                                     line={"dash": "dot", "color": px.colors.qualitative.Pastel[i % 10]}))
    fig.update_layout(xaxis_title="clients n", yaxis_title="final test accuracy", margin={"t": 30, "b": 40})
    return fig
