"""``python -m engine reproduce privacy-defenses``: what each defense buys against the strongest attack,
per point of accuracy.

Parallel SL and LocFedMix-SL at cut 1 and cut 2, undefended and with each defense
(:mod:`engine.techniques.defense_noise`, ``defense_nopeek``, ``defense_bits``) at three strengths;
leakage measured once, at the end of the run, by the full attacker (:mod:`engine.privacy`: the
black-box decoder, the white-box and hybrid attacks where the server holds the lower models, the
data-mean floor). ``table.md`` gives, per line, accuracy and the strongest attack's PSNR/SSIM beside
the undefended run of the same seed: what the defense costs in accuracy, what it takes from the
attacker, and the decibels bought per point of accuracy; ``findings.md`` names the Pareto front
(no other line of the same method and cut is both more accurate and less exposed) and whether each
defense reaches the data-mean floor. Plot: ``accuracy_vs_leakage.png``.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from engine.config import deep_merge
from engine.presets import TABLE3_ROWS, techniques_to_config
from engine.studies.common import Arm, pyplot, write_csv

CUTS = (1, 2)
BASES = (("parallel", "Parallel SL", "1,2"), ("row8", "LocFedMix-SL", TABLE3_ROWS[8].techniques))
# Three strengths each, weak to strong. Noise: the smashed data's RMS is about 1 at cut 1 and 4-5 at
# cut 2 on trained LeNet-5 models, so sigma 0.5 / 2 / 8 spans SNR from about +6 to -18 dB at cut 1.
STRENGTHS = {"noise": (0.5, 2.0, 8.0), "nopeek": (0.5, 2.0, 8.0), "bits": (4, 2, 1)}
LABELS = {base: label for base, label, _ in BASES}
DEFENSE_NAMES = {"noise": "Gaussian noise σ", "nopeek": "NoPeek α", "bits": "k-bit quantisation"}


def arm_key(base: str, cut: int, defense: str | None = None, strength: float | None = None) -> str:
    return f"{base}_cut{cut}" + (f"_{defense}{strength:g}" if defense else "")


def defense_arms() -> list[Arm]:
    """Every method at every cut: undefended first, then each defense at each strength."""
    arms = []
    for cut in CUTS:
        for base, label, codes in BASES:
            plain = deep_merge(techniques_to_config(codes), {"cut_layer": cut})
            arms.append(Arm(arm_key(base, cut), f"{label}, cut {cut}, undefended", plain, leakage=True,
                            leak_at_end=True))
            for defense, strengths in STRENGTHS.items():
                for s in strengths:
                    arms.append(Arm(arm_key(base, cut, defense, s), f"{label}, cut {cut}, {DEFENSE_NAMES[defense]} = {s:g}",
                                    deep_merge(plain, {"defense": {defense: s}}), leakage=True, leak_at_end=True))
    return arms


# ---- the report --------------------------------------------------------------------------------
def _summary(results: dict[str, dict], key: str, n: int, seed: int) -> dict | None:
    r = results.get(f"{key}_n{n}_s{seed}")
    return r["summary"] if r is not None else None


def line_figures(results: dict[str, dict], base: str, cut: int, defense: str | None, strength: float | None,
                 n: int, seeds: list[int]) -> dict | None:
    """Mean over the seeds that have both this line and its undefended twin: accuracy, the strongest
    attack's PSNR and SSIM, dCor, the data-mean floor, and the paired differences to the twin."""
    key, twin = arm_key(base, cut, defense, strength), arm_key(base, cut)
    pairs = [(_summary(results, key, n, s), _summary(results, twin, n, s)) for s in seeds]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None and a.get("leak_psnr") is not None
             and b.get("leak_psnr") is not None]
    if not pairs:
        return None

    def mean(values: list[float]) -> float:
        return statistics.fmean(values)

    def std(values: list[float]) -> float | None:
        return statistics.stdev(values) if len(values) > 1 else None

    acc = [a["final_test_acc"] for a, _ in pairs]
    psnr = [a["leak_psnr"] for a, _ in pairs]
    d_acc = [100 * (a["final_test_acc"] - b["final_test_acc"]) for a, b in pairs]
    d_psnr = [a["leak_psnr"] - b["leak_psnr"] for a, b in pairs]
    floor = [a["leak_psnr_mean"] for a, _ in pairs if a.get("leak_psnr_mean") is not None]
    attacks = sorted({a.get("leak_attack") or strongest(a) for a, _ in pairs})
    return {"base": base, "cut": cut, "defense": defense or "none", "strength": strength, "seeds": len(pairs),
            "acc": mean(acc), "acc_std": std(acc), "psnr": mean(psnr), "psnr_std": std(psnr),
            "ssim": mean([a["leak_ssim"] for a, _ in pairs]),
            "dcor": mean([a["leak_dcor"] for a, _ in pairs if a.get("leak_dcor") is not None] or [float("nan")]),
            "d_acc": mean(d_acc), "d_psnr": mean(d_psnr), "floor": mean(floor) if floor else None,
            "strongest": "/".join(attacks)}


def strongest(summary: dict) -> str:
    """The attack whose PSNR is the headline (``leak_psnr_<attack>`` equal to ``leak_psnr``)."""
    named = [a for a in ("hybrid", "whitebox", "blackbox", "mean")
             if summary.get(f"leak_psnr_{a}") is not None and abs(summary[f"leak_psnr_{a}"] - summary["leak_psnr"]) < 1e-9]
    return named[0] if named else "?"


def per_point(row: dict) -> float | None:
    """Decibels of the strongest attack's PSNR bought per point of accuracy given up (None where the
    defense costs no accuracy or buys nothing)."""
    if row["defense"] == "none" or row["d_acc"] >= 0 or row["d_psnr"] >= 0:
        return None
    return row["d_psnr"] / row["d_acc"]


def pareto(rows: list[dict]) -> set[int]:
    """Indices of the rows no other row dominates (at least as accurate and at most as exposed, better in one)."""
    front = set()
    for i, r in enumerate(rows):
        if not any((o["acc"] >= r["acc"] and o["psnr"] <= r["psnr"]) and (o["acc"] > r["acc"] or o["psnr"] < r["psnr"])
                   for j, o in enumerate(rows) if j != i):
            front.add(i)
    return front


def defense_rows(results: dict[str, dict], n: int, seeds: list[int]) -> list[dict]:
    rows = []
    for cut in CUTS:
        for base, _, _ in BASES:
            block = [r for r in [line_figures(results, base, cut, None, None, n, seeds),
                                 *[line_figures(results, base, cut, d, s, n, seeds)
                                   for d, strengths in STRENGTHS.items() for s in strengths]] if r is not None]
            front = pareto(block)
            for i, r in enumerate(block):
                r["pareto"] = i in front
                r["db_per_point"] = per_point(r)
            rows += block
    return rows


def _pm(mean: float, std: float | None, digits: int) -> str:
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def defense_table(rows: list[dict]) -> str:
    blocks = []
    for cut in CUTS:
        for base, _, _ in BASES:
            block = [r for r in rows if r["cut"] == cut and r["base"] == base]
            if not block:
                continue
            lines = [f"**{LABELS[base]}, cut after block {cut}**", "",
                     "| defense | accuracy | Δ accuracy (points) | strongest attack PSNR (dB) | Δ PSNR (dB) | SSIM | "
                     "dCor | dB per point | strongest | Pareto |", "|---|---|---|---|---|---|---|---|---|---|"]
            for r in block:
                name = "none" if r["defense"] == "none" else f"{DEFENSE_NAMES[r['defense']]} = {r['strength']:g}"
                dpp = f"{r['db_per_point']:.2f}" if r["db_per_point"] is not None else "–"
                lines.append(f"| {name} | {_pm(r['acc'], r['acc_std'], 4)} | {r['d_acc']:+.1f} | "
                             f"{_pm(r['psnr'], r['psnr_std'], 2)} | {r['d_psnr']:+.2f} | {r['ssim']:.3f} | "
                             f"{r['dcor']:.3f} | {dpp} | {r['strongest']} | {'yes' if r['pareto'] else ''} |")
            floor = [r["floor"] for r in block if r["floor"] is not None]
            if floor:
                lines += ["", f"The data-mean floor (the attacker's mean image for every target): "
                              f"{statistics.fmean(floor):.2f} dB."]
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def findings(rows: list[dict]) -> str:
    out = ["# What each defense buys", "",
           "Per method and cut: the Pareto front (no other line of the same method and cut is both more accurate "
           "and less exposed to the strongest attack), each defense's best decibels per point of accuracy, and "
           "whether its strongest setting leaves the server no more than the data-mean guess.", ""]
    for cut in CUTS:
        for base, _, _ in BASES:
            block = [r for r in rows if r["cut"] == cut and r["base"] == base]
            if not block:
                continue
            front = [r for r in block if r["pareto"]]
            out += [f"## {LABELS[base]}, cut {cut}", "",
                    "Pareto front: " + ", ".join(
                        ("undefended" if r["defense"] == "none" else f"{DEFENSE_NAMES[r['defense']]} = {r['strength']:g}")
                        + f" ({100 * r['acc']:.1f} %, {r['psnr']:.2f} dB)" for r in sorted(front, key=lambda r: -r["acc"])),
                    ""]
            for defense in STRENGTHS:
                lines = [r for r in block if r["defense"] == defense]
                if not lines:
                    continue
                best = max((r for r in lines if r["db_per_point"] is not None), key=lambda r: r["db_per_point"],
                           default=None)
                strongest_line = lines[-1]
                at_floor = (strongest_line["floor"] is not None
                            and strongest_line["psnr"] <= strongest_line["floor"] + 0.25)
                free = [r for r in lines if r["d_acc"] >= -0.5 and r["d_psnr"] <= -1]
                text = f"- {DEFENSE_NAMES[defense]}: "
                text += (f"best {best['db_per_point']:.2f} dB per point at {best['strength']:g} "
                         f"({best['d_psnr']:+.2f} dB for {best['d_acc']:+.1f} points)" if best else
                         "no strength both costs accuracy and lowers the PSNR")
                if free:
                    text += "; nearly free (at most 0.5 points for at least 1 dB) at " + ", ".join(
                        f"{r['strength']:g} ({r['d_psnr']:+.2f} dB, {r['d_acc']:+.1f} points)" for r in free)
                text += (f"; at {strongest_line['strength']:g} the server is left the data-mean floor"
                         if at_floor else f"; at {strongest_line['strength']:g} the strongest attack still reaches "
                                          f"{strongest_line['psnr']:.2f} dB ({strongest_line['strongest']})")
                out.append(text + ".")
            out.append("")
    return "\n".join(out) + "\n"


def write_defense_report(out: Path, ns: list[int], seeds: list[int], results: dict[str, dict]) -> None:
    """``table.md``/``table.csv``, ``findings.md`` and ``accuracy_vs_leakage.png`` for the largest n with results."""
    trained = {r["config"]["num_clients"] for r in results.values()}
    n = max((n for n in ns if n in trained), default=max(ns))
    rows = defense_rows(results, n, seeds)
    any_run = next(iter(results.values()))
    cfg = any_run["config"]
    done = sorted({r["config"]["seed"] for r in results.values()})
    note = (f"n = {n} clients, {any_run['summary']['rounds_done']} rounds, seeds {', '.join(map(str, done))} "
            f"(mean ± standard deviation over seeds; Δ: paired with the undefended run of the same seed). Profile: "
            f"demo ({cfg['optim']['name']} {cfg['optim']['lr']:g}, b = {cfg['batch_size']}), mixup.reduction = "
            f"{cfg['mixup']['reduction']}. Leakage measured once, at the end, by the strongest attacker "
            f"(privacy.budget = {cfg['privacy']['budget']}, decoder at most {cfg['privacy']['attack_steps']} steps "
            "with early stopping; white-box and hybrid where ⑤ lets the server hold the lower models; the data-mean "
            "guess as the floor) on 256 of a client's training images; the headline is the strongest attack's pooled "
            "PSNR and its standard SSIM. dB per point: PSNR taken from the attacker per point of accuracy given up.")
    (out / "table.md").write_text(f"{defense_table(rows)}\n\n{note}\n")
    write_csv(out / "table.csv", rows, ["base"])
    (out / "findings.md").write_text(findings(rows))
    _plot(out, rows)


def _plot(out: Path, rows: list[dict]) -> None:
    plt = pyplot()

    colours = {"noise": "#D62728", "nopeek": "#1F77B4", "bits": "#2CA02C"}
    fig, axes = plt.subplots(len(CUTS), len(BASES), figsize=(12, 9), squeeze=False)
    for i, cut in enumerate(CUTS):
        for j, (base, _, _) in enumerate(BASES):
            ax = axes[i][j]
            block = [r for r in rows if r["cut"] == cut and r["base"] == base]
            plain = next((r for r in block if r["defense"] == "none"), None)
            for defense, colour in colours.items():
                line = [r for r in block if r["defense"] == defense]
                pts = ([plain] if plain else []) + line
                if line:
                    ax.plot([r["psnr"] for r in pts], [r["acc"] for r in pts], "-o", color=colour, alpha=0.85,
                            label=DEFENSE_NAMES[defense])
                    for r in line:
                        ax.annotate(f"{r['strength']:g}", (r["psnr"], r["acc"]), fontsize=7, xytext=(3, 3),
                                    textcoords="offset points")
            if plain:
                ax.scatter([plain["psnr"]], [plain["acc"]], color="black", zorder=3, s=50, label="undefended")
            front = sorted((r for r in block if r["pareto"]), key=lambda r: r["psnr"])
            if front:
                ax.step([r["psnr"] for r in front], [r["acc"] for r in front], where="post", color="grey",
                        linestyle=":", label="Pareto front")
            floors = [r["floor"] for r in block if r["floor"] is not None]
            if floors:
                ax.axvline(statistics.fmean(floors), color="grey", linestyle="--", linewidth=1,
                           label="data-mean floor")
            ax.set_title(f"{LABELS[base]}, cut {cut}", fontsize=10)
            ax.set_xlabel("strongest attack's PSNR (dB; lower = less leaked)")
            ax.set_ylabel("final test accuracy")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_leakage.png", dpi=120)
    plt.close("all")
