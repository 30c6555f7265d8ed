"""The command line: ``python -m engine presets | run | bench | worker | submit | status | export | cancel``.

Bad input exits with code 2 and one line naming the field and what is allowed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from engine.config import MIXUP_REDUCTIONS, ConfigError, RunConfig, deep_merge, set_path, validate_config
from engine.data import DATASETS, DatasetNotFound
from engine.presets import PRESETS, PROFILES, TECHNIQUE_CODES, get_preset, get_profile, techniques_to_config


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(f"{self.prog}: {message}")


# flag -> dotted config field
RUN_FLAGS = {
    "dataset": "data.dataset", "data_dir": "data.data_dir", "clients": "num_clients", "rounds": "rounds",
    "batch_size": "batch_size", "lr": "optim.lr", "optimizer": "optim.name", "n_s": "mixup.num_partners",
    "lam_alpha": "mixup.alpha", "lam_beta": "mixup.beta", "tc": "averaging.interval", "seed": "seed",
    "eval_every": "eval_every", "device": "device", "partition": "data.partition", "name": "name",
}


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The flags shared by ``run`` and ``submit``."""
    p.add_argument("--preset", help=f"named algorithm: {', '.join(PRESETS)}")
    p.add_argument("--techniques", help="technique codes, e.g. 1,2,3,4p,5 (4p is ④'; also splitlr, splitavg)")
    p.add_argument("--profile", default="demo", choices=list(PROFILES),
                   help="hyper-parameters: demo (learns in minutes; default) or paper (b=64, SGD 0.004, T=10,000)")
    p.add_argument("--dataset", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--data-dir", help="data folder (else SPLITLAB_DATA, ./data, ../shared/data)")
    p.add_argument("--download", action="store_true", help="download the data set if missing")
    p.add_argument("--partition", help="paper | iid | dirichlet")
    p.add_argument("--clients", type=int, help="n, number of clients")
    p.add_argument("--rounds", type=int, help="T, training rounds")
    p.add_argument("--batch-size", type=int, help="b, per-client batch size")
    p.add_argument("--lr", type=float, help="learning rate eta")
    p.add_argument("--optimizer", help="sgd | momentum | adam")
    p.add_argument("--n-s", type=int, help="n_s, mixup partners per client (0..n-1)")
    p.add_argument("--lam-alpha", type=float, help="mixing ratio lambda ~ Beta(alpha, beta): alpha")
    p.add_argument("--lam-beta", type=float, help="mixing ratio lambda ~ Beta(alpha, beta): beta")
    p.add_argument("--tc", type=int, help="T_c, averaging interval in rounds")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--eval-every", type=int, help="evaluate every this many rounds")
    p.add_argument("--device", help="cpu, cuda, cuda:0, ...")
    p.add_argument("--name", help="a label for the run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other config field, dotted (e.g. mixup.reduction=mean, local_loss.kind=norm)")


def parse_value(text: str) -> Any:
    """'0.5' -> 0.5, 'true' -> True, 'null' -> None, anything else stays a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def config_dict_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Profile, then preset or techniques, then flags, then --set: later wins."""
    if args.preset and args.techniques:
        raise ConfigError("choose either --preset or --techniques, not both")
    data = deep_merge({}, get_profile(args.profile))
    if args.preset:
        preset = get_preset(args.preset)
        data = deep_merge(data, preset.overrides())
        data.setdefault("name", preset.title)
    elif args.techniques:
        data = deep_merge(data, techniques_to_config(args.techniques))
    for flag, path in RUN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            set_path(data, path, value)
    if args.download:
        set_path(data, "data.download", True)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        set_path(data, key.strip(), parse_value(value))
    return data


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return validate_config(config_dict_from_args(args))


class TerminalProgress:
    """A one-line progress display on stderr (a line per evaluation when not a terminal)."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream, self.start = total, stream, time.perf_counter()
        self.tty = stream.isatty()
        self.last = ""

    def on_round(self, trainer, losses) -> None:
        t = trainer.round
        elapsed = time.perf_counter() - self.start
        eta = elapsed / t * (self.total - t)
        line = f"round {t}/{self.total} [{100 * t / self.total:3.0f}%] loss {losses.loss:.3f} {self.last} " \
               f"elapsed {elapsed:.0f}s eta {eta:.0f}s"
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
            self.stream.flush()

    def on_eval(self, trainer, record) -> None:
        self.last = f"acc {record['test_acc']:.4f}"
        if not self.tty:
            self.stream.write(f"round {record['round']}/{self.total} test_acc {record['test_acc']:.4f} "
                              f"test_loss {record['test_loss']:.4f} train_loss {record['train_loss']:.4f}\n")

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def cmd_presets(args: argparse.Namespace) -> int:
    width = max(len(n) for n in PRESETS)
    for p in PRESETS.values():
        codes = "+".join(TECHNIQUE_CODES[c].split()[0] if c[0].isdigit() else c for c in p.techniques.split(","))
        print(f"{p.name:<{width}}  {p.techniques:<22} {codes:<24} {p.title}: {p.description}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from engine.trainer import Callbacks, Trainer

    cfg = config_from_args(args)
    for warning in cfg.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    trainer = Trainer(cfg)
    progress = TerminalProgress(cfg.rounds)

    class _Show(Callbacks):
        def on_round(self, tr, losses):
            progress.on_round(tr, losses)

        def on_eval(self, tr, record):
            progress.on_eval(tr, record)

    result = trainer.run(_Show())
    progress.close()
    s = result["summary"]
    print(f"final test accuracy {s['final_test_acc']:.4f} (best {s['best_test_acc']:.4f}), "
          f"rounds to {cfg.target_acc:.0%}: {s['rounds_to_target']}, {s['wall_s']:.1f} s")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from engine.bench import run_bench

    run_bench(clients=args.clients, repeats=args.repeats, as_json=args.json, device=args.device,
              num_partners=args.n_s)
    return 0


def _int_list(flag: str, text: str, example: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected comma-separated whole numbers, e.g. {example}") from None
    if not values:
        raise UsageError(f"{flag}: give at least one value, e.g. {example}")
    return values


def cmd_reproduce(args: argparse.Namespace) -> int:
    from engine.reproduce import StudyMismatch, reproduce, study_dir

    ns = _int_list("--clients", args.clients, "10,20,40")
    if min(ns) < 2:
        raise UsageError("--clients: every n must be at least 2")
    seeds = _int_list("--seeds", args.seeds, "0,1,2")
    if args.rounds < 1:
        raise UsageError("--rounds must be at least 1")
    if args.study == "latency":
        from engine.latency_study import write_latency_study

        table3 = study_dir(args.out_dir, "table3", args.dataset, args.rounds)
        try:
            out = write_latency_study(args.out_dir, args.dataset, table3, max(ns), seeds[0])
        except FileNotFoundError as err:
            raise UsageError(str(err)) from None
        print(f"results in {out}")
        return 0
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    only = [k.strip() for k in args.arms.split(",") if k.strip()] if args.arms is not None else None
    try:
        out = reproduce(args.study, args.dataset, ns, args.rounds, seeds, args.profile, args.out_dir, args.db,
                        jobs=args.jobs, only=only, train=not args.no_train, reduction=args.mixup_reduction)
    except (StudyMismatch, ValueError) as err:
        raise UsageError(str(err)) from None
    print(f"results in {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m engine", description="SplitLab: the parallel split-learning simulator")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("presets", help="list the named algorithms").set_defaults(func=cmd_presets)
    run = sub.add_parser("run", help="train one run in this process")
    add_run_arguments(run)
    run.add_argument("--out", help="write config, history and summary as JSON")
    run.set_defaults(func=cmd_run)
    bench = sub.add_parser("bench", help="time one round against a centralized step")
    bench.add_argument("--json", action="store_true", help="print JSON")
    bench.add_argument("--clients", default="20,100", help="comma-separated n values")
    bench.add_argument("--repeats", type=int, default=5, help="timed repetitions (median)")
    bench.add_argument("--n-s", type=int, default=None, help="mixup partners (default n//2)")
    bench.add_argument("--device", default="cpu")
    bench.set_defaults(func=cmd_bench)
    rep = sub.add_parser("reproduce", help="the paper's Table 3 (or SGLR's claim) as a grid of runs, with tables and "
                         "plots; `latency`: Fig. 8's claims and accuracy against simulated time from the Table 3 runs")
    rep.add_argument("study", choices=["table3", "sglr", "latency"])
    rep.add_argument("--dataset", default="fashion-mnist", choices=list(DATASETS))
    rep.add_argument("--clients", default="10,20,40", help="comma-separated n values")
    rep.add_argument("--rounds", type=int, default=300, help="rounds per run (the paper: 10,000)")
    rep.add_argument("--seeds", "--seed", default="0", help="comma-separated seeds; tables show mean ± std")
    rep.add_argument("--jobs", type=int, default=1, help="runs trained at once, one process each (in-process only)")
    rep.add_argument("--arms", help="train only these lines, in this order (table3: row1..row8; "
                     "sglr: parallel, splitavg, splitlr, sglr); the tables still show every finished run")
    rep.add_argument("--no-train", action="store_true",
                     help="train nothing: rewrite the tables and plots from the runs already finished")
    rep.add_argument("--profile", default="demo", choices=list(PROFILES))
    rep.add_argument("--mixup-reduction", default="sum", choices=MIXUP_REDUCTIONS,
                     help="combine the n_s partners' mixup losses by sum (the paper's) or mean; "
                     "mean gets its own study folder, <study>-<dataset>-T<rounds>-mean")
    rep.add_argument("--out-dir", default="docs/results",
                     help="where the study folder <study>-<dataset>-T<rounds> (tables, plots, run JSONs) goes")
    rep.add_argument("--db", help="queue the runs in this database for workers instead of training here")
    rep.set_defaults(func=cmd_reproduce)
    # The queue commands (worker, submit, status, export, cancel) live with the database code;
    # the engine's core never imports storage, only this front door does.
    from storage.cli import add_queue_commands
    add_queue_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UsageError, ConfigError, DatasetNotFound) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
