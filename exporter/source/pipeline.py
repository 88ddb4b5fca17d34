"""The writer API: how a sync pipeline written in Python records its work in the sync log.

Each method is one transaction, so the sync log never holds half a step; a pipeline in any
other language makes the same statements (docs/pipeline.md). The demo, the tests and the
benchmarks write through this class too, so it is exercised on both back ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine, and_, delete, insert, select, update

from exporter.source.schema import Integration, Organization, Record, RecordError, Run


def utcnow() -> datetime:
    return datetime.now(UTC)


class Pipeline:
    """The writes a sync pipeline makes, each in its own transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register(
        self,
        org_id: str,
        name: str,
        connector: str,
        *,
        active: bool = True,
        stale_after_seconds: int = 86400,
        expected_interval_seconds: int | None = None,
        created_at: datetime | None = None,
    ) -> None:
        """Create or update an organization and one of its integrations.

        ``expected_interval_seconds`` is how often the pipeline means to finish a run
        (None when it has no schedule): the exporter publishes it so a late pipeline is
        noticed after two intervals instead of at the 24-hour red.
        """
        with self.engine.begin() as connection:
            if connection.execute(select(Organization.id).where(Organization.id == org_id)).first():
                connection.execute(
                    update(Organization).where(Organization.id == org_id).values(name=name)
                )
            else:
                connection.execute(insert(Organization).values(id=org_id, name=name))
            key = and_(Integration.org_id == org_id, Integration.connector == connector)
            values: dict[str, object] = {
                "active": active,
                "stale_after_seconds": stale_after_seconds,
                "expected_interval_seconds": expected_interval_seconds,
            }
            if connection.execute(select(Integration.org_id).where(key)).first():
                connection.execute(update(Integration).where(key).values(**values))
            else:
                # The optional columns (migration 0006) are written only when given, so a
                # pipeline that never uses them also writes a sync log from before them.
                values = _given(values, "expected_interval_seconds")
                connection.execute(
                    insert(Integration).values(
                        org_id=org_id,
                        connector=connector,
                        created_at=created_at or utcnow(),
                        **values,
                    )
                )

    def remove_integration(self, org_id: str, connector: str) -> None:
        """Delete an integration with its runs, records and errors."""
        with self.engine.begin() as connection:
            for table in (RecordError, Record, Run):
                connection.execute(
                    delete(table).where(table.org_id == org_id, table.connector == connector)
                )
            connection.execute(
                delete(Integration).where(
                    Integration.org_id == org_id, Integration.connector == connector
                )
            )

    def enqueue(
        self,
        org_id: str,
        connector: str,
        records: Iterable[tuple[str, str]],
        at: datetime | None = None,
    ) -> list[int]:
        """Add approved records (record_type, record_ref) to the outbox as pending."""
        when = at or utcnow()
        rows = [
            {
                "org_id": org_id,
                "connector": connector,
                "record_type": record_type,
                "record_ref": record_ref,
                "state": "pending",
                "enqueued_at": when,
                "updated_at": when,
            }
            for record_type, record_ref in records
        ]
        if not rows:
            return []
        with self.engine.begin() as connection:
            result = connection.execute(insert(Record).returning(Record.id), rows)
            return [row[0] for row in result]

    def pending(self, org_id: str, connector: str, limit: int = 100) -> list[int]:
        with self.engine.connect() as connection:
            return list(
                connection.scalars(
                    select(Record.id)
                    .where(
                        Record.org_id == org_id,
                        Record.connector == connector,
                        Record.state == "pending",
                    )
                    .order_by(Record.enqueued_at, Record.id)
                    .limit(limit)
                )
            )

    def start_run(self, org_id: str, connector: str, at: datetime | None = None) -> int:
        with self.engine.begin() as connection:
            return int(
                connection.execute(
                    insert(Run)
                    .values(
                        org_id=org_id,
                        connector=connector,
                        started_at=at or utcnow(),
                        status="running",
                    )
                    .returning(Run.id)
                ).scalar_one()
            )

    def record_failure(
        self,
        run_id: int,
        record_id: int,
        error_message: str,
        *,
        error_code: str | None = None,
        give_up: bool = False,
        at: datetime | None = None,
    ) -> None:
        """Log a record's failure in a run; it stays pending for a retry unless given up."""
        when = at or utcnow()
        with self.engine.begin() as connection:
            record = connection.execute(select(Record).where(Record.id == record_id)).one()
            connection.execute(
                insert(RecordError).values(
                    run_id=run_id,
                    org_id=record.org_id,
                    connector=record.connector,
                    record_type=record.record_type,
                    record_ref=record.record_ref,
                    error_code=error_code,
                    error_message=error_message,
                    occurred_at=when,
                )
            )
            connection.execute(
                update(Record)
                .where(Record.id == record_id)
                .values(state="rejected" if give_up else "pending", updated_at=when)
            )

    def mark_synced(self, record_ids: Sequence[int], at: datetime | None = None) -> None:
        if not record_ids:
            return
        with self.engine.begin() as connection:
            connection.execute(
                update(Record)
                .where(Record.id.in_(record_ids))
                .values(state="synced", updated_at=at or utcnow())
            )

    def finish_run(
        self,
        run_id: int,
        status: str,
        *,
        records_total: int = 0,
        records_failed: int = 0,
        error_message: str | None = None,
        error_code: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """End a run; a failed one carries the accounting system's answer (``error_code``,
        ``error_message``), from which the exporter reads its error class."""
        with self.engine.begin() as connection:
            connection.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(
                    **_given(
                        {
                            "status": status,
                            "finished_at": at or utcnow(),
                            "records_total": records_total,
                            "records_failed": records_failed,
                            "error_message": error_message,
                            "error_code": error_code,
                        },
                        "error_code",
                    )
                )
            )

    def add_finished_run(
        self,
        org_id: str,
        connector: str,
        status: str,
        *,
        started_at: datetime,
        finished_at: datetime,
        records_total: int = 0,
        records_failed: int = 0,
        error_message: str | None = None,
        error_code: str | None = None,
    ) -> int:
        """A whole run written at once: what tests and benchmarks use to lay down history."""
        with self.engine.begin() as connection:
            return int(
                connection.execute(
                    insert(Run)
                    .values(
                        **_given(
                            {
                                "org_id": org_id,
                                "connector": connector,
                                "status": status,
                                "started_at": started_at,
                                "finished_at": finished_at,
                                "records_total": records_total,
                                "records_failed": records_failed,
                                "error_message": error_message,
                                "error_code": error_code,
                            },
                            "error_code",
                        )
                    )
                    .returning(Run.id)
                ).scalar_one()
            )


def _given(values: dict[str, object], *optional: str) -> dict[str, object]:
    """``values`` without the optional columns that are None (they default to NULL)."""
    return {k: v for k, v in values.items() if k not in optional or v is not None}
