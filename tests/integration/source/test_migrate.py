"""The migrations build the schema the models describe, and go down and up again.

The reader and the pipeline writer are written against the SQLAlchemy models; the database
is built by the Alembic migrations. Nothing else ties the two, so a column added to one and
forgotten in the other would only show as a failing query in production. Alembic's own
comparison (the one ``revision --autogenerate`` uses) must find nothing to do.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Engine, MetaData, Text, text
from sqlalchemy.schema import CreateIndex, SchemaItem

from exporter.admin.roles import MAPPING, TABLES
from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.migrate import (
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from exporter.source.pipeline import Pipeline
from exporter.source.schema import TRIGGER_MAINTAINED_COLUMNS, Base, Integration

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
# Automatic indexes (primary keys, unique constraints) have no SQL of their own.
INDEXES = text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")


def _include(
    obj: SchemaItem, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """What the comparison looks at, with each exception named and explained."""
    # Kept by triggers on PostgreSQL only (migration 0002); out of the models on purpose.
    if type_ == "column" and reflected and compare_to is None:
        table = getattr(obj, "table", None)
        if table is not None and table.name == Integration.__tablename__:
            return name not in TRIGGER_MAINTAINED_COLUMNS
    # The tenancy mapping (migration 0003, PostgreSQL only) belongs to `db tenant-role`,
    # which writes it with SQL of its own; no part of the exporter maps it.
    return not (type_ == "table" and name == MAPPING)


def differences(engine: Engine, metadata: MetaData = Base.metadata) -> list[Any]:
    sqlite = engine.dialect.name == "sqlite"

    def include(
        obj: SchemaItem, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        # SQLite cannot reflect index expressions (``finished_at DESC``), so Alembic would
        # report every such index as changed; their DDL is compared as text instead.
        if sqlite and type_ == "index":
            return False
        return _include(obj, name, type_, reflected, compare_to)

    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_object": include,
            },
        )
        return list(compare_metadata(context, metadata))


def test_the_models_match_the_migrated_schema(engine: Engine) -> None:
    assert differences(engine) == []


@pytest.mark.postgres
def test_the_trigger_maintained_columns_are_real_columns_outside_the_models(pg_url: str) -> None:
    # Guards the exclusion above: it must skip columns that exist, not hide a typo.
    engine = create_sync_log_engine(normalize_url(pg_url))
    try:
        upgrade(engine)
        with engine.connect() as connection:
            statement = text("SELECT * FROM sync_integration WHERE false")
            columns = set(connection.execute(statement).keys())
    finally:
        engine.dispose()
    assert set(TRIGGER_MAINTAINED_COLUMNS) <= columns
    assert not set(TRIGGER_MAINTAINED_COLUMNS) & set(Integration.__table__.columns.keys())


def _normalized(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()


def test_on_sqlite_every_index_is_the_models_index_word_for_word(sqlite_url: str) -> None:
    engine = create_sync_log_engine(normalize_url(sqlite_url))
    try:
        upgrade(engine)
        with engine.connect() as connection:
            migrated = {name: _normalized(sql) for name, sql in connection.execute(INDEXES)}
        modelled = {
            str(index.name): _normalized(str(CreateIndex(index).compile(dialect=engine.dialect)))
            for table in Base.metadata.tables.values()
            for index in table.indexes
        }
    finally:
        engine.dispose()
    assert migrated == modelled
    assert any("WHERE" in sql and "DESC" in sql for sql in migrated.values())


def test_a_model_column_missing_from_the_migrations_is_found(engine: Engine) -> None:
    # The comparison is live: a column only the models have is reported.
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    metadata.tables[Integration.__tablename__].append_column(Column("not_migrated", Text))
    found = differences(engine, metadata)
    assert [(d[0], d[2], d[3].name) for d in found] == [
        ("add_column", "sync_integration", "not_migrated")
    ]


@pytest.fixture
def sync_log(pg_url: str) -> Iterator[str]:
    engine = create_sync_log_engine(normalize_url(pg_url))
    upgrade(engine)
    pipeline = Pipeline(engine)
    pipeline.register("hlf", "Hørselshemmedes Landsforbund", "dynamics", created_at=T0)
    run = pipeline.start_run("hlf", "dynamics", at=T0)
    pipeline.finish_run(run, "succeeded", records_total=1)
    engine.dispose()
    yield pg_url


@pytest.mark.postgres
def test_the_tenancy_migration_downgrades_and_upgrades_again(sync_log: str) -> None:
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
