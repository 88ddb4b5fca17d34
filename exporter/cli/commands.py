"""The command table: every subcommand, its flags, and the one place that prints errors.

Nothing imports this module; it is the only place that knows about every other one.
Exit codes (a contract): 0 clean stop, 2 bad usage or configuration (one line naming
the flag or key), 1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

import psycopg
from sqlalchemy.exc import SQLAlchemyError

from exporter import __version__, config, logs
from exporter.admin import alert_receivers, tenancy_commands
from exporter.cli import serve
from exporter.config import Settings
from exporter.durations import format_duration
from exporter.errors import PROG, ExporterError, UsageError
from exporter.source.engine import redact

log = logging.getLogger("exporter")


class MissingCommand(UsageError):
    """No subcommand: the one case where the usage line comes first, since nothing was asked."""

    def __init__(self, message: str, *, prog: str, usage: str) -> None:
        super().__init__(message, prog=prog)
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        if "arguments are required: command" in message or "required: COMMAND" in message:
            raise MissingCommand(message, prog=self.prog, usage=self.format_usage())
        raise UsageError(message, prog=self.prog)


def _shown_default(value: object) -> str:
    if isinstance(value, tuple):
        return f"{value[0]}:{value[1]}"
    if isinstance(value, float):
        return format_duration(value)
    return "" if value is None else str(value)


def _add_options(
    parser: argparse.ArgumentParser,
    keys: Sequence[str],
    *,
    defaults: dict[str, object] | None = None,
    notes: dict[str, str] | None = None,
) -> None:
    """The option table's flags, with the defaults this command really uses."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML configuration file: every flag below as a dotted key [no env]",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key in keys:
        option = config.OPTIONS_BY_KEY[key]
        group = groups.setdefault(option.group, parser.add_argument_group(f"{option.group} flags"))
        default = _shown_default((defaults or {}).get(key, option.default))
        shown = f" (default: {default})" if default else ""
        choices = option.choices
        metavar = "{" + ",".join(choices) + "}" if choices else option.attribute.split("_")[-1]
        note = (notes or {}).get(key)
        where = note if note else f"[env {option.env}]"
        group.add_argument(
            *option.flags,
            dest=key,
            metavar=metavar.upper() if not choices else metavar,
            help=f"{option.help}{shown} {where}",
        )


SERVE_KEYS = [option.key for option in config.OPTIONS if option.flag]
DEMO_KEYS = [
    "database.url",
    "web.listen_address",
    "web.telemetry_path",
    "web.config_file",
    "refresh.interval",
    "log.level",
    "log.format",
]
DEMO_DEFAULTS: dict[str, object] = {"refresh.interval": 2.0}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Prometheus exporter for accounting sync health.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="serve /metrics from a sync log")
    serve.add_argument(
        "--check-config", action="store_true", help="validate the configuration and exit"
    )
    _add_options(serve, SERVE_KEYS)

    demo = commands.add_parser(
        "demo", help="serve a demo sync log with a simulated pipeline (SQLite by default)"
    )
    _add_options(
        demo,
        DEMO_KEYS,
        defaults=DEMO_DEFAULTS,
        notes={
            "database.url": "Only from this flag (never the environment or --config), so the "
            "demo cannot write into a real sync log; default: a temporary SQLite file removed "
            "at exit. Refused unless empty or made by the demo."
        },
    )
    demo.add_argument("--seed", type=int, default=None, help="random seed of the simulation")
    demo.add_argument(
        "--with-users",
        action="store_true",
        help="protect the demo with generated status page users (printed at start; make demo)",
    )

    db = commands.add_parser("db", help="manage the sync log database")
    db_commands = db.add_subparsers(
        dest="db_command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    for command in DB_COMMANDS:
        command.add_to(db_commands)
    for command in TOOL_COMMANDS:
        command.add_to(commands)
    return parser


def _no_arguments(_parser: argparse.ArgumentParser) -> None:
    pass


DB_OPTIONS = ("database.url", "database.password_file", "log.level")


@dataclass(frozen=True)
class Command:
    """A subcommand that needs only the settings and flags of its own: declared once below."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Settings], int]
    options: Sequence[str] = DB_OPTIONS

    def add_to(self, subparsers: argparse._SubParsersAction[_Parser]) -> None:
        parser = subparsers.add_parser(self.name, help=self.help)
        _add_options(parser, self.options)
        self.arguments(parser)
        parser.set_defaults(run=self.run)


def _upgrade_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sql",
        action="store_true",
        help="print the SQL for a DBA to review and apply instead of running it (no "
        "connection is made; the whole schema from nothing; PostgreSQL unless --database-url "
        "names another database)",
    )
    parser.add_argument(
        "--sql.schema",
        dest="sql_schema",
        default="public",
        metavar="SCHEMA",
        help="with --sql: the schema the tables will live in (default: %(default)s)",
    )


def _db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from exporter.source.engine import normalize_url
    from exporter.source.migrate import current_revision, upgrade, upgrade_sql

    if args.sql:
        url = normalize_url(settings.database_url or "postgresql://")
        upgrade_sql(url, sys.stdout, schema=args.sql_schema)
        return 0
    engine = serve.open_engine(settings)
    try:
        upgrade(engine)
        log.info(
            "schema is up to date",
            extra={
                "database": redact(settings.database_url or ""),
                "revision": current_revision(engine),
            },
        )
    finally:
        engine.dispose()
    return 0


DB_COMMANDS = (
    Command("upgrade", "create or migrate the schema", _upgrade_arguments, _db_upgrade),
    Command(
        "tenant-role",
        "create or update a login role that reads one organization's rows",
        tenancy_commands.tenant_role_arguments,
        tenancy_commands.tenant_role,
    ),
    Command(
        "reader-role",
        "create or update the exporter's read-only login role",
        tenancy_commands.role_arguments,
        tenancy_commands.reader_role,
    ),
    Command(
        "writer-role",
        "create or update the pipeline's login role: writes the sync log's rows, no DDL",
        tenancy_commands.role_arguments,
        tenancy_commands.writer_role,
    ),
)


def _healthcheck_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ready", action="store_true", help="ask /readyz (a snapshot was read) instead of /healthz"
    )


def _healthcheck(args: argparse.Namespace, settings: Settings) -> int:
    from exporter.serve.healthcheck import probe

    print(probe(settings, ready=args.ready))
    return 0


TOOL_COMMANDS = (
    Command(
        "healthcheck",
        "probe the exporter on this host (a container HEALTHCHECK): exit 0 if it answers",
        _healthcheck_arguments,
        _healthcheck,
        ("web.listen_address", "web.config_file", "log.level"),
    ),
    Command(
        "grafana-tenants",
        "set up one Grafana organization per customer organization",
        tenancy_commands.grafana_arguments,
        tenancy_commands.grafana_tenants,
    ),
    Command(
        "alertmanager-config",
        "write the Alertmanager configuration with one receiver per organization",
        alert_receivers.arguments,
        alert_receivers.run,
    ),
)


def _join_dash_values(argv: Sequence[str]) -> list[str]:
    """``--refresh-interval -5s`` as ``--refresh-interval=-5s``.

    argparse takes a value starting with a dash for the next flag and says only
    "expected one argument"; joined, the value reaches the option's own check, which names
    the flag and the value. No flag of ours starts with a dash and a digit.
    """
    args = list(argv)
    joined: list[str] = []
    index = 0
    while index < len(args):
        item = args[index]
        following = args[index + 1] if index + 1 < len(args) else ""
        if item.startswith("--") and "=" not in item and re.match(r"-\.?\d", following):
            joined.append(f"{item}={following}")
            index += 2
            continue
        joined.append(item)
        index += 1
    return joined


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(_join_dash_values(sys.argv[1:] if argv is None else argv))
        if args.command == "serve":
            return serve.serve(args)
        if args.command == "demo":
            return serve.demo(args)
        settings = serve.settings_from(args)
        logs.setup(settings.log_level, settings.log_format)
        serve.warn_unknown_environment()
        return int(args.run(args, settings))
    except MissingCommand as exc:
        print(exc.usage, end="", file=sys.stderr)
        print(f"{exc.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ExporterError as exc:
        print(f"{exc.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (SQLAlchemyError, psycopg.Error) as exc:
        print(f"{PROG}: database error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. a SQLite directory that cannot be created: one line, not a trace
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
