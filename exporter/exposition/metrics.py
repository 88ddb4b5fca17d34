"""The metric table: every series the exporter publishes, one row each.

Rules, dashboards, the status page and users' PromQL depend on these spellings
(the metric contract, listed in the README). The collector builds its families from these
rows, and a test checks that every ``accounting_sync_*`` name in the dashboards, rule files
and documents is one of them, so a renamed metric cannot silently empty a panel or an alert.
The order of the rows is the order of the families in the exposition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["gauge", "counter", "info", "stateset"]
INTEGRATION_LABELS = ("org", "connector")


@dataclass(frozen=True, slots=True)
class Spec:
    """One metric: the name as prometheus_client takes it (no ``_total``/``_info``)."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = INTEGRATION_LABELS
    contract: bool = False  # in the contract: renaming it breaks other systems

    @property
    def exposed_names(self) -> tuple[str, ...]:
        """The names that appear on the wire (and so in PromQL) for this metric."""
        if self.kind == "counter":
            return (self.name + "_total",)
        if self.kind == "info":
            return (self.name + "_info",)
        return (self.name,)


# Per integration, labels org and connector.
PENDING_RECORDS = Spec(
    "accounting_sync_pending_records", "gauge", "Records in state pending.", contract=True
)
FAILED_RECORDS = Spec(
    "accounting_sync_failed_records",
    "gauge",
    "records_failed of the last finished sync run.",
    contract=True,
)
LAST_SUCCESS_TIMESTAMP = Spec(
    "accounting_sync_last_success_timestamp_seconds",
    "gauge",
    "finished_at of the last successful (succeeded or partial) sync run; absent if none.",
    contract=True,
)
LAST_RUN_TIMESTAMP = Spec(
    "accounting_sync_last_run_timestamp_seconds",
    "gauge",
    "finished_at of the last finished sync run.",
    contract=True,
)
HEALTH = Spec("accounting_sync_health", "gauge", "0 green, 1 amber, 2 red.", contract=True)
INTEGRATION_ACTIVE = Spec(
    "accounting_sync_integration_active",
    "gauge",
    "1 if a sync is expected, else 0.",
    contract=True,
)
STALE_AFTER_SECONDS = Spec(
    "accounting_sync_stale_after_seconds",
    "gauge",
    "Seconds without a successful sync after which the integration is red.",
    contract=True,
)
OLDEST_PENDING_TIMESTAMP = Spec(
    "accounting_sync_oldest_pending_record_timestamp_seconds",
    "gauge",
    "enqueued_at of the oldest pending record; absent if none.",
    contract=True,
)
ORG_INFO = Spec(
    "accounting_sync_org_info",
    "gauge",
    "Always 1; carries the organization's display name.",
    labels=("org", "org_name", "connector"),
    contract=True,
)
LAST_RUN_DURATION = Spec(
    "accounting_sync_last_run_duration_seconds",
    "gauge",
    "Duration of the last finished sync run.",
)
LAST_RUN_RECORDS = Spec(
    "accounting_sync_last_run_records", "gauge", "records_total of the last finished sync run."
)
LAST_RUN_STATUS = Spec(
    "accounting_sync_last_run_status", "stateset", "Status of the last finished sync run."
)
RUNNING_SINCE_TIMESTAMP = Spec(
    "accounting_sync_running_run_started_timestamp_seconds",
    "gauge",
    "started_at of the oldest sync run still running; absent if none.",
)
# Reconciliation and error classes (DESIGN.md): what a person must do, not just what happened.
ERROR_CLASS_LABELS = ("org", "connector", "error_class")
REJECTED_RECORDS = Spec(
    "accounting_sync_rejected_records",
    "gauge",
    "Records in state rejected: given up, they reach the accounting system only if a person acts.",
    contract=True,
)
LAST_RUN_FAILED_BY_CLASS = Spec(
    "accounting_sync_last_run_failed_records_by_class",
    "gauge",
    "The last finished sync run's failed records (sync_record_error rows) per error class.",
    labels=ERROR_CLASS_LABELS,
    contract=True,
)
LAST_RUN_ERROR_CLASS = Spec(
    "accounting_sync_last_run_error_class",
    "gauge",
    "1 when the last finished sync run failed as a whole, labelled with its error class.",
    labels=ERROR_CLASS_LABELS,
    contract=True,
)
EXPECTED_INTERVAL_SECONDS = Spec(
    "accounting_sync_expected_interval_seconds",
    "gauge",
    "How often a sync run is expected to finish; absent when unknown.",
    contract=True,
)
CREATED_TIMESTAMP = Spec(
    "accounting_sync_integration_created_timestamp_seconds",
    "gauge",
    "created_at of the integration: where lateness counts from before the first success.",
)
RUNS_FINISHED = Spec(
    "accounting_sync_runs_finished",
    "counter",
    "Sync runs that finished, by status, counted when they finish (never decreases).",
    labels=("org", "connector", "status"),
)
RECORDS_FAILED = Spec(
    "accounting_sync_records_failed",
    "counter",
    "records_failed of every finished sync run, added when it finishes (never decreases).",
)

# The exporter itself, no labels.
SOURCE_UP = Spec(
    "accounting_sync_exporter_source_up",
    "gauge",
    "1 if the last read of the sync log succeeded, else 0.",
    labels=(),
    contract=True,
)
LAST_REFRESH_TIMESTAMP = Spec(
    "accounting_sync_exporter_last_refresh_timestamp_seconds",
    "gauge",
    "When the snapshot being served was read from the sync log.",
    labels=(),
    contract=True,
)
REFRESH_DURATION = Spec(
    "accounting_sync_exporter_refresh_duration_seconds",
    "gauge",
    "How long the last refresh took.",
    labels=(),
    contract=True,
)
REFRESH_FAILURES = Spec(
    "accounting_sync_exporter_refresh_failures",
    "counter",
    "Refreshes that could not read the sync log.",
    labels=(),
)
REFRESHES = Spec(
    "accounting_sync_exporter_refreshes",
    "counter",
    "Refreshes started, by what asked for them.",
    labels=("trigger",),
)
INTEGRATIONS = Spec(
    "accounting_sync_exporter_integrations",
    "gauge",
    "Integrations in the snapshot being served.",
    labels=(),
)
BUILD_INFO = Spec(
    "accounting_sync_exporter_build", "info", "The exporter's version.", labels=("version",)
)


TABLE: tuple[Spec, ...] = (
    PENDING_RECORDS,
    FAILED_RECORDS,
    LAST_SUCCESS_TIMESTAMP,
    LAST_RUN_TIMESTAMP,
    HEALTH,
    INTEGRATION_ACTIVE,
    STALE_AFTER_SECONDS,
    OLDEST_PENDING_TIMESTAMP,
    ORG_INFO,
    LAST_RUN_DURATION,
    LAST_RUN_RECORDS,
    LAST_RUN_STATUS,
    RUNNING_SINCE_TIMESTAMP,
    REJECTED_RECORDS,
    LAST_RUN_FAILED_BY_CLASS,
    LAST_RUN_ERROR_CLASS,
    EXPECTED_INTERVAL_SECONDS,
    CREATED_TIMESTAMP,
    RUNS_FINISHED,
    RECORDS_FAILED,
    SOURCE_UP,
    LAST_REFRESH_TIMESTAMP,
    REFRESH_DURATION,
    REFRESH_FAILURES,
    REFRESHES,
    INTEGRATIONS,
    BUILD_INFO,
)
PER_INTEGRATION: tuple[Spec, ...] = tuple(s for s in TABLE if "org" in s.labels)
EXPOSED_NAMES: frozenset[str] = frozenset(n for s in TABLE for n in s.exposed_names)
