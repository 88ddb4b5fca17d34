"""The shortest path a new user takes: migrate, serve, scrape."""

from __future__ import annotations

from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.pipeline import Pipeline
from tests.support import exporter_process, run_cli, value


def test_serve_publishes_an_integration_registered_by_the_pipeline(db_url, tmp_path):
    assert run_cli("db", "upgrade", "--database-url", db_url).returncode == 0
    engine = create_sync_log_engine(normalize_url(db_url))
    Pipeline(engine).register("hlf", "Hørselshemmedes Landsforbund", "dynamics")
    engine.dispose()
    with exporter_process(["--database-url", db_url], tmp_path) as exporter:
        samples = exporter.metrics()
    assert value(samples, "accounting_sync_pending_records", org="hlf", connector="dynamics") == 0
    assert value(samples, "accounting_sync_exporter_source_up") == 1
