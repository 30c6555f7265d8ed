"""``python -m engine reproduce table3 | sglr``: the papers' comparisons, measured with this engine.

Each study is a grid of ordinary runs (technique combination x n). Every finished run is kept as
``<out>/runs/<key>.json`` (the ``run --out`` format), so a study resumes where it stopped and
the tables can be rebuilt at any time. With ``--db`` the runs go to the queue instead, where
workers train them and the dashboard's Compare page shows them; the command waits and exports.
Results: ``table.md``, ``table.csv``, ``accuracy_vs_n.png`` and ``curves_n<max>.png``.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import RunConfig, deep_merge, validate_config
from engine.paper import TABLE3_ACCURACY, TABLE3_CLIENTS
from engine.presets import PROFILES, TABLE3_ROWS, techniques_to_config


@dataclass(frozen=True)
class Arm:
    """One line of a study: a technique combination (with any extra overrides)."""

    key: str
    label: str
    overrides: dict[str, Any]
    paper_row: int | None = None


def table3_arms() -> list[Arm]:
    return [Arm(f"row{r}", f"{r}: {p.techniques} ({p.title})", p.overrides(), r) for r, p in sorted(TABLE3_ROWS.items())]


def sglr_arms() -> list[Arm]:
    return [
        Arm("parallel", "Parallel SL (neither)", techniques_to_config("1,2")),
        Arm("splitavg", "SplitAvg phi=0.5", techniques_to_config("1,2,splitavg")),
        Arm("splitlr", "SplitLr alpha=0.5", techniques_to_config("1,2,splitlr")),
        Arm("sglr", "SGLR: both", techniques_to_config("1,2,splitlr,splitavg")),
    ]


POLL_S = 2.0  # seconds between looks at the queued runs
STUDIES = {"table3": table3_arms, "sglr": sglr_arms}


def study_config(arm: Arm, n: int, dataset: str, rounds: int, seed: int, profile: str) -> RunConfig:
    """The profile's hyper-parameters, the arm's techniques, n_s = n // 2 (the paper grows n_s with n),
    and the paper's summed mixup loss (Adam's step does not scale with it)."""
    return validate_config(deep_merge(deep_merge(PROFILES[profile], arm.overrides), {
        "name": f"{arm.key} n={n}", "num_clients": n, "rounds": rounds, "seed": seed,
        "eval_every": max(1, rounds // 30), "image_every": 0, "data": {"dataset": dataset},
        "mixup": {"num_partners": n // 2, "reduction": "sum"}}))


def run_in_process(cfg: RunConfig, out: Path) -> dict:
    from engine.trainer import Trainer

    start = time.perf_counter()
    result = Trainer(cfg).run()
    out.write_text(json.dumps(result, indent=1))
    print(f"  {cfg.name}: final acc {result['summary']['final_test_acc']:.4f} in {time.perf_counter() - start:.0f} s",
          flush=True)
    return result


def run_queued(configs: dict[Path, RunConfig], db_url: str) -> None:
    """Queue every config, wait for the workers, export each result next to the others."""
    from storage import queries
    from storage.db import connect

    db = connect(db_url)
    with db.write() as s:
        ids = {path: queries.create_run(s, cfg) for path, cfg in configs.items()}
    print(f"queued {len(ids)} runs in {db.display_url()}; start workers with `python -m engine worker`", flush=True)
    pending = dict(ids)
    while pending:
        time.sleep(POLL_S)
        with db.read() as s:
            for path, run_id in list(pending.items()):
                status = queries.get_run(s, run_id).status
                if status.is_terminal:
                    path.write_text(json.dumps(queries.export_result(s, run_id), indent=1))
                    print(f"  run {run_id} ({configs[path].name}): {status.value}", flush=True)
                    del pending[path]


def load_results(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]


def write_tables(out: Path, arms: list[Arm], ns: list[int], results: list[dict], study: str) -> None:
    by_key = {r["config"]["name"]: r for r in results if r["summary"].get("final_test_acc") is not None}
    rows = []
    for arm in arms:
        for n in ns:
            r = by_key.get(f"{arm.key} n={n}")
            if r:
                s = r["summary"]
                rows.append({"arm": arm.label, "n": n, "final_test_acc": round(s["final_test_acc"], 4),
                             "best_test_acc": round(s["best_test_acc"], 4), "rounds_to_target": s["rounds_to_target"],
                             "target_acc": s["target_acc"], "rounds": s["rounds_done"], "wall_s": round(s["wall_s"], 1)})
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["arm"])
        writer.writeheader()
        writer.writerows(rows)
    (out / "table.md").write_text(markdown_table(arms, ns, rows, study))


def markdown_table(arms: list[Arm], ns: list[int], rows: list[dict], study: str) -> str:
    cell = {(r["arm"], r["n"]): r for r in rows}
    lines = ["| techniques | " + " | ".join(f"n={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
    for arm in arms:
        best = {n: max((cell[(a.label, n)]["final_test_acc"] for a in arms if (a.label, n) in cell), default=None)
                for n in ns}
        cells = []
        for n in ns:
            r = cell.get((arm.label, n))
            if r is None:
                cells.append("–")
                continue
            acc = f"{r['final_test_acc']:.4f}"
            acc = f"**{acc}**" if r["final_test_acc"] == best[n] else acc
            cells.append(f"{acc} ({r['rounds_to_target'] or '–'})")
        lines.append(f"| {arm.label} | " + " | ".join(cells) + " |")
    note = "Cells: final test accuracy (full test set, mean over clients) and, in brackets, the first evaluated " \
           "round at which the live accuracy reached the target; best per column in bold."
    if study == "table3":
        paper = ["", "The paper (CIFAR-10, LeNet-5, T = 10,000):", "",
                 "| row | " + " | ".join(f"n={n}" for n in TABLE3_CLIENTS) + " |", "|---|" + "---|" * len(TABLE3_CLIENTS)]
        paper += [f"| {r} | " + " | ".join(f"{a:.4f}" for a in accs) + " |" for r, accs in TABLE3_ACCURACY.items()]
        return "\n".join(lines + ["", note] + paper) + "\n"
    return "\n".join(lines + ["", note]) + "\n"


def write_plots(out: Path, arms: list[Arm], ns: list[int], results: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_key = {r["config"]["name"]: r for r in results}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm in arms:
        pts = [(n, by_key[f"{arm.key} n={n}"]["summary"]["final_test_acc"]) for n in ns if f"{arm.key} n={n}" in by_key]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=arm.label)
    ax.set_xlabel("clients n")
    ax.set_ylabel("final test accuracy")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_n.png", dpi=120)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    n_max = max(ns)
    for arm in arms:
        r = by_key.get(f"{arm.key} n={n_max}")
        if r:
            ax.plot([h["round"] for h in r["history"]], [h["test_acc"] for h in r["history"]], label=arm.label)
    ax.set_xlabel("round")
    ax.set_ylabel(f"test accuracy (live subset), n = {n_max}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / f"curves_n{n_max}.png", dpi=120)
    plt.close("all")


def reproduce(study: str, dataset: str, ns: list[int], rounds: int, seed: int, profile: str, out_dir: str,
              db_url: str | None) -> Path:
    arms = STUDIES[study]()
    out = Path(out_dir) / f"{study}-{dataset}"
    (out / "runs").mkdir(parents=True, exist_ok=True)
    todo = {}
    for n in ns:  # small n first: the first rows of the table appear early
        for arm in arms:
            path = out / "runs" / f"{arm.key}_n{n}.json"
            if not path.exists():
                todo[path] = study_config(arm, n, dataset, rounds, seed, profile)
    print(f"{study} on {dataset}: {len(todo)} runs to train, {len(arms) * len(ns) - len(todo)} already done",
          file=sys.stderr, flush=True)
    if db_url:
        run_queued(todo, db_url)
    else:
        for path, cfg in todo.items():
            run_in_process(cfg, path)
    results = load_results(out)
    write_tables(out, arms, ns, results, study)
    write_plots(out, arms, ns, results)
    return out
