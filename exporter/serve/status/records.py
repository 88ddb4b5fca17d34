"""The one database read a status page view makes: an organization's record lists.

Everything else on the pages comes from the snapshot being served. The lists are bounded
(the newest ``limit`` of each), read in one read-only transaction on the exporter's own
engine (its login role, its server-side statement timeout), and classified with the same
error-class table as the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, select, text, tuple_

from exporter.classification import Classifier
from exporter.source.reader import ErrorDetail, last_run_errors_statement
from exporter.source.schema import Record, RecordError

LIMIT = 100


@dataclass(frozen=True, slots=True)
class RecordRow:
    connector: str
    record_type: str
    record_ref: str
    at: datetime | None  # when it failed (a failed record) or was given up on (rejected)
    error_code: str | None
    error_message: str | None
    error_class: str | None


@dataclass(frozen=True, slots=True)
class OrgRecords:
    failed: tuple[RecordRow, ...] = ()  # the last finished run's failed records, newest first
    rejected: tuple[RecordRow, ...] = ()  # records in state 'rejected', newest first
    limit: int = LIMIT
    error: str | None = None  # why the lists could not be read; the page still shows


def read_org_records(
    engine: Engine, org_id: str, classifier: Classifier, limit: int = LIMIT
) -> OrgRecords:
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            # Defence in depth beside the read-only role: this transaction cannot write.
            connection.execute(text("SET TRANSACTION READ ONLY"))
        failed = _failed(connection, org_id, classifier, limit)
        rejected = _rejected(connection, org_id, classifier, limit)
        connection.rollback()
    return OrgRecords(failed=failed, rejected=rejected, limit=limit)


def _failed(
    connection: Connection, org_id: str, classifier: Classifier, limit: int
) -> tuple[RecordRow, ...]:
    rows = connection.execute(last_run_errors_statement(org_id, limit))
    return tuple(
        RecordRow(
            connector=detail.connector,
            record_type=detail.record_type,
            record_ref=detail.record_ref,
            at=detail.occurred_at,
            error_code=detail.error_code,
            error_message=detail.error_message,
            error_class=classifier.classify(detail.error_code, detail.error_message),
        )
        for detail in (ErrorDetail(*row) for row in rows)
    )


def _rejected(
    connection: Connection, org_id: str, classifier: Classifier, limit: int
) -> tuple[RecordRow, ...]:
    records = connection.execute(
        select(Record.connector, Record.record_type, Record.record_ref, Record.updated_at)
        .where(Record.org_id == org_id, Record.state == "rejected")
        .order_by(Record.updated_at.desc(), Record.id.desc())
        .limit(limit)
    ).all()
    if not records:
        return ()
    # The latest error of each of those (at most ``limit``) records, through ix_sync_record_ref.
    keys = {(row[0], row[1], row[2]) for row in records}
    latest: dict[tuple[str, str, str], tuple[str | None, str | None]] = {}
    errors = connection.execute(
        select(
            RecordError.connector,
            RecordError.record_type,
            RecordError.record_ref,
            RecordError.error_code,
            RecordError.error_message,
        )
        .where(
            RecordError.org_id == org_id,
            tuple_(RecordError.record_type, RecordError.record_ref).in_(
                sorted({(key[1], key[2]) for key in keys})
            ),
        )
        .order_by(RecordError.occurred_at.desc(), RecordError.id.desc())
    )
    for connector, record_type, record_ref, code, message in errors:
        latest.setdefault((connector, record_type, record_ref), (code, message))
    rows = []
    for connector, record_type, record_ref, updated_at in records:
        found = latest.get((connector, record_type, record_ref), (None, None))
        error_class = classifier.classify(*found) if found[1] is not None else None
        rows.append(RecordRow(connector, record_type, record_ref, updated_at, *found, error_class))
    return tuple(rows)
