"""A throwaway SQLite database for the dashboard's tests, with the worker auto-start off."""

from __future__ import annotations

import pytest
import streamlit as st

from storage.db import close


@pytest.fixture
def db_url(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'dashboard.db'}"
    monkeypatch.setenv("SPLITLAB_DB", url)
    monkeypatch.setenv("SPLITLAB_NO_WORKER", "1")
    monkeypatch.delenv("SPLITLAB_READONLY", raising=False)
    st.cache_data.clear()  # cached reads of another test's database must not leak in
    yield url
    st.cache_data.clear()
    close(url)
