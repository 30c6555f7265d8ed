"""Nothing is SQLite-only: the schema and the claim compile for PostgreSQL (no server needed)."""

from __future__ import annotations

from sqlalchemy import create_mock_engine
from sqlalchemy.dialects import postgresql

from storage.models import Base
from storage.queries import _oldest_queued


def test_the_schema_compiles_for_postgresql():
    statements: list[str] = []
    engine = create_mock_engine("postgresql://", lambda sql, *args, **kwargs: statements.append(
        str(sql.compile(dialect=engine.dialect))))
    Base.metadata.create_all(engine, checkfirst=False)
    ddl = "\n".join(statements)
    assert ddl.count("CREATE TABLE") == len(Base.metadata.tables)
    assert "data BYTEA NOT NULL" in ddl and "bytes_up BIGINT NOT NULL" in ddl and "ON DELETE CASCADE" in ddl


def test_the_claim_locks_the_row_and_skips_rows_other_workers_hold_on_postgresql():
    sql = str(_oldest_queued().compile(dialect=postgresql.dialect()))
    assert sql.endswith("FOR UPDATE SKIP LOCKED") and "ORDER BY runs.id" in sql
