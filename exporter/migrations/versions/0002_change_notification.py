"""Change notification: PostgreSQL triggers that NOTIFY the exporter when the snapshot changes.

The exporter LISTENs on ``accounting_sync_changed`` and refreshes at once instead of
waiting for its interval. The triggers are statement-level, and PostgreSQL folds identical
notifications of one transaction into one, so a pipeline that writes a thousand records in
one statement or one transaction sends one notification, not a thousand. Only the tables
the snapshot reads notify; ``sync_record_error`` does not (the last run's ``records_failed``
is what the snapshot shows, and it changes through ``sync_run``).

SQLite has no LISTEN/NOTIFY: there the migration does nothing and the interval refresh
is the only mechanism.

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


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
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
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {_trigger(table)} ON {table}")
    op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
