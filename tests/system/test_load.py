"""Load and lifetime: many scrapers at once, refreshes underneath, and a clean stop mid-refresh.

The load test prints its latency percentiles (there is no timing assertion: speed depends
on the machine, and belongs to benchmarks); what it asserts is what a user would notice:
every scrape answered 200 with a whole exposition, and refreshes kept happening meanwhile.
"""

from __future__ import annotations

import gzip
import http.client
import os
import signal
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, create_engine, insert, text

from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.pipeline import Pipeline
from exporter.source.schema import Integration, Organization, Run
from tests.support import exporter_process, parse_metrics, run_cli, series, value, wait_until

pytestmark = pytest.mark.postgres
INTEGRATIONS = 2000
SCRAPERS = 50
SECONDS = float(os.environ.get("LOAD_TEST_SECONDS", "30"))


def seed(engine: Engine, organizations: int) -> None:
    """``organizations`` orgs with both connectors, each with one finished run."""
    now = datetime.now(UTC)
    orgs = [{"id": f"org{i:05d}", "name": f"Organization {i}"} for i in range(organizations)]
    integrations = [
        {"org_id": o["id"], "connector": c, "created_at": now - timedelta(days=2)}
        for o in orgs
        for c in ("xledger", "dynamics")
    ]
    runs = [
        {
            **{k: i[k] for k in ("org_id", "connector")},
            "status": "succeeded" if n % 7 else "partial",
            "started_at": now - timedelta(minutes=10),
            "finished_at": now - timedelta(minutes=9),
            "records_total": 20,
            "records_failed": 0 if n % 7 else 3,
        }
        for n, i in enumerate(integrations)
    ]
    with engine.begin() as connection:
        connection.execute(insert(Organization), orgs)
        connection.execute(insert(Integration), integrations)
        connection.execute(insert(Run), runs)


def keep_enqueuing(
    engine: Engine, stop: threading.Event, every: float, organizations: int, connector: str
) -> None:
    """Keeps the sync log changing until ``stop``, so refreshes (notified and timed) keep
    swapping the served snapshot under the scrapers."""
    writer = Pipeline(engine)
    n = 0
    while not stop.wait(every):
        n += 1
        writer.enqueue(f"org{n % organizations:05d}", connector, [("expense", f"load-{n}")])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_fifty_scrapers_for_thirty_seconds_against_2000_integrations(pg_url, tmp_path, capsys):
    assert run_cli("db", "upgrade", "--database-url", pg_url).returncode == 0
    engine = create_sync_log_engine(normalize_url(pg_url))
    seed(engine, INTEGRATIONS // 2)
    args = ["--database-url", pg_url, "--refresh-interval", "1s"]
    with exporter_process(args, tmp_path) as exporter:
        host, port = exporter.url.removeprefix("http://").split(":")
        first = exporter.metrics()
        assert len(series(first, "accounting_sync_health")) == INTEGRATIONS
        started_refresh = value(first, "accounting_sync_exporter_last_refresh_timestamp_seconds")
        stop = threading.Event()
        latencies: list[list[float]] = [[] for _ in range(SCRAPERS)]
        errors: list[str] = []
        bodies: list[bytes] = []

        def scraper(mine: list[float]) -> None:
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            while not stop.is_set():
                began = time.perf_counter()
                try:
                    connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
                    response = connection.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    connection.close()
                    connection = http.client.HTTPConnection(host, int(port), timeout=30)
                    continue
                mine.append(time.perf_counter() - began)
                if response.status != 200 or body[:2] != b"\x1f\x8b":
                    errors.append(f"status {response.status}, {len(body)} bytes")
                elif len(mine) % 50 == 0:
                    bodies.append(body)
            connection.close()

        threads = [threading.Thread(target=scraper, args=(mine,)) for mine in latencies]
        threads.append(
            threading.Thread(target=keep_enqueuing, args=(engine, stop, 0.25, 50, "xledger"))
        )
        for thread in threads:
            thread.start()
        time.sleep(SECONDS)  # the load's duration, not a wait for an outcome
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        last = exporter.metrics()
        log = exporter.log()
    engine.dispose()

    assert not errors, errors[:5]
    everything = [latency for mine in latencies for latency in mine]
    assert all(mine for mine in latencies), "a scraper never got an answer"
    # Sampled bodies are whole expositions, whichever snapshot they came from.
    assert bodies
    for body in bodies[:: max(1, len(bodies) // 40)]:
        exposition = gzip.decompress(body).decode()
        assert exposition.count("\naccounting_sync_health{") == INTEGRATIONS
        assert exposition.endswith("\n")
    samples = parse_metrics(gzip.decompress(bodies[-1]).decode())
    assert len(series(samples, "accounting_sync_health")) == INTEGRATIONS
    assert value(last, "accounting_sync_exporter_source_up") == 1
    ended_refresh = value(last, "accounting_sync_exporter_last_refresh_timestamp_seconds")
    assert started_refresh and ended_refresh and ended_refresh - started_refresh >= SECONDS / 2
    assert "Traceback" not in log
    with capsys.disabled():
        print(
            f"\nload: {SCRAPERS} scrapers x {SECONDS:.0f}s, {INTEGRATIONS} integrations: "
            f"{len(everything)} scrapes ({len(everything) / SECONDS:.0f}/s), "
            f"p50 {statistics.median(everything) * 1000:.1f} ms, "
            f"p99 {_percentile(everything, 0.99) * 1000:.1f} ms, "
            f"max {max(everything) * 1000:.1f} ms, errors {len(errors)}"
        )


def test_sigterm_during_a_refresh_exits_0_promptly(pg_url, tmp_path):
    """A refresh stuck on a lock (statement timeout one minute) must not hold up the stop."""
    assert run_cli("db", "upgrade", "--database-url", pg_url).returncode == 0
    engine = create_sync_log_engine(normalize_url(pg_url))
    Pipeline(engine).register("hlf", "Hørselshemmedes Landsforbund", "xledger")
    args = [
        "--database-url", pg_url, "--refresh-interval", "200ms",
        "--database.statement-timeout", "1m",
    ]  # fmt: skip
    admin = create_engine(normalize_url(pg_url))
    with exporter_process(args, tmp_path) as exporter, admin.connect() as session:
        transaction = session.begin()
        session.execute(text("lock table sync_run in access exclusive mode"))

        def refresh_blocked() -> bool:
            with engine.connect() as probe:
                waiting = probe.execute(
                    text(
                        "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
                        " and application_name = 'accounting-sync-exporter'"
                    )
                ).scalar_one()
            return waiting >= 1

        wait_until(refresh_blocked, what="a refresh waiting on the lock")
        exporter.process.send_signal(signal.SIGTERM)
        code = wait_until(
            lambda: exporter.process.poll() is not None and (exporter.process.returncode,),
            timeout=15,
            what="the exporter to exit although its refresh is blocked",
        )
        transaction.rollback()
        log = exporter.log()
    engine.dispose()
    admin.dispose()
    assert code == (0,), log
    assert "stopping" in log
    assert "Traceback" not in log
