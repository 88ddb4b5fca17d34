"""The command table: every subcommand, its flags, and the one place that prints errors.

Nothing imports this module; it is the only place that knows about every other one.
Exit codes (a contract): 0 clean stop, 2 bad usage or configuration (one line naming
the flag or key), 1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

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


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, prog=self.prog)


def _add_options(parser: argparse.ArgumentParser, keys: Sequence[str]) -> None:
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key in keys:
        option = config.OPTIONS_BY_KEY[key]
        group = groups.setdefault(option.group, parser.add_argument_group(f"{option.group} flags"))
        default = option.default
        if isinstance(default, tuple):
            default = f"{default[0]}:{default[1]}"
        elif isinstance(default, float):
            default = format_duration(default)
        shown = f" (default: {default})" if default not in (None, "") else ""
        group.add_argument(
            option.flag,
            dest=key,
            metavar=option.attribute.split("_")[-1].upper(),
            help=f"{option.help}{shown} [env {option.env}]",
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Prometheus exporter for accounting sync health.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="serve /metrics from a sync log")
    serve.add_argument("--config", metavar="FILE", help="YAML configuration file")
    serve.add_argument(
        "--check-config", action="store_true", help="validate the configuration and exit"
    )
    _add_options(serve, SERVE_KEYS)

    demo = commands.add_parser(
        "demo", help="serve a demo sync log with a simulated pipeline (SQLite by default)"
    )
    _add_options(demo, DEMO_KEYS)
    demo.add_argument("--seed", type=int, default=None, help="random seed of the simulation")

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

    def add_to(self, subparsers: Any) -> None:
        parser = subparsers.add_parser(self.name, help=self.help)
        _add_options(parser, self.options)
        self.arguments(parser)
        parser.set_defaults(run=self.run)


def _db_upgrade(_args: argparse.Namespace, settings: Settings) -> int:
    from exporter.source.migrate import current_revision, upgrade

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
    Command("upgrade", "create or migrate the schema", _no_arguments, _db_upgrade),
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
)
TOOL_COMMANDS = (
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


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "serve":
            return serve.serve(args)
        if args.command == "demo":
            return serve.demo(args)
        settings = serve.settings_from(args)
        logs.setup(settings.log_level, settings.log_format)
        return int(args.run(args, settings))
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
