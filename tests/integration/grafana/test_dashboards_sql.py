"""Every SQL query of the dashboards, with Grafana's macros expanded, on a real sync log.

The error details must show exactly the chosen organization's failed records of each
connector's last finished run: not an earlier run's, not those of a run still going, not
another organization's, and an awkward organization id must not break (or widen) the query.
"""

from __future__ import annotations

import re
from dataclasses import asdict, fields
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.migrate import upgrade
from exporter.source.pipeline import Pipeline
from exporter.source.reader import ErrorDetail, RunSummary, last_run_errors, run_history
from tests.support.interpolate import (
    ALL,
    Context,
    TimeRange,
    Variable,
    expand_sql_macros,
    interpolate,
    load,
    targets,
)

pytestmark = pytest.mark.postgres

DASHBOARDS = load()
NOW = datetime.now(UTC).replace(microsecond=0)
AWKWARD = "o'brien"  # a quote in the id: interpolation must escape it as Grafana does
CLOSED_PERIOD = "The Posting Date is not within your range of allowed posting dates."


def fail(
    pipeline: Pipeline,
    run_id: int,
    org: str,
    connector: str,
    ref: str,
    code: str | None,
    at: datetime,
    message: str | None = None,
    give_up: bool = False,
) -> tuple[str, str, str, str | None, str]:
    (record,) = pipeline.enqueue(org, connector, [("expense", ref)], at=at)
    message = message or f"{ref} rejected"
    pipeline.record_failure(run_id, record, message, error_code=code, give_up=give_up, at=at)
    return (connector, "expense", ref, code, message)


@pytest.fixture
def sync_log(pg_url: str):
    """blindeforbundet with two connectors and history; two other organizations."""
    engine = create_sync_log_engine(normalize_url(pg_url))
    upgrade(engine)
    p = Pipeline(engine)
    old = NOW - timedelta(days=3)
    for org, name in (
        ("blindeforbundet", "Norges Blindeforbund"),
        ("hlf", "HLF"),
        (AWKWARD, "O'Brien AS"),
    ):
        p.register(org, name, "xledger", created_at=old)
    p.register("blindeforbundet", "Norges Blindeforbund", "dynamics", created_at=old)

    def run(org: str, connector: str, status: str, finished: datetime, failed: int) -> int:
        return p.add_finished_run(
            org,
            connector,
            status,
            started_at=finished - timedelta(minutes=1),
            finished_at=finished,
            records_total=10,
            records_failed=failed,
        )

    earlier = run("blindeforbundet", "xledger", "partial", NOW - timedelta(hours=2), 1)
    old_failure = fail(
        p, earlier, "blindeforbundet", "xledger", "X-OLD", "E1", NOW - timedelta(hours=2)
    )
    # Failed first as unavailable, then given up on as invalid: rejected, last error validation.
    (twice,) = p.enqueue(
        "blindeforbundet", "xledger", [("expense", "X-TWICE")], at=NOW - timedelta(hours=3)
    )
    p.record_failure(
        earlier, twice, "Service Unavailable", error_code="503", at=NOW - timedelta(hours=2)
    )
    old_twice = ("xledger", "expense", "X-TWICE", "503", "Service Unavailable")
    last = run("blindeforbundet", "xledger", "partial", NOW - timedelta(hours=1), 5)
    p.record_failure(
        last,
        twice,
        "Amount: value is required",
        error_code="Application_FieldValidationException",
        give_up=True,
        at=NOW - timedelta(hours=1, seconds=30),
    )
    expected = {
        fail(p, last, "blindeforbundet", "xledger", "X-1", "E1", NOW - timedelta(hours=1)),
        fail(p, last, "blindeforbundet", "xledger", "X-2", "E2", NOW - timedelta(hours=1)),
        fail(p, last, "blindeforbundet", "xledger", "X-3", "429", NOW - timedelta(hours=1)),
        fail(
            p,
            last,
            "blindeforbundet",
            "xledger",
            "X-4",
            None,
            NOW - timedelta(hours=1, seconds=20),
            message=CLOSED_PERIOD,
            give_up=True,
        ),
        (
            "xledger",
            "expense",
            "X-TWICE",
            "Application_FieldValidationException",
            "Amount: value is required",
        ),
    }
    running = p.start_run("blindeforbundet", "xledger", at=NOW - timedelta(minutes=5))
    in_progress = fail(
        p, running, "blindeforbundet", "xledger", "X-NOW", "E1", NOW - timedelta(minutes=4)
    )
    aborted = run("blindeforbundet", "dynamics", "failed", NOW - timedelta(minutes=30), 1)
    expected.add(
        fail(p, aborted, "blindeforbundet", "dynamics", "D-1", "AUTH", NOW - timedelta(minutes=30))
    )
    other = run("hlf", "xledger", "partial", NOW - timedelta(minutes=20), 1)
    fail(p, other, "hlf", "xledger", "H-1", "E1", NOW - timedelta(minutes=20), give_up=True)
    awkward = run(AWKWARD, "xledger", "partial", NOW - timedelta(minutes=10), 1)
    awkward_failure = fail(
        p, awkward, AWKWARD, "xledger", "OB-1", "E3", NOW - timedelta(minutes=10)
    )
    yield engine, expected, {old_failure, old_twice, in_progress}, awkward_failure
    engine.dispose()


def sql_queries(uid: str, org: str, connector: str = ALL) -> dict[str, str]:
    """Each SQL panel's query as the datasource receives it, by panel title."""
    time_range = TimeRange(
        NOW - timedelta(hours=6), NOW + timedelta(minutes=1), min_interval_seconds=60
    )
    context = Context(
        {"org": Variable(org), "connector": Variable(connector, include_all=True, all_value=".*")},
        time_range,
    )
    out = {}
    for panel, target in targets(DASHBOARDS[uid]):
        if target["datasource"]["type"] == "grafana-postgresql-datasource":
            sql = interpolate(target["rawSql"], context, "grafana-postgresql-datasource")
            out[panel["title"]] = expand_sql_macros(sql, time_range)
    return out


def rows(engine: Engine, sql: str) -> list[dict]:
    assert not re.search(r"\$(\{|\w)|\[\[", sql), f"uninterpolated: {sql}"
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(text(sql)).mappings()]


def failures(found: list[dict]) -> set[tuple[str, str, str, str, str]]:
    return {
        (r["connector"], r["record_type"], r["record_ref"], r["error_code"], r["error_message"])
        for r in found
    }


def test_error_details_show_exactly_the_last_finished_runs_failed_records(sync_log):
    engine, expected, excluded, _ = sync_log
    sql = sql_queries("accounting-sync-errors", "blindeforbundet")
    found = rows(engine, sql["Failed records of the last finished sync"])
    assert failures(found) == expected
    assert not failures(found) & excluded
    assert len(found) == len(expected), "no record twice"
    times = [r["time"] for r in found]
    assert times == sorted(times, reverse=True), "newest first"


def test_an_organization_id_with_a_quote_is_escaped_not_widened(sync_log):
    engine, _, _, awkward_failure = sync_log
    found = rows(
        engine,
        sql_queries("accounting-sync-errors", AWKWARD)["Failed records of the last finished sync"],
    )
    assert failures(found) == {awkward_failure}


def test_an_organization_without_failures_in_its_last_run_shows_none(sync_log):
    engine, *_ = sync_log
    Pipeline(engine).add_finished_run(
        "hlf",
        "xledger",
        "succeeded",
        started_at=NOW - timedelta(minutes=2),
        finished_at=NOW - timedelta(minutes=1),
        records_total=3,
    )
    sql = sql_queries("accounting-sync-errors", "hlf")["Failed records of the last finished sync"]
    assert rows(engine, sql) == []


def test_errors_over_time_and_by_code_count_only_the_organization_in_range(sync_log):
    engine, expected, excluded, _ = sync_log
    sql = sql_queries("accounting-sync-errors", "blindeforbundet")
    over_time = rows(engine, sql["Record errors over time"])
    assert sum(r["errors"] for r in over_time) == len(expected | excluded)
    assert all(float(r["time"]) % 60 == 0 for r in over_time), "buckets of $__interval"
    assert {r["connector"] for r in over_time} == {"xledger", "dynamics"}
    by_code = {
        (r["error_code"], r["connector"]): r["errors"] for r in rows(engine, sql["Errors by code"])
    }
    assert by_code == {
        ("E1", "xledger"): 3,
        ("E2", "xledger"): 1,
        ("AUTH", "dynamics"): 1,
        ("429", "xledger"): 1,
        ("(none)", "xledger"): 1,
        ("503", "xledger"): 1,
        ("Application_FieldValidationException", "xledger"): 1,
    }


def test_the_runs_table_lists_the_organizations_runs_for_the_chosen_connector(sync_log):
    engine, *_ = sync_log
    every = rows(engine, sql_queries("accounting-sync-org", "blindeforbundet")["Sync runs"])
    assert sorted((r["connector"], r["status"]) for r in every) == [
        ("dynamics", "failed"),
        ("xledger", "partial"),
        ("xledger", "partial"),
        ("xledger", "running"),
    ]
    xledger = rows(
        engine, sql_queries("accounting-sync-org", "blindeforbundet", "xledger")["Sync runs"]
    )
    assert {r["connector"] for r in xledger} == {"xledger"} and len(xledger) == 3


def as_reference(found: list[dict], reference: type, time_column: str) -> list[dict]:
    """The panel's rows keyed by the reference dataclass's field names (``time`` renamed)."""
    names = [f.name for f in fields(reference)]
    return [
        {name: row[name] for name in names if name in row} | {time_column: row["time"]}
        for row in found
    ]


def test_the_runs_table_is_the_readers_run_history(sync_log):
    # run_history is the reference: the same runs, newest first, with the same values.
    engine, *_ = sync_log
    for org in ("blindeforbundet", "hlf", AWKWARD, "nobody"):
        shown = rows(engine, sql_queries("accounting-sync-org", org)["Sync runs"])
        reference = [
            {k: v for k, v in asdict(h).items() if k != "id"}
            for h in run_history(engine, org, limit=200)
        ]
        assert as_reference(shown, RunSummary, "started_at") == reference
    assert run_history(engine, "blindeforbundet"), "the reference is not empty"


def test_the_failed_records_table_is_the_readers_last_run_errors(sync_log):
    engine, *_ = sync_log
    for org in ("blindeforbundet", "hlf", AWKWARD, "nobody"):
        sql = sql_queries("accounting-sync-errors", org)["Failed records of the last finished sync"]
        reference = [asdict(e) for e in last_run_errors(engine, org)]
        assert as_reference(rows(engine, sql), ErrorDetail, "occurred_at") == reference


def test_every_sql_query_of_every_dashboard_runs(sync_log):
    engine, *_ = sync_log
    count = 0
    for uid in DASHBOARDS:
        for org in ("blindeforbundet", "hlf", AWKWARD, "nobody"):
            for sql in sql_queries(uid, org).values():
                rows(engine, sql)
                count += 1
    assert count == 4 * 6  # five on the errors dashboard, one on the org dashboard


def test_the_last_runs_failed_records_say_their_class_and_whether_it_heals(sync_log):
    engine, *_ = sync_log
    sql = sql_queries("accounting-sync-errors", "blindeforbundet")
    found = rows(engine, sql["Failed records of the last finished sync"])
    by_ref = {r["record_ref"]: (r["error_class"], r["heals_by_itself"]) for r in found}
    assert by_ref == {
        "X-1": ("unknown", "Unknown"),
        "X-2": ("unknown", "Unknown"),
        "X-3": ("throttled", "Yes"),  # HTTP 429
        "X-4": ("period_closed", "No: a person must act"),  # no code: the message decides
        "X-TWICE": ("validation", "No: a person must act"),
        "D-1": ("unknown", "Unknown"),  # a code nobody listed, a message nobody listed
    }
    words = {r["error_class"]: r["what_it_means"] for r in found}
    assert all(words.values()) and len(set(words.values())) == len(words), words
    assert not set(words.values()) & set(words), "words, not the class names"


def test_failures_by_class_come_with_code_and_latest_message_needing_a_person_first(sync_log):
    engine, *_ = sync_log
    found = rows(
        engine, sql_queries("accounting-sync-errors", "blindeforbundet")["Failures by class"]
    )
    assert [
        (r["error_class"], r["connector"], r["error_code"], r["errors"], r["heals_by_itself"])
        for r in found
    ] == [
        ("period_closed", "xledger", "(none)", 1, "No: a person must act"),
        (
            "validation",
            "xledger",
            "Application_FieldValidationException",
            1,
            "No: a person must act",
        ),
        ("unknown", "xledger", "E1", 3, "Unknown"),
        ("unknown", "dynamics", "AUTH", 1, "Unknown"),
        ("unknown", "xledger", "E2", 1, "Unknown"),
        ("throttled", "xledger", "429", 1, "Yes"),
        ("unavailable", "xledger", "503", 1, "Yes"),
    ]
    latest = {(r["error_code"], r["connector"]): r["latest_message"] for r in found}
    assert latest[("E1", "xledger")] == "X-NOW rejected", "the newest of X-OLD, X-1, X-NOW"
    assert latest[("(none)", "xledger")] == CLOSED_PERIOD


def test_rejected_records_show_their_last_error_newest_first(sync_log):
    engine, *_ = sync_log

    def rejected(org: str) -> list[tuple]:
        found = rows(engine, sql_queries("accounting-sync-errors", org)["Rejected records"])
        return [
            (r["connector"], r["record_ref"], r["error_code"], r["error_message"], r["error_class"])
            for r in found
        ]

    assert rejected("blindeforbundet") == [
        ("xledger", "X-4", None, CLOSED_PERIOD, "period_closed"),
        # Its earlier failure (503, heals by itself) is not its last error.
        (
            "xledger",
            "X-TWICE",
            "Application_FieldValidationException",
            "Amount: value is required",
            "validation",
        ),
    ]
    assert rejected("hlf") == [("xledger", "H-1", "E1", "H-1 rejected", "unknown")]
    assert rejected(AWKWARD) == [], "failed but still pending is not rejected"


def test_the_rejected_records_table_is_bounded(sync_log):
    engine, *_ = sync_log
    ids = Pipeline(engine).enqueue("hlf", "xledger", [("expense", f"H-{i:04}") for i in range(600)])
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE sync_record SET state = 'rejected' WHERE id = ANY(:ids)"), {"ids": ids}
        )
    found = rows(engine, sql_queries("accounting-sync-errors", "hlf")["Rejected records"])
    assert len(found) == 500
    assert {r["record_ref"] for r in found} <= {f"H-{i:04}" for i in range(600)}
    no_error = [r for r in found if r["last_error_at"] is None]
    assert len(no_error) == 500, "no error logged for these"
    assert {(r["error_class"], r["what_it_means"], r["heals_by_itself"]) for r in no_error} == {
        (None, None, None)
    }, "no error, no class (not unknown)"


def test_the_last_runs_failed_records_are_bounded_to_the_newest(sync_log):
    engine, *_ = sync_log
    run = Pipeline(engine).add_finished_run(
        "hlf",
        "xledger",
        "partial",
        started_at=NOW - timedelta(minutes=2),
        finished_at=NOW - timedelta(minutes=1),
        records_total=1200,
        records_failed=1200,
    )
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO sync_record_error (run_id, org_id, connector, record_type,"
                " record_ref, error_code, error_message, occurred_at)"
                " SELECT :run, 'hlf', 'xledger', 'expense', format('B-%s', k), '429',"
                " 'Too Many Requests', :at - k * interval '1 second'"
                " FROM generate_series(1, 1200) AS k"
            ),
            {"run": run, "at": NOW},
        )
    sql = sql_queries("accounting-sync-errors", "hlf")["Failed records of the last finished sync"]
    found = rows(engine, sql)
    assert [r["record_ref"] for r in found] == [f"B-{k}" for k in range(1, 1001)]
    assert {(r["error_class"], r["heals_by_itself"]) for r in found} == {("throttled", "Yes")}
