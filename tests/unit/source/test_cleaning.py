"""The row sanitiser at its boundaries, and the promise to log each problem once.

The end-to-end test (test_faults_bad_rows.py) shows the exporter surviving bad rows; these
pin the exact edges a user could trip over: how far in the future a date may be before it
is distrusted, and that a problem is logged when it appears and when it is gone, not on
every refresh in between.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from exporter.source.cleaning import FUTURE_TOLERANCE, ProblemLog, classify_failures, sanitize

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def row(**overrides):  # type: ignore[no-untyped-def]
    """A raw snapshot row (statement column order) of a healthy integration."""
    values = {
        "org_id": "hlf",
        "org_name": "HLF",
        "connector": "dynamics",
        "active": True,
        "stale_after_seconds": 3600,
        "created_at": NOW - timedelta(days=1),
        "last_success_at": NOW - timedelta(minutes=5),
        "running_since": None,
        "pending_records": 4,
        "oldest_pending_at": NOW - timedelta(minutes=1),
        "status": "succeeded",
        "started_at": NOW - timedelta(minutes=6),
        "finished_at": NOW - timedelta(minutes=5),
        "records_total": 9,
        "records_failed": 0,
        "rejected_records": 0,
        "expected_interval_seconds": 900,
        "last_run_id": 41,
        "error_code": None,
        "error_message": None,
        "runs_succeeded_total": 40,
        "runs_partial_total": 3,
        "runs_failed_total": 1,
        "records_failed_total": 7,
    }
    values.update(overrides)
    return tuple(values.values())


def test_a_healthy_row_passes_unchanged():
    (facts,), problems = sanitize([row()], NOW)
    assert problems == []
    assert (facts.org_id, facts.org_name, facts.pending_records) == ("hlf", "HLF", 4)
    assert facts.last_success_at == NOW - timedelta(minutes=5)


def test_run_totals_come_through_with_all_three_statuses():
    (facts,), _ = sanitize([row(runs_partial_total=0)], NOW)
    assert facts.runs_finished_total == (("succeeded", 40), ("partial", 0), ("failed", 1))
    assert facts.records_failed_total == 7


@pytest.mark.parametrize("bad", [None, -3])
def test_a_missing_or_negative_total_counts_as_zero_and_is_reported(bad):
    (facts,), problems = sanitize([row(runs_failed_total=bad, records_failed_total=bad)], NOW)
    assert facts.runs_finished_total == (("succeeded", 40), ("partial", 3), ("failed", 0))
    assert facts.records_failed_total == 0
    kinds = {problem.kind for problem in problems}
    suffix = "missing" if bad is None else "negative"
    assert kinds == {f"runs_failed_total_{suffix}", f"records_failed_total_{suffix}"}


@pytest.mark.parametrize(
    ("offset", "trusted"),
    [(FUTURE_TOLERANCE, True), (FUTURE_TOLERANCE + timedelta(seconds=1), False)],
    ids=["at-the-tolerance", "just-beyond"],
)
def test_a_date_in_the_future_is_trusted_only_within_clock_skew(offset, trusted):
    when = NOW + offset
    (facts,), problems = sanitize([row(last_success_at=when, finished_at=when)], NOW)
    assert (facts.last_success_at == when) is trusted
    assert (facts.last_run_finished_at == when) is trusted
    assert bool(problems) is not trusted


def test_one_bad_row_does_not_touch_its_neighbours():
    rows = [
        row(org_id="a", stale_after_seconds="soon", records_failed=-1),
        row(org_id="b"),
        row(org_id="c", connector="sap"),
        row(org_id="b"),
    ]
    facts, problems = sanitize(rows, NOW)
    assert [f.org_id for f in facts] == ["a", "b"]
    assert facts[1] == sanitize([row(org_id="b")], NOW)[0][0]
    assert facts[0].stale_after_seconds == 86400 and facts[0].last_run_records_failed == 0
    assert {(p.org, p.kind) for p in problems} == {
        ("a", "stale_after_invalid"),
        ("a", "records_failed_negative"),
        ("c", "connector_unknown"),
        ("b", "integration_duplicated"),
    }


def test_each_problem_is_logged_when_it_appears_and_when_it_is_gone(caplog):
    logger = logging.getLogger("test.validation")
    problems_log = ProblemLog(logger)
    bad = sanitize([row(records_total=-5)], NOW)[1]
    with caplog.at_level(logging.INFO, logger="test.validation"):
        for _ in range(5):  # five refreshes see the same bad row
            problems_log.report(bad)
        problems_log.report([])  # the writer fixed it
        problems_log.report([])
        problems_log.report(bad)  # and broke it again
    messages = [(r.levelname, r.getMessage(), getattr(r, "problem", "")) for r in caplog.records]
    assert messages == [
        ("WARNING", "bad row in the sync log", "records_total_negative"),
        ("INFO", "bad row in the sync log is fixed", "records_total_negative"),
        ("WARNING", "bad row in the sync log", "records_total_negative"),
    ]
    assert "-5" in caplog.records[0].detail


# --- reconciliation and error classes -------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -900, "hourly", 1.5], ids=["zero", "negative", "text", "frac"])
def test_a_bad_expected_interval_is_unknown_for_that_row_alone(bad, caplog):
    rows = [row(org_id="a", expected_interval_seconds=bad), row(org_id="b")]
    facts, problems = sanitize(rows, NOW)
    assert [f.expected_interval_seconds for f in facts] == [None, 900]
    assert facts[1] == sanitize([row(org_id="b")], NOW)[0][0]
    assert [(p.org, p.kind) for p in problems] == [("a", "expected_interval_invalid")]
    problems_log = ProblemLog(logging.getLogger("test.interval"))
    with caplog.at_level(logging.INFO, logger="test.interval"):
        for _ in range(3):
            problems_log.report(problems)
    assert [r.problem for r in caplog.records] == ["expected_interval_invalid"]  # type: ignore[attr-defined]


def test_no_expected_interval_is_no_problem():
    (facts,), problems = sanitize([row(expected_interval_seconds=None)], NOW)
    assert facts.expected_interval_seconds is None and problems == []


def test_a_run_that_failed_as_a_whole_gets_the_class_of_its_answer():
    failed = row(
        status="failed",
        records_total=0,
        error_code="AADSTS7000222",
        error_message="AADSTS7000222: The provided client secret keys are expired.",
    )
    (facts,), _ = sanitize([failed], NOW)
    assert facts.last_run_error_class == "auth"
    assert facts.last_run_error_code == "AADSTS7000222"
    # A partial run has failed records, not a class of its own.
    (partial,), _ = sanitize([row(status="partial", error_code="429")], NOW)
    assert partial.last_run_error_class is None


def test_a_failed_run_with_a_nonsense_answer_is_unknown_never_the_answer_itself():
    nonsense = "\x1b[2J" + "Ω" * 300 + "\x00"
    (facts,), _ = sanitize([row(status="failed", error_code=nonsense, error_message=None)], NOW)
    assert facts.last_run_error_class == "unknown"


def test_failed_records_by_class_are_summed_per_run_and_attached_to_its_integration():
    errors = [
        (41, "429", "Too many requests", 3),
        (41, "XL-422", "BAD_REQUEST.BURST_RATE_LIMIT_REACHED", 1),  # unknown code, message
        (41, "Application_FieldValidationException", "Amount must be positive", 2),
        (41, None, "Your query timed out", 1),
        (41, "BAD_REQUEST.BURST_RATE_LIMIT_REACHED", "Burst", 4),
        (99, "429", "another integration's run", 7),
        (41, "429", "a count that makes no sense", -2),
    ]
    failures = classify_failures(errors)
    (facts,), _ = sanitize([row(last_run_id=41)], NOW, failures=failures)
    assert facts.last_run_failures_by_class == (
        ("throttled", 7),
        ("timeout", 1),
        ("unknown", 1),
        ("validation", 2),
    )
    (other,), _ = sanitize([row(last_run_id=42)], NOW, failures=failures)
    assert other.last_run_failures_by_class == ()


def test_a_run_that_finished_in_the_future_takes_its_answer_with_it():
    later = NOW + timedelta(hours=1)
    failed = row(status="failed", finished_at=later, error_code="401", last_run_id=41)
    failures = classify_failures([(41, "401", "x", 2)])
    (facts,), _ = sanitize([failed], NOW, failures=failures)
    assert facts.last_run_error_class is None and facts.last_run_failures_by_class == ()


def test_a_negative_rejected_count_is_repaired():
    (facts,), problems = sanitize([row(rejected_records=-3)], NOW)
    assert facts.rejected_records == 0
    assert [p.kind for p in problems] == ["rejected_records_negative"]
