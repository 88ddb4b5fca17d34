"""The pipeline's own login role (``db writer-role``) and the DDL a DBA can review
(``db upgrade --sql``), on a real PostgreSQL through the real command line."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.pipeline import Pipeline
from tests.integration.admin import test_roles
from tests.support import exporter_process, require_binary, run_cli, value

# The same fixtures as the other roles' tests: a seeded sync log, roles dropped afterwards.
sync_log = test_roles.sync_log
role_names = test_roles.role_names
_connect_as = test_roles._connect_as

pytestmark = pytest.mark.postgres
T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def _as(url: str, role: str, password: str) -> str:
    return make_url(url).set(username=role, password=password).render_as_string(hide_password=False)


def test_the_pipeline_writes_as_the_writer_role_and_cannot_change_the_schema(
    sync_log, role_names, tmp_path
):
    writer = role_names("writer")
    secret = tmp_path / "writer.password"
    secret.write_text("wr1ter-pw\n")
    args = ["db", "writer-role", "--database-url", sync_log, "--role", writer]
    result = run_cli(*args, "--password-file", str(secret))
    assert result.returncode == 0, result.stderr
    assert f"role {writer} created" in result.stdout
    assert run_cli(*args).returncode == 0  # again: updated in place

    # The project's own writer API, logged in as the role: every kind of write it makes.
    engine = create_sync_log_engine(normalize_url(_as(sync_log, writer, "wr1ter-pw")))
    try:
        pipeline = Pipeline(engine)
        pipeline.register("newcomer", "Ny Forening", "xledger", created_at=T0)
        ids = pipeline.enqueue("newcomer", "xledger", [("expense", "NEW-1"), ("travel", "NEW-2")])
        run = pipeline.start_run("newcomer", "xledger", at=T0 + timedelta(minutes=1))
        pipeline.record_failure(run, ids[0], "account closed", error_code="XL-ACCOUNT")
        pipeline.mark_synced(ids[1:])
        pipeline.finish_run(run, "partial", records_total=2, records_failed=1)
    finally:
        engine.dispose()

    with _connect_as(sync_log, writer) as connection:
        assert connection.execute(
            "SELECT state FROM sync_record WHERE record_ref = 'NEW-2'"
        ).fetchone() == ("synced",)
        connection.execute("DELETE FROM sync_record_error WHERE org_id = 'newcomer'")
        for ddl in (
            "CREATE TABLE sneaky (id int)",
            "DROP TABLE sync_record_error",
            "ALTER TABLE sync_run ADD COLUMN sneaky int",
            "TRUNCATE sync_record",
            "CREATE INDEX sneaky ON sync_run (org_id)",
            "DELETE FROM sync_tenant_role",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                connection.execute(ddl)
        attributes = connection.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls FROM pg_roles"
            " WHERE rolname = current_user"
        ).fetchone()
        assert attributes == (False, False, False, False)


def test_the_writer_role_is_refused_for_the_owner_and_on_sqlite(sync_log, sqlite_url):
    owner = run_cli("db", "writer-role", "--database-url", sync_log, "--role", "postgres")
    assert owner.returncode == 2 and "--role postgres" in owner.stderr, owner.stderr
    assert len(owner.stderr.strip().splitlines()) == 1
    assert run_cli("db", "upgrade", "--database-url", sqlite_url).returncode == 0
    lite = run_cli("db", "writer-role", "--database-url", sqlite_url, "--role", "w")
    assert lite.returncode == 2 and "PostgreSQL" in lite.stderr, lite.stderr


def test_upgrade_sql_applied_with_psql_gives_a_sync_log_the_exporter_serves(pg_url, tmp_path):
    psql = require_binary("psql")
    printed = run_cli("db", "upgrade", "--sql", "--database-url", pg_url)
    assert printed.returncode == 0, printed.stderr
    assert "CREATE TABLE sync_record_error" in printed.stdout
    # Nothing ran: the database is still empty until the DBA applies the SQL.
    engine = create_sync_log_engine(normalize_url(pg_url))
    with engine.connect() as connection:
        assert (
            connection.execute(
                text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            ).scalar_one()
            == 0
        )
    script = tmp_path / "schema.sql"
    script.write_text(printed.stdout)
    applied = subprocess.run(
        [psql, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(script), pg_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    try:
        Pipeline(engine).register("blindeforbundet", "Norges Blindeforbund", "xledger")
    finally:
        engine.dispose()
    # The online upgrade agrees that the schema is at head (nothing left to run).
    again = run_cli("db", "upgrade", "--database-url", pg_url)
    assert again.returncode == 0 and "Running upgrade" not in again.stderr, again.stderr
    with exporter_process(["--database-url", pg_url], tmp_path) as exporter:
        samples = exporter.metrics()
    labels = {"org": "blindeforbundet", "connector": "xledger"}
    assert value(samples, "accounting_sync_integration_active", **labels) == 1
    assert value(samples, "accounting_sync_exporter_source_up") == 1
