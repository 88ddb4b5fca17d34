"""Applying the Alembic migrations that ship inside the package.

No ``alembic.ini`` is needed: users run ``accounting-sync-exporter db upgrade`` and the
migration scripts travel with the wheel.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.engine import URL

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create or migrate the schema; running it again is a no-op."""
    path = engine.url.database
    if engine.url.get_backend_name() == "sqlite" and path not in (None, "", ":memory:"):
        Path(str(path)).expanduser().parent.mkdir(parents=True, exist_ok=True)
    config = alembic_config(engine)
    # Alembic owns the transactions (one per migration, see migrations/env.py): a migration
    # may need to step outside them, as 0006 does to build an index concurrently.
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def upgrade_sql(url: URL, output: TextIO, *, schema: str = "public") -> None:
    """Write the SQL of every migration (Alembic's offline mode) instead of running it.

    For a DBA who reviews DDL before it runs, or who applies it with their own tools. No
    connection is made, so the SQL cannot depend on what the database holds: it creates
    the whole schema, from nothing, in ``schema`` (where the tenancy functions live).
    """
    config = Config(output_buffer=output)
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    config.attributes["schema"] = schema
    command.upgrade(config, "head", sql=True)


def downgrade(engine: Engine, revision: str) -> None:
    """Step the schema back to ``revision`` (tests and operators undoing an upgrade)."""
    config = alembic_config(engine)
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()
