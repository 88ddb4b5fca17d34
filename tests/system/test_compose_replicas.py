"""Beyond one machine: two exporter replicas over one sync log, scraped by a real Prometheus in
one job (as docker-compose.yml's DNS discovery does with `--scale exporter=2`). The raw series
are doubled, one per instance; the project's recording rules (or, without them, the
aggregation they use) give one correct value per (org, connector), and losing a replica
changes none of them.
"""

from __future__ import annotations

import json
import urllib.parse
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.migrate import upgrade
from exporter.source.pipeline import Pipeline, utcnow
from tests.support import (
    exporter_process,
    http_get,
    prometheus_server,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.prometheus]

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "alerting" / "rules").glob("*.yml"))
JOB = "accounting-sync-exporter"
# The metrics and the value each (org, connector) must show once, however many replicas.
EXPECTED = {
    ("hlf", "dynamics"): {"health": 1, "pending_records": 3, "failed_records": 1},
    ("blindeforbundet", "xledger"): {"health": 0, "pending_records": 0, "failed_records": 0},
}


def _seed(url: str) -> None:
    engine = create_sync_log_engine(normalize_url(url))
    upgrade(engine)
    pipeline = Pipeline(engine)
    now = utcnow()
    pipeline.register("blindeforbundet", "Norges Blindeforbund", "xledger", created_at=now)
    run = pipeline.start_run("blindeforbundet", "xledger", at=now - timedelta(minutes=2))
    pipeline.finish_run(run, "succeeded", records_total=4, at=now - timedelta(minutes=1))
    pipeline.register("hlf", "Hørselshemmedes Landsforbund", "dynamics", created_at=now)
    ids = pipeline.enqueue("hlf", "dynamics", [("expense", f"e-{i}") for i in range(3)])
    run = pipeline.start_run("hlf", "dynamics", at=now - timedelta(minutes=2))
    pipeline.record_failure(run, ids[0], "dimension missing", error_code="XL-17")
    pipeline.finish_run(run, "partial", records_total=3, records_failed=1, at=now)
    engine.dispose()


def _recorded(metric: str) -> str:
    """The project's recording rule for ``metric`` if alerting/ defines it, else its expression."""
    name = f"org_connector:accounting_sync_{metric}:max"
    for path in RULES:
        for group in yaml.safe_load(path.read_text()).get("groups", []):
            if any(rule.get("record") == name for rule in group["rules"]):
                return name
    return f'max by (org, connector) (accounting_sync_{metric}{{job="{JOB}"}})'


def _prometheus(targets: list[str], tmp_path: Path):  # type: ignore[no-untyped-def]
    return prometheus_server(targets, tmp_path, rule_files=RULES, job=JOB)


def _query(url: str, expr: str) -> list[dict]:
    status, _, body = http_get(f"{url}/api/v1/query?query={urllib.parse.quote(expr)}")
    assert status == 200, body
    return json.loads(body)["data"]["result"]


def _by_integration(result: list[dict]) -> dict[tuple[str, str], float]:
    values: dict[tuple[str, str], float] = {}
    for sample in result:
        key = (sample["metric"]["org"], sample["metric"]["connector"])
        assert key not in values, f"two series for {key}: {result}"
        values[key] = float(sample["value"][1])
    return values


def _expected(metric: str) -> dict[tuple[str, str], float]:
    return {key: float(values[metric]) for key, values in EXPECTED.items()}


def test_two_replicas_neither_double_count_nor_flap(pg_url, tmp_path):
    _seed(pg_url)
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(
                exporter_process(["--database-url", pg_url, "--refresh-interval", "1s"], tmp_path)
            )
            for _ in range(2)
        ]
        targets = [replica.url.removeprefix("http://") for replica in replicas]
        prometheus = stack.enter_context(_prometheus(targets, tmp_path))

        def both_scraped() -> bool:
            up = _query(prometheus, f'up{{job="{JOB}"}} == 1')
            health = _query(prometheus, _recorded("health"))
            return len(up) == 2 and len(health) == len(EXPECTED)

        wait_until(both_scraped, timeout=30, what="both replicas scraped and rules evaluated")
        # The raw series really are doubled: one per replica.
        raw = _query(
            prometheus, f'count by (org, connector) (accounting_sync_health{{job="{JOB}"}})'
        )
        assert {key: 2.0 for key in EXPECTED} == _by_integration(raw)
        for metric in ("health", "pending_records", "failed_records"):
            assert _by_integration(_query(prometheus, _recorded(metric))) == _expected(metric)
        total = _query(prometheus, f"sum({_recorded('pending_records')})")
        assert float(total[0]["value"][1]) == 3.0  # not 6

        # A tenant's sync-log notice: with org="hlf" enforced on every selector (what
        # prom-label-proxy does), the exporter's own source_up is hidden and the rules'
        # per-integration copy answers, once, for both replicas.
        tenant_notice = (
            'min(accounting_sync_exporter_source_up{org="hlf"})'
            ' or min(org_connector:accounting_sync_exporter_source_up:min{org="hlf"})'
        )
        notice = wait_until(
            lambda: _query(prometheus, tenant_notice),
            timeout=30,
            what="the tenant-visible source_up",
        )
        assert [float(sample["value"][1]) for sample in notice] == [1.0]
        copies = _query(prometheus, "org_connector:accounting_sync_exporter_source_up:min")
        assert {(s["metric"]["org"], s["metric"]["connector"]) for s in copies} == set(EXPECTED)

        # Losing a replica: the aggregated values do not move, and never did.
        replicas[1].process.terminate()
        replicas[1].process.wait(timeout=15)

        def one_down() -> bool:
            return len(_query(prometheus, f'up{{job="{JOB}"}} == 0')) == 1

        wait_until(one_down, timeout=30, what="the stopped replica seen as down")
        wait_until(
            lambda: _query(prometheus, f"count_over_time(({_recorded('health')})[1m:1s]) > 5"),
            timeout=30,
            what="a few evaluations of history",
        )
        for metric in ("health", "pending_records", "failed_records"):
            expr = _recorded(metric)
            assert _by_integration(_query(prometheus, expr)) == _expected(metric)
            changes = _query(prometheus, f"changes(({expr})[1m:1s])")
            assert set(_by_integration(changes).values()) == {0.0}, (metric, changes)
