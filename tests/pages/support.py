"""Helpers shared by the dashboard's AppTest files."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60


def page(name: str, run_id: int | None = None) -> AppTest:
    """``pages/<name>.py`` run once, with ``?run=<run_id>`` when given."""
    at = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=TIMEOUT)
    if run_id is not None:
        at.query_params["run"] = str(run_id)
    return at.run()
