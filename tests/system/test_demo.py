"""``accounting-sync-exporter demo``: what a new user sees after ``make demo``.

The demo runs as a real subprocess on a free port; its sync log is created in the test's
own temporary directory (``TMPDIR``) and removed at exit, or in a PostgreSQL database
given with ``--database-url``.
"""

from __future__ import annotations

from pathlib import Path

from tests.support import RunningExporter, Samples, exporter_process, series, value, wait_until

PER_INTEGRATION = (
    "accounting_sync_pending_records",
    "accounting_sync_failed_records",
    "accounting_sync_last_success_timestamp_seconds",
    "accounting_sync_last_run_timestamp_seconds",
    "accounting_sync_health",
    "accounting_sync_integration_active",
    "accounting_sync_stale_after_seconds",
)
FIRST_CUSTOMERS = {("blindeforbundet", "xledger"), ("hlf", "dynamics")}


def integrations(samples: Samples, name: str) -> dict[tuple[str, str], float]:
    return {(dict(k)["org"], dict(k)["connector"]): v for k, v in series(samples, name).items()}


def check_demo_content(samples: Samples) -> None:
    healths = integrations(samples, "accounting_sync_health")
    assert len({org for org, _ in healths}) >= 6, healths
    assert set(healths) >= FIRST_CUSTOMERS
    for name in PER_INTEGRATION:
        assert set(integrations(samples, name)) >= FIRST_CUSTOMERS, name
    names = {
        dict(k)["org"]: dict(k)["org_name"] for k in series(samples, "accounting_sync_org_info")
    }
    assert names["hlf"] == "Hørselshemmedes Landsforbund"
    assert names["blindeforbundet"] == "Norges Blindeforbund"
    # The oldest pending record is there exactly where records are pending.
    pending = integrations(samples, "accounting_sync_pending_records")
    oldest = integrations(samples, "accounting_sync_oldest_pending_record_timestamp_seconds")
    assert set(oldest) == {key for key, count in pending.items() if count > 0}
    assert oldest, "no demo integration has pending records"
    # Every state a finance administrator can meet.
    active = integrations(samples, "accounting_sync_integration_active")
    assert {0, 1, 2} <= set(healths.values()), healths
    assert 0 in active.values() and 1 in active.values()
    assert all(healths[key] != 2 for key, flag in active.items() if flag == 0)
    # Issue 12's stories: what a person must do, and who is late.
    classes = {
        (dict(k)["org"], dict(k)["error_class"])
        for k in series(samples, "accounting_sync_last_run_error_class")
    }
    assert {("turistforeningen", "auth"), ("redningsselskapet", "period_closed")} <= classes
    rejected = integrations(samples, "accounting_sync_rejected_records")
    assert set(rejected) == set(healths) and rejected[("hlf", "dynamics")] >= 1
    expected = integrations(samples, "accounting_sync_expected_interval_seconds")
    assert expected[("sos-barnebyer", "xledger")] == 900
    last_success = integrations(samples, "accounting_sync_last_success_timestamp_seconds")
    refreshed = value(samples, "accounting_sync_exporter_last_refresh_timestamp_seconds")
    assert refreshed is not None
    assert refreshed - last_success[("sos-barnebyer", "xledger")] > 2 * 900
    assert healths[("sos-barnebyer", "xledger")] != 2
    assert value(samples, "accounting_sync_exporter_source_up") == 1
    for name in (
        "accounting_sync_exporter_last_refresh_timestamp_seconds",
        "accounting_sync_exporter_refresh_duration_seconds",
    ):
        assert value(samples, name) is not None, name


def ours(samples: Samples) -> Samples:
    """Per-integration series: what changes when the simulated pipeline writes."""
    return {k: v for k, v in samples.items() if k[1] and k[0].startswith("accounting_sync_")}


def wait_for_change(exporter: RunningExporter, first: Samples) -> Samples:
    def changed() -> Samples | None:
        now = exporter.metrics()
        return now if ours(now) != ours(first) else None

    return wait_until(changed, timeout=40, interval=0.5, what="a demo value to change")


def test_demo_on_its_embedded_sqlite_shows_every_state_and_keeps_changing(tmp_path: Path) -> None:
    env = {"TMPDIR": str(tmp_path)}
    with exporter_process(["--seed", "7"], tmp_path, command="demo", env=env) as exporter:
        first = exporter.metrics()
        check_demo_content(first)
        later = wait_for_change(exporter, first)
        check_demo_content(later)
        # The sync log lives where temporary files go, not in the working directory...
        assert list(tmp_path.glob("accounting-sync-demo-*/sync-log.db"))
    # ...and goes with the demo (test_demo_safety.py tries every way it can end).
    assert not list(tmp_path.glob("accounting-sync-demo-*"))
    assert exporter.process.returncode == 0, exporter.log()
    assert "Traceback" not in exporter.log()


def test_demo_writes_into_a_postgresql_sync_log_given_with_database_url(
    pg_url: str, tmp_path: Path
) -> None:
    with exporter_process(["--database-url", pg_url], tmp_path, command="demo") as exporter:
        first = exporter.metrics()
        check_demo_content(first)
        wait_for_change(exporter, first)
    assert exporter.process.returncode == 0, exporter.log()
    assert "Traceback" not in exporter.log()
