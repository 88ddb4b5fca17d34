"""Rendering one refresh's outcome as Prometheus metric families.

Pure: it turns an immutable ``ServedState`` into fresh families on every ``collect()``,
so an integration removed from the sync log leaves no stale series behind, and it never
touches the database (``describe()`` returns nothing, so registering is free).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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
from exporter.source.schema import FINISHED_STATUSES, RUN_STATUSES


class SyncLogCollector(Collector):
    """Per-integration series and the exporter's own, for the state it is handed.

    Example output::

        accounting_sync_health{connector="dynamics",org="hlf"} 0.0
        accounting_sync_pending_records{connector="dynamics",org="hlf"} 12.0
        accounting_sync_org_info{connector="dynamics",org="hlf",org_name="HLF"} 1.0
        accounting_sync_rejected_records{connector="dynamics",org="hlf"} 2.0
        accounting_sync_last_run_error_class{connector="dynamics",error_class="auth",org="hlf"} 1.0
        accounting_sync_exporter_source_up 1.0
    """

    def __init__(self, state: ServedState) -> None:
        self.state = state

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from integration_families(self.state.statuses)
        yield from exporter_families(self.state)


_KINDS: dict[str, Any] = {
    "gauge": GaugeMetricFamily,
    "counter": CounterMetricFamily,
    "stateset": StateSetMetricFamily,
}


def family(spec: m.Spec, value: float | None = None) -> Any:
    """An empty family for a row of the metric table (or a labelless one with its value)."""
    if spec.kind == "info":
        raise ValueError("info families carry their labels as the value: use info_family")
    if not spec.labels:
        return _KINDS[spec.kind](spec.name, spec.help, value=value)
    return _KINDS[spec.kind](spec.name, spec.help, labels=list(spec.labels))


def integration_families(statuses: tuple[IntegrationStatus, ...]) -> Iterator[Metric]:
    pending = family(m.PENDING_RECORDS)
    failed = family(m.FAILED_RECORDS)
    last_success = family(m.LAST_SUCCESS_TIMESTAMP)
    last_run = family(m.LAST_RUN_TIMESTAMP)
    health = family(m.HEALTH)
    active = family(m.INTEGRATION_ACTIVE)
    stale_after = family(m.STALE_AFTER_SECONDS)
    oldest_pending = family(m.OLDEST_PENDING_TIMESTAMP)
    info = family(m.ORG_INFO)
    duration = family(m.LAST_RUN_DURATION)
    records = family(m.LAST_RUN_RECORDS)
    status = family(m.LAST_RUN_STATUS)
    running = family(m.RUNNING_SINCE_TIMESTAMP)
    rejected = family(m.REJECTED_RECORDS)
    failed_by_class = family(m.LAST_RUN_FAILED_BY_CLASS)
    error_class = family(m.LAST_RUN_ERROR_CLASS)
    expected_interval = family(m.EXPECTED_INTERVAL_SECONDS)
    created = family(m.CREATED_TIMESTAMP)
    runs_finished = family(m.RUNS_FINISHED)
    records_failed = family(m.RECORDS_FAILED)
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
        rejected.add_metric(key, f.rejected_records)
        # Classes come from the classifier's fixed vocabulary, never from the sync log's
        # text, so these label sets stay bounded whatever codes the pipeline writes.
        for name, count in f.last_run_failures_by_class:
            failed_by_class.add_metric([*key, name], count)
        if f.last_run_status == "failed" and f.last_run_error_class is not None:
            error_class.add_metric([*key, f.last_run_error_class], 1)
        if f.expected_interval_seconds is not None:
            expected_interval.add_metric(key, f.expected_interval_seconds)
        created.add_metric(key, f.created_at.timestamp())
        # Every status always, so rate() has a series from the first scrape on.
        finished = dict(f.runs_finished_total)
        for name in FINISHED_STATUSES:
            runs_finished.add_metric([*key, name], finished.get(name, 0))
        records_failed.add_metric(key, f.records_failed_total)
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
        rejected,
        failed_by_class,
        error_class,
        expected_interval,
        created,
        runs_finished,
        records_failed,
    )


def exporter_families(state: ServedState) -> Iterator[Metric]:
    yield family(m.SOURCE_UP, 1 if state.source_up else 0)
    if state.last_refresh_at is not None:
        yield family(m.LAST_REFRESH_TIMESTAMP, state.last_refresh_at)
    if state.refresh_duration is not None:
        yield family(m.REFRESH_DURATION, state.refresh_duration)
    yield family(m.REFRESH_FAILURES, state.refresh_failures)
    refreshes = family(m.REFRESHES)
    for trigger, count in state.refreshes:
        refreshes.add_metric([trigger], count)
    yield refreshes
    yield family(m.INTEGRATIONS, len(state.statuses))
    yield InfoMetricFamily(m.BUILD_INFO.name, m.BUILD_INFO.help, value={"version": __version__})
