"""The snapshot reader against real databases (SQLite and PostgreSQL, via the ``engine`` fixture).

What the exporter believes about each integration comes from ``read_snapshot``; these
tests write a history with the pipeline's own writes and check the facts derived from it,
that the read costs the same number of statements for 1 or 50 organizations, and that
each pipeline write is all-or-nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, delete, event, func, select, text
from sqlalchemy.exc import IntegrityError

from exporter.health import evaluate_snapshot
from exporter.model import Health, IntegrationFacts
from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.migrate import upgrade
from exporter.source.pipeline import Pipeline
from exporter.source.reader import last_run_errors, read_snapshot, run_history
from exporter.source.schema import Integration, Organization, Record, RecordError, Run

NOW = datetime.now(UTC).replace(microsecond=0)


def ago(**kwargs: float) -> datetime:
    return NOW - timedelta(**kwargs)


@pytest.fixture
def pipeline(engine: Engine) -> Pipeline:
    return Pipeline(engine)


def only(engine: Engine, org_id: str, connector: str) -> IntegrationFacts:
    found = [f for f in read_snapshot(engine).integrations if f.key == (org_id, connector)]
    assert len(found) == 1, found
    return found[0]


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


# --- snapshot facts --------------------------------------------------------------------------


def test_a_new_integration_has_no_runs_and_nothing_pending(engine: Engine, pipeline: Pipeline):
    pipeline.register("hlf", "Hørselshemmedes Landsforbund", "dynamics", created_at=ago(hours=2))
    f = only(engine, "hlf", "dynamics")
    assert (f.org_name, f.active, f.stale_after_seconds) == (
        "Hørselshemmedes Landsforbund",
        True,
        86400,
    )
    assert f.created_at == ago(hours=2)
    assert (f.pending_records, f.oldest_pending_at) == (0, None)
    assert (f.last_run_status, f.last_run_finished_at, f.last_success_at) == (None, None, None)
    assert (f.last_run_records_total, f.last_run_records_failed, f.running_since) == (0, 0, None)


def test_pending_counts_only_pending_records_and_finds_the_oldest(
    engine: Engine, pipeline: Pipeline
):
    pipeline.register("hlf", "HLF", "dynamics")
    old = pipeline.enqueue("hlf", "dynamics", [("expense", "E-1"), ("travel", "T-1")], ago(hours=5))
    pipeline.enqueue("hlf", "dynamics", [("invoice", "I-1")], ago(hours=1))
    newer = pipeline.enqueue("hlf", "dynamics", [("expense", "E-2")], ago(minutes=1))
    assert only(engine, "hlf", "dynamics").pending_records == 4
    assert only(engine, "hlf", "dynamics").oldest_pending_at == ago(hours=5)

    pipeline.mark_synced(old)  # the two oldest leave the outbox
    run = pipeline.start_run("hlf", "dynamics")
    pipeline.record_failure(run, newer[0], "rejected by Dynamics", give_up=True)
    f = only(engine, "hlf", "dynamics")
    assert f.pending_records == 1  # synced and rejected records are not pending
    assert f.oldest_pending_at == ago(hours=1)


def test_a_failed_record_stays_pending_for_a_retry(engine: Engine, pipeline: Pipeline):
    pipeline.register("hlf", "HLF", "dynamics")
    ids = pipeline.enqueue("hlf", "dynamics", [("expense", "E-1")], ago(minutes=3))
    run = pipeline.start_run("hlf", "dynamics")
    pipeline.record_failure(run, ids[0], "Vendor V10442 does not exist", error_code="DYN-VENDOR")
    assert only(engine, "hlf", "dynamics").pending_records == 1


def test_last_run_is_the_latest_finished_not_the_latest_started(engine: Engine, pipeline: Pipeline):
    pipeline.register("hlf", "HLF", "dynamics")
    # Started first, finished last: this is the last finished run.
    pipeline.add_finished_run(
        "hlf",
        "dynamics",
        "partial",
        started_at=ago(hours=3),
        finished_at=ago(minutes=10),
        records_total=9,
        records_failed=2,
    )
    pipeline.add_finished_run(
        "hlf",
        "dynamics",
        "succeeded",
        started_at=ago(hours=1),
        finished_at=ago(minutes=50),
        records_total=4,
    )
    f = only(engine, "hlf", "dynamics")
    assert (f.last_run_status, f.last_run_records_total, f.last_run_records_failed) == (
        "partial",
        9,
        2,
    )
    assert (f.last_run_started_at, f.last_run_finished_at) == (ago(hours=3), ago(minutes=10))


def test_a_running_run_is_not_the_last_run(engine: Engine, pipeline: Pipeline):
    pipeline.register("hlf", "HLF", "dynamics")
    pipeline.add_finished_run(
        "hlf", "dynamics", "succeeded", started_at=ago(hours=2), finished_at=ago(hours=1)
    )
    pipeline.start_run("hlf", "dynamics", at=ago(minutes=20))
    pipeline.start_run("hlf", "dynamics", at=ago(minutes=5))
    f = only(engine, "hlf", "dynamics")
    assert (f.last_run_status, f.last_run_finished_at, f.last_success_at) == (
        "succeeded",
        ago(hours=1),
        ago(hours=1),
    )
    assert f.running_since == ago(minutes=20)  # the oldest run still running


def test_partial_counts_as_a_successful_sync_but_failed_does_not(
    engine: Engine, pipeline: Pipeline
):
    pipeline.register("hlf", "HLF", "dynamics")
    pipeline.add_finished_run(
        "hlf", "dynamics", "succeeded", started_at=ago(hours=9), finished_at=ago(hours=8)
    )
    pipeline.add_finished_run(
        "hlf",
        "dynamics",
        "partial",
        started_at=ago(hours=3),
        finished_at=ago(hours=2),
        records_total=5,
        records_failed=1,
    )
    pipeline.add_finished_run(
        "hlf",
        "dynamics",
        "failed",
        started_at=ago(minutes=6),
        finished_at=ago(minutes=5),
        error_message="401 Unauthorized",
    )
    f = only(engine, "hlf", "dynamics")
    assert f.last_success_at == ago(hours=2)  # the partial run
    assert (f.last_run_status, f.last_run_finished_at, f.last_run_records_failed) == (
        "failed",
        ago(minutes=5),
        0,
    )


def test_only_the_last_finished_run_decides_failed_records(engine: Engine, pipeline: Pipeline):
    pipeline.register("hlf", "HLF", "dynamics")
    pipeline.add_finished_run(
        "hlf",
        "dynamics",
        "partial",
        started_at=ago(hours=2),
        finished_at=ago(hours=1),
        records_total=10,
        records_failed=7,
    )
    pipeline.add_finished_run(
        "hlf",
        "dynamics",
        "succeeded",
        started_at=ago(minutes=3),
        finished_at=ago(minutes=2),
        records_total=7,
    )
    assert only(engine, "hlf", "dynamics").last_run_records_failed == 0


def test_integrations_are_kept_apart_and_ordered(engine: Engine, pipeline: Pipeline):
    pipeline.register("hlf", "HLF", "dynamics")
    pipeline.register("hlf", "HLF", "xledger", active=False, stale_after_seconds=3600)
    pipeline.register("blindeforbundet", "Norges Blindeforbund", "xledger")
    pipeline.enqueue("hlf", "xledger", [("expense", "E-1")])
    pipeline.add_finished_run(
        "blindeforbundet", "xledger", "failed", started_at=ago(hours=1), finished_at=ago(hours=1)
    )
    snapshot = read_snapshot(engine)
    assert [f.key for f in snapshot.integrations] == [
        ("blindeforbundet", "xledger"),
        ("hlf", "dynamics"),
        ("hlf", "xledger"),
    ]
    blind, dynamics, xledger = snapshot.integrations
    assert blind.last_run_status == "failed" and blind.pending_records == 0
    assert dynamics.last_run_status is None and dynamics.pending_records == 0
    assert (xledger.active, xledger.stale_after_seconds, xledger.pending_records) == (
        False,
        3600,
        1,
    )


def test_timestamps_are_the_instants_written_whatever_the_zones(engine: Engine, pipeline: Pipeline):
    """Written in Oslo time, read in a session whose zone is Kathmandu: the same instants."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(
                text(f"ALTER DATABASE \"{engine.url.database}\" SET timezone TO 'Asia/Kathmandu'")
            )
        engine.dispose()  # new connections take the database's zone
    oslo = timezone(timedelta(hours=1))
    finished = datetime(2026, 11, 28, 13, 30, 15, 250000, tzinfo=oslo)
    pipeline.register("hlf", "HLF", "dynamics", created_at=finished - timedelta(days=1))
    pipeline.add_finished_run(
        "hlf", "dynamics", "succeeded", started_at=finished, finished_at=finished
    )
    pipeline.enqueue("hlf", "dynamics", [("expense", "E-1")], at=finished)
    f = only(engine, "hlf", "dynamics")
    assert f.last_success_at == finished  # aware datetimes compare as instants
    assert f.last_run_finished_at == finished
    assert f.created_at == finished - timedelta(days=1)
    assert f.oldest_pending_at == finished
    for moment in (f.last_success_at, f.last_run_finished_at, f.created_at, f.oldest_pending_at):
        assert moment is not None and moment.utcoffset() is not None  # never naive
    assert f.last_success_at is not None
    assert (
        f.last_success_at.timestamp() == datetime(2026, 11, 28, 12, 30, 15, 250000, UTC).timestamp()
    )
    assert run_history(engine, "hlf")[0].finished_at == finished


def test_snapshot_and_health_agree_on_every_state(engine: Engine, pipeline: Pipeline):
    """The facts read from a real history put each integration in the state a user expects."""
    pipeline.register("green", "Green", "xledger", created_at=ago(days=30))
    pipeline.add_finished_run(
        "green", "xledger", "succeeded", started_at=ago(minutes=11), finished_at=ago(minutes=10)
    )
    pipeline.register("stale", "Stale", "xledger", created_at=ago(days=30))
    pipeline.add_finished_run(
        "stale", "xledger", "succeeded", started_at=ago(hours=26), finished_at=ago(hours=25)
    )
    pipeline.register("never", "Never", "dynamics", created_at=ago(days=2))
    pipeline.register("new", "New", "dynamics", created_at=ago(hours=1))
    pipeline.register("partial", "Partial", "dynamics", created_at=ago(days=30))
    pipeline.add_finished_run(
        "partial",
        "dynamics",
        "partial",
        started_at=ago(minutes=6),
        finished_at=ago(minutes=5),
        records_total=4,
        records_failed=1,
    )
    pipeline.register("aborted", "Aborted", "xledger", created_at=ago(days=30))
    pipeline.add_finished_run(
        "aborted", "xledger", "succeeded", started_at=ago(hours=2), finished_at=ago(hours=2)
    )
    pipeline.add_finished_run(
        "aborted", "xledger", "failed", started_at=ago(minutes=6), finished_at=ago(minutes=5)
    )
    pipeline.register("inactive", "Inactive", "xledger", active=False, created_at=ago(days=300))
    pipeline.register("busy", "Busy", "xledger", created_at=ago(days=30))
    pipeline.add_finished_run(
        "busy", "xledger", "succeeded", started_at=ago(hours=1), finished_at=ago(hours=1)
    )
    pipeline.start_run("busy", "xledger", at=ago(minutes=1))

    snapshot = read_snapshot(engine, now=NOW)
    health = {s.facts.org_id: s.health for s in evaluate_snapshot(snapshot, NOW)}
    assert health == {
        "green": Health.GREEN,
        "stale": Health.RED,
        "never": Health.RED,
        "new": Health.GREEN,
        "partial": Health.AMBER,
        "aborted": Health.AMBER,
        "inactive": Health.GREEN,
        "busy": Health.GREEN,
    }


# --- cost of the snapshot ----------------------------------------------------------------------


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def populate(pipeline: Pipeline, organizations: int) -> None:
    for n in range(organizations):
        org = f"org-{n:03d}"
        for connector in ("xledger", "dynamics"):
            pipeline.register(org, f"Organization {n}", connector)
            pipeline.enqueue(org, connector, [("expense", f"E-{n}")], ago(minutes=n))
            pipeline.add_finished_run(
                org,
                connector,
                "partial" if n % 3 else "succeeded",
                started_at=ago(minutes=n + 2),
                finished_at=ago(minutes=n + 1),
                records_total=3,
                records_failed=n % 3,
            )
        pipeline.start_run(org, "xledger")


def test_the_snapshot_costs_the_same_statements_for_1_or_50_organizations(engine: Engine):
    def measure(organizations: int) -> tuple[list[str], int]:
        with engine.begin() as connection:  # start from an empty sync log each time
            for table in (RecordError, Record, Run, Integration, Organization):
                connection.execute(delete(table))
        populate(Pipeline(engine), organizations)
        with statements(engine) as seen:
            snapshot = read_snapshot(engine)
        return seen, len(snapshot.integrations)

    one, one_count = measure(1)
    fifty, fifty_count = measure(50)
    assert (one_count, fifty_count) == (2, 100)
    assert len(one) == len(fifty)
    # SQLite's explicit BEGIN aside: one SELECT for every integration's facts, one for the
    # last runs' failed records by answer (classified in Python, not one query per
    # integration), and one for outbox records in unknown states (the problem log).
    queries = [s for s in fifty if s.strip().upper() not in ("BEGIN", "COMMIT", "ROLLBACK")]
    assert len(queries) == 3, queries


# --- error details and history ---------------------------------------------------------------


def failing_run(
    pipeline: Pipeline, org: str, connector: str, refs: list[str], finished: datetime
) -> int:
    ids = pipeline.enqueue(org, connector, [("expense", ref) for ref in refs], finished)
    run = pipeline.start_run(org, connector, at=finished - timedelta(seconds=30))
    for record_id, ref in zip(ids, refs, strict=True):
        pipeline.record_failure(run, record_id, f"{ref} rejected", error_code="X", at=finished)
    pipeline.finish_run(
        run,
        "partial",
        records_total=len(refs) + 1,
        records_failed=len(refs),
        at=finished,
    )
    return run


def test_last_run_errors_are_the_failed_records_of_each_connectors_last_finished_run(
    engine: Engine, pipeline: Pipeline
):
    pipeline.register("hlf", "HLF", "dynamics")
    pipeline.register("hlf", "HLF", "xledger")
    pipeline.register("blindeforbundet", "Norges Blindeforbund", "xledger")
    failing_run(pipeline, "hlf", "dynamics", ["OLD-1", "OLD-2"], ago(hours=3))
    last_dynamics = failing_run(pipeline, "hlf", "dynamics", ["NEW-1"], ago(hours=1))
    last_xledger = failing_run(pipeline, "hlf", "xledger", ["XL-1", "XL-2"], ago(minutes=30))
    failing_run(pipeline, "blindeforbundet", "xledger", ["OTHER-ORG"], ago(minutes=1))
    # Errors of a run still in progress are not "the last sync" yet.
    running = pipeline.start_run("hlf", "dynamics", at=ago(minutes=2))
    (pending,) = pipeline.enqueue("hlf", "dynamics", [("travel", "RUNNING-1")])
    pipeline.record_failure(running, pending, "still trying", at=ago(minutes=1))

    errors = last_run_errors(engine, "hlf")
    assert sorted((e.run_id, e.connector, e.record_ref) for e in errors) == sorted(
        [
            (last_dynamics, "dynamics", "NEW-1"),
            (last_xledger, "xledger", "XL-1"),
            (last_xledger, "xledger", "XL-2"),
        ]
    )
    assert {e.error_message for e in errors} == {"NEW-1 rejected", "XL-1 rejected", "XL-2 rejected"}
    assert all(e.error_code == "X" and e.record_type == "expense" for e in errors)


def test_a_clean_last_run_leaves_no_error_details(engine: Engine, pipeline: Pipeline):
    pipeline.register("hlf", "HLF", "dynamics")
    failing_run(pipeline, "hlf", "dynamics", ["OLD-1"], ago(hours=3))
    pipeline.add_finished_run(
        "hlf", "dynamics", "succeeded", started_at=ago(hours=1), finished_at=ago(hours=1)
    )
    assert last_run_errors(engine, "hlf") == []
    assert last_run_errors(engine, "nobody") == []


def test_run_history_is_the_orgs_runs_newest_first(engine: Engine, pipeline: Pipeline):
    pipeline.register("hlf", "HLF", "dynamics")
    pipeline.register("blindeforbundet", "Norges Blindeforbund", "xledger")
    ids = [
        pipeline.add_finished_run(
            "hlf",
            "dynamics",
            status,
            started_at=ago(hours=h),
            finished_at=ago(hours=h) + timedelta(seconds=40),
            records_total=5,
            records_failed=1 if status == "partial" else 0,
            error_message="token expired" if status == "failed" else None,
        )
        for h, status in ((5, "succeeded"), (4, "partial"), (3, "failed"))
    ]
    running = pipeline.start_run("hlf", "dynamics", at=ago(minutes=1))
    pipeline.add_finished_run(
        "blindeforbundet", "xledger", "succeeded", started_at=NOW, finished_at=NOW
    )

    history = run_history(engine, "hlf")
    assert [r.id for r in history] == [running, ids[2], ids[1], ids[0]]
    assert (history[0].status, history[0].finished_at) == ("running", None)
    assert (history[1].status, history[1].error_message) == ("failed", "token expired")
    assert (history[2].records_total, history[2].records_failed) == (5, 1)
    assert history[3].finished_at == ago(hours=5) + timedelta(seconds=40)
    assert [r.id for r in run_history(engine, "hlf", limit=2)] == [running, ids[2]]


# --- each pipeline write is one transaction --------------------------------------------------


@contextmanager
def transactions(engine: Engine) -> Iterator[dict[str, int]]:
    counts = {"begin": 0, "commit": 0, "rollback": 0}

    def on(name: str) -> Any:
        def handler(*_: Any) -> None:
            counts[name] += 1

        return handler

    handlers = {name: on(name) for name in counts}
    for name, handler in handlers.items():
        event.listen(engine, name, handler)
    try:
        yield counts
    finally:
        for name, handler in handlers.items():
            event.remove(engine, name, handler)


def test_every_pipeline_write_is_exactly_one_committed_transaction(
    engine: Engine, pipeline: Pipeline
):
    writes: list[tuple[str, Any]] = [
        ("register", lambda: pipeline.register("hlf", "HLF", "dynamics")),
        ("register again", lambda: pipeline.register("hlf", "HLF renamed", "dynamics")),
        ("enqueue", lambda: pipeline.enqueue("hlf", "dynamics", [("a", "1"), ("b", "2")])),
        ("start_run", lambda: pipeline.start_run("hlf", "dynamics")),
        ("record_failure", lambda: pipeline.record_failure(1, 1, "nope")),
        ("mark_synced", lambda: pipeline.mark_synced([2])),
        ("finish_run", lambda: pipeline.finish_run(1, "partial", records_failed=1)),
        (
            "add_finished_run",
            lambda: pipeline.add_finished_run(
                "hlf", "dynamics", "succeeded", started_at=NOW, finished_at=NOW
            ),
        ),
        ("remove_integration", lambda: pipeline.remove_integration("hlf", "dynamics")),
    ]
    for name, write in writes:
        with transactions(engine) as counts:
            write()
        assert counts == {"begin": 1, "commit": 1, "rollback": 0}, name


def test_a_write_that_fails_half_way_leaves_nothing_behind(engine: Engine, pipeline: Pipeline):
    # register writes the organization, then the integration; the connector is invalid.
    with pytest.raises(IntegrityError):
        pipeline.register("sap-user", "Uses SAP", "sap")
    assert count(engine, Organization) == 0

    pipeline.register("hlf", "HLF", "dynamics")
    (record,) = pipeline.enqueue("hlf", "dynamics", [("expense", "E-1")])
    # record_failure inserts the error, then updates the record; a run that does not exist
    # breaks the first write, so the record must still be untouched.
    with pytest.raises(IntegrityError):
        pipeline.record_failure(999_999, record, "nope", give_up=True)
    assert count(engine, RecordError) == 0
    assert only(engine, "hlf", "dynamics").pending_records == 1


def test_removing_an_integration_removes_its_history_and_keeps_the_others(
    engine: Engine, pipeline: Pipeline
):
    pipeline.register("hlf", "HLF", "dynamics")
    pipeline.register("hlf", "HLF", "xledger")
    failing_run(pipeline, "hlf", "dynamics", ["E-1"], ago(hours=1))
    failing_run(pipeline, "hlf", "xledger", ["X-1"], ago(hours=1))
    pipeline.remove_integration("hlf", "dynamics")
    assert [f.key for f in read_snapshot(engine).integrations] == [("hlf", "xledger")]
    assert {e.connector for e in last_run_errors(engine, "hlf")} == {"xledger"}
    assert {r.connector for r in run_history(engine, "hlf")} == {"xledger"}


def test_a_pipeline_writing_only_the_contract_columns_in_plain_sql(engine: Engine):
    """Other pipelines write SQL, not our models: the contract's defaults must fill the rest."""
    before = datetime.now(UTC).replace(microsecond=0)
    with engine.begin() as connection:
        for statement in (
            "insert into sync_organization (id, name) values ('hlf', 'HLF')",
            "insert into sync_integration (org_id, connector) values ('hlf', 'dynamics')",
            "insert into sync_run (org_id, connector, started_at, finished_at, status)"
            " values ('hlf', 'dynamics', '2026-11-28 10:00:00', '2026-11-28 10:05:00',"
            " 'succeeded')",
            "insert into sync_run (org_id, connector, started_at, status)"
            " values ('hlf', 'dynamics', '2026-11-28 11:00:00', 'running')",
            "insert into sync_record"
            " (org_id, connector, record_type, record_ref, state, enqueued_at, updated_at)"
            " values ('hlf', 'dynamics', 'expense', 'E-1', 'pending',"
            " '2026-11-28 09:00:00', '2026-11-28 09:00:00')",
        ):
            connection.execute(text(statement))
    f = only(engine, "hlf", "dynamics")
    after = datetime.now(UTC) + timedelta(seconds=1)
    assert (f.active, f.stale_after_seconds) == (True, 86400)
    assert before - timedelta(seconds=1) <= f.created_at <= after  # default now(), in UTC
    assert f.last_success_at == datetime(2026, 11, 28, 10, 5, tzinfo=UTC)
    assert (f.last_run_status, f.last_run_records_total, f.last_run_records_failed) == (
        "succeeded",
        0,
        0,
    )
    assert f.running_since == datetime(2026, 11, 28, 11, 0, tzinfo=UTC)
    assert (f.pending_records, f.oldest_pending_at) == (1, datetime(2026, 11, 28, 9, tzinfo=UTC))


@pytest.mark.parametrize(
    "statement",
    [
        "insert into sync_integration (org_id, connector) values ('hlf', 'sap')",
        "update sync_integration set stale_after_seconds = 0",
        "insert into sync_run (org_id, connector, started_at, status)"
        " values ('hlf', 'dynamics', '2026-11-28 10:00:00', 'done')",
        "insert into sync_run (org_id, connector, started_at, status, records_failed)"
        " values ('hlf', 'dynamics', '2026-11-28 10:00:00', 'partial', -1)",
        "insert into sync_record"
        " (org_id, connector, record_type, record_ref, state, enqueued_at, updated_at)"
        " values ('hlf', 'dynamics', 'expense', 'E-1', 'lost',"
        " '2026-11-28 09:00:00', '2026-11-28 09:00:00')",
        "insert into sync_run (org_id, connector, started_at, status)"
        " values ('nobody', 'dynamics', '2026-11-28 10:00:00', 'running')",
    ],
    ids=["connector", "stale-after", "run-status", "negative-count", "record-state", "fk"],
)
def test_the_schema_refuses_values_outside_the_contract(
    engine: Engine, pipeline: Pipeline, statement: str
):
    pipeline.register("hlf", "HLF", "dynamics")
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(text(statement))


def test_on_sqlite_every_lookup_of_the_snapshot_uses_an_index(sqlite_url: str):
    """No table scan of runs or records: the refresh must not grow with the history.

    A bound parameter in a lookup's WHERE clause keeps SQLite from proving that a partial
    index applies; it then scans every run once per integration. This reads the plan of
    each statement the snapshot really executes.
    """
    engine = create_sync_log_engine(normalize_url(sqlite_url))
    upgrade(engine)
    populate(Pipeline(engine), 3)
    executed: list[tuple[str, Any]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            executed.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    read_snapshot(engine)
    event.remove(engine, "before_cursor_execute", capture)
    assert executed
    with engine.connect() as connection:
        for statement, parameters in executed:
            plan = [
                row[-1]
                for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            ]
            scans = [
                step for step in plan if step.startswith(("SCAN sync_run", "SCAN sync_record"))
            ]
            # The scans allowed: the unknown-state index, empty in a sound sync log, and one
            # walk of the finished-run index that counts the run counters' totals (on
            # SQLite they are counted from the history, once per refresh, not once per
            # integration; docs/write-path.md).
            allowed = (
                "ix_sync_record_unknown_state",
                "sync_run USING INDEX ix_sync_run_last_finished",
            )
            assert all(any(name in step for name in allowed) for step in scans), plan
            assert sum("ix_sync_run_last_finished" in step for step in scans) <= 1, plan
    engine.dispose()
