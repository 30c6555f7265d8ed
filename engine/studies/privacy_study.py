"""``python -m engine reproduce privacy``: what each technique combination leaks, beside its accuracy.

The Table 3 rows and the SGLR arms, each at two cut layers, trained with leakage measured
(:mod:`engine.privacy`) about every third of the run and at the end. ``table.md`` puts accuracy and
the four leakage figures side by side (mean ± std over seeds); ``findings.md`` answers the three
questions of the study per seed: does SGLR leak less than Parallel SL and SplitFed (the SGLR
paper's claim), does ④ InfoPro leak more than the same row without it, does a deeper cut leak less.
Plots: ``accuracy_vs_leakage.png`` (the privacy-utility trade-off) and ``leakage_over_rounds.png``.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from engine.presets import TABLE3_ROWS, techniques_to_config
from engine.studies.common import pyplot

CUTS = (1, 2)
LEAK_EVERY_EVALS = 10  # measure every 10 evaluations: 3 times in a run evaluated 30 times

# (key, label, technique codes): Table 3's rows, then the SGLR arms Table 3 lacks
BASE_ARMS: list[tuple[str, str, str]] = [
    *[(f"row{r}", f"{r}: {p.title}", p.techniques) for r, p in sorted(TABLE3_ROWS.items())],
    ("parallel", "Parallel SL", "1,2"),
    ("splitavg", "SplitAvg", "1,2,splitavg"),
    ("splitlr", "SplitLr", "1,2,splitlr"),
    ("sglr", "SGLR", "1,2,splitlr,splitavg"),
]
LABELS = {key: label for key, label, _ in BASE_ARMS}

# rows with ④ and the same row without it (Table 3: 3 vs Parallel SL, 5 vs 2, 7 vs 4, 8 vs 6)
INFOPRO_PAIRS = [("row3", "parallel"), ("row5", "row2"), ("row7", "row4"), ("row8", "row6")]
SGLR_BASELINES = ["parallel", "row4"]  # Parallel SL and SplitFed
METRICS = {"final_test_acc": "accuracy", "leak_psnr": "PSNR dB", "leak_ssim": "SSIM", "leak_dcor": "dCor",
           "leak_mi": "MI nats"}


def privacy_arms():
    """Every base arm at every cut; the key says both (``row3_cut2``)."""
    from engine.config import deep_merge
    from engine.studies.common import Arm

    return [Arm(f"{key}_cut{cut}", f"{label}, cut {cut}", deep_merge(techniques_to_config(codes), {"cut_layer": cut}),
                int(key[3:]) if key.startswith("row") else None, leakage=True)
            for cut in CUTS for key, label, codes in BASE_ARMS]


def _cell(values: list[float], digits: int) -> str:
    if not values:
        return "–"
    text = f"{statistics.fmean(values):.{digits}f}"
    return text + (f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else "")


def _result(results: dict[str, dict], key: str, cut: int, n: int, seed: int) -> dict | None:
    """The finished run of base arm ``key`` at ``cut``, n and seed (its file name is reproduce.run_key's)."""
    return results.get(f"{key}_cut{cut}_n{n}_s{seed}")


def _values(results: dict[str, dict], key: str, cut: int, n: int, seeds: list[int], metric: str) -> dict[int, float]:
    out = {}
    for s in seeds:
        r = _result(results, key, cut, n, s)
        if r is not None and r["summary"].get(metric) is not None:
            out[s] = r["summary"][metric]
    return out


DIGITS = {"final_test_acc": 4, "leak_psnr": 2, "leak_ssim": 3, "leak_dcor": 3, "leak_mi": 2}


def privacy_table(results: dict[str, dict], n: int, seeds: list[int]) -> tuple[str, list[dict]]:
    """Markdown (one block per cut) and CSV rows: accuracy and leakage per technique combination."""
    blocks, rows = [], []
    for cut in CUTS:
        lines = [f"**Cut after block {cut}**", "",
                 "| techniques | " + " | ".join(METRICS.values()) + " |", "|---|" + "---|" * len(METRICS)]
        for key, label, codes in BASE_ARMS:
            cells = []
            row = {"arm": key, "label": label, "techniques": codes, "cut": cut, "n": n}
            for metric in METRICS:
                vals = list(_values(results, key, cut, n, seeds, metric).values())
                cells.append(_cell(vals, DIGITS[metric]))
                row[metric] = round(statistics.fmean(vals), 5) if vals else None
                row[f"{metric}_std"] = round(statistics.stdev(vals), 5) if len(vals) > 1 else None
                row["seeds"] = max(row.get("seeds", 0), len(vals))
            if row["seeds"]:
                lines.append(f"| {label} ({codes}) | " + " | ".join(cells) + " |")
                rows.append(row)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks), rows


def _diffs(results, a: str, b: str, cut_a: int, cut_b: int, n: int, seeds: list[int], metric: str) -> dict[int, float]:
    va = _values(results, a, cut_a, n, seeds, metric)
    vb = _values(results, b, cut_b, n, seeds, metric)
    return {s: va[s] - vb[s] for s in seeds if s in va and s in vb}


def _verdict(diffs: dict[int, float], less_is: str) -> str:
    """'holds in k of m seeds' for a claim that the difference is negative."""
    if not diffs:
        return "not measured"
    below = sum(d < 0 for d in diffs.values())
    return f"{less_is} in {below} of {len(diffs)} seeds"


def _line(label: str, diffs: dict[int, float], digits: int) -> str:
    per_seed = ", ".join(f"seed {s}: {d:+.{digits}f}" for s, d in sorted(diffs.items()))
    mean = statistics.fmean(diffs.values()) if diffs else float("nan")
    return f"| {label} | {mean:+.{digits}f} | {per_seed} |"


def findings(results: dict[str, dict], n: int, seeds: list[int]) -> str:
    """The study's three questions as per-seed differences of the SSIM of the attack and of dCor/MI."""
    out = ["# Findings, per seed", "",
           f"n = {n}. Differences of the final measurement (end of training); negative = the first leaks less. "
           "SSIM and PSNR are the inversion attack's reconstruction quality; dCor and MI are measured on the "
           "client's images and their smashed data.", ""]
    for metric in ("leak_ssim", "leak_psnr", "leak_dcor", "leak_mi"):
        digits = DIGITS[metric]
        out += [f"## {METRICS[metric]}", "", "| comparison | mean | per seed |", "|---|---|---|"]
        for cut in CUTS:
            for base in SGLR_BASELINES:
                d = _diffs(results, "sglr", base, cut, cut, n, seeds, metric)
                if d:
                    out.append(_line(f"SGLR − {LABELS[base]}, cut {cut} ({_verdict(d, 'SGLR leaks less')})", d, digits))
        for cut in CUTS:
            for with_, without in INFOPRO_PAIRS:
                d = _diffs(results, with_, without, cut, cut, n, seeds, metric)
                if d:
                    out.append(_line(f"{LABELS[with_]} − {LABELS[without]}, cut {cut} "
                                     f"({_verdict(d, 'with ④ leaks less')})", d, digits))
        for key, _, _ in BASE_ARMS:
            d = _diffs(results, key, key, 2, 1, n, seeds, metric)
            if d:
                out.append(_line(f"{LABELS[key]}: cut 2 − cut 1 ({_verdict(d, 'deeper cut leaks less')})", d, digits))
        out.append("")
    return "\n".join(out) + "\n"


def write_privacy_report(out: Path, ns: list[int], seeds: list[int], results: dict[str, dict]) -> None:
    """``table.md``/``table.csv``, ``findings.md`` and the plots, for the largest n with results."""
    from engine.studies.common import write_csv

    trained = {r["config"]["num_clients"] for r in results.values()}
    n = max((n for n in ns if n in trained), default=max(ns))
    text, rows = privacy_table(results, n, seeds)
    rounds = next(iter(results.values()))["summary"]["rounds_done"] if results else 0
    done = sorted({r["config"]["seed"] for r in results.values()})
    cfg = next(iter(results.values()))["config"]
    attacker = cfg.get("privacy", {})
    note = (f"n = {n} clients, {rounds} rounds, seeds {', '.join(map(str, done))} (mean ± standard deviation). "
            f"Profile: demo ({cfg['optim']['name']} {cfg['optim']['lr']:g}, b = {cfg['batch_size']}) with "
            f"mixup.reduction = {cfg['mixup']['reduction']}. Accuracy: final test accuracy (full test set). Leakage "
            "at the end, by the strongest attacker "
            f"(privacy.budget = {attacker.get('budget', 'strong')}, decoder at most "
            f"{attacker.get('attack_steps', 2000)} steps with early stopping on 5,000 test images the server owns; "
            "white-box and hybrid inversion where the server holds the lower models (it runs ⑤'s averaging, or "
            "relays Vanilla SL's one lower model); the data-mean guess as "
            f"the floor; up to {attacker.get('clients', 2)} distinct clients attacked, mean shown): the strongest "
            "attack's PSNR (from its pooled MSE) and standard SSIM on 256 of a client's training images (higher = "
            "the server rebuilds more), and the distance correlation (the square root of the bias-corrected "
            "statistic) and KSG mutual information between the client's images and their smashed data (higher = "
            "more dependence). See `findings.md` for the comparisons per seed.")
    (out / "table.md").write_text(f"{text}\n\n{note}\n")
    write_csv(out / "table.csv", rows, ["arm"])
    (out / "findings.md").write_text(findings(results, n, seeds))
    _plots(out, n, seeds, results)


def _plots(out: Path, n: int, seeds: list[int], results: dict[str, dict]) -> None:
    plt = pyplot()

    colours = plt.get_cmap("tab20").colors
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, metric in zip(axes, ("leak_ssim", "leak_dcor")):
        for i, (key, label, _) in enumerate(BASE_ARMS):
            for cut, marker in zip(CUTS, ("o", "s")):
                acc = _values(results, key, cut, n, seeds, "final_test_acc")
                leak = _values(results, key, cut, n, seeds, metric)
                common = [s for s in acc if s in leak]
                if common:
                    ax.scatter([leak[s] for s in common], [acc[s] for s in common], color=colours[i % 20],
                               marker=marker, label=label if cut == CUTS[0] else None, s=36, alpha=0.85)
        ax.set_xlabel(f"{METRICS[metric]} of the server's view (higher = more leakage)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("final test accuracy")
    axes[0].set_title("accuracy against attack SSIM (o: cut 1, ■: cut 2)", fontsize=10)
    axes[1].set_title("accuracy against distance correlation", fontsize=10)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_leakage.png", dpi=120)
    fig, axes = plt.subplots(1, len(CUTS), figsize=(12, 4.5), sharey=True)
    for ax, cut in zip(axes, CUTS):
        for i, (key, label, _) in enumerate(BASE_ARMS):
            r = _result(results, key, cut, n, seeds[0])
            if r is None:
                continue
            pts = [(h["round"], h["leak_ssim"]) for h in r["history"] if "leak_ssim" in h]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=colours[i % 20], label=label)
        ax.set_title(f"attack SSIM over rounds, cut {cut}, seed {seeds[0]}", fontsize=10)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("SSIM of the attacker's reconstruction")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "leakage_over_rounds.png", dpi=120)
    plt.close("all")
