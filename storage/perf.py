"""``python -m storage.perf [run flags]``: the worker's time per round against ``engine run`` without a database.

Both train the same config in this process, alternately, ``--repeats`` times each. A run's time
covers building the trainer, every round, evaluation and image, and for the worker every
database write (metrics, images, checkpoints, heartbeats) and the final bookkeeping; divided by
the rounds it gives the time per round. Prints the medians and the difference in percent.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.args import _Parser, add_run_arguments, config_from_args, run_command
from engine.config import RunConfig
from engine.presets import deep_merge
from engine.trainer import Trainer
from storage.db import Database, close, connect
from storage.models import RunStatus
from storage.queries import create_run
from storage.worker import Worker, WorkerOptions


@dataclass(frozen=True)
class Comparison:
    """Median seconds per round of each way of training."""

    engine_round_s: float
    worker_round_s: float

    @property
    def difference_pct(self) -> float:
        return 100 * (self.worker_round_s / self.engine_round_s - 1)


def engine_seconds(cfg: RunConfig) -> float:
    """Wall seconds of ``Trainer(cfg).run()``, as ``engine run`` trains."""
    start = time.perf_counter()
    Trainer(cfg).run()
    return time.perf_counter() - start


def worker_seconds(db: Database, cfg: RunConfig, options: WorkerOptions) -> float:
    """Wall seconds of a worker training ``cfg`` from the queue (the claim itself not counted)."""
    with db.write() as session:
        create_run(session, cfg)
    worker = Worker(db, options, worker_id="perf")
    run = worker.claim()
    start = time.perf_counter()
    status = worker.train(run)
    elapsed = time.perf_counter() - start
    if status != RunStatus.FINISHED:
        raise RuntimeError(f"the worker's run ended {status}")
    return elapsed


def compare(db: Database, cfg: RunConfig, options: WorkerOptions, repeats: int) -> Comparison:
    """Engine and worker runs in turn (after a short warm-up of each); medians per round."""
    warm_up = RunConfig.model_validate(deep_merge(cfg.model_dump(), {"rounds": 2}))
    engine_seconds(warm_up)
    worker_seconds(db, warm_up, options)
    engine: list[float] = []
    worker: list[float] = []
    for repeat in range(repeats):  # engine first, then worker first, ...: a drift in machine speed cancels out
        pair = [(engine, lambda: engine_seconds(cfg)), (worker, lambda: worker_seconds(db, cfg, options))]
        for times, timed_run in pair if repeat % 2 == 0 else pair[::-1]:
            times.append(timed_run())
    return Comparison(statistics.median(engine) / cfg.rounds, statistics.median(worker) / cfg.rounds)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m storage.perf", description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.set_defaults(preset="locfedmix_sl", rounds=100)
    parser.add_argument("--repeats", type=int, default=4, help="timed runs of each (median; default 4)")
    parser.add_argument("--checkpoint-every", type=int, default=WorkerOptions.checkpoint_every, metavar="ROUNDS")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--db", help="database URL for the worker (default: a SQLite file in a temporary folder)")
    parser.set_defaults(func=measure)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Bad flags end as one ``error:`` line naming the flag, exit code 2 (as ``python -m engine run``)."""
    return run_command(build_parser(), argv)


def measure(args: argparse.Namespace) -> int:
    """Time both ways of training the config the flags describe, and print the comparison."""
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    options = WorkerOptions(checkpoint_every=args.checkpoint_every)
    with tempfile.TemporaryDirectory() as folder:
        url = args.db or f"sqlite:///{Path(folder) / 'perf.db'}"
        db = connect(url)
        try:
            result = compare(db, cfg, options, args.repeats)
        finally:
            close(url)
    print(f"config: {cfg.name or 'custom'} on {cfg.data.dataset}, {cfg.num_clients} clients, {cfg.rounds} rounds, "
          f"eval every {cfg.eval_every}, images every {cfg.image_every}, checkpoint every {options.checkpoint_every}; "
          f"{torch.get_num_threads()} torch threads")
    print(f"engine run, no database: {result.engine_round_s * 1000:8.2f} ms/round (median of {args.repeats})")
    print(f"worker, {db.engine.dialect.name + ':':<16} {result.worker_round_s * 1000:8.2f} ms/round")
    print(f"difference: {result.difference_pct:+.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
