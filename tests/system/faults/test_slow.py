"""A sync log that answers too slowly: the refresh gives up, scrapes never wait.

Another session takes an ACCESS EXCLUSIVE lock on ``sync_run`` (as a careless migration or
VACUUM FULL would), so the snapshot statement blocks until the server-side statement
timeout cancels it. While the lock is held, /metrics must keep answering with the previous
snapshot and ``source_up 0``; once released, the exporter recovers by itself.
"""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.pipeline import Pipeline
from tests.support import exporter_process, http_get, parse_metrics, run_cli, value, wait_until

pytestmark = pytest.mark.postgres
XL = {"org": "blindeforbundet", "connector": "xledger"}


def test_a_locked_table_ends_the_refresh_but_not_the_scrapes(pg_url, tmp_path):
    assert run_cli("db", "upgrade", "--database-url", pg_url).returncode == 0
    engine = create_sync_log_engine(normalize_url(pg_url))
    pipeline = Pipeline(engine)
    pipeline.register("blindeforbundet", "Norges Blindeforbund", "xledger")
    pipeline.enqueue("blindeforbundet", "xledger", [("expense", "e-1"), ("expense", "e-2")])
    args = [
        "--database-url", pg_url,
        "--refresh-interval", "200ms",
        "--database.statement-timeout", "500ms",
        "--refresh.notify=false",
    ]  # fmt: skip
    locker = create_engine(normalize_url(pg_url))
    with exporter_process(args, tmp_path) as exporter:

        def scrape():  # type: ignore[no-untyped-def]
            status, _, body = http_get(exporter.url + "/metrics", timeout=5)
            assert status == 200
            return parse_metrics(body.decode())

        wait_until(lambda: value(scrape(), "accounting_sync_pending_records", **XL) == 2)
        with locker.connect() as session:
            transaction = session.begin()
            session.execute(text("lock table sync_run in access exclusive mode"))
            # Written by the pipeline while the table is locked (sync_record is not locked).
            pipeline.enqueue("blindeforbundet", "xledger", [("expense", "e-3")])
            held = wait_until(
                lambda: (
                    (m := scrape()) and value(m, "accounting_sync_exporter_source_up") == 0 and m
                ),
                what="source_up 0 while sync_run is locked",
            )
            # Still answering, from the last good snapshot, while the lock is held.
            assert value(held, "accounting_sync_pending_records", **XL) == 2
            for _ in range(5):
                assert value(scrape(), "accounting_sync_pending_records", **XL) == 2
            assert http_get(exporter.url + "/readyz")[0] == 200
            transaction.rollback()
        recovered = wait_until(
            lambda: (m := scrape()) and value(m, "accounting_sync_exporter_source_up") == 1 and m,
            what="recovery once the lock is released",
        )
        assert value(recovered, "accounting_sync_pending_records", **XL) == 3
        log = exporter.log()
    locker.dispose()
    engine.dispose()
    assert "statement timeout" in log, log
    assert "Traceback" not in log
