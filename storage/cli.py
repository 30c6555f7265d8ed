"""The queue commands: ``worker``, ``submit``, ``status``, ``export``, ``cancel``.

``python -m engine`` (the front door) adds them with :func:`add_queue_commands`; :func:`main` runs
them alone (``python -c "from storage.cli import main; raise SystemExit(main())" worker --once``).
The run flags of ``submit`` come from :mod:`engine.args`, as those of ``engine run`` do.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from engine.args import (
    UsageError,
    _Parser,
    add_run_arguments,
    config_from_args,
    run_command,
    runnable_config_from_args,
)
from storage.db import DB_ENV_VAR, DEFAULT_DB_URL, Database, StorageError, connect, resolve_db_url
from storage.models import RunStatus
from storage.queries import (
    MAX_RUN_ID,
    RunInfo,
    all_workers,
    create_run,
    db_now,
    export_result,
    get_run,
    latest_metrics,
    parse_run_id,
    request_cancel,
    utcnow,
)
from storage.worker import Worker, WorkerOptions

Command = Callable[[argparse.Namespace], int]
SHOWN_METRICS = ("test_acc", "test_loss", "train_loss", "bytes_up", "bytes_down")
LOST_AFTER_S = 5  # status calls a running run's worker lost after this long without a heartbeat


def add_queue_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``worker``, ``submit``, ``status``, ``export`` and ``cancel`` to a CLI's subcommands."""
    worker = _add_command(sub, "worker", "train queued runs until stopped", cmd_worker)
    worker.add_argument("--once", action="store_true", help="exit when no run is queued instead of waiting")
    worker.add_argument("--stale-after", type=float, default=WorkerOptions.stale_after, metavar="SECONDS",
                        help="take over a running run whose heartbeat is older than this (default %(default)g; "
                             "heartbeats come every min(1, SECONDS/4) s). A run whose worker was a process on this "
                             "host that no longer exists is taken over at once")
    worker.add_argument("--checkpoint-every", type=int, default=WorkerOptions.checkpoint_every, metavar="ROUNDS",
                        help="checkpoint a run every this many rounds (default %(default)s)")
    worker.add_argument("--poll", type=float, default=WorkerOptions.poll, metavar="SECONDS",
                        help="seconds between looks at an empty queue, when an idle worker also reports itself alive "
                             "(default %(default)s)")
    worker.add_argument("--worker-id", help="this worker's name in the runs table (default host:pid)")
    worker.add_argument("--exit-with-parent", action="store_true",
                        help="stop as on SIGTERM (checkpoint, queue the run again, exit 0) when the process that "
                             "started this worker is gone (for a worker a dashboard or script starts)")
    submit = _add_command(sub, "submit", "queue a run (the flags of run); prints its id", cmd_submit)
    add_run_arguments(submit)
    submit.add_argument("--workers-have-the-data", action="store_true",
                        help="queue without judging this host's data folders and devices (the worker hosts have "
                             "them; the config's own ranges are still checked)")
    status = _add_command(sub, "status", "a run's state, progress and latest metrics", cmd_status)
    status.add_argument("run_id", type=run_id_argument, metavar="RUN_ID")
    status.add_argument("--json", action="store_true", help="print JSON")
    export = _add_command(sub, "export", "write a run's config, history and summary as JSON (as run --out)",
                          cmd_export)
    export.add_argument("run_id", type=run_id_argument, metavar="RUN_ID")
    export.add_argument("--out", required=True, metavar="FILE", help="the JSON file to write")
    cancel = _add_command(sub, "cancel", "cancel a queued or running run", cmd_cancel)
    cancel.add_argument("run_id", type=run_id_argument, metavar="RUN_ID")
    workers = _add_command(sub, "workers", "every worker on the queue: its host, its run, its last heartbeat "
                           "(by the database's clock)", cmd_workers)
    workers.add_argument("--json", action="store_true", help="print JSON")


def run_id_argument(text: str) -> int:
    """RUN_ID as argparse reads it: refused with one line, before any query, unless it can be a run's id."""
    run_id = parse_run_id(text)
    if run_id is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a run id (a whole number from 1 to {MAX_RUN_ID:,})")
    return run_id


def _add_command(sub: argparse._SubParsersAction, name: str, help_text: str, func: Command) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text)
    parser.add_argument("--db", metavar="URL",
                        help=f"database URL or SQLite file (else ${DB_ENV_VAR}, else {DEFAULT_DB_URL})")
    parser.set_defaults(func=_reporting_storage_errors(func))
    return parser


def _reporting_storage_errors(func: Command) -> Command:
    """Database problems (unknown schema, no such run, unreachable server) end as one line, exit code 2."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except StorageError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except SQLAlchemyError as err:  # the driver's message, on one line, without SQLAlchemy's footer
            cause = getattr(err, "orig", None) or err
            text = " ".join(str(cause).split()) or type(cause).__name__
            url = resolve_db_url(getattr(args, "db", None))
            print(f"error: database {make_url(url).render_as_string(hide_password=True)}: {text}", file=sys.stderr)
            return 2

    return wrapper


def _database(args: argparse.Namespace) -> Database:
    return connect(resolve_db_url(args.db))


# ---- commands -------------------------------------------------------------------------------
def cmd_worker(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        options = WorkerOptions(stale_after=args.stale_after, checkpoint_every=args.checkpoint_every, poll=args.poll,
                                once=args.once, exit_with_parent=args.exit_with_parent)
    except ValueError as err:
        raise UsageError(f"worker: {err}") from None
    db = _database(args)
    worker = Worker(db, options, args.worker_id)
    logging.getLogger("splitlab.worker").info("worker %s on %s", worker.worker_id, db.display_url())
    with _stopping_on_signals(worker):
        worker.run()
    return 0


@contextmanager
def _stopping_on_signals(worker: Worker) -> Iterator[None]:
    """SIGINT / SIGTERM: finish the round, checkpoint, queue the run again and exit. A second SIGINT quits now."""

    def handle(signum: int, _frame: Any) -> None:
        if worker.shutdown.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        print("stopping: a run in progress is checkpointed after this round and queued again", file=sys.stderr)
        worker.stop()

    previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def cmd_submit(args: argparse.Namespace) -> int:
    # A run that cannot run on this host is never queued, unless the workers are other hosts with the data.
    cfg = config_from_args(args) if args.workers_have_the_data else runnable_config_from_args(args)
    for warning in cfg.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    with _database(args).write() as session:
        run_id = create_run(session, cfg)
    print(run_id)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _database(args).read() as session:
        run = get_run(session, args.run_id)
        latest = latest_metrics(session, args.run_id)
        now = db_now(session)  # heartbeats are the database's clock
    if args.json:
        print(json.dumps({**run.as_dict(), "latest_metrics": latest}, indent=1))
    else:
        print(describe_run(run, latest, now))
    return 0


def describe_run(run: RunInfo, latest: dict[str, Any] | None, now: datetime | None = None) -> str:
    """A few lines for people: state, progress, worker (or that it was lost), latest metrics, error."""
    title = f"run {run.id}" + (f" ({run.name})" if run.name else "")
    lines = [f"{title}: {run.status.value}, round {run.last_round}/{run.rounds} ({run.progress:.0%})"]
    if run.worker_id and not run.status.is_terminal:
        lines.append(describe_worker(run, now or utcnow()))
    elif run.status == RunStatus.QUEUED and run.checkpoint_round is not None:
        lines.append(f"queued again; resumes from round {run.checkpoint_round}")
    if run.cancel_requested and not run.status.is_terminal:
        lines.append("cancel requested")
    if latest is not None:
        shown = "  ".join(f"{key} {latest[key]:.4g}" for key in SHOWN_METRICS)
        lines.append(f"latest (round {latest['round']}): {shown}")
    if run.error:
        lines.append(f"error: {run.error}")
    return "\n".join(lines)


def describe_worker(run: RunInfo, now: datetime) -> str:
    """The run's worker and its last heartbeat; a running run silent for ``LOST_AFTER_S`` has lost its worker."""
    silent_s = (now - run.heartbeat_at).total_seconds() if run.heartbeat_at else None
    if run.status == RunStatus.RUNNING and (silent_s is None or silent_s > LOST_AFTER_S):
        silence = f"no heartbeat for {silent_s:.0f} s" if silent_s is not None else "no heartbeat"
        return (f"worker {run.worker_id} lost ({silence}); the run resumes from round "
                f"{run.checkpoint_round or 0} when a worker takes it over")
    return f"worker {run.worker_id}, last heartbeat {run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC"


def cmd_workers(args: argparse.Namespace) -> int:
    with _database(args).read() as session:
        workers, now = all_workers(session)
    if args.json:
        print(json.dumps([{**asdict(w), "started_at": w.started_at.isoformat() + "Z",
                           "heartbeat_at": w.heartbeat_at.isoformat() + "Z",
                           "silent_s": (now - w.heartbeat_at).total_seconds()} for w in workers], indent=1))
        return 0
    if not workers:
        print("no workers: start one with `python -m engine worker`")
        return 0
    rows = [("HOST", "WORKER", "RUN", "LAST HEARTBEAT")]
    for w in workers:
        silent = (now - w.heartbeat_at).total_seconds()
        beat = f"{silent:.0f} s ago" + (" (silent: lost?)" if silent > WorkerOptions.stale_after else "")
        rows.append((w.host or "?", w.worker_id, f"#{w.run_id}" if w.run_id else "idle", beat))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(r, widths)) + "  " + r[3])
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with _database(args).read() as session:
        result = export_result(session, args.run_id)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    if result["summary"] is None:
        print(f"warning: run {args.run_id} has not ended: the summary is null", file=sys.stderr)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _database(args).write() as session:
        status = request_cancel(session, args.run_id)
    if status.is_terminal:
        print(f"run {args.run_id} is {status.value}")
    else:
        print(f"run {args.run_id}: cancel requested; its worker stops at the next round")
    return 0


# ---- entry point ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The queue commands alone. ``python -m engine`` is the front door: it has these and the others."""
    parser = _Parser(prog="python -m engine", description="SplitLab's queue: worker, submit, status, export, cancel")
    add_queue_commands(parser.add_subparsers(dest="command", required=True, parser_class=_Parser))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one queue command as ``python -m engine`` does (same flags, same messages, same exit codes)."""
    return run_command(build_parser(), argv)
