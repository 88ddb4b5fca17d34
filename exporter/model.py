"""The immutable types every stage of the data flow hands to the next.

sync log --(source: Snapshot of IntegrationFacts)--> health --(IntegrationStatus)-->
refresher --(ServedState)--> exposition and status page. A snapshot is read once per
refresh and then shared, read-only, by every scrape; nothing here refers back to the
database, so each stage can be tested by building these values by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum


@dataclass(frozen=True, slots=True)
class IntegrationFacts:
    """What the sync log says about one (organization, connector) pair."""

    org_id: str
    org_name: str
    connector: str
    active: bool
    stale_after_seconds: int
    created_at: datetime
    pending_records: int = 0
    oldest_pending_at: datetime | None = None
    last_run_status: str | None = None
    last_run_started_at: datetime | None = None
    last_run_finished_at: datetime | None = None
    last_run_records_total: int = 0
    last_run_records_failed: int = 0
    last_success_at: datetime | None = None
    running_since: datetime | None = None
    # Reconciliation and error classes (the contract): records given up on, the expected
    # schedule, and what the last finished run's failures were, by error class.
    rejected_records: int = 0
    expected_interval_seconds: int | None = None
    last_run_id: int | None = None
    last_run_error_code: str | None = None
    last_run_error_message: str | None = None
    last_run_error_class: str | None = None  # the class of a run that failed as a whole
    last_run_failures_by_class: tuple[tuple[str, int], ...] = ()  # (error_class, records)
    # Monotonic totals since the integration was created (counters on /metrics).
    runs_finished_total: tuple[tuple[str, int], ...] = ()  # (status, runs), finished statuses
    records_failed_total: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.org_id, self.connector)


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One thing wrong with one integration's rows; ``kind`` is a stable short name."""

    org: str
    connector: str
    kind: str
    detail: str

    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.org, self.connector, self.kind)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every integration's facts, as one consistent read at ``read_at``, and what the read
    had to repair or skip (``exporter/source/cleaning.py``), for the refresher to log."""

    read_at: datetime
    integrations: tuple[IntegrationFacts, ...] = field(default_factory=tuple)
    problems: tuple[Problem, ...] = field(default_factory=tuple)


class Health(IntEnum):
    GREEN = 0
    AMBER = 1
    RED = 2


@dataclass(frozen=True, slots=True)
class IntegrationStatus:
    """An integration's facts with the health the rules gave them, and why in words."""

    facts: IntegrationFacts
    health: Health
    reason: str


@dataclass(frozen=True, slots=True)
class ServedState:
    """What a scrape shows: the last good evaluation plus how the last refresh went."""

    statuses: tuple[IntegrationStatus, ...] = field(default_factory=tuple)
    source_up: bool = False
    last_refresh_at: float | None = None  # when the served snapshot was read (epoch seconds)
    refresh_duration: float | None = None
    refresh_failures: int = 0
    generation: int = 0
    refreshes: tuple[tuple[str, int], ...] = ()  # (trigger, count): interval or notification
