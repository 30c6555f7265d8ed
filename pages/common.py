"""What every page shares: the database, cached reads, read-only mode and small widgets.

Pages read and write only through ``storage.queries`` (here, cached) and the engine's pure
modules (config, presets, latency). Nothing here trains.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

import pandas as pd
import streamlit as st

from storage import queries
from storage.db import Database, connect, resolve_db_url
from storage.models import RunStatus

READ_TTL_S = 2  # cached reads refresh this often, so live pages stay live without hammering the DB
STATUSES = ("queued", "running", "finished", "failed", "cancelled")


def readonly() -> bool:
    """``SPLITLAB_READONLY=1``: a public result host; nothing can be submitted, cancelled or deleted."""
    return os.environ.get("SPLITLAB_READONLY", "") not in ("", "0", "false")


@st.cache_resource(show_spinner=False)
def _database(url: str) -> Database:
    return connect(url)


def db() -> Database:
    """The database named by ``SPLITLAB_DB`` (else ``sqlite:///splitlab.db``), opened once per server."""
    return _database(resolve_db_url())


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def runs_frame() -> pd.DataFrame:
    """Every run, newest first, one row each, with progress and times for the tables."""
    with db().read() as s:
        runs = queries.list_runs(s)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rows = []
    for r in runs:
        elapsed = ((r.finished_at or now) - r.started_at).total_seconds() if r.started_at else 0.0
        remaining = elapsed / r.progress * (1 - r.progress) if r.status == RunStatus.RUNNING and r.progress > 0 else None
        summary = r.summary or {}
        rows.append({"id": r.id, "name": r.name, "status": r.status.value, "progress": r.progress,
                     "round": r.last_round, "rounds": r.rounds, "clients": r.config["num_clients"],
                     "techniques": technique_codes(r.config), "dataset": r.config["data"]["dataset"],
                     "final_acc": summary.get("final_test_acc"), "elapsed_s": elapsed, "remaining_s": remaining,
                     "created": r.created_at, "error": r.error, "cancel_requested": r.cancel_requested})
    return pd.DataFrame(rows, columns=["id", "name", "status", "progress", "round", "rounds", "clients", "techniques",
                                       "dataset", "final_acc", "elapsed_s", "remaining_s", "created", "error",
                                       "cancel_requested"])


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def run_info(run_id: int) -> dict | None:
    """The run as a plain dict (None when there is no such run)."""
    with db().read() as s:
        try:
            return queries.get_run(s, run_id).as_dict()
        except queries.RunNotFound:
            return None


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def history(run_id: int) -> pd.DataFrame:
    with db().read() as s:
        return queries.run_history(s, run_id)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def image_rounds(run_id: int) -> list[int]:
    with db().read() as s:
        return queries.image_rounds(s, run_id)


@st.cache_data(ttl=60, show_spinner=False)
def images(run_id: int, round_: int) -> list[queries.ImageRecord]:
    with db().read() as s:
        return queries.run_images(s, run_id, round_)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def export(run_id: int) -> dict:
    with db().read() as s:
        return queries.export_result(s, run_id)


def clear_caches() -> None:
    """After a write: the next read sees it."""
    for fn in (runs_frame, run_info, history, image_rounds, export):
        fn.clear()


def technique_codes(config: dict) -> str:
    """'1,2,3,4p,5' (plus splitlr/splitavg) for a stored config."""
    from engine.config import RunConfig
    return ",".join(RunConfig.model_validate(config).techniques())


def run_label(row: dict | pd.Series, with_status: bool = True) -> str:
    label = f"#{row['id']} {row['name'] or 'run'}"
    return f"{label} ({row['status']})" if with_status else label


def pick_runs(label: str, frame: pd.DataFrame, default_ids: list[int], key: str) -> list[int]:
    """A multiselect of runs by label; returns the chosen ids."""
    labels = {int(r["id"]): run_label(r, with_status=False) for _, r in frame.iterrows()}
    chosen = st.multiselect(label, list(labels), default=[i for i in default_ids if i in labels],
                            format_func=labels.get, key=key)
    return [int(i) for i in chosen]


def query_run_id() -> int | None:
    """``?run=42`` as an int (None when absent or not a number)."""
    value = st.query_params.get("run")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None or pd.isna(seconds):
        return "–"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"
