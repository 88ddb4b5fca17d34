"""Rendering one refresh's outcome as Prometheus metric families.

Pure: it turns an immutable ``ServedState`` into fresh families on every ``collect()``,
so an integration removed from the sync log leaves no stale series behind, and it never
touches the database (``describe()`` returns nothing, so registering is free).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.exposition import metrics as m
from exporter.model import IntegrationStatus, ServedState
from exporter.source.schema import RUN_STATUSES


class SyncLogCollector(Collector):
    """Per-integration series and the exporter's own, for the state it is handed.

    Example output::

        accounting_sync_health{connector="dynamics",org="hlf"} 0.0
        accounting_sync_pending_records{connector="dynamics",org="hlf"} 12.0
        accounting_sync_org_info{connector="dynamics",org="hlf",org_name="HLF"} 1.0
        accounting_sync_exporter_source_up 1.0
    """

    def __init__(self, state: ServedState) -> None:
        self.state = state

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from integration_families(self.state.statuses)
        yield from exporter_families(self.state)


def integration_families(statuses: tuple[IntegrationStatus, ...]) -> Iterator[Metric]:
    labels = list(m.INTEGRATION_LABELS)
    pending = GaugeMetricFamily(m.PENDING_RECORDS, "Records in state pending.", labels=labels)
    failed = GaugeMetricFamily(
        m.FAILED_RECORDS, "records_failed of the last finished sync run.", labels=labels
    )
    last_success = GaugeMetricFamily(
        m.LAST_SUCCESS_TIMESTAMP,
        "finished_at of the last successful (succeeded or partial) sync run; absent if none.",
        labels=labels,
    )
    last_run = GaugeMetricFamily(
        m.LAST_RUN_TIMESTAMP, "finished_at of the last finished sync run.", labels=labels
    )
    health = GaugeMetricFamily(m.HEALTH, "0 green, 1 amber, 2 red.", labels=labels)
    active = GaugeMetricFamily(
        m.INTEGRATION_ACTIVE, "1 if a sync is expected, else 0.", labels=labels
    )
    stale_after = GaugeMetricFamily(
        m.STALE_AFTER_SECONDS,
        "Seconds without a successful sync after which the integration is red.",
        labels=labels,
    )
    oldest_pending = GaugeMetricFamily(
        m.OLDEST_PENDING_TIMESTAMP,
        "enqueued_at of the oldest pending record; absent if none.",
        labels=labels,
    )
    info = GaugeMetricFamily(
        m.ORG_INFO,
        "Always 1; carries the organization's display name.",
        labels=["org", "org_name", "connector"],
    )
    duration = GaugeMetricFamily(
        m.LAST_RUN_DURATION, "Duration of the last finished sync run.", labels=labels
    )
    records = GaugeMetricFamily(
        m.LAST_RUN_RECORDS, "records_total of the last finished sync run.", labels=labels
    )
    status = StateSetMetricFamily(
        m.LAST_RUN_STATUS, "Status of the last finished sync run.", labels=labels
    )
    running = GaugeMetricFamily(
        m.RUNNING_SINCE_TIMESTAMP,
        "started_at of the oldest sync run still running; absent if none.",
        labels=labels,
    )
    for item in statuses:
        f = item.facts
        key = [f.org_id, f.connector]
        pending.add_metric(key, f.pending_records)
        failed.add_metric(key, f.last_run_records_failed)
        health.add_metric(key, int(item.health))
        active.add_metric(key, 1 if f.active else 0)
        stale_after.add_metric(key, f.stale_after_seconds)
        info.add_metric([f.org_id, f.org_name, f.connector], 1)
        if f.last_success_at is not None:
            last_success.add_metric(key, f.last_success_at.timestamp())
        if f.last_run_finished_at is not None:
            last_run.add_metric(key, f.last_run_finished_at.timestamp())
            records.add_metric(key, f.last_run_records_total)
            status.add_metric(key, {s: s == f.last_run_status for s in RUN_STATUSES[1:]})
            if f.last_run_started_at is not None:
                seconds = (f.last_run_finished_at - f.last_run_started_at).total_seconds()
                duration.add_metric(key, max(seconds, 0.0))
        if f.oldest_pending_at is not None:
            oldest_pending.add_metric(key, f.oldest_pending_at.timestamp())
        if f.running_since is not None:
            running.add_metric(key, f.running_since.timestamp())
    yield from (
        pending,
        failed,
        last_success,
        last_run,
        health,
        active,
        stale_after,
        oldest_pending,
        info,
        duration,
        records,
        status,
        running,
    )


def exporter_families(state: ServedState) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        m.SOURCE_UP,
        "1 if the last read of the sync log succeeded, else 0.",
        value=1 if state.source_up else 0,
    )
    if state.last_refresh_at is not None:
        yield GaugeMetricFamily(
            m.LAST_REFRESH_TIMESTAMP,
            "When the snapshot being served was read from the sync log.",
            value=state.last_refresh_at,
        )
    if state.refresh_duration is not None:
        yield GaugeMetricFamily(
            m.REFRESH_DURATION, "How long the last refresh took.", value=state.refresh_duration
        )
    yield CounterMetricFamily(
        m.REFRESH_FAILURES,
        "Refreshes that could not read the sync log.",
        value=state.refresh_failures,
    )
    refreshes = CounterMetricFamily(
        m.REFRESHES, "Refreshes started, by what asked for them.", labels=["trigger"]
    )
    for trigger, count in state.refreshes:
        refreshes.add_metric([trigger], count)
    yield refreshes
    yield GaugeMetricFamily(
        m.INTEGRATIONS, "Integrations in the snapshot being served.", value=len(state.statuses)
    )
    yield InfoMetricFamily(m.BUILD_INFO, "The exporter's version.", value={"version": __version__})
