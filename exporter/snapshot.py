"""The immutable facts the exporter reads from the sync log in one go.

A snapshot is read once per refresh and then shared, read-only, by every scrape;
nothing in it refers back to the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


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
    had to repair or skip (``exporter/validation.py``), for the refresher to log."""

    read_at: datetime
    integrations: tuple[IntegrationFacts, ...] = field(default_factory=tuple)
    problems: tuple[Problem, ...] = field(default_factory=tuple)
