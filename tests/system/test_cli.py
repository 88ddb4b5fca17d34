"""Issue 2's acceptance, through the real command line, on SQLite and PostgreSQL.

Every test runs ``python -m exporter`` as a subprocess (``db upgrade``, ``serve``) against a
database of its own, writes with the pipeline's writes, and reads ``/metrics`` over HTTP
with the prometheus_client parser, as Prometheus would.
"""

from __future__ import annotations

import gzip
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from sqlalchemy import Engine, inspect, text

from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.pipeline import Pipeline
from tests.support import (
    RunningExporter,
    exporter_process,
    http_get,
    parse_metrics,
    run_cli,
    series,
    value,
    wait_until,
)

CONTRACT_TABLES = {
    "sync_organization",
    "sync_integration",
    "sync_run",
    "sync_record",
    "sync_record_error",
}
ALWAYS = (
    "accounting_sync_pending_records",
    "accounting_sync_failed_records",
    "accounting_sync_health",
    "accounting_sync_integration_active",
    "accounting_sync_stale_after_seconds",
)
INTERVAL = 0.5
FAST = ["--refresh-interval", "500ms", "--refresh.notify", "false"]
AWKWARD_NAME = 'Hørselshemmedes "Lands\\forbund" – Ærlig Øl, Åsane'


def upgrade(url: str) -> None:
    result = run_cli("db", "upgrade", "--database-url", url)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def synclog(db_url: str) -> Iterator[Pipeline]:
    """A sync log migrated through the command line, and the pipeline's writes into it."""
    upgrade(db_url)
    engine = create_sync_log_engine(normalize_url(db_url))
    yield Pipeline(engine)
    engine.dispose()


def labels(org: str, connector: str) -> dict[str, str]:
    return {"org": org, "connector": connector}


def health(exporter: RunningExporter, org: str, connector: str) -> float | None:
    return value(exporter.metrics(), "accounting_sync_health", **labels(org, connector))


# --- db upgrade ------------------------------------------------------------------------------


def test_db_upgrade_creates_the_contract_tables_and_is_idempotent(db_url: str) -> None:
    upgrade(db_url)
    upgrade(db_url)  # again: nothing to do, still exit 0
    engine = create_sync_log_engine(normalize_url(db_url))
    try:
        assert set(inspect(engine).get_table_names()) >= CONTRACT_TABLES
        with engine.connect() as connection:
            revisions = connection.execute(text("select version_num from alembic_version")).all()
        assert len(revisions) == 1
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", [["db", "upgrade"], ["demo"]], ids=["db upgrade", "demo"])
def test_a_sqlite_path_that_cannot_be_created_is_one_line_and_exit_1(command: list[str]) -> None:
    # /proc refuses new directories, even to root.
    result = run_cli(*command, "--database-url", "sqlite:////proc/no-such-dir/sync-log.db")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "error" in line]
    assert "/proc/no-such-dir" in line


# --- every health state and every contract metric ----------------------------------------------


def seed_every_state(pipeline: Pipeline, now: datetime) -> dict[tuple[str, str], int]:
    """One integration per state; returns the health each must show."""
    p = pipeline
    p.register("green", "Green", "xledger", created_at=now - timedelta(days=30))
    p.add_finished_run(
        "green",
        "xledger",
        "succeeded",
        started_at=now - timedelta(minutes=11),
        finished_at=now - timedelta(minutes=10),
        records_total=8,
    )
    p.enqueue("green", "xledger", [("expense", "E-1"), ("travel", "T-1")], now - timedelta(hours=3))
    p.register("stale", "Stale", "dynamics", created_at=now - timedelta(days=30))
    p.add_finished_run(
        "stale",
        "dynamics",
        "succeeded",
        started_at=now - timedelta(hours=26),
        finished_at=now - timedelta(hours=25),
    )
    p.register("never", "Never", "xledger", created_at=now - timedelta(days=2))
    p.register("newcomer", "Newcomer", "dynamics", created_at=now - timedelta(hours=1))
    p.register("partial", "Partial", "dynamics", created_at=now - timedelta(days=30))
    ids = p.enqueue("partial", "dynamics", [("invoice", "I-1"), ("invoice", "I-2")])
    run = p.start_run("partial", "dynamics", at=now - timedelta(minutes=6))
    p.record_failure(run, ids[0], "Vendor V10442 does not exist", error_code="DYN-VENDOR")
    p.mark_synced(ids[1:])
    p.finish_run(run, "partial", records_total=2, records_failed=1, at=now - timedelta(minutes=5))
    p.register("aborted", "Aborted", "xledger", created_at=now - timedelta(days=30))
    p.add_finished_run(
        "aborted",
        "xledger",
        "succeeded",
        started_at=now - timedelta(hours=2),
        finished_at=now - timedelta(hours=2),
    )
    p.add_finished_run(
        "aborted",
        "xledger",
        "failed",
        started_at=now - timedelta(minutes=3),
        finished_at=now - timedelta(minutes=2),
        error_message="401 Unauthorized",
    )
    p.register("paused", "Paused", "dynamics", active=False, created_at=now - timedelta(days=300))
    return {
        ("green", "xledger"): 0,
        ("stale", "dynamics"): 2,
        ("never", "xledger"): 2,
        ("newcomer", "dynamics"): 0,
        ("partial", "dynamics"): 1,
        ("aborted", "xledger"): 1,
        ("paused", "dynamics"): 0,
    }


def test_every_health_state_and_contract_metric(
    synclog: Pipeline, db_url: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    expected = seed_every_state(synclog, now)
    with exporter_process(["--database-url", db_url, *FAST], tmp_path) as exporter:
        samples = exporter.metrics()

    assert {
        (dict(k)["org"], dict(k)["connector"]): v
        for k, v in series(samples, "accounting_sync_health").items()
    } == expected
    for name in ALWAYS:
        assert {(dict(k)["org"], dict(k)["connector"]) for k in series(samples, name)} == set(
            expected
        ), name
    assert len(series(samples, "accounting_sync_org_info")) == len(expected)

    green = labels("green", "xledger")
    assert value(samples, "accounting_sync_pending_records", **green) == 2
    assert value(
        samples, "accounting_sync_oldest_pending_record_timestamp_seconds", **green
    ) == pytest.approx((now - timedelta(hours=3)).timestamp(), abs=1e-3)
    assert value(
        samples, "accounting_sync_last_success_timestamp_seconds", **green
    ) == pytest.approx((now - timedelta(minutes=10)).timestamp(), abs=1e-3)
    assert value(samples, "accounting_sync_last_run_timestamp_seconds", **green) == pytest.approx(
        (now - timedelta(minutes=10)).timestamp(), abs=1e-3
    )
    assert value(samples, "accounting_sync_failed_records", **green) == 0

    partial = labels("partial", "dynamics")
    assert value(samples, "accounting_sync_failed_records", **partial) == 1
    assert value(samples, "accounting_sync_pending_records", **partial) == 1  # kept for a retry
    assert value(
        samples, "accounting_sync_last_success_timestamp_seconds", **partial
    ) == pytest.approx((now - timedelta(minutes=5)).timestamp(), abs=1e-3)

    aborted = labels("aborted", "xledger")
    assert value(
        samples, "accounting_sync_last_success_timestamp_seconds", **aborted
    ) == pytest.approx((now - timedelta(hours=2)).timestamp(), abs=1e-3)
    assert value(samples, "accounting_sync_last_run_timestamp_seconds", **aborted) == pytest.approx(
        (now - timedelta(minutes=2)).timestamp(), abs=1e-3
    )

    never = labels("never", "xledger")
    for absent in (
        "accounting_sync_last_success_timestamp_seconds",
        "accounting_sync_last_run_timestamp_seconds",
        "accounting_sync_oldest_pending_record_timestamp_seconds",
    ):
        assert value(samples, absent, **never) is None, absent
    assert value(samples, "accounting_sync_failed_records", **never) == 0

    paused = labels("paused", "dynamics")
    assert value(samples, "accounting_sync_integration_active", **paused) == 0
    assert value(samples, "accounting_sync_integration_active", **green) == 1
    assert value(samples, "accounting_sync_stale_after_seconds", **paused) == 86400
    assert value(samples, "accounting_sync_org_info", org_name="Paused", **paused) == 1

    assert value(samples, "accounting_sync_exporter_source_up") == 1
    refreshed = value(samples, "accounting_sync_exporter_last_refresh_timestamp_seconds")
    assert refreshed is not None and abs(refreshed - datetime.now(UTC).timestamp()) < 60
    duration = value(samples, "accounting_sync_exporter_refresh_duration_seconds")
    assert duration is not None and 0 < duration < 10


def test_openmetrics_and_gzip_over_http(synclog: Pipeline, db_url: str, tmp_path: Path) -> None:
    synclog.register("hlf", AWKWARD_NAME, "dynamics")
    with exporter_process(["--database-url", db_url, *FAST], tmp_path) as exporter:
        status, headers, body = http_get(
            exporter.url + "/metrics",
            headers={
                "Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8",
                "Accept-Encoding": "gzip",
            },
        )
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert headers["Content-Encoding"] == "gzip"
    families = {f.name: f for f in openmetrics_families(gzip.decompress(body).decode())}
    (info,) = families["accounting_sync_org_info"].samples
    assert info.labels == {"org": "hlf", "connector": "dynamics", "org_name": AWKWARD_NAME}
    assert families["accounting_sync_exporter_source_up"].samples[0].value == 1


def test_display_name_with_quotes_backslashes_and_non_ascii_round_trips(
    synclog: Pipeline, db_url: str, tmp_path: Path
) -> None:
    synclog.register("hlf", AWKWARD_NAME, "dynamics")
    with exporter_process(["--database-url", db_url, *FAST], tmp_path) as exporter:
        samples = exporter.metrics()
    assert series(samples, "accounting_sync_org_info") == {
        frozenset({"org": "hlf", "connector": "dynamics", "org_name": AWKWARD_NAME}.items()): 1
    }


def test_telemetry_path_and_the_other_pages(synclog: Pipeline, db_url: str, tmp_path: Path) -> None:
    synclog.register("hlf", "HLF", "dynamics")
    args = ["--database-url", db_url, "--web.telemetry-path", "/sync/metrics", *FAST]
    with exporter_process(args, tmp_path) as exporter:
        status, headers, body = http_get(exporter.url + "/sync/metrics")
        assert status == 200
        # Not negotiated: the classic text format, labelled as prometheus_client labels it.
        assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert (
            value(
                parse_metrics(body.decode()), "accounting_sync_health", **labels("hlf", "dynamics")
            )
            == 0
        )
        assert http_get(exporter.url + "/metrics")[0] == 404
        status, _, landing = http_get(exporter.url + "/")
        assert status == 200 and b'href="/sync/metrics"' in landing
        assert http_get(exporter.url + "/healthz")[0] == 200
        assert http_get(exporter.url + "/readyz")[0] == 200


# --- live changes ------------------------------------------------------------------------------


def test_a_good_run_turns_the_org_green_within_two_refresh_intervals(
    synclog: Pipeline, db_url: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    synclog.register("hlf", "HLF", "dynamics", created_at=now - timedelta(days=3))
    synclog.add_finished_run(
        "hlf",
        "dynamics",
        "partial",
        started_at=now - timedelta(days=2),
        finished_at=now - timedelta(days=2),
        records_total=3,
        records_failed=1,
    )
    with exporter_process(["--database-url", db_url, *FAST], tmp_path) as exporter:
        assert health(exporter, "hlf", "dynamics") == 2
        synclog.add_finished_run(
            "hlf",
            "dynamics",
            "succeeded",
            started_at=datetime.now(UTC) - timedelta(seconds=5),
            finished_at=datetime.now(UTC),
            records_total=3,
        )
        # Two refresh intervals, plus a margin for a busy test machine.
        wait_until(
            lambda: health(exporter, "hlf", "dynamics") == 0,
            timeout=2 * INTERVAL + 2.0,
            what="hlf to turn green",
        )
        samples = exporter.metrics()
    assert value(samples, "accounting_sync_failed_records", **labels("hlf", "dynamics")) == 0


def test_a_deleted_integration_disappears(synclog: Pipeline, db_url: str, tmp_path: Path) -> None:
    synclog.register("hlf", "HLF", "dynamics")
    synclog.register("hlf", "HLF", "xledger")
    synclog.enqueue("hlf", "xledger", [("expense", "E-1")])
    with exporter_process(["--database-url", db_url, *FAST], tmp_path) as exporter:
        assert health(exporter, "hlf", "xledger") == 0
        synclog.remove_integration("hlf", "xledger")

        def gone() -> bool:
            samples = exporter.metrics()
            return not [key for key in samples if ("connector", "xledger") in key[1]]

        wait_until(gone, timeout=2 * INTERVAL + 2.0, what="hlf/xledger to disappear")
        samples = exporter.metrics()
    assert value(samples, "accounting_sync_health", **labels("hlf", "dynamics")) == 0
    assert value(samples, "accounting_sync_exporter_integrations") == 1


def test_silence_alone_turns_an_integration_red(
    synclog: Pipeline, db_url: str, tmp_path: Path
) -> None:
    """No write at all: only the clock moves past stale_after, and a refresh shows red."""
    with exporter_process(["--database-url", db_url, *FAST], tmp_path) as exporter:
        # Written once the exporter serves, so the 3 s window does not depend on how long
        # the process takes to start on a busy machine; nothing is written after this.
        finished = datetime.now(UTC)
        synclog.register("hlf", "HLF", "dynamics", stale_after_seconds=3)
        synclog.add_finished_run(
            "hlf", "dynamics", "succeeded", started_at=finished, finished_at=finished
        )

        def first_seen() -> tuple[float] | None:
            seen = health(exporter, "hlf", "dynamics")
            return None if seen is None else (seen,)

        (first,) = wait_until(first_seen, timeout=2 * INTERVAL + 2.0, what="hlf to appear")
        assert first == 0

        def red_seen_at() -> datetime | None:
            return datetime.now(UTC) if health(exporter, "hlf", "dynamics") == 2 else None

        seen = wait_until(red_seen_at, timeout=3 + 2 * INTERVAL + 2.0, what="hlf to turn red")
    assert seen - finished > timedelta(seconds=3)  # not before the window has passed


def test_a_renamed_organization_shows_only_its_new_name(
    synclog: Pipeline, db_url: str, tmp_path: Path
) -> None:
    synclog.register("hlf", "HLF", "dynamics")
    with exporter_process(["--database-url", db_url, *FAST], tmp_path) as exporter:
        assert (
            value(
                exporter.metrics(),
                "accounting_sync_org_info",
                org_name="HLF",
                **labels("hlf", "dynamics"),
            )
            == 1
        )
        synclog.register("hlf", AWKWARD_NAME, "dynamics")

        def renamed() -> bool:
            names = [
                dict(k)["org_name"] for k in series(exporter.metrics(), "accounting_sync_org_info")
            ]
            return names == [AWKWARD_NAME]

        wait_until(renamed, timeout=2 * INTERVAL + 2.0, what="the new name alone")


# --- the database is not there yet -------------------------------------------------------------


@pytest.fixture
def late_db_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, Callable[[], None]]]:
    """A URL whose database does not exist yet, and a function that creates and migrates it."""
    if request.param == "sqlite":
        path = tmp_path / "not-yet" / "sync-log.db"  # the directory is missing: cannot open

        def create() -> None:
            upgrade(f"sqlite:///{path}")  # db upgrade creates the directory

        yield f"sqlite:///{path}", create
        return
    admin: Engine = request.getfixturevalue("pg_admin")
    base = normalize_url(request.getfixturevalue("pg_url"))
    name = f"ase_late_{uuid.uuid4().hex[:12]}"
    url = base.set(database=name).render_as_string(hide_password=False)
    url = url.replace("+psycopg", "")

    def create_pg() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        upgrade(url)

    yield url, create_pg
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.parametrize("late_db_url", ["sqlite", "postgresql"], indirect=True)
def test_an_unreachable_database_does_not_stop_serve_and_it_recovers_by_itself(
    late_db_url: tuple[str, Callable[[], None]], tmp_path: Path
) -> None:
    url, create = late_db_url
    with exporter_process(["--database-url", url, *FAST], tmp_path, ready=False) as exporter:
        wait_until(
            lambda: value(exporter.metrics(), "accounting_sync_exporter_refresh_failures_total"),
            timeout=10,
            what="a failed refresh",
        )
        samples = exporter.metrics()
        assert value(samples, "accounting_sync_exporter_source_up") == 0
        assert http_get(exporter.url + "/healthz")[0] == 200
        assert http_get(exporter.url + "/readyz")[0] == 503
        assert exporter.process.poll() is None

        create()
        writer = create_sync_log_engine(normalize_url(url))
        Pipeline(writer).register("hlf", "HLF", "dynamics")
        writer.dispose()
        wait_until(
            lambda: health(exporter, "hlf", "dynamics") == 0,
            timeout=15,
            what="hlf's series after the database appeared",
        )
        assert http_get(exporter.url + "/readyz")[0] == 200
        samples = exporter.metrics()
    assert value(samples, "accounting_sync_exporter_source_up") == 1
    assert value(samples, "accounting_sync_health", **labels("hlf", "dynamics")) == 0


# --- how the database is named -----------------------------------------------------------------


def test_database_url_from_the_environment(synclog: Pipeline, db_url: str, tmp_path: Path) -> None:
    synclog.register("hlf", "HLF", "dynamics")
    env = {"ACCOUNTING_SYNC_DATABASE_URL": db_url}
    result = run_cli("db", "upgrade", env=env)
    assert result.returncode == 0, result.stderr
    with exporter_process(FAST, tmp_path, env=env) as exporter:
        samples = exporter.metrics()
    assert value(samples, "accounting_sync_health", **labels("hlf", "dynamics")) == 0


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_plain_postgresql_urls_work(pg_url: str, scheme: str, tmp_path: Path) -> None:
    url = scheme + pg_url.removeprefix("postgresql")
    assert url.startswith(f"{scheme}://")  # no +driver: the project picks psycopg 3 itself
    upgrade(url)
    with exporter_process(["--database-url", url, *FAST], tmp_path) as exporter:
        assert value(exporter.metrics(), "accounting_sync_exporter_source_up") == 1


# --- stopping ----------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_serve_cleanly_with_exit_code_0(
    synclog: Pipeline, db_url: str, tmp_path: Path, signum: signal.Signals
) -> None:
    with exporter_process(["--database-url", db_url, *FAST], tmp_path) as exporter:
        exporter.process.send_signal(signum)
        try:
            code = exporter.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve did not stop within 15 s of {signum.name}: {exporter.log()}")
    assert code == 0, exporter.log()
    assert "Traceback" not in exporter.log()


# --- reconciliation and error classes (issue 12) -----------------------------------------------


def test_error_classes_rejected_records_and_lateness_series(
    synclog: Pipeline, db_url: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    day = timedelta(days=1)
    synclog.register("hlf", "HLF", "dynamics", created_at=now - 3 * day)
    synclog.register("dnt", "DNT", "xledger", created_at=now - 3 * day)
    synclog.register(
        "blindeforbundet", "Blindeforbundet", "xledger", expected_interval_seconds=900,
        created_at=now - 3 * day,
    )  # fmt: skip
    # An expired client secret: the run failed as a whole.
    run = synclog.start_run("hlf", "dynamics", at=now - timedelta(minutes=3))
    synclog.finish_run(
        run, "failed", error_code="AADSTS7000222", error_message="AADSTS7000222: secret expired",
        at=now - timedelta(minutes=2),
    )  # fmt: skip
    # Throttling, with records that failed, one given up; and one only an operator rule knows.
    ids = synclog.enqueue("dnt", "xledger", [("expense", f"E-{n}") for n in range(4)])
    run = synclog.start_run("dnt", "xledger", at=now - timedelta(minutes=3))
    synclog.record_failure(
        run, ids[0], "Slow down", error_code="BAD_REQUEST.BURST_RATE_LIMIT_REACHED"
    )
    synclog.record_failure(run, ids[1], "Slow down", error_code="429")
    synclog.record_failure(run, ids[2], "Konto 6800 er sperret", error_code="XL-ACC", give_up=True)
    synclog.mark_synced(ids[3:])
    synclog.finish_run(
        run, "partial", records_total=4, records_failed=3, at=now - timedelta(minutes=2)
    )
    # Late: expected every 15 minutes, last success an hour ago.
    synclog.add_finished_run(
        "blindeforbundet", "xledger", "succeeded", started_at=now - timedelta(hours=1, minutes=1),
        finished_at=now - timedelta(hours=1),
    )  # fmt: skip
    config = tmp_path / "exporter.yml"
    config.write_text(
        "classification:\n  rules:\n    - {class: validation, message: 'konto \\d+ er sperret'}\n"
    )
    args = ["--database-url", db_url, "--config", str(config), *FAST]
    with exporter_process(args, tmp_path) as exporter:
        samples = exporter.metrics()
        hlf, dnt, blind = (
            labels("hlf", "dynamics"),
            labels("dnt", "xledger"),
            labels("blindeforbundet", "xledger"),
        )
        assert series(samples, "accounting_sync_last_run_error_class") == {
            frozenset({**hlf, "error_class": "auth"}.items()): 1
        }
        assert series(samples, "accounting_sync_last_run_failed_records_by_class") == {
            frozenset({**dnt, "error_class": "throttled"}.items()): 2,
            frozenset({**dnt, "error_class": "validation"}.items()): 1,
        }
        assert {
            dict(k)["org"]: v
            for k, v in series(samples, "accounting_sync_rejected_records").items()
        } == {"hlf": 0, "dnt": 1, "blindeforbundet": 0}
        assert series(samples, "accounting_sync_expected_interval_seconds") == {
            frozenset(blind.items()): 900
        }
        assert value(
            samples, "accounting_sync_integration_created_timestamp_seconds", **hlf
        ) == pytest.approx((now - 3 * day).timestamp(), abs=1e-3)
        # The secret is renewed: the next run succeeds and the class goes away.
        synclog.add_finished_run(
            "hlf", "dynamics", "succeeded", started_at=datetime.now(UTC) - timedelta(seconds=2),
            finished_at=datetime.now(UTC),
        )  # fmt: skip
        wait_until(
            lambda: not series(exporter.metrics(), "accounting_sync_last_run_error_class"),
            timeout=2 * INTERVAL + 5.0,
            what="the error class to go once the run succeeds",
        )


def test_a_bad_classification_rule_stops_serve_with_exit_2_naming_the_key(
    sqlite_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "exporter.yml"
    config.write_text("classification:\n  rules:\n    - {class: auth, code: A}\n    - {class: x}\n")
    result = run_cli("serve", "--database-url", sqlite_url, "--config", str(config))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "classification.rules[1].class" in line and str(config) in line
