"""Migration 0006 on a sync log that already holds history, while the pipeline writes.

Two promises: existing rows come through unchanged (the new facts read as "none" until the
pipeline writes them), and the migration never blocks the pipeline's writes for longer
than a catalog update. The second is checked in pg_locks: a long-lived transaction of
another session (a report reading the outbox) makes the concurrent index build wait, and
while it waits the migration holds nothing stronger than SHARE UPDATE EXCLUSIVE on any
table, so a pipeline that inserts records, finishes runs and updates integrations is not
held up at all (its statements run with a short lock_timeout, which would fail them).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import Engine, inspect

from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.migrate import current_revision, downgrade, head_revision, upgrade
from exporter.source.reader import read_snapshot
from tests.support import wait_until

BEFORE = "0004_unknown_record_states"
NOW = datetime.now(UTC).replace(microsecond=0)

# History as a pipeline of the 0004 era wrote it (no error_code, no expected interval).
_POPULATE = [
    "INSERT INTO sync_organization (id, name) "
    "SELECT format('org-%s', g), format('Org %s', g) FROM generate_series(1, 20) AS g",
    "INSERT INTO sync_integration (org_id, connector, created_at) "
    "SELECT id, 'xledger', now() - interval '30 days' FROM sync_organization",
    "INSERT INTO sync_run (org_id, connector, started_at, finished_at, status, records_total, "
    "records_failed, error_message) "
    "SELECT i.org_id, 'xledger', now() - k * interval '1 hour' - interval '1 minute', "
    "now() - k * interval '1 hour', CASE WHEN k = 1 THEN 'failed' ELSE 'succeeded' END, 5, 0, "
    "CASE WHEN k = 1 THEN 'Error: bad format for api token' END "
    "FROM sync_integration AS i CROSS JOIN generate_series(1, 200) AS k",
    "INSERT INTO sync_record (org_id, connector, record_type, record_ref, state, enqueued_at, "
    "updated_at) "
    "SELECT i.org_id, 'xledger', 'expense', format('R-%s', k), "
    "CASE WHEN k % 500 = 0 THEN 'rejected' WHEN k % 97 = 0 THEN 'pending' ELSE 'synced' END, "
    "now() - k * interval '1 minute', now() - k * interval '1 minute' "
    "FROM sync_integration AS i CROSS JOIN generate_series(1, 5000) AS k",
]


def _sqlalchemy(url: str) -> Engine:
    return create_sync_log_engine(normalize_url(url))


def _populate_sqlite(engine: Engine) -> None:
    with engine.begin() as connection:
        raw = connection.connection.driver_connection
        assert raw is not None
        raw.execute("INSERT INTO sync_organization (id, name) VALUES ('hlf', 'HLF')")
        raw.execute(
            "INSERT INTO sync_integration (org_id, connector, created_at) "
            "VALUES ('hlf', 'dynamics', ?)",
            ((NOW - timedelta(days=3)).replace(tzinfo=None).isoformat(" "),),
        )
        raw.execute(
            "INSERT INTO sync_run (org_id, connector, started_at, finished_at, status, "
            "error_message) VALUES ('hlf', 'dynamics', ?, ?, 'failed', "
            "'Error: bad format for api token')",
            (
                (NOW - timedelta(minutes=5)).replace(tzinfo=None).isoformat(" "),
                (NOW - timedelta(minutes=4)).replace(tzinfo=None).isoformat(" "),
            ),
        )
        for n in range(30):
            raw.execute(
                "INSERT INTO sync_record (org_id, connector, record_type, record_ref, state, "
                "enqueued_at, updated_at) VALUES ('hlf', 'dynamics', 'expense', ?, ?, ?, ?)",
                (f"R-{n}", "rejected" if n % 10 == 0 else "synced", "2026-11-01", "2026-11-01"),
            )


def test_an_existing_sqlite_sync_log_keeps_its_history(sqlite_url: str) -> None:
    engine = _sqlalchemy(sqlite_url)
    try:
        upgrade(engine, BEFORE)
        _populate_sqlite(engine)
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        (hlf,) = read_snapshot(engine).integrations
    finally:
        engine.dispose()
    assert (hlf.rejected_records, hlf.expected_interval_seconds) == (3, None)
    assert (hlf.last_run_status, hlf.last_run_error_code, hlf.last_run_error_class) == (
        "failed",
        None,
        "auth",  # classified by the message the old pipeline wrote
    )


_MIGRATION_LOCKS = """
SELECT c.relname, l.mode, l.granted
FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation
WHERE l.pid = %s AND c.relname LIKE 'sync_%%' AND l.locktype = 'relation'
"""
# Modes that would stop the pipeline's INSERT/UPDATE (ROW EXCLUSIVE) while held.
_BLOCKS_WRITES = {"ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"}


@pytest.mark.postgres
def test_the_migration_never_blocks_the_pipelines_writes(pg_url: str) -> None:
    engine = _sqlalchemy(pg_url)
    upgrade(engine, BEFORE)
    with psycopg.connect(pg_url, autocommit=True) as setup:
        for statement in _POPULATE:
            setup.execute(statement)
    # A long report: a repeatable-read transaction that has read the outbox and stays open.
    report = psycopg.connect(pg_url)
    report.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    report.execute("SELECT count(*) FROM sync_record").fetchone()
    failure: list[BaseException] = []

    def migrate() -> None:
        try:
            upgrade(engine)
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    migration = threading.Thread(target=migrate)
    migration.start()
    try:
        with psycopg.connect(pg_url, autocommit=True) as watcher:

            def waiting_index_build() -> int | None:
                row = watcher.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND query LIKE 'CREATE INDEX CONCURRENTLY%%' AND wait_event_type = 'Lock'"
                ).fetchone()
                return None if row is None else int(row[0])

            pid = wait_until(waiting_index_build, timeout=60, what="the index build to wait")
            held = watcher.execute(_MIGRATION_LOCKS, (pid,)).fetchall()
            assert held, "the migration holds no table lock while building the index"
            assert not {mode for _, mode, _ in held} & _BLOCKS_WRITES, held
            # The pipeline writes meanwhile, and would fail after 2 s if it had to wait.
            with psycopg.connect(pg_url, autocommit=True) as pipeline:
                pipeline.execute("SET lock_timeout = '2s'")
                pipeline.execute(
                    "INSERT INTO sync_record (org_id, connector, record_type, record_ref, state, "
                    "enqueued_at, updated_at) "
                    "VALUES ('org-1', 'xledger', 'expense', 'NEW-1', 'rejected', now(), now())"
                )
                pipeline.execute(
                    "INSERT INTO sync_run (org_id, connector, started_at, finished_at, status, "
                    "error_code, error_message) VALUES ('org-1', 'xledger', now(), now(), "
                    "'failed', 'AADSTS7000222', 'client secret expired')"
                )
                pipeline.execute(
                    "UPDATE sync_integration SET expected_interval_seconds = 900 "
                    "WHERE org_id = 'org-2'"
                )
            assert migration.is_alive()  # still waiting for the report, as it should
    finally:
        report.rollback()
        report.close()
        migration.join(timeout=120)
    assert not failure, failure
    try:
        assert current_revision(engine) == head_revision()
        with psycopg.connect(pg_url) as check:
            valid = check.execute(
                "SELECT x.indisvalid FROM pg_index AS x JOIN pg_class AS c "
                "ON c.oid = x.indexrelid WHERE c.relname = 'ix_sync_record_rejected'"
            ).fetchone()
        assert valid == (True,)
        found = {f.org_id: f for f in read_snapshot(engine).integrations}
    finally:
        engine.dispose()
    assert (found["org-1"].rejected_records, found["org-1"].last_run_error_class) == (11, "auth")
    assert found["org-2"].expected_interval_seconds == 900
    assert (found["org-3"].rejected_records, found["org-3"].last_run_error_class) == (10, "auth")


@pytest.mark.postgres
def test_a_migration_interrupted_before_its_index_build_completes_when_run_again(
    pg_url: str,
) -> None:
    engine = _sqlalchemy(pg_url)
    try:
        upgrade(engine, BEFORE)
        # What the first, committed step leaves when the concurrent build is then cut off.
        with psycopg.connect(pg_url, autocommit=True) as setup:
            setup.execute("ALTER TABLE sync_run ADD COLUMN error_code text")
            setup.execute("ALTER TABLE sync_integration ADD COLUMN expected_interval_seconds int")
            setup.execute(
                "ALTER TABLE sync_integration ADD CONSTRAINT "
                "ck_sync_integration_expected_interval_positive "
                "CHECK (expected_interval_seconds > 0) NOT VALID"
            )
        upgrade(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_it_downgrades_and_upgrades_again(db_url: str) -> None:
    engine = _sqlalchemy(db_url)
    try:
        upgrade(engine)
        downgrade(engine, BEFORE)
        assert current_revision(engine) == BEFORE
        with engine.connect() as connection:
            columns = {c["name"] for c in inspect(connection).get_columns("sync_run")}
            indexes = {i["name"] for i in inspect(connection).get_indexes("sync_record")}
        assert "error_code" not in columns and "ix_sync_record_rejected" not in indexes
        upgrade(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
