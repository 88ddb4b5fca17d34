"""Bounded summary: the last-run summary kept by statement-level triggers, plus run counters.

Migration 0002 kept ``last_run_id`` and ``last_success_at`` with a row trigger: every
finished run a statement wrote locked its integration, looked the last run up again and
updated the ``sync_integration`` row, inside the pipeline's transaction. A statement
writing many runs of one integration updated the same row once per run, and those row
versions piled up within the transaction, so the cost per run grew with the batch (a
backfill of 960,000 runs took about ten minutes). Here one statement-level trigger per
event (PostgreSQL allows transition tables only on single-event triggers) reads the
statement's transition tables, and each distinct integration the statement touched is
locked once, in key order (so concurrent writers cannot deadlock on each other), and
recomputed once through migration 0001's indexes, however many of its runs it touched.

Why the rules hold under concurrency: the lock is taken in one statement and the
recomputation runs in the next, which (READ COMMITTED, a volatile plpgsql function) takes
a new snapshot, so a pipeline that waited for another's lock sees that pipeline's
committed run: the newer run wins, as with 0002's row trigger.

It also keeps monotonic totals for the counters on /metrics: ``runs_succeeded_total``,
``runs_partial_total``, ``runs_failed_total`` and ``records_failed_total``. A run counts
once, when it enters a finished status (inserted finished, or updated from running or a
NULL ``finished_at`` to finished), and its ``records_failed`` is added at that moment.
Deletes and TRUNCATE never decrease them (counter semantics). The upgrade fills them from
the existing history; SQLite has no triggers here and counts its history in the snapshot.

0002's functions stay in place (its TRUNCATE trigger already does what is needed: it
clears the last run and leaves the totals alone), so the downgrade only drops what this
migration adds and re-attaches 0002's row trigger.

Revision ID: 0005_bounded_summary
Revises: 0004_unknown_record_states
"""

from __future__ import annotations

from alembic import op

revision = "0005_bounded_summary"
down_revision = "0004_unknown_record_states"
branch_labels = None
depends_on = None

NOTE_RUNS = "accounting_sync_note_runs"
REBUILD = "accounting_sync_rebuild_summary"
COUNTERS = ("runs_succeeded_total", "runs_partial_total", "runs_failed_total")
TOTALS = (*COUNTERS, "records_failed_total")
# 0002's row trigger and the function it calls (kept for the downgrade).
OLD_TRIGGER = "sync_run_last_run"
OLD_NOTE_RUN = "accounting_sync_note_run"
EVENTS = {
    "INSERT": "REFERENCING NEW TABLE AS new_runs",
    "UPDATE": "REFERENCING OLD TABLE AS old_runs NEW TABLE AS new_runs",
    "DELETE": "REFERENCING OLD TABLE AS old_runs",
}

# The snapshot's rules (exporter/source/schema.py, FINISHED_RUN and SUCCESSFUL_RUN), served
# by migration 0001's partial indexes.
_LAST_RUN = """(SELECT r.id FROM sync_run AS r
     WHERE r.org_id = i.org_id AND r.connector = i.connector
       AND r.status <> 'running' AND r.finished_at IS NOT NULL
     ORDER BY r.finished_at DESC, r.id DESC LIMIT 1)"""
_LAST_SUCCESS = """(SELECT r.finished_at FROM sync_run AS r
     WHERE r.org_id = i.org_id AND r.connector = i.connector
       AND r.status IN ('succeeded', 'partial') AND r.finished_at IS NOT NULL
     ORDER BY r.finished_at DESC, r.id DESC LIMIT 1)"""


def _finished(alias: str) -> str:
    return f"{alias}.status <> 'running' AND {alias}.finished_at IS NOT NULL"


def _moved(a: str, b: str) -> str:
    """The run changed in what the summary depends on."""
    columns = ("org_id", "connector", "status", "finished_at")
    return (
        f"({', '.join(f'{a}.{c}' for c in columns)}) IS DISTINCT FROM "
        f"({', '.join(f'{b}.{c}' for c in columns)})"
    )


def _increments(alias: str) -> str:
    """Per-status counts and failed records of the runs ``alias`` that just finished."""
    return (
        f"count(*) FILTER (WHERE {alias}.status = 'succeeded'), "
        f"count(*) FILTER (WHERE {alias}.status = 'partial'), "
        f"count(*) FILTER (WHERE {alias}.status = 'failed'), "
        f"coalesce(sum({alias}.records_failed) FILTER (WHERE {alias}.status IN "
        f"('succeeded', 'partial', 'failed')), 0)"
    )


# Each branch reduces the statement's rows to one row per touched integration: its key and
# what to add to its totals. Keys are distinct (UPDATE ... FROM applies one row per target);
# their order does not matter, the lock statement sorts.
_CHANGES = {
    "INSERT": f"""
        SELECT n.org_id, n.connector, {_increments("n")}
        FROM new_runs AS n WHERE {_finished("n")}
        GROUP BY n.org_id, n.connector""",
    # Rows whose key, status or finish time did not change cannot move the summary (a
    # pipeline updating records_total of a running run costs nothing). A row counts when
    # its previous version (same id) was not finished. Two hash joins on id, no sorting.
    "UPDATE": f"""
        SELECT k.org_id, k.connector, sum(k.s), sum(k.p), sum(k.f), sum(k.rf)
        FROM (SELECT n.org_id, n.connector,
                     (entered AND n.status = 'succeeded')::int AS s,
                     (entered AND n.status = 'partial')::int AS p,
                     (entered AND n.status = 'failed')::int AS f,
                     CASE WHEN entered THEN n.records_failed ELSE 0 END AS rf
              FROM new_runs AS n LEFT JOIN old_runs AS o ON o.id = n.id,
                   LATERAL (SELECT o.id IS NOT NULL AND (o.status = 'running'
                                                         OR o.finished_at IS NULL)) AS e (entered)
              WHERE {_finished("n")}
                AND (o.id IS NULL OR {_moved("n", "o")})
              UNION ALL
              SELECT o.org_id, o.connector, 0, 0, 0, 0
              FROM old_runs AS o LEFT JOIN new_runs AS n ON n.id = o.id
              WHERE {_finished("o")}
                AND (n.id IS NULL OR {_moved("o", "n")})) AS k
        GROUP BY k.org_id, k.connector""",
    "DELETE": f"""
        SELECT DISTINCT o.org_id, o.connector, 0::bigint, 0::bigint, 0::bigint, 0::bigint
        FROM old_runs AS o WHERE {_finished("o")}""",
}


def _note_runs_function() -> str:
    branches = "\n        ELS".join(
        f"""IF TG_OP = '{event}' THEN
            SELECT array_agg(c.org_id), array_agg(c.connector), array_agg(c.s),
                   array_agg(c.p), array_agg(c.f), array_agg(c.rf)
            INTO orgs, connectors, succeeded, partial, failed, records_failed
            FROM ({query}) AS c (org_id, connector, s, p, f, rf);"""
        for event, query in _CHANGES.items()
    )
    return f"""
        CREATE FUNCTION {NOTE_RUNS}() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
        DECLARE
            orgs text[];
            connectors text[];
            succeeded bigint[];
            partial bigint[];
            failed bigint[];
            records_failed bigint[];
        BEGIN
        {branches}
        END IF;
        IF orgs IS NULL THEN
            RETURN NULL;  -- no finished run written, changed or deleted (e.g. a run started)
        END IF;
        -- Lock once per integration, in key order: two statements touching overlapping
        -- integrations queue behind each other instead of deadlocking.
        PERFORM 1 FROM sync_integration AS i
        JOIN unnest(orgs, connectors) AS k (org_id, connector)
          ON i.org_id = k.org_id AND i.connector = k.connector
        ORDER BY i.org_id, i.connector
        FOR NO KEY UPDATE OF i;
        -- A new statement, so a new snapshot: it sees runs committed while we waited.
        UPDATE sync_integration AS i
        SET last_run_id = {_LAST_RUN},
            last_success_at = {_LAST_SUCCESS},
            runs_succeeded_total = i.runs_succeeded_total + k.s,
            runs_partial_total = i.runs_partial_total + k.p,
            runs_failed_total = i.runs_failed_total + k.f,
            records_failed_total = i.records_failed_total + k.rf
        FROM unnest(orgs, connectors, succeeded, partial, failed, records_failed)
             AS k (org_id, connector, s, p, f, rf)
        WHERE i.org_id = k.org_id AND i.connector = k.connector;
        RETURN NULL;
        END
        $$
        """


def _trigger(event: str) -> str:
    return f"sync_run_summary_{event.lower()}"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "ALTER TABLE sync_integration "
        + ", ".join(f"ADD COLUMN {name} bigint NOT NULL DEFAULT 0" for name in TOTALS)
    )
    # Rebuilds everything from the history in one pass over it (grouped, not per
    # integration): what the upgrade needs, and what a bulk load with triggers off calls.
    op.execute(
        f"""
        CREATE FUNCTION {REBUILD}() RETURNS void
        LANGUAGE sql SECURITY DEFINER SET search_path FROM CURRENT AS $$
            UPDATE sync_integration AS i
            SET last_run_id = {_LAST_RUN}, last_success_at = {_LAST_SUCCESS},
                runs_succeeded_total = coalesce(t.s, 0), runs_partial_total = coalesce(t.p, 0),
                runs_failed_total = coalesce(t.f, 0), records_failed_total = coalesce(t.rf, 0)
            FROM sync_integration AS j
            LEFT JOIN (SELECT r.org_id, r.connector, {_increments("r")}
                       FROM sync_run AS r WHERE {_finished("r")}
                       GROUP BY r.org_id, r.connector) AS t (org_id, connector, s, p, f, rf)
                   ON t.org_id = j.org_id AND t.connector = j.connector
            WHERE j.org_id = i.org_id AND j.connector = i.connector
        $$
        """
    )
    op.execute(f"DROP TRIGGER IF EXISTS {OLD_TRIGGER} ON sync_run")
    op.execute(_note_runs_function())
    for event, referencing in EVENTS.items():
        op.execute(
            f"CREATE TRIGGER {_trigger(event)} AFTER {event} ON sync_run {referencing} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {NOTE_RUNS}()"
        )
    op.execute(f"SELECT {REBUILD}()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for event in EVENTS:
        op.execute(f"DROP TRIGGER IF EXISTS {_trigger(event)} ON sync_run")
    op.execute(f"DROP FUNCTION IF EXISTS {NOTE_RUNS}()")
    op.execute(f"DROP FUNCTION IF EXISTS {REBUILD}()")
    op.execute(
        "ALTER TABLE sync_integration "
        + ", ".join(f"DROP COLUMN IF EXISTS {name}" for name in TOTALS)
    )
    op.execute(
        f"CREATE TRIGGER {OLD_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON sync_run "
        f"FOR EACH ROW EXECUTE FUNCTION {OLD_NOTE_RUN}()"
    )
    op.execute("SELECT accounting_sync_rebuild_last_runs()")
