"""Helpers shared by the dashboard's AppTest files."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60


def runs_in_db(url: str) -> list:
    """Every run the database at ``url`` holds (storage.queries.RunInfo)."""
    from storage import queries
    from storage.db import connect

    with connect(url).read() as s:
        return queries.list_runs(s)


def errors(at) -> str:
    """The text of every error the page shows, in one string."""
    return " ".join(e.value for e in at.error).replace("\\", "")


def field(at, label: str):
    """The (first: the One run tab's) text field called ``label``."""
    return next(w for w in at.text_input if w.label == label)


def button(at, label: str):
    return next(b for b in at.button if b.label == label)


def page(name: str, run_id: int | None = None) -> AppTest:
    """``pages/<name>.py`` run once, with ``?run=<run_id>`` when given."""
    at = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=TIMEOUT)
    if run_id is not None:
        at.query_params["run"] = str(run_id)
    return at.run()


# Runs that measure privacy leakage, for the leakage tests (AppTest and browser): tiny, on digits.
LEAKAGE_TINY = {"num_clients": 3, "rounds": 4, "batch_size": 8, "eval_every": 2, "image_every": 2,
                "data": {"dataset": "digits", "eval_subset": 32}, "optim": {"name": "adam", "lr": 0.001}}
_LOCFEDMIX = {"mixup": {"enabled": True, "num_partners": 1}, "local_loss": {"enabled": True, "average_aux": True},
              "averaging": {"enabled": True}}
_SPLITFED = {"averaging": {"enabled": True}}
# (name, overrides): measured every 2 rounds with InfoPro; measured once, at the end, without InfoPro; never.
# The attacker gets the fast budget and 30 decoder steps (2,000 by default): the pages only need its
# figures and pictures, and the strong white-box attacks would take three times as long.
_TINY_ATTACK = {"attack_steps": 30, "budget": "fast"}
LEAKAGE_RUNS = [("lfm leaky", {**_LOCFEDMIX, "privacy": {"every": 2, **_TINY_ATTACK}}),
                ("splitfed leaky", {**_SPLITFED, "privacy": {"every": 4, **_TINY_ATTACK}}),
                ("splitfed quiet", _SPLITFED)]


def train_runs(db_url: str, runs: list[tuple[str, dict]], base: dict = LEAKAGE_TINY) -> list[int]:
    """Queue ``runs`` ((name, config overrides), in order) and let a real worker finish them, with one
    torch thread; their ids. Each leakage measurement trains the server's attack: seconds on a CPU."""
    import torch

    from engine.config import validate_config
    from storage import queries
    from storage.db import connect
    from storage.worker import Worker, WorkerOptions

    db = connect(db_url)
    ids = []
    for name, overrides in runs:
        with db.write() as s:
            ids.append(queries.create_run(s, validate_config({**base, "name": name, **overrides})))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert Worker(db, WorkerOptions(once=True, poll=0.1)).run() == len(runs)
    finally:
        torch.set_num_threads(threads)
    with db.read() as s:
        assert all(queries.get_run(s, i).status.value == "finished" for i in ids)
    return ids
