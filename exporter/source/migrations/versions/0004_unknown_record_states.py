"""Unknown record states: an index that finds outbox records in a state the contract lacks.

The exporter reports such records (they would otherwise drop out of the pending count
without a word). The index is partial, so it stays empty, and the look-up free, while the
pipeline keeps to the contract's states.

Revision ID: 0004_unknown_record_states
Revises: 0003_tenancy
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_unknown_record_states"
down_revision = "0003_tenancy"
branch_labels = None
depends_on = None

_UNKNOWN = "NOT (state IN ('pending', 'synced', 'rejected'))"


def upgrade() -> None:
    op.create_index(
        "ix_sync_record_unknown_state",
        "sync_record",
        ["org_id", "connector", "state"],
        unique=False,
        postgresql_where=sa.text(_UNKNOWN),
        sqlite_where=sa.text(_UNKNOWN),
    )


def downgrade() -> None:
    op.drop_index("ix_sync_record_unknown_state", table_name="sync_record")
