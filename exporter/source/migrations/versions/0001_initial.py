"""The sync log: the five contract tables and the indexes the snapshot reads use.

Revision ID: 0001_initial
Revises: (none)
Create Date: 2026-11-29 00:05:04.310184
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_organization",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_organization")),
    )
    op.create_table(
        "sync_integration",
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("connector", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "stale_after_seconds", sa.Integer(), server_default=sa.text("86400"), nullable=False
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "connector IN ('xledger', 'dynamics')", name=op.f("ck_sync_integration_connector")
        ),
        sa.CheckConstraint(
            "stale_after_seconds > 0", name=op.f("ck_sync_integration_stale_after_positive")
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["sync_organization.id"],
            name=op.f("fk_sync_integration_org_id_sync_organization"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "connector", name=op.f("pk_sync_integration")),
    )
    op.create_table(
        "sync_record",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("connector", sa.Text(), nullable=False),
        sa.Column("record_type", sa.Text(), nullable=False),
        sa.Column("record_ref", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('pending', 'synced', 'rejected')", name=op.f("ck_sync_record_state")
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "connector"],
            ["sync_integration.org_id", "sync_integration.connector"],
            name=op.f("fk_sync_record_org_id_connector_sync_integration"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_record")),
    )
    op.create_index(
        "ix_sync_record_pending",
        "sync_record",
        ["org_id", "connector", "enqueued_at"],
        unique=False,
        postgresql_where=sa.text("state = 'pending'"),
        sqlite_where=sa.text("state = 'pending'"),
    )
    op.create_index(
        "ix_sync_record_ref", "sync_record", ["org_id", "record_type", "record_ref"], unique=False
    )
    op.create_table(
        "sync_run",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("connector", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("records_total", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("records_failed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'partial', 'failed')",
            name=op.f("ck_sync_run_status"),
        ),
        sa.CheckConstraint(
            "records_failed >= 0", name=op.f("ck_sync_run_records_failed_non_negative")
        ),
        sa.CheckConstraint(
            "records_total >= 0", name=op.f("ck_sync_run_records_total_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "connector"],
            ["sync_integration.org_id", "sync_integration.connector"],
            name=op.f("fk_sync_run_org_id_connector_sync_integration"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_run")),
    )
    op.create_index(
        "ix_sync_run_last_finished",
        "sync_run",
        [
            "org_id",
            "connector",
            sa.literal_column("finished_at DESC"),
            sa.literal_column("id DESC"),
        ],
        unique=False,
        postgresql_where=sa.text("status <> 'running' AND finished_at IS NOT NULL"),
        sqlite_where=sa.text("status <> 'running' AND finished_at IS NOT NULL"),
    )
    op.create_index(
        "ix_sync_run_last_success",
        "sync_run",
        [
            "org_id",
            "connector",
            sa.literal_column("finished_at DESC"),
            sa.literal_column("id DESC"),
        ],
        unique=False,
        postgresql_where=sa.text("status IN ('succeeded', 'partial') AND finished_at IS NOT NULL"),
        sqlite_where=sa.text("status IN ('succeeded', 'partial') AND finished_at IS NOT NULL"),
    )
    op.create_index(
        "ix_sync_run_running",
        "sync_run",
        ["org_id", "connector", "started_at"],
        unique=False,
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    )
    op.create_table(
        "sync_record_error",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("connector", sa.Text(), nullable=False),
        sa.Column("record_type", sa.Text(), nullable=False),
        sa.Column("record_ref", sa.Text(), nullable=False),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id", "connector"],
            ["sync_integration.org_id", "sync_integration.connector"],
            name=op.f("fk_sync_record_error_org_id_connector_sync_integration"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["sync_run.id"],
            name=op.f("fk_sync_record_error_run_id_sync_run"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_record_error")),
    )
    op.create_index(
        "ix_sync_record_error_org_time",
        "sync_record_error",
        ["org_id", "occurred_at"],
        unique=False,
    )
    op.create_index("ix_sync_record_error_run", "sync_record_error", ["run_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_sync_record_error_run", table_name="sync_record_error")
    op.drop_index("ix_sync_record_error_org_time", table_name="sync_record_error")
    op.drop_table("sync_record_error")
    op.drop_index(
        "ix_sync_run_running",
        table_name="sync_run",
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    )
    op.drop_index(
        "ix_sync_run_last_success",
        table_name="sync_run",
        postgresql_where=sa.text("status IN ('succeeded', 'partial') AND finished_at IS NOT NULL"),
        sqlite_where=sa.text("status IN ('succeeded', 'partial') AND finished_at IS NOT NULL"),
    )
    op.drop_index(
        "ix_sync_run_last_finished",
        table_name="sync_run",
        postgresql_where=sa.text("status <> 'running' AND finished_at IS NOT NULL"),
        sqlite_where=sa.text("status <> 'running' AND finished_at IS NOT NULL"),
    )
    op.drop_table("sync_run")
    op.drop_index("ix_sync_record_ref", table_name="sync_record")
    op.drop_index(
        "ix_sync_record_pending",
        table_name="sync_record",
        postgresql_where=sa.text("state = 'pending'"),
        sqlite_where=sa.text("state = 'pending'"),
    )
    op.drop_table("sync_record")
    op.drop_table("sync_integration")
    op.drop_table("sync_organization")
