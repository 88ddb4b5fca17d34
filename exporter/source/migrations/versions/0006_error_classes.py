"""Error classes and lateness: ``sync_run.error_code``,
``sync_integration.expected_interval_seconds`` and an index that counts rejected records.

A sync log in production is large and the pipeline writes to it all the time, so nothing
here rewrites a table or holds a lock that stops the pipeline for longer than a catalog
update:

- both columns are nullable without a default: on PostgreSQL (11 and later) adding them
  only changes the catalog, whatever the table's size;
- the check on ``expected_interval_seconds`` is added ``NOT VALID`` (no scan under the
  ``ALTER``'s exclusive lock) and then validated, which scans under a lock that lets reads
  and writes go on;
- the partial index of rejected records is built ``CONCURRENTLY``, outside the migration's
  transaction, so inserts and updates of ``sync_record`` go on while it is built (a plain
  ``CREATE INDEX`` would block them for the whole scan of the outbox);
- ``lock_timeout`` bounds how long an ``ALTER`` may queue behind a long transaction of the
  pipeline: while it waits, every later statement on the table would wait behind it.
  When it gives up, the migration fails with nothing changed; run it again.

tests/integration/source/test_migration_0006.py checks this on a populated sync log: a
pipeline transaction stays open through the migration and new writes still go through.

Revision ID: 0006_error_classes
Revises: 0004_unknown_record_states
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_error_classes"
down_revision = "0005_bounded_summary"
branch_labels = None
depends_on = None

CHECK = "ck_sync_integration_expected_interval_positive"
INDEX = "ix_sync_record_rejected"
_REJECTED = "state = 'rejected'"
LOCK_TIMEOUT = "10s"


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        # SQLite adds a column without touching the rows either; it has no concurrent index
        # build and no NOT VALID, and an embedded sync log is small.
        op.add_column("sync_run", sa.Column("error_code", sa.Text(), nullable=True))
        op.add_column(
            "sync_integration",
            sa.Column("expected_interval_seconds", sa.Integer(), nullable=True),
        )
        op.create_index(
            INDEX,
            "sync_record",
            ["org_id", "connector"],
            unique=False,
            sqlite_where=sa.text(_REJECTED),
        )
        return
    op.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    op.execute("ALTER TABLE sync_run ADD COLUMN IF NOT EXISTS error_code text")
    op.execute(
        "ALTER TABLE sync_integration ADD COLUMN IF NOT EXISTS expected_interval_seconds integer"
    )
    # The steps below commit before the index is built: a run that failed there has left
    # them in place, so each of them must find its work done and move on.
    if not _exists(_CHECK_PRESENT, CHECK):
        op.execute(
            f"ALTER TABLE sync_integration ADD CONSTRAINT {CHECK} "
            "CHECK (expected_interval_seconds > 0) NOT VALID"
        )
    with op.get_context().autocommit_block():
        # SHARE UPDATE EXCLUSIVE: reads and writes of sync_integration go on meanwhile.
        op.execute(f"ALTER TABLE sync_integration VALIDATE CONSTRAINT {CHECK}")
        # An earlier attempt that was interrupted leaves an invalid index behind.
        if _exists(_INVALID_INDEX, INDEX):
            op.execute(f"DROP INDEX CONCURRENTLY {INDEX}")
        op.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} "
            f"ON sync_record (org_id, connector) WHERE {_REJECTED}"
        )


_CHECK_PRESENT = (
    "SELECT 1 FROM pg_constraint WHERE conname = :name AND conrelid = 'sync_integration'::regclass"
)
_INVALID_INDEX = (
    "SELECT 1 FROM pg_index AS x JOIN pg_class AS c ON c.oid = x.indexrelid "
    "WHERE c.relname = :name AND NOT x.indisvalid"
)


def _exists(query: str, name: str) -> bool:
    if op.get_context().as_sql:  # `db upgrade --sql`: nothing to look at, a new schema
        return False
    return op.get_bind().execute(sa.text(query), {"name": name}).first() is not None


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        op.drop_index(INDEX, table_name="sync_record")
        with op.batch_alter_table("sync_integration") as batch:
            batch.drop_column("expected_interval_seconds")
        with op.batch_alter_table("sync_run") as batch:
            batch.drop_column("error_code")
        return
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
    op.execute(f"ALTER TABLE sync_integration DROP CONSTRAINT IF EXISTS {CHECK}")
    op.execute("ALTER TABLE sync_integration DROP COLUMN IF EXISTS expected_interval_seconds")
    op.execute("ALTER TABLE sync_run DROP COLUMN IF EXISTS error_code")
