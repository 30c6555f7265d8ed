"""The command line: ``python -m engine presets | run | data | bench | worker | submit | status | export | cancel``.

Bad input exits with code 2 and one line per problem naming the flag and what it allows; the run
flags live in :mod:`engine.args`, shared with the queue's ``submit`` (:mod:`storage.cli`). ``run``
and ``submit`` refuse a run that cannot run on this host (:mod:`engine.preflight`); ``data list``
and ``data get`` show and download the data sets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from engine.args import UsageError, _Parser, add_run_arguments, run_command, runnable_config_from_args
from engine.config import MIXUP_REDUCTIONS
from engine.data import DATASET_INFO, DATASETS
from engine.presets import PRESETS, PROFILES, TECHNIQUE_CODES

# The commands a networked run starts once per process: their parser leaves out the queue's commands,
# whose database and pandas imports would add about a second to every client's start.
NETWORKED_COMMANDS = ("serve", "client")


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
    """One line per preset: its name, technique codes, the paper or code it follows, what it is."""
    width, source_width = max(len(n) for n in PRESETS), max(len(p.source) for p in PRESETS.values())
    for p in PRESETS.values():
        codes = "+".join(TECHNIQUE_CODES[c].split()[0] if c[0].isdigit() else c for c in p.techniques.split(","))
        print(f"{p.name:<{width}}  {p.techniques:<22} {codes:<24} {p.source:<{source_width}}  "
              f"{p.title}: {p.description}")
    return 0


def cmd_run(args: argparse.Namespace, network=None) -> int:
    from engine.network.server import ClientFailed
    from engine.trainer import Callbacks, Trainer

    cfg = runnable_config_from_args(args)
    for warning in cfg.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    try:
        return _train(cfg, args, Trainer, Callbacks, network)
    except ClientFailed as err:
        print(f"error: the run failed: {err}", file=sys.stderr)
        return 1


def _train(cfg, args, Trainer, Callbacks, network) -> int:
    trainer = Trainer(cfg, network=network)
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


class ByteProgress:
    """A download's progress on stderr: one line redrawn on a terminal, a line every tenth otherwise."""

    def __init__(self, title: str, stream=None):
        self.title, self.stream = title, stream or sys.stderr
        self.tty = self.stream.isatty()
        self.shown_tenth, self.drawn = -1, False

    def __call__(self, done: int, total: int) -> None:
        line = f"{self.title}: {done / 1e6:.1f} of {total / 1e6:.1f} MB ({100 * done // total if total else 0}%)"
        if self.tty:
            self.stream.write("\r" + line.ljust(60))
            self.stream.flush()
            self.drawn = True
        elif (tenth := done * 10 // total if total else 0) > self.shown_tenth:
            self.shown_tenth = tenth
            self.stream.write(line + "\n")

    def close(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\n")


def dataset_argument(text: str) -> str:
    """NAME as argparse reads it: a known data set (fashion_MNIST reads as fashion-mnist)."""
    key = text.strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise argparse.ArgumentTypeError(f"unknown data set {text!r}; known data sets: {', '.join(DATASETS)}")
    return key


def cmd_data_list(args: argparse.Namespace) -> int:
    """One line per data set: whether it is here, its size, where it is (or how to get it)."""
    from engine.data import data_dir_candidates, locate, train_size

    rows = [("DATA SET", "HERE", "TRAIN", "TEST", "WHERE")]
    for name, info in DATASET_INFO.items():
        folder = locate(name, args.data_dir)
        train = f"{info.train_size:,}"
        if not info.downloadable:
            here, where = "yes", info.source
        elif folder is None:
            here, where = "no", (f"get it ({info.download_bytes / 1e6:.0f} MB into "
                                 f"{data_dir_candidates(args.data_dir)[0]}): python -m engine data get {name}")
        else:
            here, where = "yes", str(folder)
            try:
                train = f"{train_size(name, args.data_dir):,}"
            except (OSError, RuntimeError, ValueError) as err:
                here, where = "no", f"{folder} holds files that could not be read ({err})"
        rows.append((name, here, train, f"{info.test_size:,}", where))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
              + "  " + row[4])
    return 0


def cmd_data_get(args: argparse.Namespace) -> int:
    """Download a data set unless it is here; without a network, one line saying where to put its files."""
    from engine.data import get_dataset, locate
    from engine.download import DownloadError

    info = DATASET_INFO[args.name]
    if not info.downloadable:
        print(f"{info.title} is {info.source}: there is nothing to download")
        return 0
    before = locate(args.name, args.data_dir)
    progress = ByteProgress(info.title)
    try:
        folder = get_dataset(args.name, args.data_dir, progress, mirror=args.mirror)
    except DownloadError as err:
        progress.close()
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        progress.close()
        print(f"error: cannot write the data folder: {err.strerror or err}"
              + (f": {err.filename}" if err.filename else ""), file=sys.stderr)
        return 1
    progress.close()
    print(f"{info.title} is {'already ' if before is not None else ''}here: {folder}")
    return 0


def _address(flag: str, text: str):
    from engine.network.wire import Address

    try:
        return Address.parse(text)
    except ValueError as err:
        raise UsageError(f"{flag} {err}") from None


def _seconds(flag: str, value: float) -> float:
    if not value > 0:
        raise UsageError(f"{flag} must be a number of seconds greater than 0, got {value:g}")
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    """The server of a networked run whose clients run elsewhere (``engine client``)."""
    from engine.network.server import NetworkOptions

    listen = _address("--listen", args.listen)
    args.transport = "process"
    network = NetworkOptions(listen=listen, spawn=False, timeout_s=_seconds("--timeout", args.timeout),
                             join_timeout_s=_seconds("--join-timeout", args.join_timeout),
                             announce=lambda line: print(line, file=sys.stderr, flush=True))
    return cmd_run(args, network)


def cmd_client(args: argparse.Namespace) -> int:
    from engine.network.client import run_client

    if args.rank < 1:
        raise UsageError(f"--rank must be 1 or more (rank 0 is the server), got {args.rank}")
    return run_client(_address("--server", args.server), args.rank, args.data_dir,
                      _seconds("--timeout", args.timeout))


def cmd_bench(args: argparse.Namespace) -> int:
    from engine.studies.bench import bench_privacy, run_bench

    if args.privacy:
        bench_privacy(repeats=min(args.repeats, 3), as_json=args.json)
        return 0
    if args.transport:
        from engine.studies.bench import bench_transport

        bench_transport(clients=args.clients if args.clients != "20,100" else "4,16", repeats=max(args.repeats, 10),
                        as_json=args.json)
        return 0
    if args.device.startswith("cuda") and not torch_cuda_available():
        raise UsageError(f"--device {args.device}: this machine has no CUDA device (torch {torch_version()})")
    executions = tuple(e.strip() for e in args.execution.split(",") if e.strip())
    if not executions or set(executions) - {"loop", "batched"}:
        raise UsageError(f"--execution takes loop, batched or loop,batched, got {args.execution!r}")
    run_bench(clients=args.clients, repeats=args.repeats, as_json=args.json, device=args.device,
              num_partners=args.n_s, executions=executions)
    return 0


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def torch_version() -> str:
    import torch

    return torch.__version__


def _int_list(flag: str, text: str, example: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected comma-separated whole numbers, e.g. {example}") from None
    if not values:
        raise UsageError(f"{flag}: give at least one value, e.g. {example}")
    return values


def _float_list(flag: str, text: str, example: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected comma-separated numbers, e.g. {example}") from None
    if not values or min(values) <= 0:
        raise UsageError(f"{flag}: give positive numbers, e.g. {example}")
    return values


def cmd_reproduce(args: argparse.Namespace) -> int:
    from engine.studies.reproduce import StudyMismatch, reproduce, study_dir

    if args.profile is None:
        args.profile = "splitfed_authors" if args.study == "splitfed" else "demo"
    default_ns = {"privacy": "10", "privacy-defenses": "10", "splitfed": "10", "dropout": "20"}.get(args.study, "10,20,40")
    ns = _int_list("--clients", args.clients or default_ns, "10,20,40")
    if min(ns) < 2:
        raise UsageError("--clients: every n must be at least 2")
    seeds = _int_list("--seeds", args.seeds, "0,1,2")
    if args.rounds is None:
        args.rounds = 10 if args.measured else 300
    if args.rounds < 1:
        raise UsageError("--rounds must be at least 1")
    if args.study == "latency" and args.measured:
        from engine.studies.latency_measured import write_measured_study

        rates = _float_list("--rates", args.rates, "10,100")
        try:
            out = write_measured_study(args.out_dir, rates, _int_list("--clients", args.clients or "2,4", "2,4"),
                                       args.rounds, log=lambda line: print(line, file=sys.stderr, flush=True))
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"results in {out}")
        return 0
    if args.measured:
        raise UsageError("--measured belongs to the latency study: reproduce latency --measured")
    if args.study == "latency":
        from engine.studies.latency_study import write_latency_study

        table3 = study_dir(args.out_dir, "table3", args.dataset, args.rounds, profile=args.profile)
        try:
            out = write_latency_study(args.out_dir, args.dataset, table3, max(ns), seeds[0])
        except FileNotFoundError as err:
            raise UsageError(str(err)) from None
        print(f"results in {out}")
        return 0
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if args.eval_every is not None and not 1 <= args.eval_every <= args.rounds:
        raise UsageError(f"--eval-every must be between 1 and --rounds ({args.rounds})")
    only = [k.strip() for k in args.arms.split(",") if k.strip()] if args.arms is not None else None
    try:
        out = reproduce(args.study, args.dataset, ns, args.rounds, seeds, args.profile, args.out_dir, args.db,
                        jobs=args.jobs, only=only, train=not args.no_train, reduction=args.mixup_reduction,
                        eval_every=args.eval_every)
    except (StudyMismatch, ValueError) as err:
        raise UsageError(str(err)) from None
    print(f"results in {out}")
    return 0


def build_parser(queue: bool = True) -> argparse.ArgumentParser:
    """Every command; ``queue=False`` leaves out the queue's (worker, submit, status, ...)."""
    parser = _Parser(prog="python -m engine", description="SplitLab: the parallel split-learning simulator")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("presets", help="list the named algorithms").set_defaults(func=cmd_presets)
    run = sub.add_parser("run", help="train one run in this process")
    add_run_arguments(run)
    run.add_argument("--out", help="write config, history and summary as JSON")
    run.set_defaults(func=cmd_run)
    data = sub.add_parser("data", help="the data sets: which are here (list), download one (get)")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    data_list = data_sub.add_parser("list", help="each data set: here or not, its size, where it is")
    data_list.add_argument("--data-dir", help="data folder searched first (else SPLITLAB_DATA, ./data, ../shared/data)")
    data_list.set_defaults(func=cmd_data_list)
    data_get = data_sub.add_parser("get", help="download a data set (torchvision's mirrors and checksums) "
                                   "into the first data folder, unless it is here")
    data_get.add_argument("name", type=dataset_argument, metavar="NAME", help=f"one of {', '.join(DATASETS)}")
    data_get.add_argument("--data-dir", help="download into this folder (else SPLITLAB_DATA, else ./data)")
    data_get.add_argument("--mirror", help="a base URL to download from instead of torchvision's mirrors "
                          "(else SPLITLAB_DATA_MIRROR)")
    data_get.set_defaults(func=cmd_data_get)
    serve = sub.add_parser("serve", help="the server of a networked run: waits for n `engine client` processes, "
                           "then trains with them over TCP")
    add_run_arguments(serve)
    serve.add_argument("--listen", default="127.0.0.1:29500",
                       help="HOST:PORT the clients connect to (0.0.0.0:PORT for every interface)")
    serve.add_argument("--timeout", type=float, default=60.0,
                       help="seconds any one message may take before its client counts as lost")
    serve.add_argument("--join-timeout", type=float, default=600.0, help="seconds to wait for every client to join")
    serve.add_argument("--out", help="write config, history and summary as JSON")
    serve.set_defaults(func=cmd_serve)
    client = sub.add_parser("client", help="one client of a networked run: joins `engine serve` (or a run with "
                            "--transport process) and trains its lower model")
    client.add_argument("--server", required=True, help="HOST:PORT of the server")
    client.add_argument("--rank", type=int, required=True, help="this client's rank, 1..n (client i is rank i+1)")
    client.add_argument("--data-dir", help="the data folder on this machine (else the server's setting)")
    client.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for the server (to come up, and for each command) before giving up")
    client.set_defaults(func=cmd_client)
    bench = sub.add_parser("bench", help="time one round against a centralized step")
    bench.add_argument("--json", action="store_true", help="print JSON")
    bench.add_argument("--clients", default="20,100", help="comma-separated n values")
    bench.add_argument("--repeats", type=int, default=5, help="timed repetitions (median)")
    bench.add_argument("--n-s", type=int, default=None, help="mixup partners (default n//2)")
    bench.add_argument("--device", default="cpu", help="cpu or cuda (cuda:0, ...)")
    bench.add_argument("--execution", default="loop,batched",
                       help="time the round with the clients looped, batched (one vmapped call), or both")
    bench.add_argument("--privacy", action="store_true",
                       help="time a leakage measurement against a 300-round, 10-client LocFedMix-SL run instead")
    bench.add_argument("--transport", action="store_true",
                       help="time a LocFedMix-SL round over the process transport (loopback) against the same round "
                       "in one process, at n = 4 and 16 (or --clients)")
    bench.set_defaults(func=cmd_bench)
    rep = sub.add_parser("reproduce", help="the paper's Table 3 (or SGLR's claim) as a grid of runs, with tables and "
                         "plots; `privacy`: what each combination leaks at two cut layers; `privacy-defenses`: what each defense buys against the strongest attack; `dropout`: clients that come and go; `latency`: Fig. 8's claims and accuracy against simulated time from the Table 3 runs")
    rep.add_argument("study", choices=["table3", "sglr", "privacy", "privacy-defenses", "latency", "splitfed", "dropout"])
    rep.add_argument("--dataset", default="fashion-mnist", choices=list(DATASETS))
    rep.add_argument("--clients", help="comma-separated n values (default 10,20,40; privacy, privacy-defenses, splitfed: 10; dropout: 20)")
    rep.add_argument("--rounds", type=int, default=None,
                     help="rounds per run (default 300; latency --measured: 10; the paper: 10,000)")
    rep.add_argument("--seeds", "--seed", default="0", help="comma-separated seeds; tables show mean ± std")
    rep.add_argument("--jobs", type=int, default=1, help="runs trained at once, one process each (in-process only)")
    rep.add_argument("--arms", help="train only these lines, in this order (table3: row1..row8, and the controls row7_slr6, row7_slr12; "
                     "sglr: parallel, splitavg, splitlr, sglr; privacy: row3_cut1, sglr_cut2, ...); the tables still show every finished run")
    rep.add_argument("--eval-every", type=int, default=None,
                     help="rounds between evaluations (default: 30 over the run); part of the runs' configs")
    rep.add_argument("--no-train", action="store_true",
                     help="train nothing: rewrite the tables and plots from the runs already finished")
    rep.add_argument("--profile", default=None, choices=list(PROFILES),
                     help="hyper-parameters (default: demo; splitfed: splitfed_authors, the SplitFed authors' own)")
    rep.add_argument("--mixup-reduction", default="sum", choices=MIXUP_REDUCTIONS,
                     help="combine the n_s partners' mixup losses by sum (the paper's) or mean; "
                     "mean gets its own study folder, <study>-<dataset>-T<rounds>-mean")
    rep.add_argument("--out-dir", default="docs/results",
                     help="where the study folder <study>-<dataset>-T<rounds> (tables, plots, run JSONs) goes")
    rep.add_argument("--db", help="queue the runs in this database for workers instead of training here")
    rep.add_argument("--measured", action="store_true",
                     help="latency: run the four Fig. 8 methods as networked runs over a shaped uplink (root, "
                     "network namespaces, tc) and compare the measured time per round with the Table 4 model")
    rep.add_argument("--rates", default="10,50,100", help="latency --measured: uplink rates in Mbit/s")
    rep.set_defaults(func=cmd_reproduce)
    # The queue commands (worker, submit, status, export, cancel) live with the database code;
    # the engine's core never imports storage, only this front door does.
    if queue:
        from storage.cli import add_queue_commands

        add_queue_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_command(build_parser(queue=not argv or argv[0] not in NETWORKED_COMMANDS), argv)
