"""Alembic environment: runs against the connection that ``exporter.source.migrate`` hands over."""

from __future__ import annotations

from alembic import context

from exporter.source.schema import Base

if context.is_offline_mode():
    # `db upgrade --sql`: the DDL as text for a DBA to review and apply; no connection.
    context.configure(
        url=context.config.attributes["url"],
        target_metadata=Base.metadata,
        literal_binds=True,
        compare_type=True,
    )
else:
    connection = context.config.attributes.get("connection")
    if connection is None:  # pragma: no cover - only the project's own runner calls Alembic
        raise RuntimeError("run migrations through `accounting-sync-exporter db upgrade`")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # Each migration commits on its own, so one that builds an index concurrently outside
        # a transaction (0006) does not commit half of another.
        transaction_per_migration=True,
    )
with context.begin_transaction():
    context.run_migrations()
