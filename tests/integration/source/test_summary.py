"""The last-run summary that migration 0002 keeps on sync_integration stays exact.

On PostgreSQL the snapshot reads each integration's last finished run and last success
from columns a trigger maintains, instead of looking them up in the run history. After
every kind of write a pipeline (or an operator) can make, the snapshot must equal the
one computed from the history itself by the per-integration lookups.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, delete, text, update

from exporter.source.cleaning import sanitize
from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.migrate import upgrade
from exporter.source.pipeline import Pipeline
from exporter.source.reader import SNAPSHOT_STATEMENT, read_snapshot
from exporter.source.schema import Run

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(pg_url):  # type: ignore[no-untyped-def]
    engine = create_sync_log_engine(normalize_url(pg_url))
    upgrade(engine)
    pipeline = Pipeline(engine)
    for org in ("hlf", "blindeforbundet"):
        for connector in ("xledger", "dynamics"):
            pipeline.register(org, org.upper(), connector, created_at=T0 - timedelta(days=9))
    yield engine
    engine.dispose()


def _from_history(engine: Engine):  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        rows = connection.execute(SNAPSHOT_STATEMENT).all()
    return sanitize(rows, T0)[0]


def _assert_summary_exact(engine: Engine) -> None:
    assert read_snapshot(engine, now=T0).integrations == _from_history(engine)


def _run(pipeline: Pipeline, org: str, status: str, hours: float, failed: int = 0) -> int:
    finished = T0 - timedelta(hours=hours)
    return pipeline.add_finished_run(
        org,
        "xledger",
        status,
        started_at=finished - timedelta(minutes=2),
        finished_at=finished,
        records_total=10,
        records_failed=failed,
    )


def test_the_summary_is_used_and_filled_in(engine):
    with engine.connect() as connection:
        columns = connection.execute(
            text(
                "SELECT count(*) FROM information_schema.columns WHERE table_name ="
                " 'sync_integration' AND column_name IN ('last_run_id', 'last_success_at')"
            )
        ).scalar_one()
    assert columns == 2
    pipeline = Pipeline(engine)
    newest = _run(pipeline, "hlf", "partial", 1, failed=2)
    _run(pipeline, "hlf", "succeeded", 5)
    with engine.connect() as connection:
        stored = connection.execute(
            text(
                "SELECT last_run_id, last_success_at FROM sync_integration"
                " WHERE org_id = 'hlf' AND connector = 'xledger'"
            )
        ).one()
    assert stored == (newest, T0 - timedelta(hours=1))
    _assert_summary_exact(engine)


def test_out_of_order_finishes_ties_and_failures(engine):
    pipeline = Pipeline(engine)
    _run(pipeline, "hlf", "succeeded", 3)
    _run(pipeline, "hlf", "failed", 1)  # newest: a failure, so last success stays older
    _run(pipeline, "hlf", "partial", 2, failed=1)  # written late, finished earlier
    _assert_summary_exact(engine)
    _run(pipeline, "blindeforbundet", "succeeded", 4)
    _run(pipeline, "blindeforbundet", "failed", 4)  # same finish time: the higher id wins
    _assert_summary_exact(engine)
    facts = {f.key: f for f in read_snapshot(engine, now=T0).integrations}
    assert facts[("blindeforbundet", "xledger")].last_run_status == "failed"
    assert facts[("hlf", "xledger")].last_success_at == T0 - timedelta(hours=2)


def test_running_runs_finishing_and_corrections(engine):
    pipeline = Pipeline(engine)
    _run(pipeline, "hlf", "succeeded", 6)
    running = pipeline.start_run("hlf", "xledger", at=T0 - timedelta(minutes=30))
    _assert_summary_exact(engine)  # a running run is never the last run
    pipeline.finish_run(running, "partial", records_total=5, records_failed=1, at=T0)
    _assert_summary_exact(engine)
    with engine.begin() as connection:  # an operator corrects the status afterwards
        connection.execute(update(Run).where(Run.id == running).values(status="failed"))
    _assert_summary_exact(engine)
    with engine.begin() as connection:  # and then moves the run back to running
        connection.execute(
            update(Run).where(Run.id == running).values(status="running", finished_at=None)
        )
    _assert_summary_exact(engine)
    with engine.begin() as connection:  # or to another integration
        connection.execute(
            update(Run)
            .where(Run.org_id == "hlf", Run.connector == "xledger")
            .values(connector="dynamics")
        )
    _assert_summary_exact(engine)


def test_deletes_and_truncate(engine):
    pipeline = Pipeline(engine)
    _run(pipeline, "hlf", "succeeded", 5)
    newest = _run(pipeline, "hlf", "succeeded", 1)
    with engine.begin() as connection:
        connection.execute(delete(Run).where(Run.id == newest))
    _assert_summary_exact(engine)
    pipeline.remove_integration("blindeforbundet", "xledger")
    _assert_summary_exact(engine)
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE sync_record_error, sync_run"))
    _assert_summary_exact(engine)
    facts = {f.key: f for f in read_snapshot(engine, now=T0).integrations}
    assert facts[("hlf", "xledger")].last_run_status is None
