"""``python -m engine reproduce table3 | sglr``: the papers' comparisons, measured with this engine.

Each study is a grid of ordinary runs (technique combination x n x seed), kept in one folder per
scale, ``<out>/<study>-<dataset>-T<rounds>/``. Every finished run is ``runs/<key>_n<n>_s<seed>.json``
(the ``run --out`` format), so a study resumes where it stopped, a run cut off mid-way resumes from
its checkpoint (``checkpoints/``, not committed), and the tables can be rebuilt at any time.
``--jobs`` trains several runs at once, one process each. With ``--db`` the runs go to the queue
instead, where workers train them and the dashboard's Compare page shows them; the command waits
and exports. Results: ``table.md`` and ``table.csv`` (mean and standard deviation over seeds),
``accuracy_vs_n.png`` and ``curves_n<max>.png``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.config import MIXUP_REDUCTIONS, RunConfig, deep_merge, validate_config
from engine.data import train_size
from engine.presets import PRESETS, PROFILES, TABLE3_ROWS, techniques_to_config, without_mixup
from engine.studies.common import Arm, load_results, pyplot, run_key, run_name, write_csv
from engine.studies.dropout import dropout_arms, write_dropout_report
from engine.studies.paper import TABLE3_ACCURACY, TABLE3_CLIENTS, paper_mixup_effects
from engine.studies.privacy_defenses import defense_arms, write_defense_report
from engine.studies.privacy_study import LEAK_EVERY_EVALS, privacy_arms, write_privacy_report
from engine.trainer import Callbacks, Trainer


class StudyMismatch(ValueError):
    """A finished run in the study folder was trained with a different config."""


def table3_arms() -> list[Arm]:
    rows = [Arm(f"row{r}", f"{r}: {p.techniques} ({p.title})", p.overrides(), r) for r, p in sorted(TABLE3_ROWS.items())]
    # Is mixup's gain under SGD only a larger server step? Row 7 with the server's learning rate alone raised.
    controls = [Arm(f"row7_slr{f}", f"7 + server lr x{f} (control)", TABLE3_ROWS[7].overrides(), None, control=True,
                    server_lr_factor=float(f)) for f in (6, 12)]
    return rows + controls


def sglr_arms() -> list[Arm]:
    return [
        Arm("parallel", "Parallel SL (neither)", techniques_to_config("1,2")),
        Arm("splitavg", "SplitAvg phi=0.5", techniques_to_config("1,2,splitavg")),
        Arm("splitlr", "SplitLr alpha=0.5", techniques_to_config("1,2,splitlr")),
        Arm("sglr", "SGLR: both", techniques_to_config("1,2,splitlr,splitavg")),
    ]


def splitfed_arms() -> list[Arm]:
    """The SplitFed authors' two versions, as the presets run them (under the profile's settings)."""
    return [Arm("v1", "SplitFed V1 (a server copy per client)", PRESETS["splitfed_v1"].overrides()),
            Arm("v2", "SplitFed V2 (one server model, clients in turn)", PRESETS["splitfed_v2"].overrides())]


def one_local_epoch(dataset: str, n: int, batch_size: int) -> int:
    """Batches in one pass over the largest of n disjoint equal shards (the authors' DataLoader keeps
    the last, short batch; SplitLab's batches are all full and continue into the next shuffle)."""
    return math.ceil(math.ceil(train_size(dataset) / n) / batch_size)


POLL_S = 2.0  # seconds between looks at the queued runs
CHECKPOINT_EVERY_S = 60.0  # wall seconds between checkpoints of an in-process run
STUDIES = {"table3": table3_arms, "sglr": sglr_arms, "privacy": privacy_arms, "privacy-defenses": defense_arms,
           "splitfed": splitfed_arms, "dropout": dropout_arms}
# The profile a study uses unless told otherwise; splitfed_authors fits only the SplitFed study.
STUDY_PROFILES = {"splitfed": ("splitfed_authors",)}
DEFAULT_PROFILE = {"splitfed": "splitfed_authors"}


def study_dir(out_dir: str | os.PathLike, study: str, dataset: str, rounds: int, reduction: str = "sum",
              profile: str = "demo") -> Path:
    """One folder per scale, per profile other than demo (``-paper``: plain SGD at eta = 0.004) and
    per mixup reduction other than the paper's sum: runs trained with different settings never mix
    in one table."""
    profile_tag = {"demo": "", "splitfed_authors": "-authors-settings"}.get(profile, f"-{profile}")
    suffix = profile_tag + ("" if reduction == "sum" else f"-{reduction}")
    return Path(out_dir) / f"{study}-{dataset}-T{rounds}{suffix}"


def study_config(arm: Arm, n: int, dataset: str, rounds: int, seed: int, profile: str,
                 reduction: str = "sum", eval_every: int | None = None) -> RunConfig:
    """The profile's hyper-parameters, the arm's techniques, n_s = n // 2 (the paper grows n_s with n),
    and the paper's summed mixup loss (Adam's step does not scale with it), or its mean over the
    partners when ``reduction`` says so (the ablation that weighs the mixed samples as one batch).
    The paper profile also measures the server-client update imbalance (``track_updates``).
    Evaluations: every ``eval_every`` rounds, 30 over the run by default."""
    eval_every = eval_every or max(1, rounds // 30)
    overrides = arm.overrides
    if arm.server_lr_factor is not None:
        overrides = deep_merge(overrides, {"split_lr": {"enabled": True,
                                                        "alpha": math.log(arm.server_lr_factor) / math.log(n)}})
    if profile == "splitfed_authors":  # the authors' round: one local epoch per client
        overrides = deep_merge(overrides, {"local_steps": one_local_epoch(dataset, n, PROFILES[profile]["batch_size"])})
    return validate_config(deep_merge(deep_merge(PROFILES[profile], overrides), {
        "name": run_name(arm, n, seed), "num_clients": n, "rounds": rounds, "seed": seed,
        "eval_every": eval_every, "image_every": 0, "data": {"dataset": dataset},
        "mixup": {"num_partners": n // 2, "reduction": reduction}, "track_updates": profile == "paper",
        "privacy": {"every": leak_every(arm, rounds, eval_every)}}))


def leak_every(arm: Arm, rounds: int, eval_every: int) -> int:
    """``privacy.every`` for the arm: 0 (never), every :data:`LEAK_EVERY_EVALS` evaluations, or once, at
    the end (the first multiple of ``eval_every`` at or after the last round: the trainer measures at
    the last round and at multiples of ``privacy.every``, so only at the last)."""
    if not arm.leakage:
        return 0
    return eval_every * math.ceil(rounds / eval_every) if arm.leak_at_end else eval_every * LEAK_EVERY_EVALS


# ---- training ------------------------------------------------------------------------------
def _checkpoint_path(out: Path) -> Path:
    return out.parent.parent / "checkpoints" / (out.stem + ".pt")


class _Checkpointing(Callbacks):
    """Save the trainer every CHECKPOINT_EVERY_S wall seconds, so a killed run resumes near where it was."""

    def __init__(self, path: Path):
        self.path = path
        self.last_save = time.perf_counter()

    def on_round(self, trainer: Trainer, losses: Any) -> None:
        if time.perf_counter() - self.last_save >= CHECKPOINT_EVERY_S and trainer.round < trainer.cfg.rounds:
            trainer.save_checkpoint(self.path)
            self.last_save = time.perf_counter()


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """What makes two stored configs the same run of a study: everything but the name, and but the
    attacker's settings where leakage is never measured (they change nothing in such a run, and their
    defaults have changed since runs and checkpoints were stored)."""
    out = {k: v for k, v in config.items() if k != "name"}
    if not (out.get("privacy") or {}).get("every"):
        out.pop("privacy", None)
    return out


def run_in_process(cfg: RunConfig, out: Path) -> dict:
    """Train one run (resuming from its checkpoint if one was left) and write its JSON."""

    ckpt = _checkpoint_path(out)
    trainer = None
    if ckpt.exists():
        try:
            trainer = Trainer.from_checkpoint(ckpt)
            if comparable(trainer.cfg.model_dump(mode="json")) != comparable(cfg.model_dump(mode="json")):
                trainer = None
        except (ValueError, KeyError, RuntimeError, EOFError):
            trainer = None  # a checkpoint from other code or a torn file: start again
    resumed_at = trainer.round if trainer is not None else None
    trainer = trainer or Trainer(cfg)
    start = time.perf_counter()
    result = trainer.run(_Checkpointing(ckpt))
    out.write_text(json.dumps(result, indent=1))
    ckpt.unlink(missing_ok=True)
    note = f" (resumed from round {resumed_at})" if resumed_at is not None else ""
    print(f"  {cfg.name}: final acc {result['summary']['final_test_acc']:.4f} in "
          f"{time.perf_counter() - start:.0f} s{note}", flush=True)
    return result


def _init_job(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _train_job(cfg_json: dict, out: str) -> str:
    run_in_process(RunConfig.model_validate(cfg_json), Path(out))
    return out


def _runs(count: int) -> str:
    return f"{count} run{'' if count == 1 else 's'}"


def run_jobs(todo: dict[Path, RunConfig], jobs: int) -> None:
    """Train the runs in ``jobs`` processes at once, sharing the cores between them."""
    if jobs <= 1 or len(todo) <= 1:
        for path, cfg in todo.items():
            run_in_process(cfg, path)
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_init_job,
                             initargs=(threads,)) as pool:
        futures = [pool.submit(_train_job, cfg.model_dump(mode="json"), str(path)) for path, cfg in todo.items()]
        for future in as_completed(futures):
            future.result()  # re-raises a failed run here


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


# ---- tables and plots ----------------------------------------------------------------------
def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def late_gain(history: list[dict]) -> float:
    """How much the live accuracy still rose over the last quarter of the rounds (mean of the last
    three evaluations against the mean of the three around the 3/4 mark): near 0 means the curve
    has flattened."""
    accs = [h["test_acc"] for h in history]
    if len(accs) < 8:
        return accs[-1] - accs[0] if accs else 0.0
    q = round(len(accs) * 0.75)
    return statistics.fmean(accs[-3:]) - statistics.fmean(accs[q - 2:q + 1])


def aggregate(arms: list[Arm], ns: list[int], seeds: list[int], results: dict[str, dict]) -> list[dict]:
    """One row per (arm, n): mean and standard deviation over the seeds that finished."""
    rows = []
    for arm in arms:
        for n in ns:
            runs = [results[k] for k in (run_key(arm, n, s) for s in seeds) if k in results]
            if not runs:
                continue
            final = [r["summary"]["final_test_acc"] for r in runs]
            best = [r["summary"]["best_test_acc"] for r in runs]
            hit = [r["summary"]["rounds_to_target"] for r in runs if r["summary"]["rounds_to_target"] is not None]
            late = [late_gain(r["history"]) for r in runs]
            rows.append({
                "arm": arm.label, "n": n, "seeds": len(runs),
                "final_test_acc": round(statistics.fmean(final), 4), "final_test_acc_std": round(_std(final), 4),
                "best_test_acc": round(statistics.fmean(best), 4),
                "rounds_to_target": round(statistics.fmean(hit)) if len(hit) == len(runs) else None,
                "target_acc": runs[0]["summary"]["target_acc"], "rounds": runs[0]["summary"]["rounds_done"],
                "late_gain": round(statistics.fmean(late), 4),
                "last5_live_acc": round(statistics.fmean(statistics.fmean(h["test_acc"] for h in r["history"][-5:])
                                                         for r in runs), 4),
                "wall_s": round(statistics.fmean(r["summary"]["wall_s"] for r in runs), 1)})
    return rows


def mixup_pairs(arms: list[Arm]) -> list[tuple[Arm, Arm]]:
    """(with ③, without ③) for every two Table 3 rows whose techniques differ by mixup alone
    (rows 5 and 3, 6 and 4, 8 and 7)."""
    by_codes = {TABLE3_ROWS[a.paper_row].techniques: a for a in arms if a.paper_row}
    return [(arm, by_codes[base]) for codes, arm in by_codes.items() if (base := without_mixup(codes)) in by_codes]


def mixup_effects(arms: list[Arm], ns: list[int], seeds: list[int], results: dict[str, dict]) -> list[dict]:
    """What adding ③ changes, holding every other technique and the seed fixed: accuracy of the row
    with mixup minus the row without it, per seed where both finished, and their mean."""
    rows = []
    for with_mix, without in mixup_pairs(arms):
        for n in ns:
            pairs = [(results[a], results[b]) for a, b in ((run_key(with_mix, n, s), run_key(without, n, s))
                                                              for s in seeds) if a in results and b in results]
            if not pairs:
                continue
            final = [a["summary"]["final_test_acc"] - b["summary"]["final_test_acc"] for a, b in pairs]
            last5 = [statistics.fmean(h["test_acc"] for h in a["history"][-5:])
                     - statistics.fmean(h["test_acc"] for h in b["history"][-5:]) for a, b in pairs]
            rows.append({"pair": f"row {with_mix.paper_row} - row {without.paper_row}", "n": n, "seeds": len(pairs),
                         "final_diff": round(statistics.fmean(final), 4),
                         "final_diff_per_seed": " ".join(f"{d:+.4f}" for d in final),
                         "last5_live_diff": round(statistics.fmean(last5), 4)})
    return rows


MILESTONES = (2000, 5000, 10_000)  # rounds at which a paper-length study reads its gains off the curves


def comparison_pairs(arms: list[Arm]) -> list[tuple[Arm, Arm]]:
    """The mixup pairs, and each control against the row it changes (row 7 + a larger server lr vs row 7)."""
    row7 = next((a for a in arms if a.paper_row == 7), None)
    return mixup_pairs(arms) + [(a, row7) for a in arms if a.control and row7 is not None]


def _at_round(history: list[dict], round_: int, key: str = "test_acc") -> tuple[float, float, int]:
    """(the value at the last evaluation at or before ``round_``, the mean of the five evaluations
    ending there, the round it was read at)."""
    upto = [h for h in history if h["round"] <= round_]
    return upto[-1][key], statistics.fmean(h[key] for h in upto[-5:]), upto[-1]["round"]


def gains_by_round(arms: list[Arm], ns: list[int], seeds: list[int], results: dict[str, dict],
                   milestones: Iterable[int]) -> list[dict]:
    """For every pair (with, without) and seed: the accuracy difference read off the same two runs'
    live curves at each milestone (the evaluation there, and the mean of the last five up to it),
    and at the end the full-test-set final as well."""
    rows = []
    for with_arm, without in comparison_pairs(arms):
        for n in ns:
            for seed in seeds:
                a, b = results.get(run_key(with_arm, n, seed)), results.get(run_key(without, n, seed))
                if a is None or b is None:
                    continue
                for m in milestones:
                    if m > a["summary"]["rounds_done"]:
                        continue
                    (a_at, a5, read), (b_at, b5, _) = _at_round(a["history"], m), _at_round(b["history"], m)
                    last = m == a["summary"]["rounds_done"]
                    rows.append({"pair": f"{with_arm.key} - {without.key}", "n": n, "seed": seed, "round": m,
                                 "read_at": read, "with_acc": a_at, "without_acc": b_at, "diff": round(a_at - b_at, 4),
                                 "with_last5": round(a5, 4), "without_last5": round(b5, 4), "diff_last5": round(a5 - b5, 4),
                                 "diff_final_full_test": round(a["summary"]["final_test_acc"]
                                                               - b["summary"]["final_test_acc"], 4) if last else None})
    return rows


def gains_table(rows: list[dict]) -> str:
    """Markdown: one line per pair, n and milestone; each cell the per-seed differences in points."""
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["pair"], r["n"], r["round"]), []).append(r)
    lines = ["| pair | n | round | live accuracy difference (seeds) | mean of last five evaluations | final, full test set |",
             "|---|---|---|---|---|---|"]
    for (pair, n, round_), rs in cells.items():
        def points(key: str, rs=rs) -> str:
            values = [r[key] * 100 for r in rs]
            mean = f"{statistics.fmean(values):+.1f}"
            return mean + (f" ({', '.join(f'{v:+.1f}' for v in values)}; seeds {', '.join(str(r['seed']) for r in rs)})"
                           if len(rs) > 1 else f" (seed {rs[0]['seed']})")
        final = points("diff_final_full_test") if rs[0]["diff_final_full_test"] is not None else "–"
        lines.append(f"| {pair} | {n} | {round_:,} | {points('diff')} | {points('diff_last5')} | {final} |")
    return "\n".join(lines)


def write_gain_plots(out: Path, arms: list[Arm], ns: list[int], seeds: list[int], results: dict[str, dict]) -> None:
    """``gain_n<n>.png``: each pair's accuracy difference over the rounds (live curves, a five-evaluation
    running mean; one line per seed), with the paper's +0.2 to +4.3 points for row 8 - row 7 shaded."""
    plt = pyplot()
    import numpy as np

    styles = ["-", "--", ":", "-."]
    for n in ns:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        drawn = False
        for p, (with_arm, without) in enumerate(comparison_pairs(arms)):
            for s, seed in enumerate(seeds):
                a, b = results.get(run_key(with_arm, n, seed)), results.get(run_key(without, n, seed))
                if a is None or b is None:
                    continue
                length = min(len(a["history"]), len(b["history"]))
                x = np.array([h["round"] for h in a["history"][:length]])
                diff = np.array([ha["test_acc"] - hb["test_acc"] for ha, hb in zip(a["history"], b["history"])][:length])
                smooth = np.convolve(diff, np.ones(5) / 5, mode="valid") if length >= 5 else diff
                ax.plot(x[len(x) - len(smooth):], 100 * smooth, styles[s % len(styles)],
                        color=plt.get_cmap("tab10").colors[p], label=f"{with_arm.label} − {without.key}, seed {seed}")
                drawn = True
        if not drawn:
            plt.close(fig)
            continue
        ax.axhspan(0.2, 4.3, color="grey", alpha=0.2, label="the paper: row 8 − row 7, +0.2 to +4.3 (CIFAR-10, T = 10,000)")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel("round")
        ax.set_ylabel(f"accuracy difference, points (n = {n})")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / f"gain_n{n}.png", dpi=120)
    plt.close("all")


def imbalance(arms: list[Arm], ns: list[int], seeds: list[int], results: dict[str, dict]) -> list[dict]:
    """The server-client update imbalance of every run that measured it (``track_updates``): per arm
    and n, the mean over the run's evaluation rows (each the mean over its rounds) of the server's
    update norm, a client's, their ratio, and the ratio of the relative updates (each norm over the
    norm of the model's parameters), averaged over seeds."""
    rows = []
    for arm in arms:
        for n in ns:
            runs = [results[k] for k in (run_key(arm, n, s) for s in seeds) if k in results]
            runs = [r for r in runs if r["history"] and "update_ratio" in r["history"][0]]
            if not runs:
                continue

            def mean(key: str, runs=runs) -> float:
                return statistics.fmean(statistics.fmean(h[key] for h in r["history"] if h.get(key) is not None)
                                        for r in runs)

            server, client = mean("server_update_norm"), mean("client_update_norm")
            rows.append({"arm": arm.label, "n": n, "seeds": len(runs), "server_update_norm": server,
                         "client_update_norm": client, "norm_ratio": server / client if client else None,
                         "relative_ratio": mean("update_ratio")})
    return rows


def imbalance_table(rows: list[dict]) -> str:
    lines = ["| techniques | n | seeds | server update | client update | ratio | ratio of relative updates |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['norm_ratio']:.2f}" if r["norm_ratio"] is not None else "–"
        lines.append(f"| {r['arm']} | {r['n']} | {r['seeds']} | {r['server_update_norm']:.2e} | "
                     f"{r['client_update_norm']:.2e} | {ratio} | {r['relative_ratio']:.3f} |")
    return "\n".join(lines)


def markdown_grid(corner: str, ns: Iterable[int], rows: dict[str, list[str]]) -> str:
    """A markdown table with one column per n and one line per labelled row of cells."""
    ns = list(ns)
    lines = [f"| {corner} | " + " | ".join(f"n={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
    return "\n".join(lines + [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows.items()])


def mixup_effect_table(ns: list[int], effects: list[dict]) -> str:
    """Markdown: one line per pair, cells in accuracy points, the per-seed values in brackets."""
    cell = {(e["pair"], e["n"]): e for e in effects}

    def points(e: dict | None) -> str:
        if e is None:
            return "–"
        per_seed = ", ".join(f"{float(d) * 100:+.1f}" for d in e["final_diff_per_seed"].split())
        return f"{e['final_diff'] * 100:+.1f}" + (f" ({per_seed})" if e["seeds"] > 1 else "")

    return markdown_grid("adding ③ mixup", ns, {pair: [points(cell.get((pair, n))) for n in ns]
                                                for pair in dict.fromkeys(e["pair"] for e in effects)})


def paper_mixup_effect_table() -> str:
    """The same table from the paper's Table 3."""
    return markdown_grid("adding ③ mixup", TABLE3_CLIENTS, {f"row {w} - row {o}": [f"{d * 100:+.1f}" for d in diffs]
                                                            for (w, o), diffs in paper_mixup_effects().items()})


def write_tables(out: Path, arms: list[Arm], ns: list[int], rows: list[dict], study: str,
                 reduction: str = "sum", effects: list[dict] | None = None,
                 updates: list[dict] | None = None) -> None:
    write_csv(out / "table.csv", rows, ["arm"])
    text = markdown_table(arms, ns, rows, study, reduction)
    if updates:
        write_csv(out / "imbalance.csv", updates, ["arm"])
        text += ("\nThe server-client update imbalance (`track_updates`): the L2 norm of the change a round makes "
                 "to the server's upper model and to a client's lower model (mean over the clients, before ⑤ "
                 "averaging), each the mean over the run; *ratio* is server over client, *ratio of relative "
                 "updates* divides each change by the norm of the model's parameters first. `imbalance.png` "
                 "shows the ratio over the rounds.\n\n" + imbalance_table(updates) + "\n")
    if effects:
        write_csv(out / "mixup_effect.csv", effects, ["pair"])
        text += ("\nWhat adding ③ changes, everything else and the seed held fixed: final accuracy of the row with "
                 "mixup minus the row without it, in points (mean over seeds; each seed's value in brackets). "
                 "`mixup_effect.csv` also has the same difference on the last five live evaluations.\n\n"
                 + mixup_effect_table(ns, effects) + "\n\nThe same difference in the paper's Table 3 (CIFAR-10, "
                 "T = 10,000), where mixup's gain grows with n:\n\n" + paper_mixup_effect_table() + "\n")
    (out / "table.md").write_text(text)


def markdown_table(arms: list[Arm], ns: list[int], rows: list[dict], study: str, reduction: str = "sum") -> str:
    cell = {(r["arm"], r["n"]): r for r in rows}
    lines = ["| techniques | " + " | ".join(f"n={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
    best = {n: max((cell[(a.label, n)]["final_test_acc"] for a in arms if (a.label, n) in cell), default=None)
            for n in ns}
    for arm in arms:
        if arm.control and not any((arm.label, n) in cell for n in ns):
            continue  # a control nobody trained is not a line of the table
        cells = []
        for n in ns:
            r = cell.get((arm.label, n))
            if r is None:
                cells.append("–")
                continue
            acc = f"{r['final_test_acc']:.4f}"
            if r["seeds"] > 1:
                acc += f" ± {r['final_test_acc_std']:.4f}"
            acc = f"**{acc}**" if r["final_test_acc"] == best[n] else acc
            cells.append(f"{acc} ({r['rounds_to_target'] or '–'})")
        lines.append(f"| {arm.label} | " + " | ".join(cells) + " |")
    seeds = sorted({r["seeds"] for r in rows})
    several = bool(seeds) and seeds[-1] > 1
    over = f"mean ± standard deviation over {'/'.join(map(str, seeds))} seeds" if several else "one seed"
    scale = f" after {rows[0]['rounds']} rounds" if rows else ""
    target = rows[0]["target_acc"] if rows else "the target"
    averaged = " (mean over seeds; – if a seed never did)" if several else ""
    note = (f"Cells: final test accuracy{scale} (full test set, mean over clients; {over}) and, in brackets, the "
            f"first evaluated round at which the live accuracy reached {target}{averaged}; best per column in bold. "
            "`table.csv` also has `late_gain`, the rise of the live accuracy over the last quarter of the rounds "
            "(near 0: the curve has flattened), and `last5_live_acc`, the mean of the last five live evaluations "
            "(less sensitive to where the final round happens to land).")
    if study == "table3":
        note += (" Mixup (rows 2, 5, 6, 8) draws n_s = n/2 partners per client and "
                 + ("sums their losses, as the paper does." if reduction == "sum" else
                    "averages their losses (an ablation: the paper sums them, which weighs the mixed samples "
                    "n_s times as much as the real ones)."))
        paper = ["", "The paper (CIFAR-10, LeNet-5, T = 10,000):", "",
                 markdown_grid("row", TABLE3_CLIENTS, {str(r): [f"{a:.4f}" for a in accs]
                                                       for r, accs in TABLE3_ACCURACY.items()})]
        return "\n".join(lines + ["", note] + paper) + "\n"
    return "\n".join(lines + ["", note]) + "\n"


def write_plots(out: Path, arms: list[Arm], ns: list[int], seeds: list[int], rows: list[dict],
                results: dict[str, dict]) -> None:
    plt = pyplot()
    import numpy as np

    cell = {(r["arm"], r["n"]): r for r in rows}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm in arms:
        pts = [(n, cell[(arm.label, n)]) for n in ns if (arm.label, n) in cell]
        if pts:
            ax.errorbar([n for n, _ in pts], [r["final_test_acc"] for _, r in pts],
                        yerr=[r["final_test_acc_std"] for _, r in pts], marker="o", capsize=3, label=arm.label)
    ax.set_xlabel("clients n")
    ax.set_ylabel("final test accuracy")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_n.png", dpi=120)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    # the largest n with a finished run (a partly trained grid still gets its curves)
    n_max = max((n for n in ns if any(run_key(a, n, s) in results for a in arms for s in seeds)), default=max(ns))
    for arm in arms:
        runs = [results[k] for k in (run_key(arm, n_max, s) for s in seeds) if k in results]
        if not runs:
            continue
        length = min(len(r["history"]) for r in runs)
        x = [h["round"] for h in runs[0]["history"][:length]]
        acc = np.array([[h["test_acc"] for h in r["history"][:length]] for r in runs])
        (line,) = ax.plot(x, acc.mean(axis=0), label=arm.label)
        if len(runs) > 1:
            ax.fill_between(x, acc.min(axis=0), acc.max(axis=0), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("round")
    ax.set_ylabel(f"test accuracy (live subset), n = {n_max}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / f"curves_n{n_max}.png", dpi=120)
    plt.close("all")


def write_imbalance_plot(out: Path, arms: list[Arm], ns: list[int], seeds: list[int], results: dict[str, dict]) -> None:
    """``imbalance.png``: the server's update norm over a client's, round by round, one line per arm and n."""
    plt = pyplot()

    # One colour per arm, one line style per seed, one width per n: 13 lines stay tellable apart.
    colours = plt.get_cmap("tab10").colors
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for a, arm in enumerate(arms):
        for i, n in enumerate(ns):
            for s, seed in enumerate(seeds):
                run = results.get(run_key(arm, n, seed))
                if not run or not run["history"] or "update_ratio" not in run["history"][0]:
                    continue
                pts = [(h["round"], h["server_update_norm"] / h["client_update_norm"]) for h in run["history"]
                       if h.get("client_update_norm")]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"{arm.label}, n={n}, seed {seed}",
                        color=colours[a % len(colours)], linestyle=styles[s % len(styles)], linewidth=1.0 + 1.2 * i)
    ax.set_yscale("log")
    ax.set_xlabel("round")
    ax.set_ylabel("server update norm / client update norm")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(out / "imbalance.png", dpi=120)
    plt.close("all")


def splitfed_rows(arms: list[Arm], ns: list[int], seeds: list[int], results: dict[str, dict]) -> list[dict]:
    """Per version and n: SplitLab's figure (final, full test set) beside the figure the authors' code
    prints (engine.schedules.splitfed: round-start lower model, the upper model that served the client, the
    client's own test shard), each as the final value and the mean of the last five evaluations."""
    rows = []
    for arm in arms:
        for n in ns:
            runs = [(s, results[k]) for s in seeds if (k := run_key(arm, n, s)) in results]
            if not runs:
                continue

            def last5(r: dict, key: str) -> float:
                return statistics.fmean(h[key] for h in r["history"][-5:])

            final = [r["summary"]["final_test_acc"] for _, r in runs]
            authors = [r["history"][-1]["authors_test_acc"] for _, r in runs]
            peak = [max(r["history"], key=lambda h: h["test_acc"]) for _, r in runs]
            rows.append({
                "version": arm.label, "n": n, "seeds": " ".join(str(s) for s, _ in runs),
                "local_steps": runs[0][1]["config"]["local_steps"], "rounds": runs[0][1]["summary"]["rounds_done"],
                "final_test_acc": round(statistics.fmean(final), 4), "final_test_acc_std": round(_std(final), 4),
                "final_per_seed": " ".join(f"{a:.4f}" for a in final),
                "last5_live_acc": round(statistics.fmean(last5(r, "test_acc") for _, r in runs), 4),
                "best_live_acc": " ".join(f"{h['test_acc']:.3f}@{h['round']}" for h in peak),
                "authors_test_acc": round(statistics.fmean(authors), 4), "authors_test_acc_std": round(_std(authors), 4),
                "authors_last5": round(statistics.fmean(last5(r, "authors_test_acc") for _, r in runs), 4),
                "wall_s": round(statistics.fmean(r["summary"]["wall_s"] for _, r in runs), 1)})
    return rows


def write_splitfed_report(out: Path, arms: list[Arm], ns: list[int], seeds: list[int], results: dict[str, dict]) -> None:
    """``table.md``/``table.csv`` (both figures per version) and ``curves_n<n>.png`` (both figures over the rounds)."""
    plt = pyplot()
    import numpy as np

    rows = splitfed_rows(arms, ns, seeds, results)
    write_csv(out / "table.csv", rows, ["version"])
    lines = ["| version | n | seeds | batches per client a round | SplitLab: final (full test set) | last five live "
             "| best live (round) | the authors' figure: final | last five | wall s per run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        several = len(str(r["seeds"]).split()) > 1  # a spread only where more than one seed ran

        def spread(mean: float, std: float, several: bool = several) -> str:
            return f"{mean:.4f} ± {std:.4f}" if several else f"{mean:.4f}"

        lines.append(f"| {r['version']} | {r['n']} | {r['seeds']} | {r['local_steps']} | "
                     f"{spread(r['final_test_acc'], r['final_test_acc_std'])} ({r['final_per_seed']}) | "
                     f"{r['last5_live_acc']:.4f} | {r['best_live_acc']} | "
                     f"{spread(r['authors_test_acc'], r['authors_test_acc_std'])} | "
                     f"{r['authors_last5']:.4f} | {r['wall_s']:.0f} |")
    note = ("SplitLab's figure: the averaged lower model with the global upper model after the round, on the full "
            "test set (live curve: a fixed 1,000-image subset). The authors' figure is what their scripts print: "
            "each client's lower model as it started the round with the upper model that served it (V1: the "
            "client's own copy before averaging; V2: the one server model after that client's turn), on the "
            "client's own tenth of the test set, averaged over the clients.\n")
    (out / "table.md").write_text("\n".join(lines) + "\n\n" + note)
    for n in ns:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for a, arm in enumerate(arms):
            runs = [results[k] for s in seeds if (k := run_key(arm, n, s)) in results]
            if not runs:
                continue
            colour = plt.get_cmap("tab10").colors[a]
            for key, style, what in (("test_acc", "-", "SplitLab"), ("authors_test_acc", "--", "authors' figure")):
                length = min(len(r["history"]) for r in runs)
                x = [h["round"] for h in runs[0]["history"][:length]]
                acc = np.array([[h[key] for h in r["history"][:length]] for r in runs])
                ax.plot(x, acc.mean(axis=0), style, color=colour, label=f"{arm.label}: {what}")
                if len(runs) > 1:
                    ax.fill_between(x, acc.min(axis=0), acc.max(axis=0), color=colour, alpha=0.12)
        ax.set_xlabel("round")
        ax.set_ylabel(f"test accuracy, n = {n} (mean over seeds; band: min to max)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / f"curves_n{n}.png", dpi=120)
    plt.close("all")


# ---- the command ---------------------------------------------------------------------------
def plan(arms: list[Arm], dataset: str, ns: list[int], rounds: int, seeds: list[int], profile: str,
         out: Path, reduction: str = "sum", eval_every: int | None = None) -> tuple[dict[Path, RunConfig], int]:
    """The runs still to train, and how many are already done. A finished run whose config differs
    from the one planned (other code or other settings in the same folder) is refused, not reused."""
    todo, done = {}, 0
    for seed in seeds:  # one seed of every cell first, small n first: a whole table appears early
        for n in ns:
            for arm in arms:
                path = out / "runs" / f"{run_key(arm, n, seed)}.json"
                cfg = study_config(arm, n, dataset, rounds, seed, profile, reduction, eval_every)
                if not path.exists():
                    todo[path] = cfg
                    continue
                stored_run = json.loads(path.read_text())
                if stored_run["summary"].get("final_test_acc") is None:  # failed or cancelled in the queue
                    todo[path] = cfg
                    continue
                # read through today's config: a setting added since the run was stored reads as its default
                stored = stored_run["config"]
                with contextlib.suppress(ValidationError):  # a config today's code refuses is compared as stored
                    stored = RunConfig.model_validate(stored).model_dump(mode="json")
                stored, planned = comparable(stored), comparable(cfg.model_dump(mode="json"))
                diff = sorted(k for k in set(stored) | set(planned) if stored.get(k) != planned.get(k))
                if diff:
                    raise StudyMismatch(f"{path} was trained with a different config (differs in {', '.join(diff)}); "
                                        "move it away or use another --out-dir")
                done += 1
    return todo, done


def pick_arms(arms: list[Arm], keys: list[str] | None) -> list[Arm]:
    """The arms named by ``keys``, in that order (every arm but the controls for None): what to train first."""
    if keys is None:
        return [a for a in arms if not a.control]
    by_key = {a.key: a for a in arms}
    unknown = [k for k in keys if k not in by_key]
    if unknown or not keys:
        raise ValueError(f"unknown arm {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"choose from {', '.join(by_key)}")
    return [by_key[k] for k in dict.fromkeys(keys)]


def reproduce(study: str, dataset: str, ns: list[int], rounds: int, seeds: list[int], profile: str, out_dir: str,
              db_url: str | None, jobs: int = 1, only: list[str] | None = None, train: bool = True,
              reduction: str = "sum", eval_every: int | None = None) -> Path:
    """Train the study's missing runs (only the arms in ``only``, in its order, when given; none when
    ``train`` is False), then write the tables and plots from every finished run of the study.
    ``reduction`` combines the mixup partners' losses ("sum", the paper's, or "mean")."""
    if reduction not in MIXUP_REDUCTIONS:
        raise ValueError(f"mixup reduction {reduction!r}: choose from {', '.join(MIXUP_REDUCTIONS)}")
    if profile == "splitfed_authors" and study != "splitfed":
        raise ValueError("--profile splitfed_authors is the SplitFed authors' settings: use it with `reproduce splitfed`")
    arms = STUDIES[study]()
    out = study_dir(out_dir, study, dataset, rounds, reduction, profile)
    if train:
        (out / "runs").mkdir(parents=True, exist_ok=True)
    todo, done = plan(pick_arms(arms, only), dataset, ns, rounds, seeds, profile, out, reduction, eval_every)
    if not train:
        print(f"{study} on {dataset}, {rounds} rounds: {_runs(done)} done, {len(todo)} missing (not trained: "
              "--no-train)", file=sys.stderr, flush=True)
    else:
        print(f"{study} on {dataset}, {rounds} rounds: {_runs(len(todo))} to train, {done} already done"
              + (f", {jobs} at a time" if jobs > 1 and not db_url else ""), file=sys.stderr, flush=True)
        if db_url:
            run_queued(todo, db_url)
        else:
            run_jobs(todo, jobs)
    results = load_results(out)
    if not results:
        raise ValueError(f"no finished runs in {out}")
    if study == "privacy":
        write_privacy_report(out, ns, seeds, results)
        return out
    if study == "privacy-defenses":
        write_defense_report(out, ns, seeds, results)
        return out
    if study == "dropout":
        write_dropout_report(out, ns, seeds, results)
        return out
    if study == "splitfed":
        write_splitfed_report(out, arms, ns, seeds, results)
        return out
    rows = aggregate(arms, ns, seeds, results)
    updates = imbalance(arms, ns, seeds, results)
    write_tables(out, arms, ns, rows, study, reduction, mixup_effects(arms, ns, seeds, results), updates)
    write_plots(out, arms, ns, seeds, rows, results)
    if updates:
        write_imbalance_plot(out, arms, ns, seeds, results)
    if rounds >= MILESTONES[-1]:  # the paper's length: the gains read off the same runs on the way
        gains = gains_by_round(arms, ns, seeds, results, MILESTONES)
        write_csv(out / "gain_by_round.csv", gains, ["pair"])
        with open(out / "table.md", "a") as f:
            f.write("\nThe same differences read off the same runs at 2,000, 5,000 and 10,000 rounds (live curves: "
                    "the evaluation at that round on the fixed 1,000-image subset, and the mean of the five "
                    "evaluations up to it; at the end also the full-test-set final). Points; `gain_by_round.csv` "
                    "has every value, `gain_n<n>.png` the difference over all rounds.\n\n" + gains_table(gains) + "\n")
        write_gain_plots(out, arms, ns, seeds, results)
    return out
