"""Command-line wiring of tenancy: ``db tenant-role``, ``db reader-role`` and ``grafana-tenants``.

Kept out of ``cli.py`` so the exporter's own command line stays small: ``cli.py`` lists
these argument setups and handlers in its command table and knows nothing else of tenancy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sqlalchemy import Engine

from exporter.admin.grafana_tenants import DEFAULT_PROXY_HEADER
from exporter.config import Settings
from exporter.errors import OutsideFailure, UsageError, one_line
from exporter.source.engine import engine_for, read_secret_file
from exporter.source.reader import organizations

# The tenant role grafana-tenants expects for each organization (roles.tenant_role_name).
ROLE_PATTERN = "accounting_sync_<slug>"

if TYPE_CHECKING:  # the Grafana client is an optional dependency, imported when used
    from exporter.admin.grafana_tenants import Outcome, Tenant


def tenant_role_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--org", required=True, help="the organization's slug (sync_organization.id)"
    )
    role_arguments(parser)


def role_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", required=True, help="login role to create or update")
    parser.add_argument(
        "--password-file",
        metavar="FILE",
        help="file holding the role's new password (unchanged when omitted)",
    )


def read_secret(flag: str, path: str | None) -> str | None:
    """A secret from a file (``database.read_secret_file``); bad files are usage errors."""
    from exporter.admin.roles import RoleError

    if path is None:
        return None
    try:
        return read_secret_file(path)
    except ValueError as exc:
        raise RoleError(f"{flag}: {exc}") from exc


class GrafanaUnavailable(OutsideFailure):
    """Grafana did not answer, or failed on its side: not the user's configuration (exit 1)."""


def _with_engine(settings: Settings, action: Callable[[Engine], str]) -> int:
    engine = engine_for(settings.require_database_url(), settings.database_password_file)
    try:
        print(action(engine))
    finally:
        engine.dispose()
    return 0


def tenant_role(args: argparse.Namespace, settings: Settings) -> int:
    from exporter.admin.roles import ensure_tenant_role

    def action(engine: Engine) -> str:
        password = read_secret("--password-file", args.password_file)
        result = ensure_tenant_role(engine, args.org, args.role, password)
        verb = "created" if result.created else "updated"
        return f"role {result.role} {verb}: reads organization {result.org} only, writes nothing"

    return _with_engine(settings, action)


def reader_role(args: argparse.Namespace, settings: Settings) -> int:
    from exporter.admin.roles import ensure_reader_role

    def action(engine: Engine) -> str:
        password = read_secret("--password-file", args.password_file)
        result = ensure_reader_role(engine, args.role, password)
        verb = "created" if result.created else "updated"
        return f"role {result.role} {verb}: reads the sync log, writes nothing"

    return _with_engine(settings, action)


def _http_url(value: str) -> str:
    """Checked here: a bad URL would otherwise surface as the HTTP library's own error."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected http(s)://HOST[:PORT][/PATH], got {value!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a valid port in {value!r}") from None
    return value


def writer_role(args: argparse.Namespace, settings: Settings) -> int:
    from exporter.admin.roles import ensure_writer_role

    def action(engine: Engine) -> str:
        password = read_secret("--password-file", args.password_file)
        result = ensure_writer_role(engine, args.role, password)
        verb = "created" if result.created else "updated"
        return f"role {result.role} {verb}: writes the sync log's rows, changes no schema"

    return _with_engine(settings, action)


def grafana_arguments(parser: argparse.ArgumentParser) -> None:
    grafana = parser.add_argument_group("grafana flags")
    grafana.add_argument(
        "--grafana.url",
        dest="grafana_url",
        type=_http_url,
        required=True,
        metavar="URL",
        help="Grafana's address, e.g. http://grafana:3000",
    )
    grafana.add_argument(
        "--grafana.auth-file",
        dest="grafana_auth_file",
        required=True,
        metavar="FILE",
        help="file holding USER:PASSWORD of a Grafana server admin (it creates organizations)",
    )
    grafana.add_argument(
        "--dashboards",
        metavar="DIR",
        help="directory of the generated dashboard JSON (default: the copy installed with"
        " the exporter)",
    )
    grafana.add_argument(
        "--update-secrets",
        action="store_true",
        help="rewrite datasource secrets even when nothing else changed",
    )
    grafana.add_argument(
        "--oauth.group-prefix",
        dest="oauth_group_prefix",
        default="",
        metavar="PREFIX",
        help="IdP group of a tenant is PREFIX<slug>",
    )
    tenants = parser.add_argument_group("tenant flags")
    tenants.add_argument(
        "--tenants",
        metavar="FILE",
        help="YAML list of {slug, name}; default: the sync log's organizations",
    )
    tenants.add_argument(
        "--prometheus.proxy-url",
        dest="proxy_url",
        required=True,
        metavar="URL",
        help="prom-label-proxy as Grafana's server reaches it",
    )
    tenants.add_argument(
        "--prometheus.proxy-header",
        dest="proxy_header",
        default=DEFAULT_PROXY_HEADER,
        metavar="NAME",
        help="header prom-label-proxy reads the org from (default: %(default)s)",
    )
    tenants.add_argument(
        "--sync-log.host",
        dest="sync_log_host",
        required=True,
        metavar="HOST:PORT",
        help="PostgreSQL as Grafana's server reaches it",
    )
    tenants.add_argument(
        "--sync-log.database",
        dest="sync_log_database",
        required=True,
        metavar="NAME",
        help="the sync log's database name",
    )
    tenants.add_argument(
        "--sync-log.sslmode",
        dest="sync_log_sslmode",
        default="require",
        choices=["disable", "require", "verify-ca", "verify-full"],
    )
    tenants.add_argument(
        "--db-password-dir",
        required=True,
        metavar="DIR",
        help="one file per tenant role with its password, named after the role: "
        f"{ROLE_PATTERN} (non [a-z0-9_] characters of the slug become _)",
    )
    tenants.add_argument(
        "--ensure-db-roles",
        action="store_true",
        help=f"also create or update each tenant's role {ROLE_PATTERN} (db tenant-role), "
        "generating missing password files",
    )


def grafana_tenants(args: argparse.Namespace, settings: Settings) -> int:
    from exporter.admin import grafana_tenants as gt

    outcome = _run_grafana_setup(args, settings)
    for warning in outcome.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for change in outcome.changes:
        print(change)
    if not outcome.changes:
        print("Grafana already matches: no changes")
    print(gt.org_mapping(outcome.tenants, outcome.org_ids, args.oauth_group_prefix))
    return 0


def _run_grafana_setup(args: argparse.Namespace, settings: Settings) -> Outcome:
    try:
        from grafana_client.client import GrafanaException
    except ImportError:
        raise UsageError(
            "grafana-tenants needs the tenancy extra: "
            "pip install 'accounting-sync-exporter[tenancy]' (the image has it)"
        ) from None

    from exporter.admin import grafana_tenants as gt

    auth_text = read_secret("--grafana.auth-file", args.grafana_auth_file) or ""
    user, sep, password = auth_text.partition(":")
    auth: str | tuple[str, str] = (user, password) if sep else auth_text
    dashboards = (
        gt.load_dashboards(Path(args.dashboards)) if args.dashboards else gt.load_dashboards()
    )
    engine = None
    if settings.database_url:
        engine = engine_for(settings.database_url, settings.database_password_file)
    try:
        if args.tenants:
            tenants = gt.load_tenants(Path(args.tenants))
        elif engine is not None:
            tenants = _tenants_from_sync_log(engine)
        else:
            raise gt.TenantSetupError("--tenants or --database-url: where are the organizations?")
        passwords = _tenant_passwords(args, engine, tenants)
        targets = gt.Targets(
            proxy_url=args.proxy_url,
            proxy_header=args.proxy_header,
            sync_log_host=args.sync_log_host,
            sync_log_database=args.sync_log_database,
            sync_log_sslmode=args.sync_log_sslmode,
        )
        setup = gt.TenantSetup(
            args.grafana_url, auth, targets, dashboards, update_secrets=args.update_secrets
        )
        try:
            outcome = setup.apply(tenants, passwords)
        except OSError as exc:  # the HTTP library's connection errors are OSErrors
            raise GrafanaUnavailable(
                f"Grafana at {args.grafana_url} did not answer: {one_line(exc)}"
            ) from exc
        except GrafanaException as exc:
            status = getattr(exc, "status_code", 0) or 0
            if 400 <= status < 500:  # credentials, permissions, bad request: configuration
                raise gt.TenantSetupError(f"--grafana.url: Grafana said: {exc}") from exc
            raise GrafanaUnavailable(f"Grafana at {args.grafana_url}: {exc}") from exc
        return outcome
    finally:
        if engine is not None:
            engine.dispose()


def _tenants_from_sync_log(engine: Engine) -> list[Tenant]:
    from exporter.admin.grafana_tenants import Tenant

    return [Tenant(slug, name) for slug, name in organizations(engine)]


def _tenant_passwords(
    args: argparse.Namespace, engine: Engine | None, tenants: list[Tenant]
) -> dict[str, str]:
    """Each tenant role's password from its file; with --ensure-db-roles, create what is missing."""
    import secrets

    from exporter.admin.grafana_tenants import TenantSetupError
    from exporter.admin.roles import ensure_tenant_role, tenant_role_name

    directory = Path(args.db_password_dir)
    ensure_in = engine if args.ensure_db_roles else None
    if args.ensure_db_roles:
        if engine is None:
            raise TenantSetupError("--ensure-db-roles needs --database-url")
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    passwords = {}
    for tenant in tenants:
        role = tenant_role_name(tenant.slug)
        path = directory / role
        if args.ensure_db_roles and not path.exists():
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(24) + "\n", encoding="utf-8")
        if not path.is_file():
            raise TenantSetupError(f"--db-password-dir: no password file {path} for {tenant.slug}")
        password = read_secret("--db-password-dir", str(path))
        assert password is not None
        if ensure_in is not None:
            ensure_tenant_role(ensure_in, tenant.slug, role, password)
        passwords[tenant.slug] = password
    return passwords
