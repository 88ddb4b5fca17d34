"""The demo writes fake data only where it was told to on its own command line, refuses a
database that holds anything but its own data, and leaves no temporary directory behind,
however it ends. Real processes and a real PostgreSQL (issue 14)."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.pipeline import Pipeline
from tests.support import EXPORTER, exporter_process, run_cli, wait_until


def _tables(url: str) -> set[str]:
    engine = create_sync_log_engine(normalize_url(url))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _count(url: str, table: str) -> int:
    engine = create_sync_log_engine(normalize_url(url))
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture
def production(pg_url: str) -> str:
    """A real sync log: migrated, with a real organization that shares a demo slug."""
    assert run_cli("db", "upgrade", "--database-url", pg_url).returncode == 0
    engine = create_sync_log_engine(normalize_url(pg_url))
    Pipeline(engine).register("hlf", "Hørselshemmedes Landsforbund", "dynamics")
    engine.dispose()
    return pg_url


def _demo_dirs(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("accounting-sync-demo-*"))


def test_the_environment_and_config_file_url_never_reach_the_demo(production, tmp_path):
    config = tmp_path / "exporter.yml"
    config.write_text(f"database:\n  url: {production}\n")
    env = {"ACCOUNTING_SYNC_DATABASE_URL": production, "TMPDIR": str(tmp_path)}
    with exporter_process(["--config", str(config)], tmp_path, command="demo", env=env) as exporter:
        assert len(_demo_dirs(tmp_path)) == 1  # its own temporary SQLite sync log
        assert "database=sqlite:///" in exporter.log()
    assert _count(production, "sync_organization") == 1
    assert _count(production, "sync_record") == 0
    assert "accounting_sync_demo" not in _tables(production)


def test_a_real_sync_log_named_on_the_command_line_is_refused(production):
    before = {table: _count(production, table) for table in ("sync_organization", "sync_run")}
    result = run_cli("demo", "--database-url", production)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "--database-url" in line and "did not make" in line
    assert {table: _count(production, table) for table in before} == before
    assert "accounting_sync_demo" not in _tables(production)


def test_a_database_of_another_application_is_refused(pg_url):
    engine = create_sync_log_engine(normalize_url(pg_url))
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE invoices (id int)"))
    engine.dispose()
    result = run_cli("demo", "--database-url", pg_url)
    assert result.returncode == 2, result.stderr
    assert "invoices" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert _tables(pg_url) == {"invoices"}


def test_its_own_database_is_reused_but_not_once_a_real_organization_joined(pg_url, tmp_path):
    with exporter_process(["--database-url", pg_url], tmp_path, command="demo"):
        pass
    assert "accounting_sync_demo" in _tables(pg_url)
    organizations = _count(pg_url, "sync_organization")
    with exporter_process(["--database-url", pg_url], tmp_path, command="demo"):
        pass  # its own: accepted again, not seeded twice
    assert _count(pg_url, "sync_organization") == organizations

    engine = create_sync_log_engine(normalize_url(pg_url))
    Pipeline(engine).register("real-customer", "Real Customer AS", "xledger")
    engine.dispose()
    result = run_cli("demo", "--database-url", pg_url)
    assert result.returncode == 2
    assert "real-customer" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_temporary_sync_log_is_removed_when_the_demo_is_stopped(tmp_path, signum):
    env = {"TMPDIR": str(tmp_path)}
    with exporter_process([], tmp_path, command="demo", env=env) as exporter:
        (directory,) = _demo_dirs(tmp_path)
        assert (directory / "sync-log.db").is_file()
        exporter.process.send_signal(signum)
        assert exporter.process.wait(timeout=30) == 0
    assert _demo_dirs(tmp_path) == []


def test_the_temporary_sync_log_is_removed_when_the_port_is_busy(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [*EXPORTER, "demo", "--web.listen-address", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=120, env={"TMPDIR": str(tmp_path),
            "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "cannot listen" in result.stderr
    assert _demo_dirs(tmp_path) == []


def test_sigterm_while_seeding_still_removes_the_temporary_sync_log(tmp_path):
    process = subprocess.Popen(
        [*EXPORTER, "demo", "--web.listen-address", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    wait_until(lambda: _demo_dirs(tmp_path), timeout=30, what="the temporary directory")
    process.terminate()
    assert process.wait(timeout=30) == 0, process.stderr.read() if process.stderr else ""
    assert _demo_dirs(tmp_path) == []
