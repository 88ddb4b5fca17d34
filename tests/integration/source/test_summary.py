"""The summary that triggers keep on sync_integration stays exact (migrations 0002, 0005).

On PostgreSQL the snapshot reads each integration's last finished run, last success and
run counters' totals from columns that statement-level triggers maintain, instead of
looking them up in the run history. After every kind of write a pipeline (or an operator)
can make, the last-run facts must equal the ones computed from the history itself by the
per-integration lookups. The totals are counters: while the history only grows they equal
its counts; corrections, deletes and TRUNCATE never take them back.
"""

from __future__ import annotations

import random
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from alembic import command
from sqlalchemy import Engine, delete, text, update

from exporter.model import IntegrationFacts
from exporter.source.cleaning import sanitize
from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.migrate import alembic_config, current_revision, head_revision, upgrade
from exporter.source.pipeline import Pipeline
from exporter.source.reader import SNAPSHOT_STATEMENT, SnapshotReader, read_snapshot
from exporter.source.schema import TRIGGER_MAINTAINED_COLUMNS, Run
from tests.support import wait_until

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


def _last_runs(facts: tuple[IntegrationFacts, ...]) -> tuple[IntegrationFacts, ...]:
    """The facts without the counters' totals (which history edits do not take back)."""
    return tuple(replace(f, runs_finished_total=(), records_failed_total=0) for f in facts)


def _assert_summary_exact(engine: Engine) -> None:
    """The last-run facts equal the history's."""
    summary = read_snapshot(engine, now=T0).integrations
    assert _last_runs(summary) == _last_runs(_from_history(engine))


def _assert_all_exact(engine: Engine) -> None:
    """For a history that only grew: every fact, totals included, equals the history's."""
    assert read_snapshot(engine, now=T0).integrations == _from_history(engine)


def _totals(engine: Engine) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    """(succeeded, partial, failed, records failed) per integration, as the snapshot says."""
    return {
        f.key: (*(count for _, count in f.runs_finished_total), f.records_failed_total)
        for f in read_snapshot(engine, now=T0).integrations
    }


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
                " 'sync_integration' AND column_name = ANY(:names)"
            ),
            {"names": list(TRIGGER_MAINTAINED_COLUMNS)},
        ).scalar_one()
    assert columns == len(TRIGGER_MAINTAINED_COLUMNS) == 6
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
    assert _totals(engine)[("hlf", "xledger")] == (1, 1, 0, 2)
    _assert_all_exact(engine)


def test_out_of_order_finishes_ties_and_failures(engine):
    pipeline = Pipeline(engine)
    _run(pipeline, "hlf", "succeeded", 3)
    _run(pipeline, "hlf", "failed", 1)  # newest: a failure, so last success stays older
    _run(pipeline, "hlf", "partial", 2, failed=1)  # written late, finished earlier
    _assert_all_exact(engine)
    _run(pipeline, "blindeforbundet", "succeeded", 4)
    _run(pipeline, "blindeforbundet", "failed", 4)  # same finish time: the higher id wins
    _assert_all_exact(engine)
    facts = {f.key: f for f in read_snapshot(engine, now=T0).integrations}
    assert facts[("blindeforbundet", "xledger")].last_run_status == "failed"
    assert facts[("hlf", "xledger")].last_success_at == T0 - timedelta(hours=2)


def test_running_runs_finishing_and_corrections(engine):
    pipeline = Pipeline(engine)
    _run(pipeline, "hlf", "succeeded", 6)
    running = pipeline.start_run("hlf", "xledger", at=T0 - timedelta(minutes=30))
    _assert_all_exact(engine)  # a running run is never the last run, nor counted
    assert _totals(engine)[("hlf", "xledger")] == (1, 0, 0, 0)
    pipeline.finish_run(running, "partial", records_total=5, records_failed=1, at=T0)
    _assert_all_exact(engine)
    assert _totals(engine)[("hlf", "xledger")] == (1, 1, 0, 1)
    with engine.begin() as connection:  # an operator corrects the status afterwards
        connection.execute(update(Run).where(Run.id == running).values(status="failed"))
    _assert_summary_exact(engine)
    # The run was counted when it finished; a correction does not count it again.
    assert _totals(engine)[("hlf", "xledger")] == (1, 1, 0, 1)
    with engine.begin() as connection:  # and then moves the run back to running
        connection.execute(
            update(Run).where(Run.id == running).values(status="running", finished_at=None)
        )
    _assert_summary_exact(engine)
    assert _totals(engine)[("hlf", "xledger")] == (1, 1, 0, 1)
    pipeline.finish_run(running, "failed", records_failed=4, at=T0)  # finishing again counts
    _assert_summary_exact(engine)
    assert _totals(engine)[("hlf", "xledger")] == (1, 1, 1, 5)
    with engine.begin() as connection:  # or to another integration
        connection.execute(
            update(Run)
            .where(Run.org_id == "hlf", Run.connector == "xledger")
            .values(connector="dynamics")
        )
    _assert_summary_exact(engine)
    facts = {f.key: f for f in read_snapshot(engine, now=T0).integrations}
    assert facts[("hlf", "xledger")].last_run_status is None
    assert facts[("hlf", "dynamics")].last_run_status == "failed"
    # Runs that were already finished do not count again where they moved to.
    assert _totals(engine)[("hlf", "dynamics")] == (0, 0, 0, 0)
    assert _totals(engine)[("hlf", "xledger")] == (1, 1, 1, 5)


def test_deletes_and_truncate(engine):
    pipeline = Pipeline(engine)
    _run(pipeline, "hlf", "succeeded", 5)
    newest = _run(pipeline, "hlf", "succeeded", 1)
    _run(pipeline, "hlf", "partial", 3, failed=2)
    before = _totals(engine)[("hlf", "xledger")]
    assert before == (2, 1, 0, 2)
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
    assert facts[("hlf", "xledger")].last_success_at is None
    # Counters: deletes and TRUNCATE never decrease them.
    assert _totals(engine)[("hlf", "xledger")] == before


_BULK_RUNS = """
INSERT INTO sync_run (org_id, connector, started_at, finished_at, status, records_total,
                      records_failed)
SELECT i.org_id, i.connector, :t0 - k * interval '1 hour' - interval '2 minutes',
       :t0 - k * interval '1 hour',
       CASE WHEN k % 5 = 0 THEN 'failed' WHEN k % 3 = 0 THEN 'partial' ELSE 'succeeded' END,
       10, CASE WHEN k % 3 = 0 THEN k % 4 ELSE 0 END
FROM sync_integration AS i CROSS JOIN generate_series(1, :runs) AS k
ORDER BY random()
"""


def _bulk_totals(runs: int) -> tuple[int, int, int, int]:
    """What _BULK_RUNS writes per integration, counted here by its rules."""
    statuses = ["failed" if k % 5 == 0 else "partial" if k % 3 == 0 else "succeeded"
                for k in range(1, runs + 1)]  # fmt: skip
    records = sum(k % 4 for k in range(1, runs + 1) if k % 3 == 0)
    return (*(statuses.count(name) for name in ("succeeded", "partial", "failed")), records)


def test_bulk_inserts_and_multi_row_updates(engine):
    with engine.begin() as connection:  # one statement, every integration, shuffled rows
        connection.execute(text(_BULK_RUNS), {"t0": T0, "runs": 60})
    _assert_all_exact(engine)
    assert _totals(engine)[("hlf", "xledger")] == _bulk_totals(60)
    with engine.begin() as connection:  # move the newest runs of some integrations back
        connection.execute(
            text(
                "UPDATE sync_run SET finished_at = finished_at - interval '3 days'"
                " WHERE finished_at > :since AND connector = 'xledger'"
            ),
            {"since": T0 - timedelta(hours=4)},
        )
    _assert_summary_exact(engine)
    with engine.begin() as connection:  # fail every run of a day, across integrations
        connection.execute(
            text("UPDATE sync_run SET status = 'failed' WHERE finished_at > :since"),
            {"since": T0 - timedelta(hours=24)},
        )
    _assert_summary_exact(engine)
    facts = {f.key: f for f in read_snapshot(engine, now=T0).integrations}
    assert facts[("hlf", "dynamics")].last_run_status == "failed"
    assert facts[("hlf", "dynamics")].last_success_at == T0 - timedelta(hours=24)  # partial, k = 24
    with engine.begin() as connection:  # reopen runs in bulk, then finish them in bulk
        connection.execute(
            text(
                "UPDATE sync_run SET status = 'running', finished_at = NULL"
                " WHERE started_at > :since"
            ),
            {"since": T0 - timedelta(hours=10)},
        )
        connection.execute(
            text(
                "UPDATE sync_run SET status = 'succeeded', finished_at = started_at"
                " + interval '1 minute', records_failed = 1 WHERE status = 'running'"
            )
        )
    _assert_summary_exact(engine)
    # The nine reopened runs of each integration counted again, as succeeded with one
    # failed record each, when they finished the second time.
    succeeded, partial, failed, records = _bulk_totals(60)
    assert _totals(engine)[("hlf", "xledger")] == (succeeded + 9, partial, failed, records + 9)


def _finish_in_thread(url: str, run_ids: list[int], errors: list[BaseException]) -> None:
    try:
        with psycopg.connect(url) as connection:
            for run_id in run_ids:
                connection.execute(
                    "UPDATE sync_run SET status = 'succeeded', finished_at = started_at"
                    " + interval '1 minute', records_failed = 1 WHERE id = %s",
                    (run_id,),
                )
    except BaseException as exc:  # reported by the test
        errors.append(exc)


@pytest.mark.parametrize("first_is_newer", [True, False], ids=["newer-first", "older-first"])
def test_two_pipelines_finishing_runs_of_one_integration_record_the_newer(
    engine, pg_url, first_is_newer
):
    """The second writer waits for the first's lock, then sees its committed run."""
    newer, older = T0, T0 - timedelta(hours=1)
    first_at, second_at = (newer, older) if first_is_newer else (older, newer)
    insert = (
        "INSERT INTO sync_run (org_id, connector, started_at, finished_at, status,"
        " records_failed) VALUES ('hlf', 'xledger', %s, %s, 'succeeded', %s) RETURNING id"
    )
    with psycopg.connect(pg_url) as first, psycopg.connect(pg_url, autocommit=True) as admin:
        first_id = first.execute(insert, (first_at, first_at, 1)).fetchone()[0]  # type: ignore[index]
        result: dict[str, int] = {}

        def second() -> None:
            with psycopg.connect(pg_url) as connection:
                row = connection.execute(insert, (second_at, second_at, 2)).fetchone()
                result["id"] = row[0] if row else 0

        thread = threading.Thread(target=second)
        thread.start()
        wait_until(
            lambda: admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            ).fetchone()[0],  # type: ignore[index]
            what="the second writer waiting for the integration's lock",
        )
        first.commit()
        thread.join(timeout=30)
    assert not thread.is_alive()
    expected = first_id if first_is_newer else result["id"]
    facts = {f.key: f for f in read_snapshot(engine, now=T0 + timedelta(hours=1)).integrations}
    with engine.connect() as connection:
        stored = connection.execute(
            text(
                "SELECT last_run_id FROM sync_integration WHERE org_id = 'hlf'"
                " AND connector = 'xledger'"
            )
        ).scalar_one()
    assert stored == expected
    assert facts[("hlf", "xledger")].last_run_finished_at == newer
    assert facts[("hlf", "xledger")].records_failed_total == 3  # both counted, once each


def test_concurrent_writers_over_overlapping_integrations_do_not_deadlock(engine, pg_url):
    """Four writers finish runs of the same four integrations, each statement touching
    them in its own shuffled order; the old row trigger locked them in row order."""
    shuffler = random.Random(11)
    with engine.begin() as connection:
        ids = list(
            connection.execute(
                text(
                    "INSERT INTO sync_run (org_id, connector, started_at, status)"
                    " SELECT i.org_id, i.connector, :t0 - k * interval '1 minute', 'running'"
                    " FROM sync_integration AS i CROSS JOIN generate_series(1, 40) AS k"
                    " RETURNING id"
                ),
                {"t0": T0},
            ).scalars()
        )
    shuffler.shuffle(ids)
    errors: list[BaseException] = []
    threads = []
    for writer in range(4):
        mine = ids[writer::4]
        batches = [mine[n : n + 8] for n in range(0, len(mine), 8)]

        def work(batches: list[list[int]] = batches) -> None:
            try:
                with psycopg.connect(pg_url, autocommit=True) as connection:
                    for batch in batches:
                        connection.execute(
                            "UPDATE sync_run SET status = 'succeeded', records_failed = 1,"
                            " finished_at = started_at + interval '1 minute'"
                            " WHERE id = ANY(%s)",
                            (batch,),
                        )
            except BaseException as exc:  # reported by the test
                errors.append(exc)

        threads.append(threading.Thread(target=work))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    _assert_all_exact(engine)
    assert set(_totals(engine).values()) == {(40, 0, 0, 40)}


def _alembic(engine: Engine, action: str, revision: str) -> None:
    # Alembic owns the transactions (one per migration), as in migrate.upgrade/downgrade.
    config = alembic_config(engine)
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def test_the_migration_upgrades_a_database_in_place_and_downgrades(pg_url):
    engine = create_sync_log_engine(normalize_url(pg_url))
    try:
        upgrade(engine, "0004_unknown_record_states")
        pipeline = Pipeline(engine)
        pipeline.register("hlf", "HLF", "xledger", created_at=T0 - timedelta(days=9))
        pipeline.register("hlf", "HLF", "dynamics", created_at=T0 - timedelta(days=9))
        with engine.begin() as connection:
            connection.execute(text(_BULK_RUNS), {"t0": T0, "runs": 30})
        pipeline.start_run("hlf", "dynamics", at=T0)
        upgrade(engine)  # the totals start from the existing history
        history = _from_history(engine)  # the history itself, through the index lookups
        assert current_revision(engine) == head_revision()
        assert read_snapshot(engine, now=T0).integrations == history
        assert _totals(engine)[("hlf", "xledger")] == _bulk_totals(30)
        with engine.connect() as connection:
            triggers = set(
                connection.execute(
                    text(
                        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'sync_run'::regclass"
                        " AND NOT tgisinternal"
                    )
                ).scalars()
            )
        assert "sync_run_last_run" not in triggers  # the row trigger is gone
        _alembic(engine, "downgrade", "0004_unknown_record_states")
        with engine.connect() as connection:
            left = connection.execute(
                text(
                    "SELECT count(*) FROM information_schema.columns"
                    " WHERE table_name = 'sync_integration' AND column_name LIKE '%_total'"
                )
            ).scalar_one()
        assert left == 0
        # 0002's row trigger is back and keeps the last run. (The exporter reads a schema
        # at head only: 0006's columns are gone at 0004, so the snapshot is read after the
        # upgrade below, which rebuilds the totals from the history.)
        newest = _run(pipeline, "hlf", "failed", -0.5)
        with engine.connect() as connection:
            assert (
                connection.execute(
                    text("SELECT last_run_id FROM sync_integration WHERE connector = 'xledger'")
                ).scalar_one()
                == newest
            )
        upgrade(engine)
        reader = SnapshotReader(engine)
        facts = {f.key: f for f in reader.read(now=T0 + timedelta(hours=1)).integrations}
        assert facts[("hlf", "xledger")].last_run_status == "failed"
        assert facts[("hlf", "xledger")].runs_finished_total[2] == ("failed", 7)  # 6 + 1
        succeeded, partial, failed, records = _bulk_totals(30)
        assert _totals(engine)[("hlf", "xledger")] == (succeeded, partial, failed + 1, records)
    finally:
        engine.dispose()
