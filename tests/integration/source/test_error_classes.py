"""Rejected records, run error codes, error classes and expected intervals in the snapshot,
on both back ends (the ``engine`` fixture), written through the pipeline's own API.

What is checked is what the exporter will publish: rejected counts beside the pending
ones, the class of a run that failed as a whole, the last run's failed records by class
(and only the last run's: older history must not leak in), and the repair of a bad
expected interval for its own row alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from exporter.classification import MESSAGE_PREFIX, Classifier, parse_rules
from exporter.model import IntegrationFacts
from exporter.source.pipeline import Pipeline
from exporter.source.reader import read_snapshot

NOW = datetime.now(UTC).replace(microsecond=0)


def ago(**kwargs: float) -> datetime:
    return NOW - timedelta(**kwargs)


def facts(engine: Engine, classifier: Classifier | None = None) -> dict[str, IntegrationFacts]:
    snapshot = read_snapshot(engine, classifier=classifier or Classifier())
    return {f.org_id: f for f in snapshot.integrations}


def failed_run(pipeline: Pipeline, org: str, connector: str, code: str | None, message: str) -> int:
    run = pipeline.start_run(org, connector, at=ago(minutes=3))
    pipeline.finish_run(run, "failed", error_code=code, error_message=message, at=ago(minutes=2))
    return run


def test_rejected_records_are_counted_apart_from_pending_and_zero_when_none(engine: Engine):
    pipeline = Pipeline(engine)
    pipeline.register("hlf", "HLF", "dynamics", created_at=ago(days=2))
    pipeline.register("dnt", "DNT", "xledger", created_at=ago(days=2))
    ids = pipeline.enqueue("hlf", "dynamics", [("expense", f"E-{n}") for n in range(5)])
    run = pipeline.start_run("hlf", "dynamics", at=ago(minutes=1))
    for record_id in ids[:3]:
        pipeline.record_failure(run, record_id, "Amount must be positive", give_up=True)
    pipeline.record_failure(run, ids[3], "Your query timed out")  # retried: still pending
    pipeline.finish_run(run, "partial", records_total=5, records_failed=4)
    found = facts(engine)
    assert (found["hlf"].rejected_records, found["hlf"].pending_records) == (3, 2)
    assert (found["dnt"].rejected_records, found["dnt"].pending_records) == (0, 0)


def test_a_run_that_failed_as_a_whole_has_its_code_message_and_class(engine: Engine):
    pipeline = Pipeline(engine)
    pipeline.register("hlf", "HLF", "dynamics", created_at=ago(days=2))
    pipeline.register("dnt", "DNT", "xledger", created_at=ago(days=2))
    pipeline.register("redd-barna", "Redd Barna", "xledger", created_at=ago(days=2))
    secret = failed_run(
        pipeline,
        "hlf",
        "dynamics",
        "AADSTS7000222",
        "AADSTS7000222: The provided client secret keys for app '3f1c' are expired.",
    )
    failed_run(pipeline, "dnt", "xledger", "BAD_REQUEST.BURST_RATE_LIMIT_REACHED", "Slow down")
    failed_run(pipeline, "redd-barna", "xledger", None, "Error: bad format for api token")
    found = facts(engine)
    hlf = found["hlf"]
    assert (hlf.last_run_id, hlf.last_run_status, hlf.last_run_error_code) == (
        secret,
        "failed",
        "AADSTS7000222",
    )
    assert hlf.last_run_error_message is not None and "expired" in hlf.last_run_error_message
    assert {org: f.last_run_error_class for org, f in found.items()} == {
        "hlf": "auth",
        "dnt": "throttled",
        "redd-barna": "auth",  # no code: the message decides
    }


def test_throttling_that_heals_leaves_no_class(engine: Engine):
    pipeline = Pipeline(engine)
    pipeline.register("dnt", "DNT", "xledger", created_at=ago(days=2))
    failed_run(pipeline, "dnt", "xledger", "BAD_REQUEST.BURST_RATE_LIMIT_REACHED", "Slow down")
    pipeline.add_finished_run(
        "dnt", "xledger", "succeeded", started_at=ago(minutes=1), finished_at=ago(seconds=30)
    )
    dnt = facts(engine)["dnt"]
    assert (dnt.last_run_status, dnt.last_run_error_class, dnt.last_run_error_code) == (
        "succeeded",
        None,
        None,
    )


def test_failed_records_by_class_come_from_the_last_finished_run_only(engine: Engine):
    pipeline = Pipeline(engine)
    pipeline.register("hlf", "HLF", "dynamics", created_at=ago(days=2))
    ids = pipeline.enqueue("hlf", "dynamics", [("expense", f"E-{n}") for n in range(8)])
    old = pipeline.start_run("hlf", "dynamics", at=ago(hours=2))
    for record_id in ids[:4]:
        pipeline.record_failure(
            run_id=old, record_id=record_id, error_message="x", error_code="503"
        )
    pipeline.finish_run(old, "partial", records_total=4, records_failed=4, at=ago(hours=2))
    last = pipeline.start_run("hlf", "dynamics", at=ago(minutes=2))
    answers = [
        ("Application_FieldValidationException", "Dimension 'project' is required"),
        ("Application_FieldValidationException", "Dimension 'project' is required"),
        (None, "The Posting Date is not within your range of allowed posting dates"),
        ("429", "Too Many Requests"),
        ("XL-UNHEARD-OF", "Noe gikk galt: 北京"),
    ]
    for record_id, (code, message) in zip(ids[4:] + ids[:1], answers, strict=True):
        pipeline.record_failure(last, record_id, message, error_code=code)
    pipeline.finish_run(last, "partial", records_total=8, records_failed=5, at=ago(minutes=1))
    # A run still going has errors too: they are not the last finished run's.
    running = pipeline.start_run("hlf", "dynamics", at=ago(seconds=20))
    pipeline.record_failure(running, ids[5], "boom", error_code="401")
    hlf = facts(engine)["hlf"]
    assert hlf.last_run_id == last
    assert hlf.last_run_failures_by_class == (
        ("period_closed", 1),
        ("throttled", 1),
        ("unknown", 1),
        ("validation", 2),
    )
    assert hlf.last_run_error_class is None  # partial: the run itself did not fail


def test_a_megabyte_answer_classifies_and_is_cut_before_it_reaches_the_exporter(engine: Engine):
    pipeline = Pipeline(engine)
    pipeline.register("hlf", "HLF", "dynamics", created_at=ago(days=2))
    huge = "Your query timed out. " + "Ø" * 1_000_000
    (record_id,) = pipeline.enqueue("hlf", "dynamics", [("invoice", "F-1")])
    run = pipeline.start_run("hlf", "dynamics", at=ago(minutes=3))
    pipeline.record_failure(run, record_id, huge, error_code="\x1b[2J\x07" * 10 + "X" * 100_000)
    pipeline.finish_run(
        run, "failed", error_code="C" * 1_000_000, error_message=huge, at=ago(minutes=2)
    )
    hlf = facts(engine)["hlf"]
    assert hlf.last_run_error_class == "timeout"  # the long code is unknown; the message decides
    assert hlf.last_run_failures_by_class == (("timeout", 1),)
    assert hlf.last_run_error_message is not None
    assert len(hlf.last_run_error_message) == MESSAGE_PREFIX
    assert hlf.last_run_error_code is not None and len(hlf.last_run_error_code) < 1000


def test_operator_rules_reach_the_snapshot(engine: Engine):
    pipeline = Pipeline(engine)
    pipeline.register("hlf", "HLF", "dynamics", created_at=ago(days=2))
    failed_run(pipeline, "hlf", "dynamics", "ERP-TOKEN-EXPIRED", "Token utløpt")
    assert facts(engine)["hlf"].last_run_error_class == "unknown"
    mine = Classifier(parse_rules([{"class": "auth", "code": "ERP-TOKEN-*"}]))
    assert facts(engine, mine)["hlf"].last_run_error_class == "auth"


def test_the_expected_interval_is_read_and_none_when_unknown(engine: Engine):
    pipeline = Pipeline(engine)
    pipeline.register("hlf", "HLF", "dynamics", expected_interval_seconds=900)
    pipeline.register("dnt", "DNT", "xledger")
    found = facts(engine)
    assert (found["hlf"].expected_interval_seconds, found["dnt"].expected_interval_seconds) == (
        900,
        None,
    )


def test_a_bad_expected_interval_is_refused_or_repaired_for_that_row_alone(engine: Engine):
    pipeline = Pipeline(engine)
    pipeline.register("hlf", "HLF", "dynamics", expected_interval_seconds=900)
    pipeline.register("dnt", "DNT", "xledger", expected_interval_seconds=600)
    before = facts(engine)["hlf"]
    bad = text("UPDATE sync_integration SET expected_interval_seconds = 0 WHERE org_id = 'dnt'")
    if engine.dialect.name == "postgresql":
        # Migration 0006's check holds for every new write...
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(bad)
        # ...but rows from before it was validated, or a dropped check, can still hold one.
        with engine.begin() as connection:
            connection.execute(
                text(
                    "ALTER TABLE sync_integration "
                    "DROP CONSTRAINT ck_sync_integration_expected_interval_positive"
                )
            )
    with engine.begin() as connection:
        connection.execute(bad)
    snapshot = read_snapshot(engine)
    found = {f.org_id: f for f in snapshot.integrations}
    assert found["dnt"].expected_interval_seconds is None
    assert found["hlf"] == before
    assert [(p.org, p.kind) for p in snapshot.problems] == [("dnt", "expected_interval_invalid")]
