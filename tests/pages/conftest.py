"""A throwaway database for the dashboard's tests, with the worker auto-start off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import streamlit as st

from storage.db import close


def dashboard_on(url: str, monkeypatch) -> Iterator[str]:
    """Point the dashboard at ``url`` for one test (no worker auto-start, no cached reads of another test)."""
    monkeypatch.setenv("SPLITLAB_DB", url)
    monkeypatch.setenv("SPLITLAB_NO_WORKER", "1")
    monkeypatch.delenv("SPLITLAB_READONLY", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()  # e.g. Live's figures, keyed by run id and round: another test's run 1 is not this one
    yield url
    st.cache_data.clear()
    st.cache_resource.clear()
    close(url)


@pytest.fixture
def db_url(tmp_path, monkeypatch):
    yield from dashboard_on(f"sqlite:///{tmp_path / 'dashboard.db'}", monkeypatch)
