"""Fixtures: a throwaway SQLite database, one torch thread."""

from tests.storage.support import db, single_torch_thread  # noqa: F401 (fixtures)
