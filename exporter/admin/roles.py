"""Least-privilege PostgreSQL roles: one per tenant (sees only its organization), one for
the exporter (sees everything, writes nothing), one for the pipeline (writes the rows of
the sync log, changes no schema: an owner's login in the pipeline could drop it all).

Isolation itself lives in the database (migration ``0003_tenancy``): row-level security
filters every query a tenant runs, whatever SQL it sends. This module only creates and
updates the roles, idempotently, and refuses roles that RLS cannot restrict (superusers,
BYPASSRLS roles, table owners) rather than hand out a false promise.

Passwords are hashed (SCRAM-SHA-256) by libpq before they are sent, so the clear text
never reaches the server's statement log.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from psycopg import sql
from sqlalchemy import Connection, Engine

from exporter.errors import UsageError

log = logging.getLogger(__name__)

TENANT_GROUP = "accounting_sync_tenant"
MAPPING = "sync_tenant_role"
TABLES = ("sync_organization", "sync_integration", "sync_run", "sync_record", "sync_record_error")
WRITE_PRIVILEGES = "INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER"
_ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"
TENANT_CONNECTION_LIMIT = 10
TENANT_STATEMENT_TIMEOUT = "30s"
_MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1


class RoleError(UsageError):
    """A request that cannot be honoured safely; ``str()`` is the one line for the user."""


@dataclass(frozen=True)
class RoleResult:
    role: str
    created: bool
    org: str | None = None


def tenant_role_name(org: str) -> str:
    """The conventional role name of an organization: ``accounting_sync_<slug>``."""
    name = "accounting_sync_" + re.sub(r"[^a-z0-9_]", "_", org.lower())
    if len(name.encode()) > _MAX_IDENTIFIER:
        raise RoleError(f"--org {org!r}: too long for a PostgreSQL role name")
    return name


def _check_name(flag: str, name: str) -> None:
    if not name or len(name.encode()) > _MAX_IDENTIFIER or "\x00" in name:
        raise RoleError(f"{flag}: must be 1 to {_MAX_IDENTIFIER} bytes, got {name!r}")
    if name.lower().startswith("pg_"):
        raise RoleError(f"{flag}: names starting with pg_ are reserved, got {name!r}")


def _execute(
    connection: Connection, statement: sql.Composed | sql.SQL | str, *params: Any
) -> psycopg.Cursor[tuple[Any, ...]]:
    """Run composed SQL on the psycopg connection under SQLAlchemy's open transaction."""
    raw = cast("psycopg.Connection[tuple[Any, ...]]", connection.connection.driver_connection)
    cursor = raw.cursor()
    cursor.execute(statement, params or None)
    return cursor


def _scalar(connection: Connection, statement: sql.Composed | sql.SQL | str, *params: Any) -> Any:
    row = _execute(connection, statement, *params).fetchone()
    return None if row is None else row[0]


def _prepare(engine: Engine, flag_role: str, role: str) -> None:
    if engine.url.get_backend_name() != "postgresql":
        raise RoleError("--database-url: roles need PostgreSQL (SQLite has no roles)")
    _check_name(flag_role, role)


def _schema(connection: Connection) -> str:
    schema = _scalar(
        connection,
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.oid = to_regclass(%s)",
        MAPPING,
    )
    if schema is None:
        raise RoleError("--database-url: the sync log is not migrated; run `db upgrade` first")
    return str(schema)


def _ensure_login_role(
    connection: Connection, role: str, password: str | None, *, read_only: bool = True
) -> bool:
    """Create or update ``role`` as a plain login role; refuse roles RLS cannot restrict."""
    # Roles are cluster-wide: serialise concurrent runs so CREATE ROLE cannot race.
    _execute(connection, "SELECT pg_advisory_xact_lock(hashtext('accounting_sync_roles'))")
    existing = _execute(
        connection, "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", role
    ).fetchone()
    if existing and (existing[0] or existing[1]):
        raise RoleError(f"--role {role}: is a superuser or BYPASSRLS role; RLS cannot restrict it")
    if role == _scalar(connection, "SELECT current_user"):
        raise RoleError(f"--role {role}: is the role running this command")
    if existing and _scalar(
        connection,
        "SELECT count(*) FROM pg_tables WHERE tablename = ANY(%s)"
        " AND pg_has_role(%s, tableowner, 'MEMBER')",
        [*TABLES, MAPPING],
        role,
    ):
        raise RoleError(f"--role {role}: owns sync log tables (or can SET ROLE to their owner)")
    if existing and _scalar(
        connection,
        "SELECT count(*) FROM pg_roles r WHERE r.rolname <> %s"
        " AND (r.rolsuper OR r.rolbypassrls) AND pg_has_role(%s, r.oid, 'MEMBER')",
        role,
        role,
    ):
        raise RoleError(f"--role {role}: can SET ROLE to a superuser or BYPASSRLS role")
    verb = "ALTER" if existing else "CREATE"
    _execute(
        connection,
        sql.SQL(f"{verb} ROLE {{}} {_ROLE_ATTRIBUTES}").format(sql.Identifier(role)),
    )
    if password is not None:
        raw = connection.connection.driver_connection
        hashed = raw.pgconn.encrypt_password(  # type: ignore[union-attr]
            password.encode(), role.encode(), b"scram-sha-256"
        )
        _execute(
            connection,
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(hashed.decode())
            ),
        )
    # Defence in depth: even a mistaken grant later would meet a read-only transaction.
    setting = (
        "SET default_transaction_read_only = on"
        if read_only
        else "RESET default_transaction_read_only"
    )
    _execute(connection, sql.SQL("ALTER ROLE {} " + setting).format(sql.Identifier(role)))
    return existing is None


def _tables(schema: str, names: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(schema, name) for name in names)


def _revoke_writes(connection: Connection, schema: str, role: str) -> None:
    _execute(
        connection,
        sql.SQL(f"REVOKE {WRITE_PRIVILEGES} ON {{}} FROM {{}}").format(
            _tables(schema, (*TABLES, MAPPING)), sql.Identifier(role)
        ),
    )
    _execute(
        connection,
        sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(
            sql.Identifier(schema), sql.Identifier(role)
        ),
    )


def _verify_read_only(connection: Connection, schema: str, role: str) -> None:
    """Fail loudly if grants to PUBLIC (or anything else) still let ``role`` write."""
    for table in (*TABLES, MAPPING):
        if _scalar(
            connection,
            "SELECT has_table_privilege(%s, %s, 'INSERT, UPDATE, DELETE, TRUNCATE')",
            role,
            f'"{schema}"."{table}"',
        ):
            raise RoleError(
                f"--role {role}: can still write {table} (a grant to PUBLIC or a group); "
                "revoke it and run again"
            )
    if _scalar(connection, "SELECT has_schema_privilege(%s, %s, 'CREATE')", role, schema):
        raise RoleError(
            f"--role {role}: can create objects in schema {schema} (granted to PUBLIC?); "
            f"run REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC and run again"
        )


def ensure_tenant_role(
    engine: Engine, org: str, role: str, password: str | None = None
) -> RoleResult:
    """Create or update the login role ``role`` that reads ORG's rows only."""
    _prepare(engine, "--role", role)
    if not org:
        raise RoleError("--org: must not be empty")
    with engine.begin() as connection:
        schema = _schema(connection)
        _execute(connection, "SELECT pg_advisory_xact_lock(hashtext('accounting_sync_roles'))")
        if not _scalar(connection, "SELECT 1 FROM pg_roles WHERE rolname = %s", TENANT_GROUP):
            _execute(
                connection, sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(TENANT_GROUP))
            )
        created = _ensure_login_role(connection, role, password)
        # A tenant's dashboards share the database with the pipeline and the exporter:
        # bound what they can hold (a default the role could raise for itself, but Grafana's
        # queries run with it).
        for setting in (
            f"CONNECTION LIMIT {TENANT_CONNECTION_LIMIT}",
            f"SET statement_timeout = '{TENANT_STATEMENT_TIMEOUT}'",
        ):
            _execute(
                connection,
                sql.SQL("ALTER ROLE {} " + setting).format(sql.Identifier(role)),
            )
        group = sql.Identifier(TENANT_GROUP)
        _execute(connection, sql.SQL("GRANT {} TO {}").format(group, sql.Identifier(role)))
        _execute(
            connection,
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), group),
        )
        _execute(
            connection,
            sql.SQL("GRANT SELECT ON {} TO {}").format(_tables(schema, (*TABLES, MAPPING)), group),
        )
        _revoke_writes(connection, schema, role)
        _execute(
            connection,
            sql.SQL(
                "INSERT INTO {} (role_name, org_id) VALUES (%s, %s) ON CONFLICT (role_name) "
                "DO UPDATE SET org_id = excluded.org_id, updated_at = now() "
                "WHERE {}.org_id IS DISTINCT FROM excluded.org_id"
            ).format(sql.Identifier(schema, MAPPING), sql.Identifier(MAPPING)),
            role,
            org,
        )
        _verify_read_only(connection, schema, role)
        known = _scalar(
            connection,
            sql.SQL("SELECT 1 FROM {} WHERE id = %s").format(
                sql.Identifier(schema, "sync_organization")
            ),
            org,
        )
    if not known:
        log.warning("organization not in the sync log yet", extra={"org": org, "role": role})
    log.info("tenant role ready", extra={"role": role, "org": org, "new_role": created})
    return RoleResult(role, created, org)


def ensure_reader_role(engine: Engine, role: str, password: str | None = None) -> RoleResult:
    """Create or update the exporter's login role: reads all five tables, writes nothing."""
    _prepare(engine, "--role", role)
    with engine.begin() as connection:
        schema = _schema(connection)
        created = _ensure_login_role(connection, role, password)
        is_tenant = _scalar(
            connection,
            "SELECT pg_has_role(%s, oid, 'MEMBER') FROM pg_roles WHERE rolname = %s",
            role,
            TENANT_GROUP,
        )
        if is_tenant:
            raise RoleError(f"--role {role}: is a tenant role; the exporter must see every org")
        _execute(
            connection,
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(schema), sql.Identifier(role)
            ),
        )
        _execute(
            connection,
            sql.SQL("GRANT SELECT ON {} TO {}").format(
                _tables(schema, TABLES), sql.Identifier(role)
            ),
        )
        _revoke_writes(connection, schema, role)
        _verify_read_only(connection, schema, role)
    log.info("reader role ready", extra={"role": role, "new_role": created})
    return RoleResult(role, created)


# What the pipeline does to the sync log: rows only. No TRUNCATE (it would skip the
# row triggers the change notifications and the last-run summary rely on), no TRIGGER,
# no REFERENCES, and no CREATE on the schema: migrations stay with the owner.
WRITER_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
_SERIAL_TABLES = ("sync_run", "sync_record", "sync_record_error")


def ensure_writer_role(engine: Engine, role: str, password: str | None = None) -> RoleResult:
    """Create or update the pipeline's login role: reads and writes the five tables' rows."""
    _prepare(engine, "--role", role)
    with engine.begin() as connection:
        schema = _schema(connection)
        created = _ensure_login_role(connection, role, password, read_only=False)
        if _scalar(
            connection,
            "SELECT pg_has_role(%s, oid, 'MEMBER') FROM pg_roles WHERE rolname = %s",
            role,
            TENANT_GROUP,
        ):
            raise RoleError(f"--role {role}: is a tenant role; the pipeline writes every org")
        ident = sql.Identifier(role)
        _execute(
            connection,
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), ident),
        )
        _revoke_writes(connection, schema, role)
        _execute(
            connection,
            sql.SQL(f"GRANT {WRITER_PRIVILEGES} ON {{}} TO {{}}").format(
                _tables(schema, TABLES), ident
            ),
        )
        for table in _SERIAL_TABLES:
            sequence = _scalar(
                connection, "SELECT pg_get_serial_sequence(%s, 'id')", f'"{schema}"."{table}"'
            )
            if sequence:
                _execute(
                    connection,
                    sql.SQL("GRANT USAGE, SELECT ON SEQUENCE {} TO {}").format(
                        sql.SQL(sequence), ident
                    ),
                )
        if _scalar(connection, "SELECT has_schema_privilege(%s, %s, 'CREATE')", role, schema):
            raise RoleError(
                f"--role {role}: can create objects in schema {schema} (granted to PUBLIC?); "
                f"run REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC and run again"
            )
    log.info("writer role ready", extra={"role": role, "new_role": created})
    return RoleResult(role, created)
