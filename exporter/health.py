"""The health rules of the contract, as a pure function of the facts and the time.

Kept free of I/O so that every boundary (exactly at ``stale_after``, a running run, a
partial run) is tested by passing ``now`` instead of waiting for the clock.
"""

from __future__ import annotations

from datetime import UTC, datetime

from exporter.model import Health, IntegrationFacts, IntegrationStatus, Snapshot

SUCCESSFUL_STATUSES = frozenset({"succeeded", "partial"})


def evaluate(facts: IntegrationFacts, now: datetime) -> IntegrationStatus:
    """Red beats amber beats green; only the last finished run decides amber."""
    if facts.active:
        since = facts.last_success_at or facts.created_at
        if (now - since).total_seconds() > facts.stale_after_seconds:
            what = "last successful sync" if facts.last_success_at else "no successful sync since"
            return IntegrationStatus(
                facts,
                Health.RED,
                f"No successful sync in the last {_window(facts.stale_after_seconds)} "
                f"({what} {_instant(since)})",
            )
    if facts.last_run_status == "failed":
        return IntegrationStatus(facts, Health.AMBER, "the last sync run failed")
    if facts.last_run_records_failed > 0:
        return IntegrationStatus(
            facts,
            Health.AMBER,
            f"{facts.last_run_records_failed} records failed in the last sync",
        )
    return IntegrationStatus(facts, Health.GREEN, "ok")


def evaluate_snapshot(snapshot: Snapshot, now: datetime) -> tuple[IntegrationStatus, ...]:
    return tuple(evaluate(facts, now) for facts in snapshot.integrations)


def _window(seconds: int) -> str:
    """The integration's real window in words ("24 hours"), as the warning must say."""
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds % size == 0 and seconds >= size:
            count = seconds // size
            if unit == "day":
                return f"{count * 24} hours"
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def _instant(moment: datetime) -> str:
    """An instant as a person reads it on the status page: to the minute, in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
