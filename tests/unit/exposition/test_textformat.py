"""The fast exposition writer (exposition/textformat.py) says exactly what prometheus_client says.

Every refresh renders through it, so any difference would reach Prometheus: the test
compares bytes against prometheus_client's own writers for the exporter's real families,
with awkward display names, absent series and every run status, in both formats.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import exposition as text_format
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.openmetrics import exposition as openmetrics_format
from prometheus_client.registry import CollectorRegistry

from exporter.exposition import textformat
from exporter.exposition.collector import SyncLogCollector
from exporter.health import evaluate_snapshot
from exporter.model import IntegrationFacts, ServedState, Snapshot

NOW = datetime(2026, 11, 29, 1, 2, 3, 456789, tzinfo=UTC)
NAMES = [
    "Norges Blindeforbund",
    'Quote " and backslash \\ org',
    "Line\nbreak",
    "Hørselshemmedes Landsforbund ✓",
    "",
]


def _facts(number: int) -> IntegrationFacts:
    status = [None, "succeeded", "partial", "failed"][number % 4]
    finished = NOW - timedelta(minutes=number) if status else None
    return IntegrationFacts(
        org_id=f"org-{number:03d}",
        org_name=NAMES[number % len(NAMES)],
        connector=("xledger", "dynamics")[number % 2],
        active=number % 5 != 0,
        stale_after_seconds=86400 + number,
        created_at=NOW - timedelta(days=number),
        pending_records=number * 3,
        oldest_pending_at=NOW - timedelta(seconds=number * 1.5) if number % 3 else None,
        last_run_status=status,
        last_run_started_at=finished - timedelta(seconds=97.25) if finished else None,
        last_run_finished_at=finished,
        last_run_records_total=number * 10,
        last_run_records_failed=number if status == "partial" else 0,
        last_success_at=finished if status in ("succeeded", "partial") else None,
        running_since=NOW - timedelta(seconds=5) if number % 7 == 0 else None,
        rejected_records=number % 4,
        expected_interval_seconds=900 if number % 3 else None,
        last_run_error_class=("auth", "throttled", "unknown")[number % 3]
        if status == "failed"
        else None,
        last_run_failures_by_class=(("timeout", 1), ("validation", number))
        if status == "partial"
        else (),
        runs_finished_total=(("succeeded", number * 40), ("partial", number), ("failed", 2)),
        records_failed_total=number * 3,
    )


def _registry(count: int, **state: object) -> CollectorRegistry:
    statuses = evaluate_snapshot(Snapshot(NOW, tuple(_facts(n) for n in range(count))), NOW)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        SyncLogCollector(ServedState(statuses=statuses, source_up=True, **state))  # type: ignore[arg-type]
    )
    return registry


@pytest.mark.parametrize("count", [0, 1, 60])
@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_same_bytes_as_prometheus_client(count, openmetrics):
    registry = _registry(
        count,
        last_refresh_at=NOW.timestamp(),
        refresh_duration=0.0123,
        refresh_failures=2,
        refreshes=(("interval", 3), ("notification", 41)),
    )
    expected = (openmetrics_format if openmetrics else text_format).generate_latest(registry)
    assert textformat.generate(registry, openmetrics=openmetrics) == expected


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_families_it_does_not_handle_go_to_prometheus_client(openmetrics):
    registry = CollectorRegistry(auto_describe=False)

    class Odd:
        def collect(self):  # type: ignore[no-untyped-def]
            gauge = GaugeMetricFamily("with_timestamp", "help", labels=["a"])
            gauge.add_metric(["x"], 1.5, timestamp=1700000000.25)
            yield gauge
            counter = CounterMetricFamily("jobs", "help", labels=["a"], created=1700000000.0)
            counter.add_metric(["y"], 2, created=1700000000.0)
            yield counter

    registry.register(Odd())  # type: ignore[arg-type]
    expected = (openmetrics_format if openmetrics else text_format).generate_latest(registry)
    assert textformat.generate(registry, openmetrics=openmetrics) == expected


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_lines_reused_from_the_previous_refresh_give_the_same_bytes(openmetrics):
    first = evaluate_snapshot(Snapshot(NOW, tuple(_facts(n) for n in range(40))), NOW)
    previous = textformat.LineCache()
    textformat.render_pieces(ServedState(statuses=first), previous)
    # Next refresh: one integration gone, one new, one changed, the rest as they were.
    changed = replace(first[5].facts, pending_records=999, org_name='now "quoted"')
    facts = [s.facts for s in first if s.facts.org_id != "org-003"] + [_facts(77)]
    facts[5] = changed
    second = evaluate_snapshot(Snapshot(NOW, tuple(facts)), NOW)
    state = ServedState(statuses=second, source_up=True, refreshes=(("notification", 2),))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SyncLogCollector(state))
    expected = (openmetrics_format if openmetrics else text_format).generate_latest(registry)
    pieces = textformat.render_pieces(state, textformat.LineCache(previous))
    eof = b"# EOF\n" if openmetrics else b""
    assert pieces.body(openmetrics=openmetrics, extra=eof) == expected
