"""Turning raw sync log rows into trustworthy facts, and saying once what was wrong.

The sync log is written by other programs. On SQLite (no enforced checks unless the writer
asked for them) or after a constraint was dropped, a row can hold an unknown connector, a
negative count, a NULL name, a run that finished before it started or a date in the future.
One bad row must neither stop the refresh (that would take every organization's series
down with it) nor leak nonsense into the exposition, so each row is repaired or skipped
here, alone, and every repair is returned as a ``Problem`` for the caller to log.

Pure: no I/O, ``read_at`` is a parameter. ``ProblemLog`` is the only state: it remembers
which problems it has already reported so a bad row costs one log line, not one per refresh.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from exporter.classification import Classifier
from exporter.model import IntegrationFacts, Problem
from exporter.source.schema import CONNECTORS, FINISHED_STATUSES, RECORD_STATES, RUN_STATUSES

# Clocks of the writer and the exporter disagree a little; beyond this a date is wrong.
FUTURE_TOLERANCE = timedelta(minutes=5)
DEFAULT_STALE_AFTER_SECONDS = 86400

log = logging.getLogger(__name__)


class _Row:
    """Collects the problems of one integration while its facts are being repaired."""

    def __init__(self, org: str, connector: str) -> None:
        self.org = org
        self.connector = connector
        self.problems: list[Problem] = []

    def problem(self, kind: str, detail: str) -> None:
        self.problems.append(Problem(self.org, self.connector, kind, detail))


def _count(row: _Row, value: Any, what: str) -> int:
    if value is None:
        return 0
    try:
        number = int(value)
    except (TypeError, ValueError):
        row.problem(f"{what}_invalid", f"{what} is not a number ({value!r}); using 0")
        return 0
    if number < 0:
        row.problem(f"{what}_negative", f"{what} is negative ({number}); using 0")
        return 0
    return number


def _total(row: _Row, value: Any, what: str) -> int:
    """A counter's total: NULL is a broken row here (the statements never return NULL)."""
    if value is None:
        row.problem(f"{what}_missing", f"{what} is NULL; using 0")
        return 0
    return _count(row, value, what)


def _stale_after(row: _Row, value: Any) -> int:
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        seconds = 0
    if seconds <= 0:
        row.problem(
            "stale_after_invalid",
            f"stale_after_seconds is {value!r}, not a positive number; "
            f"using {DEFAULT_STALE_AFTER_SECONDS}",
        )
        return DEFAULT_STALE_AFTER_SECONDS
    return seconds


def _expected_interval(row: _Row, value: Any) -> int | None:
    """NULL means unknown; 0, negative or not a number would make every run look late."""
    if value is None:
        return None
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        seconds = 0
    if seconds <= 0 or seconds != value:
        row.problem(
            "expected_interval_invalid",
            f"expected_interval_seconds is {value!r}, not a positive whole number; "
            "treated as unknown",
        )
        return None
    return seconds


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _not_future(row: _Row, value: datetime | None, what: str, limit: datetime) -> datetime | None:
    if value is not None and value > limit:
        row.problem(f"{what}_in_future", f"{what} {value.isoformat()} is in the future; ignored")
        return None
    return value


# The snapshot statements' result columns, by name and in order: both statements in
# source/reader.py select exactly these (a unit test compares them), and rows are read by
# these names, so adding a fact means adding it here and to both statements.
SNAPSHOT_COLUMNS = (
    "org_id",
    "org_name",
    "connector",
    "active",
    "stale_after_seconds",
    "created_at",
    "last_success_at",
    "running_since",
    "pending_records",
    "oldest_pending_at",
    "status",
    "started_at",
    "finished_at",
    "records_total",
    "records_failed",
    # Reconciliation and error classes (migration 0006).
    "rejected_records",
    "expected_interval_seconds",
    "last_run_id",
    "error_code",
    "error_message",
    "runs_succeeded_total",
    "runs_partial_total",
    "runs_failed_total",
    "records_failed_total",
)
_ORG_ID = SNAPSHOT_COLUMNS.index("org_id")
_CONNECTOR = SNAPSHOT_COLUMNS.index("connector")


# What the snapshot knows of a run's failed records: (error_class, records) sorted by class.
FailuresByClass = tuple[tuple[str, int], ...]
DEFAULT_CLASSIFIER = Classifier()


def _facts(
    raw: Sequence[Any],
    read_at: datetime,
    row: _Row,
    classifier: Classifier,
    failures: Mapping[int, FailuresByClass],
) -> IntegrationFacts:
    values = dict(zip(SNAPSHOT_COLUMNS, raw, strict=True))
    org_id, org_name, connector = values["org_id"], values["org_name"], values["connector"]
    active, stale_after, created_at = (
        values["active"],
        values["stale_after_seconds"],
        values["created_at"],
    )
    last_success_at, running_since = values["last_success_at"], values["running_since"]
    pending, oldest_pending_at = values["pending_records"], values["oldest_pending_at"]
    status, started_at, finished_at = values["status"], values["started_at"], values["finished_at"]
    records_total, records_failed = values["records_total"], values["records_failed"]
    run_id, error_code, error_message = (
        values["last_run_id"],
        values["error_code"],
        values["error_message"],
    )
    limit = read_at + FUTURE_TOLERANCE
    if not org_name:
        row.problem("org_name_missing", "the organization has no name (or no row); using its id")
        org_name = org_id
    if active is None:
        row.problem("active_missing", "active is NULL; treating the integration as active")
        active = True
    if created_at is None:
        row.problem("created_at_missing", "created_at is NULL; counting from now")
        created_at = read_at
    elif created_at > limit:
        row.problem("created_at_in_future", f"created_at {created_at.isoformat()} is in the future")
        created_at = read_at
    if status is not None and status not in RUN_STATUSES:
        row.problem("run_status_unknown", f"the last run's status {status!r} is unknown; ignored")
        status = None
    if finished_at is not None and finished_at > limit:
        row.problem(
            "run_finished_in_future",
            f"the last run finished_at {finished_at.isoformat()} is in the future; ignored",
        )
        status, started_at, finished_at, records_total, records_failed = (None,) * 5
        run_id, error_code, error_message = (None,) * 3
    if started_at is not None and finished_at is not None and finished_at < started_at:
        row.problem(
            "run_finished_before_started",
            f"the last run finished ({finished_at.isoformat()}) before it started "
            f"({started_at.isoformat()}); its duration is unknown",
        )
        started_at = None
    return IntegrationFacts(
        org_id=str(org_id),
        org_name=str(org_name),
        connector=str(connector),
        active=bool(active),
        stale_after_seconds=_stale_after(row, stale_after),
        created_at=created_at,
        last_success_at=_not_future(row, last_success_at, "last_success_at", limit),
        running_since=_not_future(row, running_since, "running_since", limit),
        pending_records=_count(row, pending, "pending_records"),
        oldest_pending_at=_not_future(row, oldest_pending_at, "oldest_pending_at", limit),
        last_run_status=status,
        last_run_started_at=started_at,
        last_run_finished_at=finished_at,
        last_run_records_total=_count(row, records_total, "records_total"),
        last_run_records_failed=_count(row, records_failed, "records_failed"),
        rejected_records=_count(row, values["rejected_records"], "rejected_records"),
        expected_interval_seconds=_expected_interval(row, values["expected_interval_seconds"]),
        last_run_id=None if run_id is None else int(run_id),
        last_run_error_code=_text(error_code),
        last_run_error_message=_text(error_message),
        # Only a run that failed as a whole has a class of its own (DESIGN.md); the
        # classifier maps anything, control characters and megabytes included, into the
        # vocabulary, so the label set stays bounded whatever the pipeline wrote.
        last_run_error_class=(
            classifier.classify(error_code, error_message) if status == "failed" else None
        ),
        last_run_failures_by_class=failures.get(int(run_id), ()) if run_id is not None else (),
        runs_finished_total=tuple(
            (name, _total(row, values[f"runs_{name}_total"], f"runs_{name}_total"))
            for name in FINISHED_STATUSES
        ),
        records_failed_total=_total(row, values["records_failed_total"], "records_failed_total"),
    )


def sanitize(
    rows: Iterable[Sequence[Any]],
    read_at: datetime,
    *,
    classifier: Classifier = DEFAULT_CLASSIFIER,
    failures: Mapping[int, FailuresByClass] | None = None,
) -> tuple[tuple[IntegrationFacts, ...], list[Problem]]:
    """Facts for every usable row (columns as ``SNAPSHOT_COLUMNS``) and the problems.

    ``failures`` holds the failed records of the last runs by class, keyed by run id
    (``classify_failures``); ``classifier`` gives a failed run its class.

    A row without an organization id or with an unknown connector is skipped: its labels
    would be empty or outside the connector set that rules and dashboards are built on.
    A second row for the same (organization, connector) is skipped so no series is doubled.
    """
    facts: list[IntegrationFacts] = []
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for raw in rows:
        org_id, connector = raw[_ORG_ID], raw[_CONNECTOR]
        row = _Row(str(org_id), str(connector))
        if not org_id or not isinstance(org_id, str):
            row.problem("org_id_missing", "an integration has no organization id; skipped")
        elif connector not in CONNECTORS:
            row.problem(
                "connector_unknown",
                f"connector {connector!r} is not one of {', '.join(CONNECTORS)}; skipped",
            )
        elif (org_id, connector) in seen:
            row.problem("integration_duplicated", "a second row for this integration; skipped")
        else:
            seen.add((org_id, connector))
            try:
                facts.append(_facts(raw, read_at, row, classifier, failures or {}))
            except (TypeError, ValueError) as exc:  # a value of the wrong type in a sloppy table
                row.problem("row_unreadable", f"skipped: {type(exc).__name__}: {exc}")
        problems.extend(row.problems)
    return tuple(facts), problems


def classify_failures(
    rows: Iterable[Sequence[Any]], classifier: Classifier = DEFAULT_CLASSIFIER
) -> dict[int, FailuresByClass]:
    """Failed records per run and class, from rows of (run_id, error_code, error_message,
    count) as ``reader.LAST_RUN_ERRORS`` groups them; a count that is not a positive
    number is dropped rather than guessed at."""
    totals: dict[int, dict[str, int]] = {}
    for run_id, code, message, count in rows:
        try:
            number = int(count)
        except (TypeError, ValueError):
            continue
        if run_id is None or number <= 0:
            continue
        by_class = totals.setdefault(int(run_id), {})
        error_class = classifier.classify(code, message)
        by_class[error_class] = by_class.get(error_class, 0) + number
    return {run: tuple(sorted(by_class.items())) for run, by_class in totals.items()}


def unknown_record_states(rows: Iterable[Sequence[Any]]) -> list[Problem]:
    """Problems for outbox records in a state the contract does not name.

    Such records are neither pending nor done as far as the exporter can tell, so they
    would silently drop out of the pending count; ``rows`` are (org, connector, state,
    count) as ``reader.UNKNOWN_RECORD_STATES`` groups them.
    """
    return [
        Problem(
            str(org_id),
            str(connector),
            "record_state_unknown",
            f"{count} records in state {state!r}, which is not one of "
            f"{', '.join(RECORD_STATES)}; not counted as pending",
        )
        for org_id, connector, state, count in rows
    ]


class ProblemLog:
    """Logs each problem when it first appears and once more when it is gone."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._logger = logger
        self._open: dict[tuple[str, str, str], Problem] = {}

    def report(self, problems: Iterable[Problem]) -> None:
        current = {problem.identity: problem for problem in problems}
        for identity in sorted(current.keys() - self._open.keys()):
            problem = current[identity]
            self._logger.warning(
                "bad row in the sync log",
                extra={
                    "org": problem.org,
                    "connector": problem.connector,
                    "problem": problem.kind,
                    "detail": problem.detail,
                },
            )
        for identity in sorted(self._open.keys() - current.keys()):
            org, connector, kind = identity
            self._logger.info(
                "bad row in the sync log is fixed",
                extra={"org": org, "connector": connector, "problem": kind},
            )
        self._open = current
