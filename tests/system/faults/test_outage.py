"""The sync log's PostgreSQL goes away while the exporter runs, and comes back, repeatedly.

A throwaway cluster (tests/pgcluster.py) is really stopped (``pg_ctl stop -m fast``, which
drops every connection like a restart or failover) and started again. Users must see the
last good numbers with ``source_up 0`` during the outage, fresh numbers shortly after, and
an exporter that does not accumulate threads or connections outage after outage.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.pipeline import Pipeline
from tests.support import exporter_process, http_get, parse_metrics, run_cli, value, wait_until
from tests.support.pgcluster import Cluster, throwaway_cluster

pytestmark = pytest.mark.postgres
OUTAGES = 3
APP = "accounting-sync-exporter"
LISTENER = "accounting-sync-exporter-listener"
XL = {"org": "hlf", "connector": "xledger"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture
def sync_log_url(cluster: Cluster) -> str:
    if not cluster.running():
        cluster.start()
    admin = create_engine(normalize_url(cluster.admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("drop database if exists synclog with (force)"))
        connection.execute(text("create database synclog"))
    admin.dispose()
    url = cluster.url("synclog")
    assert run_cli("db", "upgrade", "--database-url", url).returncode == 0
    return url


def _add_pending(url: str, count: int) -> None:
    """Write as the pipeline would, through a fresh connection (the server just restarted)."""
    engine = create_sync_log_engine(normalize_url(url))
    now = datetime.now(UTC)
    refs = [("expense", f"exp-{now.timestamp()}-{index}") for index in range(count)]
    Pipeline(engine).enqueue("hlf", "xledger", refs, at=now)
    engine.dispose()


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _connections(cluster: Cluster, application: str = APP) -> int:
    engine = create_engine(normalize_url(cluster.admin_url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text("select count(*) from pg_stat_activity where application_name = :app"),
                    {"app": application},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_outages_serve_the_last_snapshot_and_recover_without_leaks(cluster, sync_log_url, tmp_path):
    engine = create_sync_log_engine(normalize_url(sync_log_url))
    Pipeline(engine).register("hlf", "Hørselshemmedes Landsforbund", "xledger")
    engine.dispose()
    _add_pending(sync_log_url, 1)
    args = ["--database-url", sync_log_url, "--refresh-interval", "200ms"]
    with exporter_process(args, tmp_path) as exporter:
        pid = exporter.process.pid

        def metrics_when(predicate):  # type: ignore[no-untyped-def]
            def probe():  # type: ignore[no-untyped-def]
                status, _, body = http_get(exporter.url + "/metrics")
                assert status == 200
                samples = parse_metrics(body.decode())
                return samples if predicate(samples) else None

            return probe

        pending = 1
        wait_until(
            metrics_when(lambda m: value(m, "accounting_sync_pending_records", **XL) == pending),
            what="the first snapshot",
        )
        baseline_threads = baseline_connections = 0
        for outage in range(OUTAGES):
            cluster.stop("fast")
            down = wait_until(
                metrics_when(lambda m: value(m, "accounting_sync_exporter_source_up") == 0),
                what="source_up 0 while the database is down",
            )
            # The last good snapshot is still served, whole.
            assert value(down, "accounting_sync_pending_records", **XL) == pending
            assert value(down, "accounting_sync_health", **XL) == 0
            assert http_get(exporter.url + "/readyz")[0] == 200
            assert exporter.process.poll() is None

            cluster.start()
            _add_pending(sync_log_url, 2)  # written after the restart
            pending += 2
            wait_until(
                metrics_when(
                    lambda m, expected=pending: (
                        value(m, "accounting_sync_exporter_source_up") == 1
                        and value(m, "accounting_sync_pending_records", **XL) == expected
                    )
                ),
                what=f"recovery after outage {outage + 1}",
            )
            if outage == 0:
                # Measured after a first full cycle, so every lazily started thread exists.
                baseline_threads = _threads(pid)
                baseline_connections = _connections(cluster)
                assert 1 <= baseline_connections <= 5
            else:
                # A leak never comes back down; request threads that just served do.
                wait_until(
                    lambda limit=baseline_threads: _threads(pid) <= limit,
                    what=f"threads back to {baseline_threads} after outage {outage + 1}",
                )
                wait_until(
                    lambda limit=baseline_connections: _connections(cluster) <= limit,
                    what=f"connections back to {baseline_connections} after outage {outage + 1}",
                )
            wait_until(
                lambda: _connections(cluster, LISTENER) == 1,
                what=f"exactly one listener connection after outage {outage + 1}",
            )
        log = exporter.log()
    # One error line per outage, not one per failed refresh; one line per recovery.
    assert log.count("cannot read the sync log") == OUTAGES, log
    assert log.count("sync log readable again") == OUTAGES, log
    assert "Traceback" not in log


def test_the_change_listener_reconnects_after_each_outage(cluster, sync_log_url, tmp_path):
    """With an hour between interval refreshes, only the listener can bring news this fast."""
    engine = create_sync_log_engine(normalize_url(sync_log_url))
    Pipeline(engine).register("hlf", "Hørselshemmedes Landsforbund", "xledger")
    engine.dispose()
    args = [
        "--database-url",
        sync_log_url,
        "--refresh-interval",
        "1h",
        "--refresh.debounce",
        "50ms",
    ]
    with exporter_process(args, tmp_path) as exporter:
        wait_until(lambda: _connections(cluster, LISTENER) == 1, what="the listener connection")
        for outage in range(OUTAGES):
            cluster.stop("fast")
            wait_until(
                lambda n=outage + 1: (
                    exporter.log().count("change listener lost its connection") >= n
                ),
                what="the listener to notice the outage",
            )
            cluster.start()
            wait_until(
                lambda n=outage + 1: exporter.log().count("change listener reconnected") >= n,
                timeout=30,
                what=f"the listener to reconnect after outage {outage + 1}",
            )
            _add_pending(sync_log_url, 1)
            wait_until(
                lambda expected=outage + 1: (
                    value(exporter.metrics(), "accounting_sync_pending_records", **XL) == expected
                ),
                what=f"a notified refresh after outage {outage + 1}",
            )
            wait_until(
                lambda: _connections(cluster, LISTENER) == 1,
                what=f"exactly one listener connection after outage {outage + 1}",
            )
        assert value(exporter.metrics(), "accounting_sync_exporter_source_up") == 1
        log = exporter.log()
    assert "Traceback" not in log
