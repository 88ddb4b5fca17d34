"""Both snapshot statements return the columns the row cleaner reads, by name and in order.

The cleaner reads rows by the names in ``SNAPSHOT_COLUMNS``; a statement that selected a
column fewer, or two in swapped order, would put one fact into another's place (a count
into a timestamp) for every integration without any error. The summary statement is raw
SQL, so its columns are read off a real PostgreSQL.
"""

from __future__ import annotations

import pytest

from exporter.source.cleaning import SNAPSHOT_COLUMNS
from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.migrate import upgrade
from exporter.source.reader import SNAPSHOT_STATEMENT, SUMMARY_SNAPSHOT_STATEMENT


def test_the_index_lookup_statement_selects_the_snapshot_columns_in_order() -> None:
    assert tuple(SNAPSHOT_STATEMENT.selected_columns.keys()) == SNAPSHOT_COLUMNS


@pytest.mark.postgres
def test_the_summary_statement_returns_the_snapshot_columns_in_order(pg_url: str) -> None:
    engine = create_sync_log_engine(normalize_url(pg_url))
    try:
        upgrade(engine)
        with engine.connect() as connection:
            keys = tuple(connection.execute(SUMMARY_SNAPSHOT_STATEMENT).keys())
    finally:
        engine.dispose()
    assert keys == SNAPSHOT_COLUMNS
