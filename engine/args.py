"""The run flags (``--clients``, ``--n-s``, ``--set KEY=VALUE``, ...), shared by every command line.

``python -m engine run`` and ``submit`` (:mod:`engine.cli`, :mod:`storage.cli`) and
``python -m storage.perf`` all build their run config here, so a flag means the same everywhere.
Bad input is reported as one line per problem that names the flag the user typed and what it allows
(``--n-s must be between 0 and n-1 = 9 (n = 10 clients), got -1``), with exit code 2. ``run``,
``serve`` and ``submit`` also ask :func:`engine.preflight.run_problems` whether the run can run on this
host (the data set is here, items per client fit it, ...) before anything is trained or queued.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from engine.config import ConfigError, RunConfig, deep_merge, field_help, set_path, validate_config
from engine.data import DATASETS, DatasetNotFound
from engine.preflight import run_problems
from engine.presets import PRESETS, PROFILES, get_preset, get_profile, plugin_codes, techniques_to_config


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(f"{self.prog}: {message}")


# flag (as argparse names it) -> dotted config field
RUN_FLAGS = {
    "dataset": "data.dataset", "data_dir": "data.data_dir", "clients": "num_clients", "rounds": "rounds",
    "batch_size": "batch_size", "lr": "optim.lr", "optimizer": "optim.name", "n_s": "mixup.num_partners",
    "lam_alpha": "mixup.alpha", "lam_beta": "mixup.beta", "tc": "averaging.interval", "seed": "seed",
    "eval_every": "eval_every", "device": "device", "partition": "data.partition", "name": "name",
    "transport": "transport", "samples_per_client": "data.samples_per_client", "dirichlet_beta": "data.dirichlet_beta",
    "participation": "participation.fraction", "dropout": "participation.dropout",
    "speed_spread": "participation.speed_spread", "deadline": "participation.deadline",
    "on_client_loss": "on_client_loss",
}


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The flags shared by ``run`` and ``submit``."""
    p.add_argument("--config", help="start from a run config in a JSON file (a config, or the result JSON of "
                                    "`run --out` with its \"config\"); the other flags change it")
    p.add_argument("--preset", help=f"named algorithm: {', '.join(PRESETS)}")
    extra = "".join(f", {code} ({label})" for code, (_, label) in plugin_codes().items())
    p.add_argument("--techniques", help=f"technique codes, e.g. 1,2,3,4p,5 (4p is ④'; also splitlr, splitavg{extra})")
    p.add_argument("--profile", default="demo", choices=list(PROFILES),
                   help="hyper-parameters: demo (learns in minutes; default) or paper (b=64, SGD 0.004, T=10,000)")
    p.add_argument("--dataset", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--data-dir", help="data folder (else SPLITLAB_DATA, ./data, ../shared/data)")
    p.add_argument("--download", action="store_true", help="download the data set if missing")
    p.add_argument("--partition", help="paper | iid | dirichlet")
    p.add_argument("--samples-per-client", type=int,
                   help="m, items per client (default: the paper's m for paper, a full share for iid/dirichlet)")
    p.add_argument("--dirichlet-beta", type=float, help="Dirichlet concentration beta (smaller = more label skew)")
    p.add_argument("--clients", type=int, help="n, number of clients")
    p.add_argument("--rounds", type=int, help="T, training rounds")
    p.add_argument("--batch-size", type=int, help="b, per-client batch size")
    p.add_argument("--lr", type=float, help="learning rate eta")
    p.add_argument("--optimizer", help="sgd | momentum | adam")
    p.add_argument("--n-s", type=int, help="n_s, mixup partners per client (0..n-1)")
    p.add_argument("--lam-alpha", type=float, help="mixing ratio lambda ~ Beta(alpha, beta): alpha")
    p.add_argument("--lam-beta", type=float, help="mixing ratio lambda ~ Beta(alpha, beta): beta")
    p.add_argument("--tc", type=int, help="T_c, averaging interval in rounds")
    p.add_argument("--participation", type=float, metavar="C",
                   help="fraction of the clients drawn to take part each round (0 < C <= 1; default 1: all)")
    p.add_argument("--dropout", type=float, metavar="P",
                   help="probability that a drawn client fails to deliver its smashed data in a round (default 0)")
    p.add_argument("--speed-spread", type=float, metavar="SIGMA",
                   help="stragglers: sigma of the log-normal the clients' compute times are drawn from (default 0)")
    p.add_argument("--deadline", type=float, metavar="D",
                   help="a round waits at most D times T_comp for a client; slower ones miss it (default 0: none)")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--eval-every", type=int, help="evaluate every this many rounds")
    p.add_argument("--device", help="cpu, cuda, cuda:0, ...")
    p.add_argument("--name", help="a label for the run")
    p.add_argument("--transport", help="inprocess (default, the reference) or process: a server and n client "
                                       "processes on this machine, over TCP")
    p.add_argument("--on-client-loss", choices=["fail", "continue"],
                   help="a networked run whose client dies or stops answering: fail (default) or continue with the "
                        "others (a process started again with the lost client's rank rejoins)")
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


def _set_items(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """The ``--set KEY=VALUE`` pairs, values parsed."""
    pairs = []
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        pairs.append((key.strip(), parse_value(value)))
    return pairs


def config_dict_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Profile, then preset or techniques, then flags, then --set: later wins."""
    if args.preset and args.techniques:
        raise ConfigError("choose either --preset or --techniques, not both")
    data = deep_merge({}, get_profile(args.profile))
    if getattr(args, "config", None):
        data = deep_merge(data, read_config_file(args.config))
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
    for key, value in _set_items(args):
        set_path(data, key, value)
    return data


def read_config_file(path: str) -> dict[str, Any]:
    """The config in a JSON file: a config itself, or a result with one under ``"config"``."""
    try:
        loaded = json.loads(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"--config {path}: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"--config {path}: not JSON ({err.msg}, line {err.lineno})") from None
    loaded = loaded.get("config", loaded) if isinstance(loaded, dict) else loaded
    if not isinstance(loaded, dict):
        raise ConfigError(f"--config {path}: expected a JSON object with the run's settings")
    return loaded


def flag_labels(args: argparse.Namespace) -> dict[str, str]:
    """Dotted field -> the flag that sets it (``"averaging.interval" -> "--tc"``); a field given
    with ``--set key=value`` is ``"--set key"`` (--set is applied last, so it names the value used),
    and so is every field no flag of its own sets."""
    labels = {path: f"--set {path}" for path in field_help()}
    labels.update((path, "--" + flag.replace("_", "-")) for flag, path in RUN_FLAGS.items())
    labels["data.download"] = "--download"
    labels.update((key, f"--set {key}") for key, _ in _set_items(args))
    return labels


def in_flag_words(problems, labels: dict[str, str]) -> list[str]:
    """Each problem as a line naming its flag, and any other setting its message mentions by config
    name ("a multiple of eval_every (10)") by its flag too ("a multiple of --eval-every (10)")."""
    lines = []
    for problem in problems:
        message = problem.message
        for key, label in labels.items():
            if ("_" in key or "." in key) and key != problem.field:
                message = re.sub(rf"(?<![\w.-]){re.escape(key)}(?![\w.])", label, message)
        lines.append(f"{labels.get(problem.field, problem.field)} {message}" if problem.field else message)
    return lines


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The validated config; a :class:`ConfigError` names each bad value by the flag that sets it."""
    data = config_dict_from_args(args)
    try:
        return validate_config(data)
    except ConfigError as err:
        raise ConfigError(err.text(flag_labels(args)), err.problems) from None


def runnable_config_from_args(args: argparse.Namespace) -> RunConfig:
    """The validated config, if it can run on this host (:func:`engine.preflight.run_problems`); else a
    :class:`ConfigError` with one line per problem, each naming its flag."""
    data = config_dict_from_args(args)
    problems = run_problems(data)
    if problems:
        raise ConfigError("\n".join(in_flag_words(problems, flag_labels(args))), tuple(problems))
    return validate_config(data)


BROKEN_PIPE = 141  # the shell's code for a process ended by SIGPIPE (128 + 13), as `yes | head -1` gives


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse ``argv`` and run the chosen command: bad input ends as ``error:`` lines (one per problem),
    exit code 2. A reader that stops early (``| head -1``) ends the command quietly."""
    try:
        args = parser.parse_args(argv)
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except (UsageError, ConfigError, DatasetNotFound) as err:
        for line in str(err).splitlines() or [""]:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that nothing left in its buffer is written to the closed pipe
    at exit (Python would print "Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (a test's capture)
        pass
