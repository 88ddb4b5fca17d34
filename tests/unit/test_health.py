"""The contract's health rules, one row per rule and boundary, with ``now`` passed in.

The facts are what the snapshot reader reads from the sync log; how each fact is derived
from runs (last finished run, last successful sync, running runs) is tested in
tests/integration/source/test_reader.py. Here: what health a finance administrator sees for
those facts.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from exporter.health import evaluate, evaluate_snapshot
from exporter.model import Health, IntegrationFacts, Snapshot

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
DAY = 86400


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def facts(**overrides: object) -> IntegrationFacts:
    """An active integration created 30 days ago that synced cleanly ten minutes ago."""
    base = IntegrationFacts(
        org_id="hlf",
        org_name="Hørselshemmedes Landsforbund",
        connector="dynamics",
        active=True,
        stale_after_seconds=DAY,
        created_at=ago(30 * DAY),
        last_run_status="succeeded",
        last_run_started_at=ago(630),
        last_run_finished_at=ago(600),
        last_run_records_total=12,
        last_run_records_failed=0,
        last_success_at=ago(600),
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


NEVER_RAN = {
    "last_run_status": None,
    "last_run_started_at": None,
    "last_run_finished_at": None,
    "last_run_records_total": 0,
    "last_run_records_failed": 0,
    "last_success_at": None,
}

CASES: list[tuple[str, dict[str, object], Health]] = [
    ("synced ten minutes ago", {}, Health.GREEN),
    # Red: strictly more than stale_after since the last successful sync.
    ("last success exactly stale_after ago", {"last_success_at": ago(DAY)}, Health.GREEN),
    ("last success one second past", {"last_success_at": ago(DAY + 1)}, Health.RED),
    ("last success a microsecond past", {"last_success_at": ago(DAY + 1e-6)}, Health.RED),
    (
        "a shorter window of its own",
        {"stale_after_seconds": 3600, "last_success_at": ago(3601)},
        Health.RED,
    ),
    (
        "a longer window of its own",
        {"stale_after_seconds": 3 * DAY, "last_success_at": ago(2 * DAY)},
        Health.GREEN,
    ),
    # Never synced: the window counts from the integration's created_at.
    (
        "never synced, created inside the window",
        {**NEVER_RAN, "created_at": ago(3600)},
        Health.GREEN,
    ),
    (
        "never synced, created exactly stale_after ago",
        {**NEVER_RAN, "created_at": ago(DAY)},
        Health.GREEN,
    ),
    (
        "never synced, created one second past",
        {**NEVER_RAN, "created_at": ago(DAY + 1)},
        Health.RED,
    ),
    # A recent success beats an old created_at; created_at only stands in for "no success".
    ("old integration, recent success", {"created_at": ago(365 * DAY)}, Health.GREEN),
    # Inactive integrations are never red, whatever the silence; amber still applies.
    (
        "inactive and silent for a year",
        {**NEVER_RAN, "active": False, "created_at": ago(365 * DAY)},
        Health.GREEN,
    ),
    (
        "inactive, last success long ago",
        {"active": False, "last_success_at": ago(40 * DAY)},
        Health.GREEN,
    ),
    (
        "inactive, last run failed long ago",
        {"active": False, "last_run_status": "failed", "last_success_at": ago(40 * DAY)},
        Health.AMBER,
    ),
    # A run still running is not the last run and does not count as a sync.
    ("running now, last run clean", {"running_since": ago(5)}, Health.GREEN),
    (
        "running for days, no success in the window",
        {"running_since": ago(2 * DAY), "last_success_at": ago(DAY + 1)},
        Health.RED,
    ),
    (
        "running, never finished a run, created long ago",
        {**NEVER_RAN, "running_since": ago(60), "created_at": ago(2 * DAY)},
        Health.RED,
    ),
    # Amber from the last finished run alone: failed status, or records_failed > 0.
    (
        "last run failed (aborted), earlier success recent",
        {"last_run_status": "failed", "last_run_records_failed": 0, "last_success_at": ago(3600)},
        Health.AMBER,
    ),
    (
        "last run partial with failed records",
        {"last_run_status": "partial", "last_run_records_failed": 3},
        Health.AMBER,
    ),
    (
        "last run partial, zero failed records",
        {"last_run_status": "partial", "last_run_records_failed": 0},
        Health.GREEN,
    ),
    ("last run succeeded but reports failed records", {"last_run_records_failed": 1}, Health.AMBER),
    (
        "an earlier run failed, the last one succeeded",
        {"last_run_status": "succeeded", "last_run_records_failed": 0},
        Health.GREEN,
    ),
    # Red beats amber.
    (
        "last run failed and no success in the window",
        {"last_run_status": "failed", "last_success_at": ago(DAY + 1)},
        Health.RED,
    ),
    (
        "partial long ago, failed records, window passed",
        {
            "last_run_status": "partial",
            "last_run_records_failed": 2,
            "last_run_finished_at": ago(2 * DAY),
            "last_success_at": ago(2 * DAY),
        },
        Health.RED,
    ),
    (
        "never a success, only failed runs, created long ago",
        {
            **NEVER_RAN,
            "last_run_status": "failed",
            "last_run_finished_at": ago(60),
            "created_at": ago(2 * DAY),
        },
        Health.RED,
    ),
    (
        "never a success, one failed run, created recently",
        {
            **NEVER_RAN,
            "last_run_status": "failed",
            "last_run_finished_at": ago(60),
            "created_at": ago(3600),
        },
        Health.AMBER,
    ),
]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [pytest.param(o, e, id=name) for name, o, e in CASES],
)
def test_health_rules(overrides: dict[str, object], expected: Health) -> None:
    assert evaluate(facts(**overrides), NOW).health is expected


def test_health_values_are_the_contract_numbers() -> None:
    assert (int(Health.GREEN), int(Health.AMBER), int(Health.RED)) == (0, 1, 2)


@pytest.mark.parametrize(
    ("stale_after", "window"),
    [
        (86400, "24 hours"),
        (2 * 86400, "48 hours"),
        (90000, "25 hours"),
        (3600, "1 hour"),
        (7200, "2 hours"),
        (1800, "30 minutes"),
        (60, "1 minute"),
        (90, "90 seconds"),
        (1, "1 second"),
    ],
)
def test_red_warning_names_the_real_window(stale_after: int, window: str) -> None:
    status = evaluate(facts(stale_after_seconds=stale_after, last_success_at=ago(10 * DAY)), NOW)
    assert status.health is Health.RED
    assert status.reason.startswith(f"No successful sync in the last {window}")
    assert status.reason[len(f"No successful sync in the last {window}") :][:1] in ("", " ")


def test_red_warning_for_a_never_synced_integration_says_since_when() -> None:
    status = evaluate(facts(**NEVER_RAN, created_at=ago(2 * DAY)), NOW)
    assert status.reason.startswith("No successful sync in the last 24 hours")
    assert status.reason.endswith("(no successful sync since 2026-11-26 12:00 UTC)")


def test_amber_reason_says_what_failed() -> None:
    assert "3 records failed" in evaluate(facts(last_run_records_failed=3), NOW).reason
    assert "failed" in evaluate(facts(last_run_status="failed"), NOW).reason


def test_a_snapshot_is_evaluated_per_integration_in_order() -> None:
    snapshot = Snapshot(
        read_at=NOW,
        integrations=(
            facts(org_id="a"),
            facts(org_id="b", last_success_at=ago(DAY + 1)),
            facts(org_id="c", last_run_records_failed=1),
        ),
    )
    statuses = evaluate_snapshot(snapshot, NOW)
    assert [(s.facts.org_id, s.health) for s in statuses] == [
        ("a", Health.GREEN),
        ("b", Health.RED),
        ("c", Health.AMBER),
    ]


def test_evaluation_uses_the_time_passed_in_not_the_clock() -> None:
    old = facts(last_success_at=datetime(2020, 1, 1, tzinfo=UTC))
    assert evaluate(old, datetime(2020, 1, 1, 12, tzinfo=UTC)).health is Health.GREEN
    assert evaluate(old, datetime(2020, 1, 3, tzinfo=UTC)).health is Health.RED
