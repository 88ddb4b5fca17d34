"""Tenant isolation in the database: a tenant role, whatever SQL it sends, reads its own
organization's rows and nothing else, and writes nothing; the exporter's role reads
everything and writes nothing. All on a real PostgreSQL, through the real command line.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from exporter.admin.roles import TABLES
from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.migrate import upgrade
from exporter.source.pipeline import Pipeline
from tests.support import exporter_process, run_cli, value

pytestmark = pytest.mark.postgres

ORG_COLUMN = {table: "id" if table == "sync_organization" else "org_id" for table in TABLES}
T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def _seed(engine: Engine) -> None:
    """Two organizations with rows in all five tables (hlf has more, so counts differ)."""
    pipeline = Pipeline(engine)
    for org, name, connectors, records in (
        ("blindeforbundet", "Norges Blindeforbund", ["xledger"], 2),
        ("hlf", "Hørselshemmedes Landsforbund", ["dynamics", "xledger"], 3),
    ):
        for connector in connectors:
            pipeline.register(org, name, connector, created_at=T0)
            ids = pipeline.enqueue(
                org, connector, [("expense", f"{org}-{connector}-{i}") for i in range(records)]
            )
            run = pipeline.start_run(org, connector, at=T0 + timedelta(minutes=1))
            pipeline.record_failure(run, ids[0], "account code missing", error_code="E42")
            pipeline.finish_run(run, "partial", records_total=records, records_failed=1)


@pytest.fixture
def sync_log(pg_url: str) -> Iterator[str]:
    engine = create_sync_log_engine(normalize_url(pg_url))
    upgrade(engine)
    _seed(engine)
    engine.dispose()
    yield pg_url


@pytest.fixture
def role_names(pg_url: str, pg_admin: Engine) -> Iterator[Callable[[str], str]]:
    """Unique role names (roles are cluster-wide), dropped with their grants afterwards."""
    made: list[str] = []

    def make(prefix: str) -> str:
        made.append(f"ase_{prefix}_{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield make
    engine = create_sync_log_engine(normalize_url(pg_url))
    with engine.begin() as connection:
        for role in made:
            if connection.execute(
                text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}
            ).first():
                connection.execute(text(f'DROP OWNED BY "{role}"'))
    engine.dispose()
    with pg_admin.connect() as connection:
        for role in made:
            connection.execute(text(f'DROP ROLE IF EXISTS "{role}"'))


@pytest.fixture(scope="module")
def attacked(
    pg_admin: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """One sync log and one hlf tenant shared by the attempts that must all fail (none of
    them can change anything unless isolation is already broken, which fails its test)."""
    name = f"ase_test_{uuid.uuid4().hex[:12]}"
    role = f"ase_attacked_{uuid.uuid4().hex[:8]}"
    with pg_admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = pg_admin.url.set(database=name).render_as_string(hide_password=False)
    url = url.replace("+psycopg", "")
    engine = create_sync_log_engine(normalize_url(url))
    try:
        upgrade(engine)
        _seed(engine)
        _make_tenant(url, "hlf", role, tmp_path_factory.mktemp("attacked"))
        yield url, role
    finally:
        with engine.begin() as connection:
            if connection.execute(
                text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}
            ).first():
                connection.execute(text(f'DROP OWNED BY "{role}"'))
        engine.dispose()
        with pg_admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'DROP ROLE IF EXISTS "{role}"'))


def _connect_as(url: str, role: str, password: str | None = None) -> psycopg.Connection:
    parsed = make_url(url)
    return psycopg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        dbname=parsed.database,
        user=role,
        password=password,
        autocommit=True,
    )


def _orgs_per_table(connection: psycopg.Connection) -> dict[str, set[str]]:
    return {
        table: {row[0] for row in connection.execute(f"SELECT {ORG_COLUMN[table]} FROM {table}")}
        for table in TABLES
    }


def _make_tenant(url: str, org: str, role: str, tmp_path, password: str = "s3cret!'pw") -> str:  # type: ignore[no-untyped-def]
    secret = tmp_path / f"{role}.password"
    secret.write_text(password + "\n")
    result = run_cli(
        "db",
        "tenant-role",
        "--database-url",
        url,
        "--org",
        org,
        "--role",
        role,
        "--password-file",
        str(secret),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_tenant_role_sees_its_own_organization_in_every_table(sync_log, role_names, tmp_path):
    role = role_names("hlf")
    out = _make_tenant(sync_log, "hlf", role, tmp_path)
    assert f"role {role} created" in out

    with _connect_as(sync_log, role, "s3cret!'pw") as tenant:
        assert _orgs_per_table(tenant) == {table: {"hlf"} for table in TABLES}
        # Bounded and read-only by default, so dashboards cannot starve the pipeline.
        assert tenant.execute("SHOW statement_timeout").fetchone() == ("30s",)
        assert tenant.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        counts = {t: tenant.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    # hlf's own rows are all there: 1 organization, 2 integrations, 2 runs, 6 records, 2 errors.
    assert counts == {
        "sync_organization": 1,
        "sync_integration": 2,
        "sync_run": 2,
        "sync_record": 6,
        "sync_record_error": 2,
    }


WRITES = [
    "INSERT INTO sync_organization (id, name) VALUES ('evil', 'Evil')",
    "UPDATE sync_record SET state = 'synced'",
    "DELETE FROM sync_record_error",
    "TRUNCATE sync_run CASCADE",
    "UPDATE sync_tenant_role SET org_id = 'blindeforbundet'",
    "INSERT INTO sync_tenant_role (role_name, org_id) VALUES (current_user, 'blindeforbundet')",
]


@pytest.mark.parametrize("statement", WRITES)
def test_a_tenant_role_cannot_write(attacked, statement):
    url, role = attacked
    with _connect_as(url, role, "s3cret!'pw") as tenant:
        # The role's default is a read-only transaction; switch it off to reach the grants.
        tenant.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            tenant.execute(statement)


WIDENING = [
    # Turning RLS off as a non-owner is an error, never an unfiltered read.
    ("SET row_security = off", "SELECT count(*) FROM sync_record"),
    # The group role it may switch to has no mapping: it sees nothing, not everything.
    ("SET ROLE accounting_sync_tenant", "SELECT count(*) FROM sync_record WHERE org_id <> 'hlf'"),
    ("", "ALTER TABLE sync_record DISABLE ROW LEVEL SECURITY"),
    ("", "DROP POLICY tenant_rows ON sync_run"),
    ("", "CREATE POLICY everything ON sync_run FOR SELECT USING (true)"),
    ("", "CREATE TABLE sync_copy AS SELECT 1"),
    ("", "SET ROLE postgres"),
    ("", "CREATE FUNCTION accounting_sync_tenant_org() RETURNS text LANGUAGE sql AS 'SELECT 1'"),
]


@pytest.mark.parametrize(("setup", "attempt"), WIDENING)
def test_a_tenant_role_cannot_widen_its_view(attacked, setup, attempt):
    url, role = attacked
    with _connect_as(url, role, "s3cret!'pw") as tenant:
        tenant.execute("SET default_transaction_read_only = off")  # reach the grants
        if setup:
            tenant.execute(setup)
        try:
            cursor = tenant.execute(attempt)
            rows = cursor.fetchall() if attempt.startswith("SELECT") else None
        except psycopg.errors.InsufficientPrivilege:
            rows = None
        else:
            assert rows is not None, f"{attempt!r} succeeded"
            assert rows == [(0,)], f"{attempt!r} returned another organization's rows: {rows}"
        # Whatever was tried, the view afterwards is still hlf's alone.
        tenant.execute("RESET ROLE")
        tenant.execute("RESET row_security")
        assert _orgs_per_table(tenant) == {table: {"hlf"} for table in TABLES}


def test_statistics_do_not_leak_other_organizations(sync_log, role_names, tmp_path, pg_admin):
    role = role_names("s")
    _make_tenant(sync_log, "hlf", role, tmp_path)
    engine = create_sync_log_engine(normalize_url(sync_log))
    with engine.begin() as connection:
        connection.execute(text("ANALYZE"))
        assert connection.execute(
            text("SELECT count(*) FROM pg_stats WHERE tablename = 'sync_record'")
        ).scalar_one()
    engine.dispose()
    with _connect_as(sync_log, role, "s3cret!'pw") as tenant:
        leaked = tenant.execute(
            "SELECT count(*) FROM pg_stats WHERE tablename = ANY(%s)", [list(TABLES)]
        ).fetchone()
    assert leaked == (0,)


def test_running_again_updates_in_place_and_can_move_a_role(sync_log, role_names, tmp_path):
    role = role_names("m")
    _make_tenant(sync_log, "hlf", role, tmp_path)
    again = _make_tenant(sync_log, "hlf", role, tmp_path, password="new password")
    assert f"role {role} updated" in again
    with _connect_as(sync_log, role, "new password") as tenant:
        assert _orgs_per_table(tenant)["sync_run"] == {"hlf"}
    _make_tenant(sync_log, "blindeforbundet", role, tmp_path)
    with _connect_as(sync_log, role) as tenant:
        assert _orgs_per_table(tenant) == {table: {"blindeforbundet"} for table in TABLES}


def test_a_tenant_without_a_mapping_sees_nothing(sync_log, role_names, tmp_path):
    role = role_names("u")
    _make_tenant(sync_log, "hlf", role, tmp_path)
    engine = create_sync_log_engine(normalize_url(sync_log))
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM sync_tenant_role WHERE role_name = :r"), {"r": role})
    engine.dispose()
    with _connect_as(sync_log, role) as tenant:
        assert _orgs_per_table(tenant) == {table: set() for table in TABLES}


def test_rls_changes_nothing_for_a_pipeline_writer_that_does_not_own_the_tables(
    sync_log, role_names, tmp_path
):
    writer = role_names("pipeline")
    engine = create_sync_log_engine(normalize_url(sync_log))
    with engine.begin() as connection:
        connection.execute(text(f'CREATE ROLE "{writer}" LOGIN'))
        connection.execute(
            text(f'GRANT SELECT, INSERT, UPDATE ON {", ".join(TABLES)} TO "{writer}"')
        )
    engine.dispose()
    _make_tenant(sync_log, "hlf", role_names("t"), tmp_path)  # a tenant exists in the database
    with _connect_as(sync_log, writer) as pipeline:
        pipeline.execute("INSERT INTO sync_organization (id, name) VALUES ('new', 'New org')")
        assert _orgs_per_table(pipeline)["sync_organization"] == {"blindeforbundet", "hlf", "new"}


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--org", "hlf", "--role", "postgres"], "--role postgres"),
        (["--org", "", "--role", "ase_empty_org"], "--org"),
        (["--org", "hlf", "--role", "pg_monitor"], "--role"),
        (["--org", "hlf", "--role", "r", "--password-file", "/nonexistent/pw"], "--password-file"),
        (["--role", "r"], "--org"),
    ],
)
def test_bad_requests_exit_2_with_one_line_naming_the_flag(sync_log, args, named):
    result = run_cli("db", "tenant-role", "--database-url", sync_log, *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr


def test_a_role_that_can_become_the_owner_or_a_superuser_is_refused(sync_log, role_names):
    escalating = role_names("esc")
    engine = create_sync_log_engine(normalize_url(sync_log))
    with engine.begin() as connection:
        connection.execute(text(f'CREATE ROLE "{escalating}" LOGIN'))
        connection.execute(text(f'GRANT postgres TO "{escalating}"'))  # owner and superuser
    engine.dispose()
    result = run_cli(
        "db", "tenant-role", "--database-url", sync_log, "--org", "hlf", "--role", escalating
    )
    assert result.returncode == 2 and f"--role {escalating}" in result.stderr, result.stderr
    with _connect_as(sync_log, escalating) as connection:
        assert not connection.execute(
            "SELECT count(*) FROM sync_tenant_role WHERE role_name = current_user"
        ).fetchone()[0]


def test_without_the_privilege_to_create_roles_it_fails_in_one_line(sync_log, role_names):
    weak = role_names("weak")
    engine = create_sync_log_engine(normalize_url(sync_log))
    with engine.begin() as connection:
        connection.execute(text(f'CREATE ROLE "{weak}" LOGIN'))
    engine.dispose()
    url = make_url(sync_log).set(username=weak).render_as_string(hide_password=False)
    result = run_cli(
        "db", "tenant-role", "--database-url", url, "--org", "hlf", "--role", weak + "t"
    )
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "permission denied" in result.stderr


def test_an_unmigrated_database_or_sqlite_is_refused(pg_url, sqlite_url):
    unmigrated = run_cli(
        "db", "tenant-role", "--database-url", pg_url, "--org", "a", "--role", "ase_never"
    )
    assert unmigrated.returncode == 2 and "db upgrade" in unmigrated.stderr
    sqlite = run_cli("db", "reader-role", "--database-url", sqlite_url, "--role", "ase_never")
    assert sqlite.returncode == 2 and "PostgreSQL" in sqlite.stderr


def test_the_exporter_serves_every_organization_as_the_read_only_role(
    sync_log, role_names, tmp_path
):
    reader = role_names("exporter")
    _make_tenant(sync_log, "hlf", role_names("t"), tmp_path)
    secret = tmp_path / "reader.password"
    secret.write_text("reader-pw")
    result = run_cli(
        "db",
        "reader-role",
        "--database-url",
        sync_log,
        "--role",
        reader,
        "--password-file",
        str(secret),
    )
    assert result.returncode == 0, result.stderr
    with _connect_as(sync_log, reader, "reader-pw") as connection:
        assert _orgs_per_table(connection)["sync_record"] == {"blindeforbundet", "hlf"}
        connection.execute("SET default_transaction_read_only = off")
        for statement in WRITES[:4]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                connection.execute(statement)
    url = make_url(sync_log).set(username=reader).render_as_string(hide_password=False)
    with exporter_process(
        ["--database-url", url, "--database.password-file", str(secret)], tmp_path
    ) as exporter:
        samples = exporter.metrics()
    assert value(samples, "accounting_sync_exporter_source_up") == 1
    for org, connector in (("hlf", "dynamics"), ("blindeforbundet", "xledger")):
        assert value(samples, "accounting_sync_failed_records", org=org, connector=connector) == 1


def test_the_tenancy_migration_downgrades_and_upgrades_again(sync_log):
    from exporter.source.migrate import current_revision, downgrade, head_revision

    engine = create_sync_log_engine(normalize_url(sync_log))

    def rls_tables() -> set[str]:
        with engine.connect() as connection:
            return set(
                connection.scalars(text("SELECT relname FROM pg_class WHERE relrowsecurity"))
            )

    assert rls_tables() == {*TABLES, "sync_tenant_role"}
    downgrade(engine, "0002_change_notification")
    assert rls_tables() == set()
    upgrade(engine)
    assert rls_tables() == {*TABLES, "sync_tenant_role"}
    assert current_revision(engine) == head_revision()
    engine.dispose()
