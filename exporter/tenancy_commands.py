"""Command-line wiring of tenancy: ``db tenant-role``, ``db reader-role`` and ``grafana-tenants``.

Kept out of ``cli.py`` so the exporter's own command line stays small; ``cli.py`` hands
its registration tables to ``register`` and knows nothing else about tenancy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from exporter.config import Settings
from exporter.database import create_sync_log_engine, normalize_url

PROG = "accounting-sync-exporter"
DB_KEYS = ["database.url", "database.password_file", "log.level"]

AddOptions = Callable[[argparse.ArgumentParser, Sequence[str]], None]


def register(
    extensions: list[tuple[str, Callable[[argparse.ArgumentParser], None]]],
    help_texts: dict[str, str],
    handlers: dict[str, Callable[[argparse.Namespace, Settings], int]],
    add_options: AddOptions,
) -> None:
    def tenant_arguments(parser: argparse.ArgumentParser) -> None:
        add_options(parser, DB_KEYS)
        parser.add_argument(
            "--org", required=True, help="the organization's slug (sync_organization.id)"
        )
        _role_arguments(parser)

    def reader_arguments(parser: argparse.ArgumentParser) -> None:
        add_options(parser, DB_KEYS)
        _role_arguments(parser)

    extensions.append(("tenant-role", tenant_arguments))
    help_texts["tenant-role"] = "create or update a login role that reads one organization's rows"
    handlers["tenant-role"] = _tenant_role
    extensions.append(("reader-role", reader_arguments))
    help_texts["reader-role"] = "create or update the exporter's read-only login role"
    handlers["reader-role"] = _reader_role


def _role_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", required=True, help="login role to create or update")
    parser.add_argument(
        "--password-file",
        metavar="FILE",
        help="file holding the role's new password (unchanged when omitted)",
    )


def read_secret(flag: str, path: str | None) -> str | None:
    """A secret from a file, without its trailing newline; bad files are usage errors."""
    from exporter.roles import RoleError

    if path is None:
        return None
    try:
        secret = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise RoleError(f"{flag}: cannot read {path!r}: {exc.strerror}") from exc
    if not secret:
        raise RoleError(f"{flag}: {path!r} is empty")
    return secret


def _with_engine(settings: Settings, action: Callable[[Any], str]) -> int:
    from exporter.roles import RoleError

    try:
        url = normalize_url(settings.require_database_url(), settings.database_password_file)
        engine = create_sync_log_engine(url)
        try:
            print(action(engine))
        finally:
            engine.dispose()
    except RoleError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _tenant_role(args: argparse.Namespace, settings: Settings) -> int:
    from exporter.roles import ensure_tenant_role

    def action(engine: Any) -> str:
        password = read_secret("--password-file", args.password_file)
        result = ensure_tenant_role(engine, args.org, args.role, password)
        verb = "created" if result.created else "updated"
        return f"role {result.role} {verb}: reads organization {result.org} only, writes nothing"

    return _with_engine(settings, action)


def _reader_role(args: argparse.Namespace, settings: Settings) -> int:
    from exporter.roles import ensure_reader_role

    def action(engine: Any) -> str:
        password = read_secret("--password-file", args.password_file)
        result = ensure_reader_role(engine, args.role, password)
        verb = "created" if result.created else "updated"
        return f"role {result.role} {verb}: reads the sync log, writes nothing"

    return _with_engine(settings, action)
