"""Fixtures for real databases: a fresh PostgreSQL database or SQLite file per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.migrate import upgrade
from tests.support import IN_CI

ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    """A connection to the test server's maintenance database (skipped, or failed in CI)."""
    engine = create_engine(normalize_url(ADMIN_URL), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as exc:
        engine.dispose()
        message = f"PostgreSQL not reachable at {ADMIN_URL}: {exc.__class__.__name__}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin: Engine) -> Iterator[str]:
    """A new, empty PostgreSQL database for this test alone, dropped afterwards."""
    name = f"ase_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = normalize_url(ADMIN_URL).set(database=name)
    yield url.render_as_string(hide_password=False).replace("+psycopg", "")
    with pg_admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'sync-log.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on both supported sync log back ends."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated sync log on each back end."""
    engine = create_sync_log_engine(normalize_url(db_url))
    upgrade(engine)
    yield engine
    engine.dispose()
