"""A standalone HTML report of one run: config, summary, curves (plotly embedded) and snapshots.
Pure (no Streamlit): it opens in any browser without the app or a network."""

from __future__ import annotations

import base64
import html
import json
import math

import pandas as pd
import plotly.io as pio

from pages.figures import (
    ATTACKS,
    LEAK_FORMATS,
    LEAK_LABELS,
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
from pages.images import attack_grid, identical_clients_note, labelled_snapshot_grid, png_bytes


def config_line(config: dict) -> str:
    """The run's settings in one line: 'LocFedMix-SL (row 8) (techniques 1,2,3,4p,5) · 3 clients · digits ·
    defenses: Gaussian noise σ = 0.5 on the smashed data' ('· no defense' for a run with none)."""
    from engine.config import RunConfig

    try:
        codes = ",".join(RunConfig.model_validate(config).techniques())
    except ValueError:  # a config this engine no longer reads: the JSON below still says everything
        return f"Defenses: {defense_words(config)}."
    n = int(config["num_clients"])
    name = combination_name(setting_key(codes, int(config.get("cut_layer", 1)), config.get("schedule", "parallel")))
    defended = f"defenses: {defense_words(config)}" if defenses(config) else "no defense"
    return (f"{name} (techniques {codes}) · {n} client{'' if n == 1 else 's'} · {config['data']['dataset']} · "
            f"{defended}")


def _figure_html(fig, first: bool) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=first)  # plotly.js inlined once


# A run's summary (engine.trainer.Trainer.summary) as people read it: label, and how its value is written.
SUMMARY_LABELS = {
    "final_test_acc": "final test accuracy (full test set)",
    "best_test_acc": "best test accuracy (live subset)",
    "final_authors_test_acc": "final test accuracy as the SplitFed authors measure it",
    "target_acc": "target accuracy",
    "rounds_to_target": "rounds to the target accuracy",
    "rounds_done": "rounds done",
    "stopped": "stopped before the last round",
    "wall_s": "training time (the rounds alone: evaluation and leakage measurement excluded)",
    "final_test_loss": "final test loss",
    "final_test_acc_min": "final test accuracy, weakest client",
    "final_test_acc_max": "final test accuracy, strongest client",
    "final_clients_evaluated": "clients evaluated at the end",
    "bytes_up": "uploaded, in all",
    "bytes_down": "downloaded, in all",
    "bytes_smashed_up": "smashed data and labels uploaded",
    "bytes_grads_down": "cut-layer gradients downloaded",
    "bytes_model_up": "models uploaded (averaging)",
    "bytes_model_down": "models downloaded (averaging)",
    "leak_round": "last leakage measurement: round",
    "leak_client": "last leakage measurement: client attacked",
    **{key: f"last leakage measurement: {label}" for key, label in LEAK_LABELS.items()},
    # each attack the server ran (the headline above is the strongest), the most exposed client, the budget
    **{f"leak_{m}_{attack}": f"last leakage measurement: {name} attack {label}" for attack, (name, _) in ATTACKS.items()
       for m, label in (("psnr", "PSNR (dB)"), ("ssim", "SSIM"))},
    "leak_psnr_worst": "last leakage measurement: attack PSNR (dB), most exposed client",
    "leak_ssim_worst": "last leakage measurement: attack SSIM, most exposed client",
    "leak_client_worst": "last leakage measurement: most exposed client",
    "leak_clients": "last leakage measurement: clients attacked",
    "leak_attack_steps": "last leakage measurement: black-box decoder's training steps",
    "leak_whitebox_steps": "last leakage measurement: white-box optimisation steps",
}
_ACCURACIES = ("final_test_acc", "best_test_acc", "final_authors_test_acc", "target_acc", "final_test_acc_min",
               "final_test_acc_max")


def summary_value(key: str, value) -> str:
    """One summary figure as text: bytes in MB, seconds as m:ss, yes/no, accuracies to 4 places; "–" for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "wall_s":
        seconds = int(value)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
            f"{seconds // 60}:{seconds % 60:02d}"
    if key.startswith("bytes_"):
        return f"{value / 1e6:,.2f} MB"
    measure = key if key in LEAK_FORMATS else "_".join(key.split("_")[:2])  # leak_psnr_whitebox: as leak_psnr
    if measure in LEAK_FORMATS and isinstance(value, int | float):
        return LEAK_FORMATS[measure].format(value)
    if key in _ACCURACIES:
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return _fmt(value)


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    """(label, value) for every figure of a summary: the known ones in :data:`SUMMARY_LABELS`' order, then
    any other by its key in words."""
    known = [key for key in SUMMARY_LABELS if key in summary]
    rest = [key for key in summary if key not in SUMMARY_LABELS]
    return [(SUMMARY_LABELS.get(key, key.replace("_", " ")), summary_value(key, summary[key])) for key in known + rest]


def summary_table(summary: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
                   for label, value in summary_rows(summary))
    return f"<table>{rows}</table>"


def _fmt(value) -> str:
    """A value as text; an empty one (None, NaN) is "–"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _png(record, classes: tuple[str, ...] | None = None) -> str:
    """One client's snapshot as a labelled grid, base64 PNG."""
    grid = labelled_snapshot_grid(record.inputs, record.smashed, record.reconstruction, record.labels, classes)
    return base64.b64encode(png_bytes(grid)).decode()


def leakage_html(summary: dict, history: pd.DataFrame, attack, first_figure: bool,
                 classes: tuple[str, ...] | None = None, config: dict | None = None) -> str:
    """The privacy-leakage section: the last measurement (every attack the server ran, the strongest one's
    figures), the measures over rounds and the strongest attack's reconstructions of the shown images
    (``attack``: the attacked client's ImageRecord, or None); the run's defenses (``config``), if any."""
    if summary.get("leak_round") is None:
        return ""
    values = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                     for k, v in leakage_values(summary, tuple(LEAK_LABELS)).items())
    figures = [leakage_over_rounds(history), leakage_over_rounds(history, ("leak_dcor", "leak_mi"))] \
        if "leak_psnr" in history else []
    parts = "".join(_figure_html(fig, first_figure and i == 0) for i, fig in enumerate(figures))
    measured = history.dropna(subset=["leak_psnr"]) if "leak_psnr" in history else history.iloc[:0]
    said = {**(measured.iloc[-1].dropna().to_dict() if len(measured) else {}), **summary}  # the last measurement
    strongest = strongest_attack(said)
    image = ""
    if attack is not None:
        header = ("strongest attack", f"({attack_name(strongest)})") if strongest else ("server's attack",
                                                                                       "(inverse network)")
        png = base64.b64encode(png_bytes(attack_grid(attack, classes, header))).decode()
        own = ", the client's own InfoPro reconstruction" if attack.reconstruction is not None else ""
        which = f"the {attack_name(strongest)} attack's" if strongest else "the server's attack"
        image = (f"<figure><img alt='what the server reconstructs, round {attack.round}' "
                 f"src='data:image/png;base64,{png}'><figcaption>client {attack.client}, round {attack.round}: "
                 f"the input{own} and {which} reconstruction, with PSNR and SSIM</figcaption></figure>")
    defended = f" Defenses: {defense_words(config)}." if defenses(config) else ""
    return (f"<h2>What the server can see</h2><p>Leakage measured at round {html.escape(_fmt(summary['leak_round']))}"
            f" on client {html.escape(_fmt(summary.get('leak_client')))}: "
            f"{html.escape(attack_words(said, 'the server'))}.{html.escape(worst_client_words(said))} Higher PSNR, "
            "SSIM, distance "
            "correlation and mutual information: the server sees more (distance correlation and mutual information "
            f"measure how much the smashed data depend on the inputs).{html.escape(defended)}</p>"
            f"<table>{values}</table>{parts}{image}")


def run_report(run: dict, history: pd.DataFrame, snapshots: list, attack=None,
               classes: tuple[str, ...] | None = None) -> str:
    """The whole report as one HTML string. ``snapshots``: ImageRecords of one round; ``attack``: the
    attacked client's ImageRecord of the last leakage measurement (None: none, or not shown); ``classes``:
    the data set's class names, to label the pictures' images by."""
    title = f"SplitLab run #{run['id']}: {run['name']}"
    h = with_simulated_latency(history, run["config"])
    label = f"#{run['id']} {run['name']}"
    figures = []
    if not h.empty:  # each figure carries its title, template and colours (pages.figures)
        figures = [learning_curves({label: h}, "test_acc"), learning_curves({label: h}, "test_loss"),
                   loss_terms(h), communication(h)]
    parts = [_figure_html(fig, i == 0) for i, fig in enumerate(figures)]
    images = "".join(
        f"<figure><img alt='client {r.client}, round {r.round}' src='data:image/png;base64,{_png(r, classes)}'>"
        f"<figcaption>client {r.client}, round {r.round}, reconstruction MSE {_fmt(r.mse)}</figcaption></figure>"
        for r in snapshots)
    why = identical_clients_note(run["config"], snapshots[0].round) if len(snapshots) > 1 else None
    note = f"<p><i>{html.escape(why)}</i></p>" if why else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}th,td{{border:1px solid #ddd;padding:3px 8px;text-align:left}}
figure{{display:inline-block;margin:0 1em 1em 0}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p>Status: <b>{html.escape(run['status'])}</b>, {run['last_round']}/{run['rounds']} rounds.</p>
<p>{html.escape(config_line(run['config']))}</p>
<h2>Summary</h2>{summary_table(run.get('summary') or {})}
{'<h2>Curves</h2>' + ''.join(parts) if parts else ''}
{'<h2>InfoPro snapshots</h2>' + note + images if images else ''}
{leakage_html(run.get('summary') or {}, h, attack, first_figure=not parts, classes=classes, config=run['config'])}
<h2>Configuration</h2><pre>{html.escape(json.dumps(run['config'], indent=1))}</pre>
<p>Made with SplitLab.</p></body></html>"""
