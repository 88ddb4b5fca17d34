"""Sync logs of a chosen size, built inside PostgreSQL with generate_series.

A row-by-row Python writer would spend the whole benchmark budget on inserts, so each
table is filled by one INSERT ... SELECT. History is laid down in two steps: ``build``
writes the short history (the newest runs), ``lengthen`` adds older runs, records and
errors behind it. The newest run of every integration is the same before and after, so
the snapshot must not change, only the amount of history around it.

Shape per integration (``runs`` = runs of history):
- one run per hour going back; every 7th partial (with one error row), every 13th failed;
- one synced record per run, five pending records enqueued in the last hour;
- every 50th integration also has a run still running.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

PENDING_PER_INTEGRATION = 5


@dataclass(frozen=True)
class Scale:
    integrations: int
    runs: int  # runs of short history per integration


@contextmanager
def throwaway_database(admin_url: str) -> Iterator[str]:
    """A new database on the server of ``admin_url``, dropped (forcibly) afterwards."""
    name = f"ase_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


_INTEGRATIONS = """
INSERT INTO sync_organization (id, name)
SELECT format('org-%%s', lpad(g::text, 5, '0')), format('Organization %%s', g)
FROM generate_series(1, (%(n)s::int + 1) / 2) AS g;

INSERT INTO sync_integration (org_id, connector, active, stale_after_seconds, created_at)
SELECT o.id, c.connector, true, 86400, now() - interval '400 days'
FROM sync_organization AS o CROSS JOIN (VALUES ('xledger'), ('dynamics')) AS c (connector)
ORDER BY o.id, c.connector
LIMIT %(n)s::int;

INSERT INTO sync_record (org_id, connector, record_type, record_ref, state, enqueued_at,
                         updated_at)
SELECT i.org_id, i.connector, 'expense', format('P-%%s-%%s', i.connector, k), 'pending',
       now() - k * interval '5 minutes', now() - k * interval '5 minutes'
FROM sync_integration AS i CROSS JOIN generate_series(1, %(pending)s::int) AS k;

INSERT INTO sync_run (org_id, connector, started_at, status)
SELECT org_id, connector, now() - interval '2 minutes', 'running'
FROM (SELECT org_id, connector, row_number() OVER (ORDER BY org_id, connector) AS n
      FROM sync_integration) AS i
WHERE n %% 50 = 0;
"""

# Runs ``first`` .. ``last`` hours ago, for every integration, with their records and errors.
_HISTORY = """
INSERT INTO sync_run (org_id, connector, started_at, finished_at, status, records_total,
                      records_failed, error_message)
SELECT i.org_id, i.connector,
       now() - k * interval '1 hour' - interval '3 minutes',
       now() - k * interval '1 hour',
       CASE WHEN k %% 13 = 0 THEN 'failed' WHEN k %% 7 = 0 THEN 'partial' ELSE 'succeeded' END,
       CASE WHEN k %% 13 = 0 THEN 0 ELSE 20 END,
       CASE WHEN k %% 13 = 0 THEN 0 WHEN k %% 7 = 0 THEN 1 ELSE 0 END,
       CASE WHEN k %% 13 = 0 THEN 'authentication failed' END
FROM generate_series(%(first)s::int, %(last)s::int) AS k CROSS JOIN sync_integration AS i;

INSERT INTO sync_record (org_id, connector, record_type, record_ref, state, enqueued_at,
                         updated_at)
SELECT i.org_id, i.connector, 'expense', format('S-%%s-%%s', i.connector, k), 'synced',
       now() - k * interval '1 hour' - interval '10 minutes', now() - k * interval '1 hour'
FROM generate_series(%(first)s::int, %(last)s::int) AS k CROSS JOIN sync_integration AS i;

INSERT INTO sync_record_error (run_id, org_id, connector, record_type, record_ref, error_code,
                               error_message, occurred_at)
SELECT r.id, r.org_id, r.connector, 'expense', format('S-%%s-%%s', r.id, 1), 'XL-422',
       'Account 6800 does not exist', r.finished_at
FROM sync_run AS r
WHERE r.status = 'partial' AND r.id > %(after)s::bigint;
"""


def _run_script(connection: psycopg.Connection, script: str, params: dict[str, int]) -> None:
    # One statement per execute: the extended protocol that binds parameters takes one.
    for statement in script.split(";\n\n"):
        connection.execute(statement.strip().rstrip(";"), params)  # type: ignore[arg-type]


_SECONDARY_INDEXES = """
SELECT i.indexname, i.indexdef
FROM pg_indexes AS i
WHERE i.schemaname = current_schema()
  AND i.tablename IN ('sync_run', 'sync_record', 'sync_record_error')
  AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conname = i.indexname)
"""


def _add_history(connection: psycopg.Connection, first: int, last: int) -> None:
    """Insert with the secondary indexes dropped, then rebuild them exactly as they were.

    Millions of rows inserted into time-interleaved B-trees bigger than shared_buffers
    take many minutes; building each index once, sorted, takes seconds. The definitions
    come from the catalogue, so the benchmark measures the migrations' indexes.
    """
    row = connection.execute("SELECT coalesce(max(id), 0) FROM sync_run").fetchone()
    after = int(row[0]) if row else 0
    indexes = connection.execute(_SECONDARY_INDEXES).fetchall()
    connection.execute("SET maintenance_work_mem = '256MB'")
    # Rows are consistent by construction: skip the per-row foreign key checks (and the
    # change notifications) as a bulk load would. Needs a superuser, as the tests' server has.
    connection.execute("SET session_replication_role = replica")
    for name, _ in indexes:
        connection.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    _run_script(connection, _HISTORY, {"first": first, "last": last, "after": after})
    connection.execute("RESET session_replication_role")
    for _, definition in indexes:
        connection.execute(definition)
    # The summary's triggers were off too: recompute it (last runs and the run counters'
    # totals), as migration 0005 does.
    connection.execute("SELECT accounting_sync_rebuild_summary()")
    connection.execute("VACUUM ANALYZE")


def add_integrations(connection: psycopg.Connection, count: int, pending: int) -> None:
    """Organizations, ``count`` integrations, their pending records and running runs."""
    _run_script(connection, _INTEGRATIONS, {"n": count, "pending": pending})


def build(url: str, scale: Scale) -> None:
    """Integrations, pending records, running runs and the short history."""
    with psycopg.connect(url, autocommit=True) as connection:
        params = {"n": scale.integrations, "pending": PENDING_PER_INTEGRATION}
        _run_script(connection, _INTEGRATIONS, params)
        _add_history(connection, 1, scale.runs)


def lengthen(url: str, scale: Scale, factor: int) -> None:
    """Add older history until there is ``factor`` times the short history."""
    with psycopg.connect(url, autocommit=True) as connection:
        _add_history(connection, scale.runs + 1, scale.runs * factor)


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as connection:
        return {
            table: int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
            for table in ("sync_integration", "sync_run", "sync_record", "sync_record_error")
        }
