"""The sync log's tables, as typed SQLAlchemy 2 models.

Table and column names are a contract with the sync pipeline that writes them
(the contract, see the README and docs/pipeline.md); the indexes exist for the exporter's
reads, which must cost the same whatever the length of the history (see ``reader.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    Text,
    func,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

CONNECTORS = ("xledger", "dynamics")
RUN_STATUSES = ("running", "succeeded", "partial", "failed")
RECORD_STATES = ("pending", "synced", "rejected")
FINISHED_STATUSES = RUN_STATUSES[1:]

# Columns of ``sync_integration`` that PostgreSQL triggers keep (migrations 0002 and 0005,
# which do nothing on SQLite), not the pipeline and not these models: a model column would
# make the ORM write them, and SQLite would lack them (it computes the same facts from the
# history). The models-match-migrations test skips exactly these.
TRIGGER_MAINTAINED_COLUMNS: tuple[str, ...] = (
    "last_run_id",
    "last_success_at",
    "runs_succeeded_total",
    "runs_partial_total",
    "runs_failed_total",
    "records_failed_total",
)

# bigserial on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """``timestamptz`` that always comes back timezone-aware in UTC.

    SQLite has no time zones: it stores whatever text the writer sends. Treating naive
    values as UTC (the contract's storage zone) keeps both back ends comparable.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# The partial indexes' predicates, written once: the reads in reader.py use these very
# strings, with literal values, because a planner can only use a partial index when it can
# prove the query's WHERE implies the index's, and a bound parameter defeats that proof
# (SQLite then scans every run once per integration).
FINISHED_RUN = "status <> 'running' AND finished_at IS NOT NULL"
SUCCESSFUL_RUN = "status IN ('succeeded', 'partial') AND finished_at IS NOT NULL"
RUNNING_RUN = "status = 'running'"
PENDING_RECORD = "state = 'pending'"
REJECTED_RECORD = "state = 'rejected'"
UNKNOWN_RECORD_STATE = f"NOT ({_in('state', RECORD_STATES)})"


def _partial(predicate: str) -> dict[str, Any]:
    return {"postgresql_where": text(predicate), "sqlite_where": text(predicate)}


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Organization(Base):
    __tablename__ = "sync_organization"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)


class Integration(Base):
    __tablename__ = "sync_integration"
    __table_args__ = (
        CheckConstraint(_in("connector", CONNECTORS), name="connector"),
        CheckConstraint("stale_after_seconds > 0", name="stale_after_positive"),
        # Added NOT VALID by migration 0006 (then validated) so that adding it never holds
        # a long lock; a row that slips past it on SQLite is repaired by source/cleaning.py.
        CheckConstraint("expected_interval_seconds > 0", name="expected_interval_positive"),
    )

    org_id: Mapped[str] = mapped_column(
        Text, ForeignKey("sync_organization.id", ondelete="CASCADE"), primary_key=True
    )
    connector: Mapped[str] = mapped_column(Text, primary_key=True)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    stale_after_seconds: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text("86400")
    )
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, server_default=func.now()
    )
    # How often a run is expected to finish; NULL when unknown (DESIGN.md, reconciliation).
    expected_interval_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)


def _integration_fk() -> ForeignKeyConstraint:
    return ForeignKeyConstraint(
        ["org_id", "connector"],
        ["sync_integration.org_id", "sync_integration.connector"],
        ondelete="CASCADE",
    )


class Run(Base):
    __tablename__ = "sync_run"
    __table_args__ = (
        _integration_fk(),
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        CheckConstraint("records_total >= 0", name="records_total_non_negative"),
        CheckConstraint("records_failed >= 0", name="records_failed_non_negative"),
        # The snapshot's per-integration lookups; partial so that their size and cost
        # follow the index predicate, and they match the WHERE clauses in reader.py.
        Index(
            "ix_sync_run_last_finished",
            "org_id",
            "connector",
            text("finished_at DESC"),
            text("id DESC"),
            **_partial(FINISHED_RUN),
        ),
        Index(
            "ix_sync_run_last_success",
            "org_id",
            "connector",
            text("finished_at DESC"),
            text("id DESC"),
            **_partial(SUCCESSFUL_RUN),
        ),
        Index(
            "ix_sync_run_running",
            "org_id",
            "connector",
            "started_at",
            **_partial(RUNNING_RUN),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(Text, nullable=False)
    connector: Mapped[str] = mapped_column(Text, nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(Text, nullable=False)
    records_total: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    records_failed: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The accounting system's code for a run-level failure (migration 0006).
    error_code: Mapped[str | None] = mapped_column(Text, nullable=True)


class Record(Base):
    __tablename__ = "sync_record"
    __table_args__ = (
        _integration_fk(),
        CheckConstraint(_in("state", RECORD_STATES), name="state"),
        Index(
            "ix_sync_record_pending",
            "org_id",
            "connector",
            "enqueued_at",
            **_partial(PENDING_RECORD),
        ),
        Index("ix_sync_record_ref", "org_id", "record_type", "record_ref"),
        # Rejected records stay until a person acts, so the count follows them, not history.
        Index(
            "ix_sync_record_rejected",
            "org_id",
            "connector",
            **_partial(REJECTED_RECORD),
        ),
        # Empty while the pipeline keeps to the contract, so finding records in an unknown
        # state (to report them) costs nothing, whatever the size of the outbox.
        Index(
            "ix_sync_record_unknown_state",
            "org_id",
            "connector",
            "state",
            **_partial(UNKNOWN_RECORD_STATE),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(Text, nullable=False)
    connector: Mapped[str] = mapped_column(Text, nullable=False)
    record_type: Mapped[str] = mapped_column(Text, nullable=False)
    record_ref: Mapped[str] = mapped_column(Text, nullable=False)
    state: Mapped[str] = mapped_column(Text, nullable=False)
    enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class RecordError(Base):
    __tablename__ = "sync_record_error"
    __table_args__ = (
        _integration_fk(),
        Index("ix_sync_record_error_run", "run_id"),
        Index("ix_sync_record_error_org_time", "org_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("sync_run.id", ondelete="CASCADE"), nullable=False
    )
    org_id: Mapped[str] = mapped_column(Text, nullable=False)
    connector: Mapped[str] = mapped_column(Text, nullable=False)
    record_type: Mapped[str] = mapped_column(Text, nullable=False)
    record_ref: Mapped[str] = mapped_column(Text, nullable=False)
    error_code: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_message: Mapped[str] = mapped_column(Text, nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
