"""A network partition: the database neither answers nor closes the connection.

The server-side statement timeout cannot help here (the server never hears from us, or we
never hear from it), so without a client-side deadline a refresh would wait forever and
``source_up`` would stay 1 over an ever older snapshot. A black-holing relay
(tests/tcpproxy.py) sits between the exporter and the real PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.pipeline import Pipeline
from tests.support import exporter_process, run_cli, value, wait_until
from tests.support.tcpproxy import BlackHoleProxy

pytestmark = pytest.mark.postgres
XL = {"org": "hlf", "connector": "xledger"}


@pytest.fixture
def proxy(pg_url: str) -> Iterator[BlackHoleProxy]:
    url = make_url(pg_url)
    relay = BlackHoleProxy((url.host or "127.0.0.1", url.port or 5432))
    yield relay
    relay.close()


def test_a_partition_ends_the_refresh_and_the_exporter_recovers_when_it_heals(
    pg_url, proxy, tmp_path
):
    assert run_cli("db", "upgrade", "--database-url", pg_url).returncode == 0
    engine = create_sync_log_engine(normalize_url(pg_url))
    pipeline = Pipeline(engine)
    pipeline.register("hlf", "Hørselshemmedes Landsforbund", "xledger")
    pipeline.enqueue("hlf", "xledger", [("expense", "e-1"), ("expense", "e-2")])
    through_proxy = make_url(pg_url).set(port=proxy.port).render_as_string(hide_password=False)
    args = [
        "--database-url", through_proxy, "--refresh-interval", "200ms",
        "--database.statement-timeout", "500ms", "--refresh.notify=false",
    ]  # fmt: skip
    with exporter_process(args, tmp_path) as exporter:
        wait_until(lambda: value(exporter.metrics(), "accounting_sync_pending_records", **XL) == 2)
        proxy.partition()
        during = wait_until(
            lambda: (
                (m := exporter.metrics())
                and value(m, "accounting_sync_exporter_source_up") == 0
                and m
            ),
            timeout=20,
            what="source_up 0 during the partition",
        )
        assert value(during, "accounting_sync_pending_records", **XL) == 2
        proxy.heal()
        pipeline.enqueue("hlf", "xledger", [("expense", "e-3")])
        wait_until(
            lambda: (
                (m := exporter.metrics())
                and value(m, "accounting_sync_exporter_source_up") == 1
                and value(m, "accounting_sync_pending_records", **XL) == 3
            ),
            timeout=30,
            what="recovery after the partition heals",
        )
        log = exporter.log()
    engine.dispose()
    assert "Traceback" not in log
