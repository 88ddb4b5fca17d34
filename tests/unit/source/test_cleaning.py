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

from exporter.source.cleaning import FUTURE_TOLERANCE, ProblemLog, sanitize

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
