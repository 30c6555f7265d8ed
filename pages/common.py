"""What every page shares: the database, cached reads, read-only mode and small widgets.

Pages read and write only through ``storage.queries`` (here, cached) and the engine's pure
modules (config, presets, latency). Nothing here trains.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

import pandas as pd
import streamlit as st
from pydantic import ValidationError
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import get_script_run_ctx

from engine.config import ParticipationConfig
from storage import queries
from storage.db import Database, connect, resolve_db_url
from storage.models import RunStatus

READ_TTL_S = 2  # cached reads refresh this often, so live pages stay live without hammering the DB
STATUSES = ("queued", "running", "finished", "failed", "cancelled")
LOST_AFTER_S = 5.0  # a running run whose worker has not reported for this long: "worker lost" (beats come every 1 s)


def run_through_app_py() -> None:
    """Make this page run through ``app.py`` (sidebar, read-only settings, navigation). Every page
    calls it first.

    Because a ``pages/`` folder exists, a fresh Streamlit server runs ``pages/<name>.py`` on its
    own for deep links (``/run?run=3``) until some visit has run ``st.navigation``: a shared
    result link opened first would skip app.py, and with it the read-only host's settings (no
    tracebacks) and the sidebar. Such a run registers the folder's files as its pages; seeing
    this very module among them, the page switches that mode off and starts again, through
    app.py. Each session checks its own run, so viewers arriving together all get there.
    """
    ctx = get_script_run_ctx()
    if ctx is None:
        return
    folder_listing = any(Path(p.get("script_path", "")).name == Path(__file__).name
                         for p in ctx.pages_manager.get_pages().values())
    if folder_listing:
        PagesManager.uses_pages_directory = False
        st.rerun()


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
        now = queries.db_now(s)  # heartbeats and start times are the database's clock
    rows = []
    for r in runs:
        elapsed = ((r.finished_at or now) - r.started_at).total_seconds() if r.started_at else 0.0
        lost = worker_lost(r.status.value, r.heartbeat_at, now)
        remaining = elapsed / r.progress * (1 - r.progress) \
            if r.status == RunStatus.RUNNING and r.progress > 0 and not lost else None
        summary = r.summary or {}
        resume = r.checkpoint_round or 0
        rows.append({"id": r.id, "name": r.name, "status": r.status.value, "progress": r.progress,
                     "round": r.last_round, "rounds": r.rounds, "clients": r.config["num_clients"],
                     "techniques": technique_codes(r.config), "dataset": r.config["data"]["dataset"],
                     "final_acc": summary.get("final_test_acc"), "elapsed_s": elapsed, "remaining_s": remaining,
                     "created": r.created_at, "error": r.error, "cancel_requested": r.cancel_requested,
                     "worker_lost": lost, "resume_round": resume,
                     "state": run_state(r.status.value, lost, r.cancel_requested, resume, r.attempts)})
    return pd.DataFrame(rows, columns=["id", "name", "status", "progress", "round", "rounds", "clients", "techniques",
                                       "dataset", "final_acc", "elapsed_s", "remaining_s", "created", "error",
                                       "cancel_requested", "worker_lost", "resume_round", "state"])


def worker_lost(status: str, heartbeat_at: datetime | None, now: datetime) -> bool:
    """A running run whose worker stopped reporting (killed, or its machine gone)."""
    return status == "running" and heartbeat_at is not None and (now - heartbeat_at).total_seconds() > LOST_AFTER_S


def run_state(status: str, lost: bool, cancel_requested: bool, resume_round: int, attempts: int) -> str:
    """The status as a person reads it: "worker lost (resumes at 100)", "queued (resumes at 100)"."""
    resume = f"resumes at {resume_round}"
    if lost:
        return f"worker lost ({resume})"
    if status in ("queued", "running") and cancel_requested:
        return f"{status}, cancel requested"
    if status == "queued" and attempts > 0:
        return f"queued ({resume})"
    return status


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def run_info(run_id: int) -> dict | None:
    """The run as a plain dict (None when there is no such run)."""
    with db().read() as s:
        try:
            return queries.get_run(s, run_id).as_dict()
        except queries.RunNotFound:
            return None


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def participation(run_id: int) -> ParticipationConfig | None:
    """The run's clients-come-and-go settings (None when there is no such run, or its stored config no
    longer reads as one); validated once per run, not on every rerun of a page."""
    info = run_info(run_id)
    try:
        return ParticipationConfig.model_validate((info or {}).get("config", {}).get("participation", {})) \
            if info else None
    except ValidationError:
        return None


@st.cache_data(ttl=1, show_spinner=False)
def eval_signature(run_ids: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """(run id, latest evaluated round) for each run: what the charts show changes only when this does."""
    out = []
    with db().read() as s:
        for run_id in run_ids:
            latest = queries.latest_metrics(s, run_id)
            out.append((run_id, int(latest["round"]) if latest else 0))
    return tuple(out)


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


# Settings that change neither what a run learns nor what its attacker sees: two runs that differ only in
# these (and in their defenses) are twins, the undefended one showing what the defense hides.
NOT_COMPARED = ("name", "defense", "device", "execution", "transport")
NOT_COMPARED_DATA = ("data_dir", "download")


def comparable_config(config: dict) -> dict | None:
    """A stored config with every default filled in (a run stored before a setting existed has its default) and
    :data:`NOT_COMPARED` left out; None for a config the engine no longer accepts."""
    from engine.config import RunConfig

    try:
        full = RunConfig.model_validate(config).model_dump(mode="json")
    except ValueError:  # pydantic's ValidationError is one
        return None
    for key in NOT_COMPARED:
        full.pop(key, None)
    for key in NOT_COMPARED_DATA:
        full["data"].pop(key, None)
    return full


def is_undefended(config: dict) -> bool:
    """Whether every defense of a stored config is off (a run stored before defenses existed had none)."""
    return not any((config.get("defense") or {}).values())


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def undefended_twins(run_id: int) -> list[int]:
    """The runs stored with the same settings as ``run_id`` but every defense off (their names, devices and
    transports may differ): finished ones first, then the newest. Empty for a run with no defense on."""
    with db().read() as s:
        runs = queries.list_runs(s)
    mine = next((r for r in runs if r.id == run_id), None)
    if mine is None or is_undefended(mine.config):
        return []
    key = comparable_config(mine.config)
    twins = [r for r in runs if r.id != run_id and is_undefended(r.config) and comparable_config(r.config) == key]
    twins.sort(key=lambda r: (r.status != RunStatus.FINISHED, -r.id))
    return [r.id for r in twins]


def clear_caches() -> None:
    """After a write: the next read sees it."""
    for fn in (runs_frame, run_info, history, image_rounds, export, eval_signature, undefended_twins):
        fn.clear()


@st.cache_resource(show_spinner=False)
def class_names(dataset: str, data_dir: str | None = None) -> tuple[str, ...] | None:
    """The data set's class names ("T-shirt/top", ...), the same the walkthrough shows; None when its
    files are not on this machine (pictures then say "class 9")."""
    from engine.data import DatasetNotFound, load_dataset

    try:
        return tuple(load_dataset(dataset, data_dir).classes)
    except (DatasetNotFound, ValueError, OSError):
        return None


def run_classes(config: dict) -> tuple[str, ...] | None:
    """The class names of a stored config's data set."""
    data = config.get("data") or {}
    return class_names(data.get("dataset", ""), data.get("data_dir"))


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


def linked_run_id() -> int | None:
    """The run a link names (``?run=42``), or None when the link names none.

    A link that names no run of this database (``?run=abc``, ``?run=999``, ``?run=``) says so,
    offers the list of runs, and stops the page: it never quietly shows another run.
    """
    raw = st.query_params.get("run")
    if raw is None:
        return None
    run_id = queries.parse_run_id(raw)
    if run_id is not None and run_info(run_id) is not None:
        return run_id
    no_such_run(raw)
    st.stop()


def escape_markdown(text: str) -> str:
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$:])", r"\\\1", text)


def no_such_run(raw: str) -> None:
    """The message for a link that names no run, and links to the runs there are."""
    shown = raw if len(raw) <= 40 else raw[:40] + "…"
    if not raw.strip():
        st.error("This link names no run: `?run=` is empty.")
    else:
        st.error(f"There is no run {escape_markdown(shown)} in this database.")
    run_links()


def run_links(limit: int = 20) -> None:
    """Links to the newest runs' result pages."""
    frame = runs_frame()
    if frame.empty:
        st.info("There are no runs yet.")
        return
    st.markdown("**Runs here** (newest first):")
    for _, r in frame.head(limit).iterrows():
        label = f"{run_label(r, with_status=False)} ({r['state']})"  # "worker lost (resumes at 50)", not "running"
        st.page_link("pages/run.py", label=label, query_params={"run": str(int(r["id"]))})
    if len(frame) > limit:
        st.caption(f"… and {len(frame) - limit} more on the Runs page.")


_EXCEPTION_PREFIX = re.compile(  # "ValueError: ", "engine.data.DatasetNotFound: "
    r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|NotFound|Lost|Exit|Interrupt|Timeout): *")


def error_text(error: str | None) -> str:
    """A stored error as people read it: the message without the exception's class name
    ("DatasetNotFound: The data set ..." -> "The data set ...")."""
    text = (error or "").strip()
    return _EXCEPTION_PREFIX.sub("", text, count=1) or text


def plural(count: int, word: str, many: str | None = None) -> str:
    """"1 client", "3 clients", "1 batch" (with ``many="batches"``): "2 batches"."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


def fmt_float(value: float | None, spec: str = ".4f") -> str:
    """A number for a table or metric; "–" for none."""
    return "–" if value is None or pd.isna(value) else format(value, spec)


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None or pd.isna(seconds):
        return "–"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"
