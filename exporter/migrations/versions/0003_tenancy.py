"""Tenancy: row-level security for per-organization roles (filled in by issue 5).

Revision ID: 0003_tenancy
Revises: 0002_change_notification
"""

from __future__ import annotations

revision = "0003_tenancy"
down_revision = "0002_change_notification"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
