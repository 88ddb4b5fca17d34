"""Change notification end to end: a real PostgreSQL, the real triggers, the real exporter.

The refresh interval is an hour in these tests, so the only thing that can bring a
change to /metrics within the test's deadline is the NOTIFY path.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.migrate import upgrade
from exporter.source.pipeline import Pipeline
from tests.support import exporter_process, value, wait_until

pytestmark = pytest.mark.postgres

REFRESHES = "accounting_sync_exporter_refreshes_total"
LISTENER_APP = "accounting-sync-exporter-listener"


@pytest.fixture
def pipeline(pg_url):  # type: ignore[no-untyped-def]
    engine = create_sync_log_engine(normalize_url(pg_url))
    upgrade(engine)
    pipeline = Pipeline(engine)
    pipeline.register("hlf", "Hørselshemmedes Landsforbund", "dynamics")
    yield pipeline
    engine.dispose()


def _serve_slowly(pg_url: str, *extra: str) -> list[str]:
    return ["--database-url", pg_url, "--refresh-interval", "1h", *extra]


def _refreshes(samples, trigger: str) -> float:  # type: ignore[no-untyped-def]
    return value(samples, REFRESHES, trigger=trigger) or 0.0


def _listener_pids(pg_url: str) -> set[int]:
    engine = create_engine(normalize_url(pg_url))
    try:
        with engine.connect() as connection:
            return set(
                connection.scalars(
                    text(
                        "SELECT pid FROM pg_stat_activity "
                        "WHERE application_name = :app AND datname = current_database()"
                    ),
                    {"app": LISTENER_APP},
                )
            )
    finally:
        engine.dispose()


def test_a_finished_run_shows_without_waiting_for_the_interval(pg_url, pipeline, tmp_path):
    with exporter_process(_serve_slowly(pg_url), tmp_path) as exporter:
        wait_until(lambda: _listener_pids(pg_url), what="the listener's connection")
        finished = datetime.now(UTC).replace(microsecond=0)
        run = pipeline.start_run("hlf", "dynamics", at=finished - timedelta(seconds=30))
        pipeline.finish_run(run, "partial", records_total=10, records_failed=3, at=finished)

        def shown():  # type: ignore[no-untyped-def]
            samples = exporter.metrics()
            labels = {"org": "hlf", "connector": "dynamics"}
            if value(samples, "accounting_sync_last_run_timestamp_seconds", **labels) is None:
                return None
            return samples

        samples = wait_until(shown, timeout=10, what="the finished run on /metrics")
    labels = {"org": "hlf", "connector": "dynamics"}
    assert value(samples, "accounting_sync_last_run_timestamp_seconds", **labels) == (
        finished.timestamp()
    )
    assert value(samples, "accounting_sync_failed_records", **labels) == 3
    assert value(samples, "accounting_sync_health", **labels) == 1
    # Only the start-up read ran on the schedule; the notification did the rest.
    assert _refreshes(samples, "interval") == 1
    assert _refreshes(samples, "notification") >= 1


def test_a_burst_of_writes_is_folded_into_a_few_refreshes(pg_url, pipeline, tmp_path):
    debounce = 1.0
    args = _serve_slowly(pg_url, "--refresh.debounce", "1s")
    with exporter_process(args, tmp_path) as exporter:
        wait_until(lambda: _listener_pids(pg_url), what="the listener's connection")
        # Let the refresh that follows connecting happen, so it is not counted below.
        wait_until(lambda: _refreshes(exporter.metrics(), "notification") >= 1)
        before = _refreshes(exporter.metrics(), "notification")
        started = time.monotonic()
        for number in range(1000):  # one transaction each: a thousand notifications
            pipeline.enqueue("hlf", "dynamics", [("expense", f"E-{number}")])
        burst = time.monotonic() - started

        samples = wait_until(
            lambda: s if _pending(s := exporter.metrics()) == 1000 else None,
            timeout=15,
            what="all 1,000 records counted as pending",
        )
    refreshes = _refreshes(samples, "notification") - before
    # At most one at the start of every debounce window the burst touched, plus the last.
    assert 1 <= refreshes <= burst / debounce + 2, (refreshes, burst)


def _pending(samples) -> float | None:  # type: ignore[no-untyped-def]
    if not samples:
        return None
    return value(samples, "accounting_sync_pending_records", org="hlf", connector="dynamics")


def test_the_listener_reconnects_and_still_delivers(pg_url, pipeline, tmp_path, pg_admin):
    with exporter_process(_serve_slowly(pg_url), tmp_path) as exporter:
        (old_pid,) = wait_until(lambda: _listener_pids(pg_url), what="the listener's connection")
        wait_until(lambda: _refreshes(exporter.metrics(), "notification") >= 1)
        before = _refreshes(exporter.metrics(), "notification")
        with pg_admin.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": old_pid})
        wait_until(
            lambda: "change listener reconnected" in exporter.log(),
            timeout=15,
            what="the listener to reconnect",
        )
        assert old_pid not in _listener_pids(pg_url)
        # Reconnecting asks for a catch-up refresh; let it pass before the real change.
        wait_until(lambda: _refreshes(exporter.metrics(), "notification") > before)
        pipeline.enqueue("hlf", "dynamics", [("invoice", "F-1"), ("invoice", "F-2")])
        wait_until(
            lambda: _pending(exporter.metrics()) == 2,
            timeout=10,
            what="the records written after the reconnect on /metrics",
        )


def test_without_notifications_nothing_listens(pg_url, pipeline, tmp_path):
    args = _serve_slowly(pg_url, "--refresh.notify", "false")
    with exporter_process(args, tmp_path) as exporter:
        assert _listener_pids(pg_url) == set()
        assert "listening for sync log changes" not in exporter.log()


def test_sqlite_falls_back_to_the_interval_refresh(sqlite_url, tmp_path):
    engine = create_sync_log_engine(normalize_url(sqlite_url))
    upgrade(engine)
    pipeline = Pipeline(engine)
    pipeline.register("hlf", "Hørselshemmedes Landsforbund", "dynamics")
    args = ["--database-url", sqlite_url, "--refresh-interval", "500ms"]
    try:
        with exporter_process(args, tmp_path) as exporter:
            pipeline.enqueue("hlf", "dynamics", [("expense", "E-1")])
            samples = wait_until(
                lambda: s if _pending(s := exporter.metrics()) == 1 else None,
                timeout=10,
                what="the interval refresh to pick up the record",
            )
            log = exporter.log()
    finally:
        engine.dispose()
    assert _refreshes(samples, "interval") >= 2
    assert _refreshes(samples, "notification") == 0
    assert "listening for sync log changes" not in log
