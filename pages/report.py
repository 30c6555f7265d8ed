"""A standalone HTML report of one run: config, summary, curves (plotly embedded) and snapshots.
Pure (no Streamlit): it opens in any browser without the app or a network."""

from __future__ import annotations

import base64
import html
import json

import pandas as pd
import plotly.io as pio

from pages.figures import communication, learning_curves, loss_terms, with_simulated_latency
from pages.images import png_bytes, snapshot_grid


def _figure_html(fig, first: bool) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=first)  # plotly.js inlined once


def summary_table(summary: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in summary.items())
    return f"<table>{rows}</table>"


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def run_report(run: dict, history: pd.DataFrame, snapshots: list) -> str:
    """The whole report as one HTML string. ``snapshots``: ImageRecords of one round."""
    title = f"SplitLab run #{run['id']}: {run['name']}"
    h = with_simulated_latency(history, run["config"])
    label = f"#{run['id']} {run['name']}"
    figures = []
    if not h.empty:
        figures = [("Test accuracy", learning_curves({label: h}, "test_acc")),
                   ("Test loss", learning_curves({label: h}, "test_loss")),
                   ("Training-loss terms", loss_terms(h)), ("Communication", communication(h))]
    parts = [f"<h2>{html.escape(name)}</h2>{_figure_html(fig, i == 0)}" for i, (name, fig) in enumerate(figures)]
    images = "".join(
        f"<figure><img src='data:image/png;base64,{base64.b64encode(png_bytes(snapshot_grid(r.inputs, r.smashed, r.reconstruction))).decode()}'>"
        f"<figcaption>client {r.client}, round {r.round}</figcaption></figure>" for r in snapshots)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}th,td{{border:1px solid #ddd;padding:3px 8px;text-align:left}}
figure{{display:inline-block;margin:0 1em 1em 0}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p>Status: <b>{html.escape(run['status'])}</b>, {run['last_round']}/{run['rounds']} rounds.</p>
<h2>Summary</h2>{summary_table(run.get('summary') or {})}
{''.join(parts)}
{'<h2>InfoPro snapshots</h2>' + images if images else ''}
<h2>Configuration</h2><pre>{html.escape(json.dumps(run['config'], indent=1))}</pre>
<p>Made with SplitLab.</p></body></html>"""
