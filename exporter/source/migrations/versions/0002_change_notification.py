"""Change notification: PostgreSQL triggers that NOTIFY the exporter when the snapshot changes.

The exporter LISTENs on ``accounting_sync_changed`` and refreshes at once instead of
waiting for its interval. The triggers are statement-level, and PostgreSQL folds identical
notifications of one transaction into one, so a pipeline that writes a thousand records in
one statement or one transaction sends one notification, not a thousand. Only the tables
the snapshot reads notify; ``sync_record_error`` does not (the last run's ``records_failed``
is what the snapshot shows, and it changes through ``sync_run``).

It also keeps, on each ``sync_integration`` row, which run is its last finished run and
when it last synced successfully (``last_run_id``, ``last_success_at``), maintained by a row
trigger on ``sync_run``. Looking these up per integration in the run indexes was measured
(bench/RESULTS.md) to cost more as history grows, even with partial indexes: with long
histories every integration's newest index entries sit on a leaf page of their own, and
at 10,000 integrations those pages no longer stay in shared buffers. The columns live on
``sync_integration`` so every role that may read the integrations (the exporter's reader
role, tenants through row-level security) can read them without a new grant. The trigger
function runs as its owner, so a pipeline role with no right to update
``sync_integration`` can still write runs.

SQLite has no LISTEN/NOTIFY: there the migration does nothing, the interval refresh is the
only mechanism and the snapshot uses the per-integration index lookups.

Revision ID: 0002_change_notification
Revises: 0001_initial
"""

from __future__ import annotations

from alembic import op

revision = "0002_change_notification"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

CHANNEL = "accounting_sync_changed"
FUNCTION = "accounting_sync_notify_change"
TABLES = ("sync_organization", "sync_integration", "sync_run", "sync_record")


def _trigger(table: str) -> str:
    return f"{table}_notify_change"


# The newest finished run of one integration, and its newest successful one: the same rules
# as the snapshot statement of exporter/source/reader.py, served by migration 0001's indexes.
_LAST_RUN = """(SELECT r.id FROM sync_run AS r
     WHERE r.org_id = i.org_id AND r.connector = i.connector
       AND r.status <> 'running' AND r.finished_at IS NOT NULL
     ORDER BY r.finished_at DESC, r.id DESC LIMIT 1)"""
_LAST_SUCCESS = """(SELECT r.finished_at FROM sync_run AS r
     WHERE r.org_id = i.org_id AND r.connector = i.connector
       AND r.status IN ('succeeded', 'partial') AND r.finished_at IS NOT NULL
     ORDER BY r.finished_at DESC, r.id DESC LIMIT 1)"""
RECOMPUTE = "accounting_sync_recompute_last_run"
REBUILD = "accounting_sync_rebuild_last_runs"
NOTE_RUN = "accounting_sync_note_run"


def _create_last_run_summary() -> None:
    op.execute(
        "ALTER TABLE sync_integration "
        "ADD COLUMN last_run_id bigint, ADD COLUMN last_success_at timestamptz"
    )
    # Lock the integration first, then look: each statement of a plpgsql function takes a
    # new snapshot, so two pipelines finishing runs of one integration at once cannot
    # leave the older run recorded as the last one.
    op.execute(
        f"""
        CREATE FUNCTION {RECOMPUTE}(p_org text, p_connector text) RETURNS void
        LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
        BEGIN
            PERFORM 1 FROM sync_integration
            WHERE org_id = p_org AND connector = p_connector FOR NO KEY UPDATE;
            UPDATE sync_integration AS i
            SET last_run_id = {_LAST_RUN}, last_success_at = {_LAST_SUCCESS}
            WHERE i.org_id = p_org AND i.connector = p_connector;
        END
        $$
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION {REBUILD}() RETURNS void
        LANGUAGE sql SECURITY DEFINER SET search_path FROM CURRENT AS $$
            UPDATE sync_integration AS i
            SET last_run_id = {_LAST_RUN}, last_success_at = {_LAST_SUCCESS}
        $$
        """
    )
    # Only a finished run (before or after the change) can move the summary; starting a
    # run, the common write besides finishing one, costs nothing.
    op.execute(
        f"""
        CREATE FUNCTION {NOTE_RUN}() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
        BEGIN
            IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.finished_at IS NOT NULL THEN
                PERFORM {RECOMPUTE}(NEW.org_id, NEW.connector);
            END IF;
            IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.finished_at IS NOT NULL
               AND (TG_OP = 'DELETE' OR NEW.finished_at IS NULL
                    OR (OLD.org_id, OLD.connector) IS DISTINCT FROM (NEW.org_id, NEW.connector))
            THEN
                PERFORM {RECOMPUTE}(OLD.org_id, OLD.connector);
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        f"CREATE TRIGGER sync_run_last_run AFTER INSERT OR UPDATE OR DELETE ON sync_run "
        f"FOR EACH ROW EXECUTE FUNCTION {NOTE_RUN}()"
    )
    # TRUNCATE fires no row triggers: clear the summary with it.
    op.execute(
        f"""
        CREATE FUNCTION {NOTE_RUN}_truncate() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
        BEGIN
            UPDATE sync_integration SET last_run_id = NULL, last_success_at = NULL;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        f"CREATE TRIGGER sync_run_last_run_truncate AFTER TRUNCATE ON sync_run "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {NOTE_RUN}_truncate()"
    )
    op.execute(f"SELECT {REBUILD}()")


def _drop_last_run_summary() -> None:
    op.execute("DROP TRIGGER IF EXISTS sync_run_last_run_truncate ON sync_run")
    op.execute("DROP TRIGGER IF EXISTS sync_run_last_run ON sync_run")
    op.execute(f"DROP FUNCTION IF EXISTS {NOTE_RUN}_truncate()")
    op.execute(f"DROP FUNCTION IF EXISTS {NOTE_RUN}()")
    op.execute(f"DROP FUNCTION IF EXISTS {REBUILD}()")
    op.execute(f"DROP FUNCTION IF EXISTS {RECOMPUTE}(text, text)")
    op.execute(
        "ALTER TABLE sync_integration DROP COLUMN IF EXISTS last_success_at, "
        "DROP COLUMN IF EXISTS last_run_id"
    )


def upgrade() -> None:
    # The context, not a bind: offline (`db upgrade --sql`) there is no connection.
    if op.get_context().dialect.name != "postgresql":
        return
    _create_last_run_summary()
    # The payload is the table name: constant per table, so PostgreSQL deduplicates it
    # within a transaction, and the exporter only needs to know that something changed.
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME);
            RETURN NULL;
        END
        $$
        """
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {_trigger(table)} "
            f"AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()"
        )


def downgrade() -> None:
    # The context, not a bind: offline (`db upgrade --sql`) there is no connection.
    if op.get_context().dialect.name != "postgresql":
        return
    _drop_last_run_summary()
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {_trigger(table)} ON {table}")
    op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
