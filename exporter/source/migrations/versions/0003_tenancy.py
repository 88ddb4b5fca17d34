"""Tenancy: row-level security so that a per-organization role reads only its own rows.

Why this shape:

- A *tenant* is any role that is a member of the NOLOGIN group role
  ``accounting_sync_tenant`` (``db tenant-role`` creates it and grants the tenant
  read access through it, so a role can only read the tables as a tenant). The
  table ``sync_tenant_role`` maps each tenant role to its organization.
- Every other role (the table owner, the pipeline's writer, the exporter's reader)
  keeps seeing and writing what its grants allow: the ``unrestricted`` policy lets
  any non-tenant through, so enabling RLS changes nothing for them.
- A tenant sees the rows whose organization equals its mapping, and nothing when the
  mapping is missing (fail closed). It cannot write: it has no write grants and the
  only policy that admits writes excludes tenants.
- RLS holds against arbitrary SQL: a non-owner that sets ``row_security = off`` gets
  an error instead of unfiltered rows, and ``pg_stats`` hides statistics of tables
  where RLS applies to the reader.

The group role is looked up through ``pg_roles`` rather than named directly, so this
migration does not need CREATEROLE and works before any tenant exists. SQLite has no
roles: there the migration does nothing.

Revision ID: 0003_tenancy
Revises: 0002_change_notification
"""

from __future__ import annotations

from alembic import op

revision = "0003_tenancy"
down_revision = "0002_change_notification"
branch_labels = None
depends_on = None

TENANT_GROUP = "accounting_sync_tenant"
MAPPING = "sync_tenant_role"
# table -> its organization column
TABLES = {
    "sync_organization": "id",
    "sync_integration": "org_id",
    "sync_run": "org_id",
    "sync_record": "org_id",
    "sync_record_error": "org_id",
}
IS_TENANT = "accounting_sync_is_tenant"
TENANT_ORG = "accounting_sync_tenant_org"


def _schema() -> str:
    """The schema the tables live in; offline (`db upgrade --sql`), the one asked for."""
    migration = op.get_context()
    if migration.as_sql:
        return (
            str(migration.config.attributes.get("schema", "public"))
            if migration.config
            else "public"
        )
    return str(op.get_bind().exec_driver_sql("SELECT current_schema()").scalar_one())


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    schema = _schema()
    q = f'"{schema}"'
    op.execute(
        f"CREATE TABLE {q}.{MAPPING} ("
        " role_name text PRIMARY KEY,"
        " org_id text NOT NULL,"
        " updated_at timestamptz NOT NULL DEFAULT now())"
    )
    # Functions are schema-qualified and pin their search_path, so a tenant cannot
    # shadow what they read with objects of its own (e.g. in pg_temp).
    op.execute(
        f"""
        CREATE FUNCTION {q}.{IS_TENANT}() RETURNS boolean
        LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
            SELECT EXISTS (
                SELECT FROM pg_catalog.pg_roles r
                WHERE r.rolname = '{TENANT_GROUP}'
                  AND pg_catalog.pg_has_role(r.oid, 'MEMBER'))
        $$
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION {q}.{TENANT_ORG}() RETURNS text
        LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
            SELECT m.org_id FROM {q}.{MAPPING} m WHERE m.role_name = current_user
        $$
        """
    )
    # (SELECT f()) makes PostgreSQL evaluate each function once per query, not per row.
    is_tenant = f"(SELECT {q}.{IS_TENANT}())"
    tenant_org = f"(SELECT {q}.{TENANT_ORG}())"
    op.execute(f"ALTER TABLE {q}.{MAPPING} ENABLE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY unrestricted ON {q}.{MAPPING} "
        f"USING (NOT {is_tenant}) WITH CHECK (NOT {is_tenant})"
    )
    op.execute(
        f"CREATE POLICY own_mapping ON {q}.{MAPPING} FOR SELECT "
        f"USING ({is_tenant} AND role_name = current_user)"
    )
    for table, column in TABLES.items():
        op.execute(f"ALTER TABLE {q}.{table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY unrestricted ON {q}.{table} "
            f"USING (NOT {is_tenant}) WITH CHECK (NOT {is_tenant})"
        )
        op.execute(
            f"CREATE POLICY tenant_rows ON {q}.{table} FOR SELECT "
            f"USING ({is_tenant} AND {column} = {tenant_org})"
        )


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP POLICY IF EXISTS tenant_rows ON {table}")
        op.execute(f"DROP POLICY IF EXISTS unrestricted ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute(f"DROP TABLE IF EXISTS {MAPPING}")
    op.execute(f"DROP FUNCTION IF EXISTS {TENANT_ORG}()")
    op.execute(f"DROP FUNCTION IF EXISTS {IS_TENANT}()")
