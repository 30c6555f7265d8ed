"""``python -m engine reproduce latency``: the paper's latency figure (Fig. 8) and its claims, plus
accuracy against simulated time (its Fig. 9) from the Table 3 runs.

Fig. 8 is the Table 4 model (:mod:`engine.latency`) against n with the sizes of this engine's
LeNet-5 at the paper's cut, for T_comp : T_comm = 10:1, 1:1 and 1:10. The paper's four claims about
it are checked at every n and written out as holds / does not hold, with the numbers.

The Fig. 9 view needs no Table 4 formula: each finished run's recorded uploads (bytes actually
exchanged, by kind) over one shared uplink, plus T_comp per round (n of them for Vanilla SL,
whose clients take turns), give a simulated clock for its learning curve.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data import load_dataset
from engine.latency import BEST_CASE_LABEL, WORST_CASE_LABEL, LatencyParams, latency_curve_for_run, latency_curves
from engine.models import InfoProDecoder, num_state_elements, prod, smashed_shape, split_lenet5
from engine.studies.common import load_results, pyplot, run_key
from engine.studies.reproduce import table3_arms

RATIOS = ((10, 1), (1, 1), (1, 10))
FIG9_ROWS = {1: "Vanilla SL", 4: "SplitFed", 7: "LocSplitFed + ②", 8: "LocFedMix-SL"}
BASELINES = ("vanilla_sl", "splitfed", "locsplitfed")
ON_PAR = 0.10  # "on par": within 10 %
PAPER_INPUT_SHAPES = {"fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}  # known without the files


@dataclass(frozen=True)
class Sizes:
    """|s|, |w_c| and |ŵ_c| in float32 elements, for one data set's input shape."""

    smashed: int
    lower: int
    aux: int


def lenet_sizes(dataset: str, batch_size: int = 64, cut_layer: int = 1) -> Sizes:
    in_shape = PAPER_INPUT_SHAPES.get(dataset) or load_dataset(dataset).input_shape
    lower, _ = split_lenet5(in_shape, 10, cut_layer)
    s = smashed_shape(lower, in_shape)
    return Sizes(batch_size * prod(s), num_state_elements(lower), num_state_elements(InfoProDecoder(s, in_shape)))


def fig8_rows(sizes: Sizes, ns: range, rounds: int) -> list[dict]:
    params = LatencyParams(t_comp=1.0, t_comm=1.0, smashed_size=sizes.smashed, lower_size=sizes.lower,
                           aux_size=sizes.aux, avg_interval=1)
    return latency_curves(ns, rounds, params, RATIOS)


@dataclass(frozen=True)
class Claim:
    text: str
    holds: bool
    evidence: str


def ranges(values: list[int]) -> str:
    """``[2, 10, 11, 12]`` -> ``"2, 10–12"``."""
    runs: list[list[int]] = []
    for v in sorted(values):
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join(str(a) if a == b else f"{a}–{b}" for a, b in runs)


def fig8_claims(rows: list[dict]) -> list[Claim]:
    """The paper's text about its Fig. 8, checked at every n >= 2 of ``rows``."""
    table: dict[tuple[str, str], dict[int, float]] = {}
    for r in rows:
        if r["n"] >= 2:
            table.setdefault((r["ratio"], r["method"]), {})[r["n"]] = r["latency"]
    ns = sorted(table[("1:1", "splitfed")])

    def lat(ratio: str, method: str) -> np.ndarray:
        return np.array([table[(ratio, method)][n] for n in ns])

    claims = []
    for ratios, label in ((("10:1",), "10:1"), (("1:1", "1:10"), "1:1 and 1:10")):
        # best case over the fastest baseline, per (ratio, n): above 1 where a baseline is faster
        margins = {r: lat(r, BEST_CASE_LABEL) / np.min([lat(r, m) for m in BASELINES], axis=0) for r in ratios}
        lowest = [(r, n) for r, margin in margins.items() for n, x in zip(ns, margin) if x > 1]
        margin = np.concatenate(list(margins.values()))
        where = "at every n" if not lowest else f"not at {len(lowest)} (ratio, n) points, first {lowest[0]}"
        claims.append(Claim(f"{label}: LocFedMix-SL's best case (T_c = T) has the lowest latency", not lowest,
                            f"{where}; best case / fastest baseline = {margin.min():.3f}–{margin.max():.3f}"))
    worst, sf, lsf, vsl = (lat("10:1", m) for m in (WORST_CASE_LABEL, "splitfed", "locsplitfed", "vanilla_sl"))
    not_below = {"Vanilla SL": [n for n, w, v in zip(ns, worst, vsl) if w >= v],  # a tie is not a win
                 "LocSplitFed": [n for n, w, x in zip(ns, worst, lsf) if w > x or np.isclose(w, x)]}
    claims.append(Claim(
        "10:1: LocFedMix-SL's worst case (T_c = 1) beats every baseline except SplitFed",
        not any(not_below.values()) and bool(np.all(worst > sf)),
        f"worst / SplitFed = {(worst / sf).min():.2f}–{(worst / sf).max():.2f}; worst / LocSplitFed = "
        f"{(worst / lsf).min():.2f}–{(worst / lsf).max():.2f}"
        + f"; worst / Vanilla SL = {(worst / vsl).min():.3f}–{(worst / vsl).max():.2f}"
        + "".join(f"; not below {name} at n = {ranges(bad)}" for name, bad in not_below.items() if bad)))
    spread = [lat(r, WORST_CASE_LABEL) / lat(r, "locsplitfed") for r in ("1:1", "1:10")]
    lo, hi = min(s.min() for s in spread), max(s.max() for s in spread)
    claims.append(Claim("1:1 and 1:10: LocFedMix-SL's worst case is on par with LocSplitFed",
                        bool(lo >= 1 - ON_PAR and hi <= 1 + ON_PAR),
                        f"worst / LocSplitFed = {lo:.2f}–{hi:.2f} over n = {ns[0]}–{ns[-1]} "
                        f"(on par: within {ON_PAR:.0%})"))
    return claims


def fig9_runs(study: Path, n: int, seed: int) -> dict[str, dict]:
    """The finished Table 3 runs of rows 1, 4, 7 and 8 at this n and seed, by the row's name."""
    results = load_results(study) if (study / "runs").is_dir() else {}
    arms = {arm.paper_row: arm for arm in table3_arms()}
    keys = {label: run_key(arms[row], n, seed) for row, label in FIG9_ROWS.items()}
    return {label: results[key] for label, key in keys.items() if key in results}


def simulated_curves(runs: dict[str, dict], sizes: Sizes, ratio: tuple[float, float]) -> dict[str, dict]:
    """Fig. 9: for each run, the live accuracy against simulated time in units of T_comp. The uplink
    carries |s| (one client's smashed batch) in T_comm."""
    t_comp = 1.0
    bandwidth = sizes.smashed * 4 / (t_comp * ratio[1] / ratio[0])  # bytes per unit of time
    out = {}
    for label, run in runs.items():
        h, cfg = run["history"], run["config"]
        time = latency_curve_for_run([r["round"] for r in h], [r["bytes_up"] for r in h], cfg["num_clients"],
                                     t_comp, bandwidth, cfg["schedule"] == "sequential")
        acc = [r["test_acc"] for r in h]
        target = run["summary"]["target_acc"]
        hit = next((float(t) for t, a in zip(time, acc) if a >= target), None)
        out[label] = {"time": time.tolist(), "acc": acc, "time_to_target": hit, "target": target,
                      "final_acc": run["summary"]["final_test_acc"], "total_time": float(time[-1])}
    return out


def write_latency_study(out_dir: str, dataset: str, table3_dir: Path, n: int, seed: int = 0,
                        rounds: int = 10_000) -> Path:
    plt = pyplot()

    out = Path(out_dir) / f"latency-{dataset}"
    out.mkdir(parents=True, exist_ok=True)
    sizes = lenet_sizes(dataset)
    rows = fig8_rows(sizes, range(1, 101), rounds)
    with open(out / "fig8.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fig, axes = plt.subplots(3, 1, figsize=(7, 10), sharex=True)
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "locfedmix_sl"]  # = T_c = 1 here
    for ax, (a, b) in zip(axes, RATIOS):
        ratio = f"{a}:{b}"
        for i, m in enumerate(methods):
            pts = [(r["n"], r["latency"]) for r in rows if r["ratio"] == ratio and r["method"] == m]
            ax.plot(*zip(*pts), label=m, linestyle=("-", "--", "-.", ":", "--")[i], linewidth=(1.5, 3, 1.5, 1.5, 1)[i])
        ax.set_yscale("log")
        ax.set_title(f"T_comp : T_comm = {ratio}, T = {rounds:,}", fontsize=9)
        ax.set_ylabel("latency (units of T_comm)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[-1].set_xlabel("clients n")
    fig.tight_layout()
    fig.savefig(out / "fig8.png", dpi=110)

    claims = fig8_claims(rows)
    lines = [f"# Latency on {dataset}: the paper's Fig. 8 claims and accuracy against simulated time", "",
             f"Sizes from this engine's LeNet-5 cut after block 1, b = 64 (float32 elements): |s| = {sizes.smashed:,}, "
             f"|w_c| = {sizes.lower:,}, |ŵ_c| = {sizes.aux:,} (InfoPro decoder, BatchNorm buffers included).", "",
             "## Fig. 8 (Table 4 model, n = 2–100)", "", "| claim | holds | numbers |", "|---|---|---|"]
    lines += [f"| {c.text} | {'yes' if c.holds else '**no**'} | {c.evidence} |" for c in claims]
    lines += ["", "![Fig. 8](fig8.png)", ""]

    runs = fig9_runs(table3_dir, n, seed)
    if not runs:
        raise FileNotFoundError(f"no Table 3 runs for n = {n}, seed {seed} in {table3_dir}/runs; "
                                "run `python -m engine reproduce table3` first")
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    lines += [f"## Accuracy against simulated time (Fig. 9), Table 3 runs at n = {n}", "",
              f"From `{table3_dir}`: each run's recorded uploads over one shared uplink that carries |s| in "
              "T_comm, plus T_comp per round (n per round for Vanilla SL). Time in units of T_comp. Unlike Table 4, "
              "Vanilla SL's one uploading client has the whole uplink.", "",
              "| T_comp : T_comm | " + " | ".join(FIG9_ROWS.values()) + " |", "|---|" + "---|" * len(FIG9_ROWS)]
    for ax, ratio in zip(axes, RATIOS):
        curves = simulated_curves(runs, sizes, ratio)
        cells = []
        for label in FIG9_ROWS.values():
            c = curves.get(label)
            if c is None:
                cells.append("–")
                continue
            ax.plot(c["time"], c["acc"], label=label)
            to = f"{c['time_to_target']:,.0f}" if c["time_to_target"] is not None else "never"
            cells.append(f"{to} to {c['target']:.0%}; {c['final_acc']:.4f} at {c['total_time']:,.0f}")
        lines.append(f"| {ratio[0]}:{ratio[1]} | " + " | ".join(cells) + " |")
        ax.set_xscale("log")
        ax.set_title(f"T_comp : T_comm = {ratio[0]}:{ratio[1]}, n = {n}", fontsize=9)
        ax.set_xlabel("simulated time (units of T_comp)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (live subset)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"fig9_n{n}.png", dpi=110)
    plt.close("all")
    lines += ["", "Cells: simulated time to the target accuracy; final accuracy at the simulated time the run ended.",
              "", f"![Fig. 9](fig9_n{n}.png)", ""]
    (out / "latency.md").write_text("\n".join(lines))
    return out
