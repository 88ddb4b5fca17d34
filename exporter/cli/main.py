"""The command line: parses flags, loads settings and wires the modules together.

Nothing imports this module; it is the only place that knows about every other one.
Exit codes (a contract): 0 clean stop, 2 bad usage or configuration (one line naming
the flag or key), 1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from exporter import __version__, config, logs
from exporter.admin import alert_receivers, tenancy_commands
from exporter.config import ConfigError, Settings
from exporter.durations import format_duration
from exporter.source.deadline import abort_connections, client_deadline, with_deadline
from exporter.source.engine import engine_for, redact

log = logging.getLogger("exporter")
PROG = "accounting-sync-exporter"


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message}")


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


SERVE_KEYS = [option.key for option in config.OPTIONS]
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

    engine = _engine(settings)
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


def _settings(args: argparse.Namespace, defaults: dict[str, Any] | None = None) -> Settings:
    flags = {key: getattr(args, key, None) for key in config.OPTIONS_BY_KEY}
    return config.load(flags, getattr(args, "config", None), defaults=defaults)


def _engine(settings: Settings, *, statement_timeout: float | None = None) -> Engine:
    return engine_for(
        settings.require_database_url(),
        settings.database_password_file,
        statement_timeout=statement_timeout,
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "serve":
            return _serve(args)
        if args.command == "demo":
            return _demo(args)
        settings = _settings(args)
        logs.setup(settings.log_level, settings.log_format)
        return int(args.run(args, settings))
    except (UsageError, ConfigError) as exc:
        print(
            f"{PROG}: error: {exc}" if isinstance(exc, ConfigError) else str(exc),
            file=sys.stderr,
        )
        return 2
    except SQLAlchemyError as exc:
        print(f"{PROG}: database error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. a SQLite directory that cannot be created: one line, not a trace
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    settings.require_database_url()
    web = _web_config(settings)
    if args.check_config:
        print(f"{PROG}: configuration is valid")
        return 0
    logs.setup(settings.log_level, settings.log_format)
    engine = _engine(settings, statement_timeout=settings.database_statement_timeout)
    return run_exporter(settings, engine, web)


def _web_config(settings: Settings) -> Any:
    from exporter.serve.webconfig import WebConfig, load_web_config

    return load_web_config(settings.web_config_file) if settings.web_config_file else WebConfig()


def _demo(args: argparse.Namespace) -> int:
    from exporter import demo

    settings = _settings(args, defaults={"refresh.interval": 2.0})
    web = _web_config(settings)
    logs.setup(settings.log_level, settings.log_format)
    url = settings.database_url or demo.default_database_url()
    settings = Settings(**{**settings.__dict__, "database_url": url})
    engine = _engine(settings, statement_timeout=settings.database_statement_timeout)
    simulation = demo.prepare(engine, seed=args.seed)
    return run_exporter(settings, engine, web, background=[simulation], banner=demo.banner)


class Background(Protocol):
    """Something that runs beside the exporter (the demo pipeline, a change listener)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


def run_exporter(
    settings: Settings,
    engine: Engine,
    web: Any,
    *,
    background: Sequence[Background] = (),
    banner: Callable[[str], str] | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT; then stop every thread and return 0."""
    from exporter.serve.refresher import Refresher
    from exporter.serve.server import MetricsServer

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    from exporter.source.reader import read_snapshot

    # A partitioned or frozen database never answers; the refresh must still end (deadline.py).
    reader = with_deadline(read_snapshot, client_deadline(settings.database_statement_timeout))
    refresher = Refresher(engine, settings.refresh_interval, reader=reader)
    try:
        server = MetricsServer(
            settings.web_listen_address, refresher, settings.web_telemetry_path, web
        )
    except OSError as exc:
        host, port = settings.web_listen_address
        print(f"{PROG}: error: --web.listen-address {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    listeners = list(background) + _change_listeners(settings, refresher)
    refresher.start()
    for item in listeners:
        item.start()
    server.start()
    host = settings.web_listen_address[0] or "localhost"
    url = f"{server.scheme}://{host}:{server.port}{settings.web_telemetry_path}"
    log.info(
        "listening",
        extra={
            "url": url,
            "database": redact(settings.database_url or ""),
            "refresh_interval": format_duration(settings.refresh_interval),
            "version": __version__,
        },
    )
    if banner is not None:
        print(banner(url), file=sys.stderr, flush=True)
    stop.wait()
    log.info("stopping")
    server.close()
    for item in reversed(listeners):
        item.stop()
    # A refresh blocked on the database would hold up the stop until its statement timeout.
    stopping = threading.Thread(target=refresher.stop, name="stop-refresher")
    stopping.start()
    stopping.join(0.5)  # a refresh that is merely running gets to finish
    while stopping.is_alive():
        abort_connections(engine)
        stopping.join(0.5)
    engine.dispose()
    return 0


def _change_listeners(settings: Settings, refresher: Any) -> list[Background]:
    """The PostgreSQL LISTEN connection, when enabled; SQLite has only the interval refresh."""
    from exporter.serve.listener import ChangeListener

    engine = refresher.engine
    if not settings.refresh_notify or engine.dialect.name != "postgresql":
        return []
    return [ChangeListener.for_engine(engine, refresher.request_refresh, settings.refresh_debounce)]
