"""The reads the exporter makes of the sync log: one snapshot per refresh, and the
organization lists and error details that the admin commands and pages need.

The snapshot is a single statement whose cost follows the number of integrations and
pending records, not the length of the run history. On PostgreSQL it reads the last run,
last success and run counters' totals that triggers keep on each integration (migrations
0002 and 0005), and groups the pending records and running runs through their partial
indexes; elsewhere (SQLite, or a PostgreSQL schema without those migrations) it looks the
last runs up per integration in partial indexes and counts the totals from the history,
which is good enough for the small logs those hold (bench/RESULTS.md has figures).
A second statement reads the failed records of the integrations' last finished runs,
grouped by answer, for the error classes; its cost follows those records, not history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    and_,
    case,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.sql.elements import ColumnElement

from exporter.classification import CODE_PREFIX, MESSAGE_PREFIX, Classifier
from exporter.model import Snapshot
from exporter.source.cleaning import (
    DEFAULT_CLASSIFIER,
    classify_failures,
    sanitize,
    unknown_record_states,
)
from exporter.source.deadline import ConnectionTracker, with_deadline
from exporter.source.pipeline import utcnow
from exporter.source.schema import (
    FINISHED_RUN,
    FINISHED_STATUSES,
    PENDING_RECORD,
    REJECTED_RECORD,
    RUNNING_RUN,
    SUCCESSFUL_RUN,
    UNKNOWN_RECORD_STATE,
    Integration,
    Organization,
    Record,
    RecordError,
    Run,
)


def _same_integration(table: type[Run] | type[Record]) -> ColumnElement[bool]:
    return and_(table.org_id == Integration.org_id, table.connector == Integration.connector)


def _last_finished_run_id():  # type: ignore[no-untyped-def]
    """The contract's "last finished run" of the enclosing integration (index-backed)."""
    return (
        select(Run.id)
        .where(
            _same_integration(Run),
            text(FINISHED_RUN),
        )
        .order_by(Run.finished_at.desc(), Run.id.desc())
        .limit(1)
        .correlate(Integration)
        .scalar_subquery()
    )


def _snapshot_statement():  # type: ignore[no-untyped-def]
    finished = _last_finished_run_id()
    last_success = (
        select(Run.finished_at)
        .where(
            _same_integration(Run),
            text(SUCCESSFUL_RUN),
        )
        .order_by(Run.finished_at.desc(), Run.id.desc())
        .limit(1)
        .correlate(Integration)
        .scalar_subquery()
    )
    running_since = (
        select(func.min(Run.started_at))
        .where(_same_integration(Run), text(RUNNING_RUN))
        .correlate(Integration)
        .scalar_subquery()
    )
    pending = (
        select(func.count())
        .where(_same_integration(Record), text(PENDING_RECORD))
        .correlate(Integration)
        .scalar_subquery()
    )
    rejected = (
        select(func.count())
        .where(_same_integration(Record), text(REJECTED_RECORD))
        .correlate(Integration)
        .scalar_subquery()
    )
    oldest_pending = (
        select(func.min(Record.enqueued_at))
        .where(_same_integration(Record), text(PENDING_RECORD))
        .correlate(Integration)
        .scalar_subquery()
    )
    # The run counters' totals. PostgreSQL keeps them on sync_integration (migration 0005);
    # here they are counted from the history, a cost that grows with it: fine for the
    # small embedded SQLite logs this statement serves (docs/write-path.md).
    totals = (
        select(
            Run.org_id,
            Run.connector,
            *(
                func.sum(case((Run.status == name, 1), else_=0)).label(f"runs_{name}_total")
                for name in FINISHED_STATUSES
            ),
            # A negative count is a bad row, reported once for the last run (cleaning.py);
            # it must not also drag the total below zero, or below where it stood.
            func.sum(case((Run.records_failed > 0, Run.records_failed), else_=0)).label(
                "records_failed_total"
            ),
        )
        .where(text(FINISHED_RUN), Run.status.in_(FINISHED_STATUSES))
        .group_by(Run.org_id, Run.connector)
        .subquery("run_totals")
    )
    per_integration = (
        select(
            Integration.org_id,
            Organization.name.label("org_name"),
            Integration.connector,
            Integration.active,
            Integration.stale_after_seconds,
            Integration.created_at,
            finished.label("last_run_id"),
            last_success.label("last_success_at"),
            running_since.label("running_since"),
            pending.label("pending_records"),
            oldest_pending.label("oldest_pending_at"),
            rejected.label("rejected_records"),
            Integration.expected_interval_seconds,
        )
        .select_from(Integration)
        .outerjoin(Organization, Organization.id == Integration.org_id)
        .subquery("integration_facts")
    )
    # Result columns go through the models' types so timestamps come back in UTC.
    return (
        select(
            per_integration.c.org_id,
            per_integration.c.org_name,
            per_integration.c.connector,
            per_integration.c.active,
            per_integration.c.stale_after_seconds,
            literal_column("integration_facts.created_at", Integration.created_at.type).label(
                "created_at"
            ),
            literal_column("integration_facts.last_success_at", Run.finished_at.type).label(
                "last_success_at"
            ),
            literal_column("integration_facts.running_since", Run.started_at.type).label(
                "running_since"
            ),
            per_integration.c.pending_records,
            literal_column("integration_facts.oldest_pending_at", Record.enqueued_at.type).label(
                "oldest_pending_at"
            ),
            Run.status,
            Run.started_at,
            Run.finished_at,
            Run.records_total,
            Run.records_failed,
            per_integration.c.rejected_records,
            per_integration.c.expected_interval_seconds,
            Run.id.label("last_run_id"),
            func.substr(Run.error_code, 1, CODE_PREFIX).label("error_code"),
            func.substr(Run.error_message, 1, MESSAGE_PREFIX).label("error_message"),
            *(
                func.coalesce(totals.c[name], 0).label(name)
                for name in (
                    *(f"runs_{status}_total" for status in FINISHED_STATUSES),
                    "records_failed_total",
                )
            ),
        )
        .select_from(per_integration)
        .outerjoin(Run, Run.id == per_integration.c.last_run_id)
        .outerjoin(
            totals,
            and_(
                totals.c.org_id == per_integration.c.org_id,
                totals.c.connector == per_integration.c.connector,
            ),
        )
        .order_by(per_integration.c.org_id, per_integration.c.connector)
    )


SNAPSHOT_STATEMENT = _snapshot_statement()

# Same columns, same order, as SNAPSHOT_STATEMENT: SNAPSHOT_COLUMNS (source/cleaning.py).
# The last run is looked up by id for each integration (a LATERAL subquery that OFFSET 0
# keeps from being flattened into a join): as a plain join the planner may merge-join
# against the whole run primary key, and since every integration's last run is among the
# newest ids, that scans the entire history (measured: 517 ms instead of 29 ms at 2,000
# integrations and a million runs, once the newest runs carried the highest ids).
# Untyped on purpose: psycopg returns timestamptz as aware datetimes (in the session's time
# zone), which is all the health rules and the collector need (they compare instants and
# take .timestamp()); UTCDateTime's per-value conversion was a third of the read at 10,000
# integrations.
SUMMARY_SNAPSHOT_STATEMENT = text(
    f"""
    SELECT i.org_id, o.name AS org_name, i.connector, i.active, i.stale_after_seconds,
           i.created_at, i.last_success_at, g.running_since, p.pending_records,
           p.oldest_pending_at, r.status, r.started_at, r.finished_at, r.records_total,
           r.records_failed, j.rejected_records, i.expected_interval_seconds,
           r.id AS last_run_id, substr(r.error_code, 1, {CODE_PREFIX}) AS error_code,
           substr(r.error_message, 1, {MESSAGE_PREFIX}) AS error_message,
           i.runs_succeeded_total, i.runs_partial_total,
           i.runs_failed_total, i.records_failed_total
    FROM sync_integration AS i
    LEFT JOIN sync_organization AS o ON o.id = i.org_id
    LEFT JOIN LATERAL (SELECT id, status, started_at, finished_at, records_total,
                              records_failed, error_code, error_message
                       FROM sync_run WHERE id = i.last_run_id OFFSET 0) AS r ON true
    LEFT JOIN (SELECT org_id, connector, count(*) AS pending_records,
                      min(enqueued_at) AS oldest_pending_at
               FROM sync_record WHERE state = 'pending'
               GROUP BY org_id, connector) AS p
           ON p.org_id = i.org_id AND p.connector = i.connector
    LEFT JOIN (SELECT org_id, connector, count(*) AS rejected_records
               FROM sync_record WHERE state = 'rejected'
               GROUP BY org_id, connector) AS j
           ON j.org_id = i.org_id AND j.connector = i.connector
    LEFT JOIN (SELECT org_id, connector, min(started_at) AS running_since
               FROM sync_run WHERE status = 'running'
               GROUP BY org_id, connector) AS g
           ON g.org_id = i.org_id AND g.connector = i.connector
    ORDER BY i.org_id, i.connector
    """
)
_UNDEFINED_COLUMN = "42703"

# The failed records of every integration's last finished run, grouped by what the
# accounting system answered, for the classifier (cleaning.classify_failures). Joined on
# the last runs' ids, so the cost follows the failed records of those runs alone, through
# ix_sync_record_error_run, not the length of the history. On PostgreSQL the same LATERAL
# fence as above keeps it an index probe per integration: as a plain join the planner
# chose a hash join over every error row ever written (110 ms instead of 2 ms). Long codes
# and messages are cut here, so a megabyte-long message never crosses the wire, and
# identical answers arrive as one row with a count.
_ERROR_CODE = func.substr(RecordError.error_code, 1, CODE_PREFIX)
_ERROR_MESSAGE = func.substr(RecordError.error_message, 1, MESSAGE_PREFIX)
LAST_RUN_ERRORS = (
    select(RecordError.run_id, _ERROR_CODE, _ERROR_MESSAGE, func.count())
    .where(RecordError.run_id.in_(select(_last_finished_run_id()).select_from(Integration)))
    .group_by(RecordError.run_id, _ERROR_CODE, _ERROR_MESSAGE)
)
SUMMARY_LAST_RUN_ERRORS = text(
    f"""
    SELECT e.run_id, substr(e.error_code, 1, {CODE_PREFIX}),
           substr(e.error_message, 1, {MESSAGE_PREFIX}), count(*)
    FROM sync_integration AS i
    CROSS JOIN LATERAL (SELECT run_id, error_code, error_message FROM sync_record_error AS e
                        WHERE e.run_id = i.last_run_id OFFSET 0) AS e
    GROUP BY 1, 2, 3
    """
)


# Records the contract has no state for, to report them (an index keeps this free; see schema).
UNKNOWN_RECORD_STATES = (
    select(Record.org_id, Record.connector, Record.state, func.count())
    .where(text(UNKNOWN_RECORD_STATE))
    .group_by(Record.org_id, Record.connector, Record.state)
    .order_by(Record.org_id, Record.connector, Record.state)
)


class SnapshotReader:
    """Reads snapshots of one sync log, and owns what it learned about that database.

    It remembers whether the schema has the summary columns of migrations 0002 and 0005
    (a hand-made or older PostgreSQL schema may not: it then gets the per-integration
    lookups from the first failure on, without a failed statement per refresh), and it
    tracks its engine's
    connections so that a read past ``deadline`` seconds is cut off (source/deadline.py).
    ``classifier`` (built from the config's ``classification.rules``) sorts the last runs'
    failures into error classes here, once per refresh, so a scrape never classifies.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        deadline: float | None = None,
        classifier: Classifier = DEFAULT_CLASSIFIER,
    ) -> None:
        self.engine = engine
        self.classifier = classifier
        self._deadline = deadline
        # Only a reader with a deadline tracks connections: the tracker listens on the
        # engine for as long as the engine lives, and one-off readers (read_snapshot) would
        # otherwise add a listener per read.
        self._tracker = ConnectionTracker(engine) if deadline is not None else None
        self._summary = engine.dialect.name == "postgresql"

    def read(self, now: datetime | None = None) -> Snapshot:
        """Every integration's facts in one statement (one consistent view), the last
        runs' failed records by answer in a second, and outbox records in unknown states in
        a third: three statements whatever the number of integrations."""
        if self._deadline is None or self._tracker is None:
            return self._read(now)
        return with_deadline(lambda: self._read(now), self._deadline, self._tracker)

    def abort(self) -> int:
        """Cut off every open connection (a stop must not wait for a blocked read)."""
        return self._tracker.abort() if self._tracker is not None else 0

    def _read(self, now: datetime | None) -> Snapshot:
        with self.engine.connect() as connection:
            rows = self._rows(connection)
            errors = connection.execute(
                SUMMARY_LAST_RUN_ERRORS if self._summary else LAST_RUN_ERRORS
            ).all()
            unknown = connection.execute(UNKNOWN_RECORD_STATES).all()
        read_at = now or utcnow()
        # A run whose id changed between the two statements (a run finished in between) finds
        # no failures under its id: it shows none until the next refresh, never another's.
        failures = classify_failures(errors, self.classifier)
        # Rows from a sloppy writer are repaired or skipped one by one (source/cleaning.py).
        integrations, problems = sanitize(
            rows, read_at, classifier=self.classifier, failures=failures
        )
        return Snapshot(
            read_at=read_at,
            integrations=integrations,
            problems=(*problems, *unknown_record_states(unknown)),
        )

    def _rows(self, connection: Connection) -> Sequence[Any]:
        if not self._summary:
            return connection.execute(SNAPSHOT_STATEMENT).all()
        try:
            return connection.execute(SUMMARY_SNAPSHOT_STATEMENT).all()
        except ProgrammingError as exc:
            if getattr(exc.orig, "sqlstate", None) != _UNDEFINED_COLUMN:
                raise
            connection.rollback()
            self._summary = False
            return connection.execute(SNAPSHOT_STATEMENT).all()


def read_snapshot(
    engine: Engine, now: datetime | None = None, classifier: Classifier = DEFAULT_CLASSIFIER
) -> Snapshot:
    """One snapshot, read by a reader made for the occasion (tests, benchmarks, tools)."""
    return SnapshotReader(engine, classifier=classifier).read(now)


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    run_id: int
    connector: str
    record_type: str
    record_ref: str
    error_code: str | None
    error_message: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class RunSummary:
    id: int
    connector: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    records_total: int
    records_failed: int
    error_message: str | None


def last_run_errors_statement(org_id: str, limit: int | None = None) -> Select[Any]:
    """The failed records of each of the organization's connectors' last finished run,
    newest first, as ``ErrorDetail`` columns: one definition for the status page's list
    (bounded) and for the reference the dashboards' SQL is tested against."""
    run_ids = (
        select(_last_finished_run_id()).select_from(Integration).where(Integration.org_id == org_id)
    )
    return (
        select(*_columns(RecordError, ErrorDetail))
        .where(RecordError.org_id == org_id, RecordError.run_id.in_(run_ids))
        .order_by(RecordError.occurred_at.desc(), RecordError.id.desc())
        .limit(limit)
    )


def last_run_errors(engine: Engine, org_id: str) -> list[ErrorDetail]:
    """The failed records of each of the organization's connectors' last finished run."""
    with engine.connect() as connection:
        return [ErrorDetail(*row) for row in connection.execute(last_run_errors_statement(org_id))]


def run_history(engine: Engine, org_id: str, limit: int = 50) -> list[RunSummary]:
    """The organization's runs, newest first: the reference the org dashboard's runs table
    (raw SQL in Grafana) is tested against, so the two cannot disagree about what a run is."""
    statement = (
        select(*_columns(Run, RunSummary))
        .where(Run.org_id == org_id)
        .order_by(Run.started_at.desc(), Run.id.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        return [RunSummary(*row) for row in connection.execute(statement)]


def _columns(model: Any, result: Any) -> list[Any]:
    """The model's columns named like the result dataclass's fields, in their order."""
    return [getattr(model, item.name) for item in fields(result)]


def organizations(engine: Engine) -> list[tuple[str, str]]:
    """Every organization (slug, display name), by slug: what per-tenant setups start from."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(Organization.id, Organization.name).order_by(Organization.id)
        ).all()
    return [(row[0], row[1]) for row in rows]
