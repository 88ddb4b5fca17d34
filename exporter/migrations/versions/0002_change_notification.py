"""Change notification: PostgreSQL triggers that NOTIFY the exporter (filled in by issue 6).

Revision ID: 0002_change_notification
Revises: 0001_initial
"""

from __future__ import annotations

revision = "0002_change_notification"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
