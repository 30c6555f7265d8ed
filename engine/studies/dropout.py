"""``python -m engine reproduce dropout``: which technique degrades least when clients come and go,
and does mixup (which needs partners present) lose its edge?

SplitFed (Table 3 row 4), LocSplitFed + ② (row 7), LocFedMix-SL (row 8) and SGLR, each with a
fraction C in {1, 0.5, 0.2} of the clients drawn per round and a dropout p in {0, 0.1, 0.3}
(:class:`engine.config.ParticipationConfig`). ``table.md``: final accuracy and rounds to the target
per method and setting (mean ± std over seeds), each method's loss against its own everyone-present
run, and row 8 − row 7 (what mixup adds) at every setting; ``findings.md`` says which method
degrades least and whether mixup keeps its edge; ``accuracy_vs_participation.png`` draws it.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from engine.config import deep_merge
from engine.presets import PRESETS, TABLE3_ROWS
from engine.studies.common import Arm, pyplot, write_csv

FRACTIONS = (1.0, 0.5, 0.2)
DROPOUTS = (0.0, 0.1, 0.3)
METHODS = (("row4", "SplitFed (row 4)", TABLE3_ROWS[4].overrides()),
           ("row7", "LocSplitFed + ② (row 7)", TABLE3_ROWS[7].overrides()),
           ("row8", "LocFedMix-SL (row 8)", TABLE3_ROWS[8].overrides()),
           ("sglr", "SGLR", PRESETS["sglr"].overrides()))
LABELS = {key: label for key, label, _ in METHODS}


def arm_key(method: str, fraction: float, dropout: float) -> str:
    return f"{method}_c{fraction:g}_p{dropout:g}"


def dropout_arms() -> list[Arm]:
    """Every method at every (C, p), everyone-present first."""
    return [Arm(arm_key(key, c, p), f"{label}, C = {c:g}, p = {p:g}",
                deep_merge(overrides, {"participation": {"fraction": c, "dropout": p}}))
            for key, label, overrides in METHODS for c in FRACTIONS for p in DROPOUTS]


# ---- the report --------------------------------------------------------------------------------
def _runs(results: dict[str, dict], key: str, n: int, seeds: list[int]) -> dict[int, dict]:
    return {s: results[f"{key}_n{n}_s{s}"]["summary"] for s in seeds if f"{key}_n{n}_s{s}" in results}


def cell_figures(results: dict[str, dict], method: str, c: float, p: float, n: int, seeds: list[int]) -> dict | None:
    """Accuracy and rounds to target (mean, std), and the paired loss against everyone present, in points."""
    runs = _runs(results, arm_key(method, c, p), n, seeds)
    if not runs:
        return None
    full = _runs(results, arm_key(method, 1.0, 0.0), n, seeds)
    acc = [r["final_test_acc"] for r in runs.values()]
    hit = [r["rounds_to_target"] for r in runs.values()]
    drop = [100 * (runs[s]["final_test_acc"] - full[s]["final_test_acc"]) for s in runs if s in full]
    return {"method": method, "fraction": c, "dropout": p, "seeds": len(runs), "acc": statistics.fmean(acc),
            "acc_std": statistics.stdev(acc) if len(acc) > 1 else None,
            "rounds_to_target": statistics.fmean(hit) if all(h is not None for h in hit) else None,
            "loss_points": statistics.fmean(drop) if drop else None}


def dropout_rows(results: dict[str, dict], n: int, seeds: list[int]) -> list[dict]:
    return [row for key, _, _ in METHODS for c in FRACTIONS for p in DROPOUTS
            if (row := cell_figures(results, key, c, p, n, seeds)) is not None]


def mixup_edge(results: dict[str, dict], n: int, seeds: list[int]) -> dict[tuple[float, float], float]:
    """Row 8 − row 7 in points at every (C, p) both were trained at, mean over the seeds both have."""
    out = {}
    for c in FRACTIONS:
        for p in DROPOUTS:
            a, b = (_runs(results, arm_key(m, c, p), n, seeds) for m in ("row8", "row7"))
            both = [s for s in a if s in b]
            if both:
                out[(c, p)] = statistics.fmean(100 * (a[s]["final_test_acc"] - b[s]["final_test_acc"]) for s in both)
    return out


def dropout_table(rows: list[dict], edge: dict[tuple[float, float], float], target: float) -> str:
    settings = [(c, p) for c in FRACTIONS for p in DROPOUTS if any(r["fraction"] == c and r["dropout"] == p for r in rows)]
    head = "| method | " + " | ".join(f"C = {c:g}, p = {p:g}" for c, p in settings) + " |"
    lines = [f"Final test accuracy (in brackets: the change against the same method with every client present, "
             f"in points; then the rounds to {target:.0%})", "", head, "|---|" + "---|" * len(settings)]
    for key, label, _ in METHODS:
        cells = []
        for c, p in settings:
            r = next((r for r in rows if (r["method"], r["fraction"], r["dropout"]) == (key, c, p)), None)
            if r is None:
                cells.append("–")
                continue
            text = f"{r['acc']:.4f}" + (f" ± {r['acc_std']:.4f}" if r["acc_std"] is not None else "")
            if r["loss_points"] is not None and (c, p) != (1.0, 0.0):
                text += f" ({r['loss_points']:+.1f})"
            text += f"; {r['rounds_to_target']:.0f}" if r["rounds_to_target"] is not None else "; –"
            cells.append(text)
        if any(cell != "–" for cell in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if edge:
        lines += ["", "What mixup adds (row 8 − row 7, points):", "",
                  "| | " + " | ".join(f"C = {c:g}, p = {p:g}" for c, p in edge) + " |",
                  "|---|" + "---|" * len(edge),
                  "| row 8 − row 7 | " + " | ".join(f"{v:+.1f}" for v in edge.values()) + " |"]
    return "\n".join(lines)


def findings(rows: list[dict], edge: dict[tuple[float, float], float]) -> str:
    out = ["# Clients that come and go: findings", ""]
    harsh = [(c, p) for c in FRACTIONS for p in DROPOUTS if (c, p) != (1.0, 0.0)]
    losses = {}
    for key, label, _ in METHODS:
        vals = [r["loss_points"] for r in rows if r["method"] == key and (r["fraction"], r["dropout"]) in harsh
                and r["loss_points"] is not None]
        if vals:
            losses[key] = (statistics.fmean(vals), min(vals), len(vals))
    if losses:
        order = sorted(losses, key=lambda k: -losses[k][0])
        out += ["Mean change of final accuracy against the same method with every client present, over the "
                "settings trained with clients missing (points; worst in brackets):", ""]
        out += [f"- {LABELS[k]}: {losses[k][0]:+.1f} ({losses[k][1]:+.1f}; {losses[k][2]} setting"
                f"{'' if losses[k][2] == 1 else 's'})" for k in order]
        out += ["", f"Degrades least: **{LABELS[order[0]]}**; most: {LABELS[order[-1]]}.", ""]
    if edge and (1.0, 0.0) in edge:
        base = edge[(1.0, 0.0)]
        worst = min(edge.items(), key=lambda kv: kv[1])
        keeps = all(v > 0 for v in edge.values())
        out += [f"Mixup's edge (row 8 − row 7): {base:+.1f} points with everyone present; "
                f"{worst[1]:+.1f} at its lowest (C = {worst[0][0]:g}, p = {worst[0][1]:g}). "
                + ("It stays positive at every setting trained." if keeps else
                   "It is not positive at every setting trained."), ""]
    return "\n".join(out) + "\n"


def write_dropout_report(out: Path, ns: list[int], seeds: list[int], results: dict[str, dict]) -> None:
    trained = {r["config"]["num_clients"] for r in results.values()}
    n = max((n for n in ns if n in trained), default=max(ns))
    rows = dropout_rows(results, n, seeds)
    edge = mixup_edge(results, n, seeds)
    any_run = next(iter(results.values()))
    done = sorted({r["config"]["seed"] for r in results.values()})
    note = (f"n = {n} clients, {any_run['summary']['rounds_done']} rounds, seeds {', '.join(map(str, done))}, "
            f"{any_run['config']['data']['dataset']}, profile demo ({any_run['config']['optim']['name']} "
            f"{any_run['config']['optim']['lr']:g}, mixup.reduction = {any_run['config']['mixup']['reduction']}). C: the fraction of clients drawn a round (max(1, floor(C n))); "
            "p: the chance a drawn client fails to deliver that round. Absent clients' semantics: docs/cli.md.")
    (out / "table.md").write_text(dropout_table(rows, edge, any_run["summary"]["target_acc"]) + f"\n\n{note}\n")
    write_csv(out / "table.csv", rows, ["method"])
    (out / "findings.md").write_text(findings(rows, edge))
    _plot(out, rows)


def _plot(out: Path, rows: list[dict]) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, len(DROPOUTS), figsize=(13, 4.2), sharey=True)
    for ax, p in zip(axes, DROPOUTS):
        for key, label, _ in METHODS:
            pts = sorted((r["fraction"], r["acc"]) for r in rows if r["method"] == key and r["dropout"] == p)
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], "-o", label=label)
        ax.set_title(f"dropout p = {p:g}", fontsize=10)
        ax.set_xlabel("fraction of clients drawn a round, C")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("final test accuracy")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_participation.png", dpi=120)
    plt.close("all")
