"""Serve wiring: the refresher, the reader, the HTTP server and the listeners, started
together and stopped in order on SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine

from exporter import __version__, config, logs
from exporter.config import ConfigError, Settings
from exporter.durations import format_duration
from exporter.errors import PROG, OutsideFailure
from exporter.serve.refresher import Refresher
from exporter.serve.webconfig import WebConfig
from exporter.source.deadline import client_deadline
from exporter.source.engine import engine_for, redact, sqlite_path

log = logging.getLogger("exporter")


def settings_from(
    args: argparse.Namespace,
    defaults: dict[str, object] | None = None,
    flags_only: frozenset[str] = frozenset(),
) -> Settings:
    flags = {key: getattr(args, key, None) for key in config.OPTIONS_BY_KEY}
    return config.load(
        flags, getattr(args, "config", None), defaults=defaults, flags_only=flags_only
    )


def warn_unknown_environment() -> None:
    """After logging is set up: a misspelled ACCOUNTING_SYNC_* variable is named, not ignored."""
    for warning in config.unknown_environment():
        log.warning(warning)


def open_engine(
    settings: Settings, *, statement_timeout: float | None = None, existing_only: bool = False
) -> Engine:
    return engine_for(
        settings.require_database_url(),
        settings.database_password_file,
        statement_timeout=statement_timeout,
        existing_only=existing_only,
    )


def serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    settings.require_database_url()
    web = web_config(settings)
    if args.check_config:
        print(f"{PROG}: configuration is valid")
        return 0
    logs.setup(settings.log_level, settings.log_format)
    warn_unknown_environment()
    engine = open_engine(
        settings, statement_timeout=settings.database_statement_timeout, existing_only=True
    )
    missing = sqlite_path(engine.url)
    if missing is not None and not missing.is_file():
        # Not fatal (the file may be on its way, as a database may be down), but said.
        log.warning(
            "no SQLite sync log at this path; nothing to serve until it exists",
            extra={"path": str(missing), "hint": "check --database-url, or run `db upgrade`"},
        )
    return run_exporter(settings, engine, web)


def web_config(settings: Settings) -> WebConfig:
    from exporter.serve.webconfig import load_web_config

    web = load_web_config(settings.web_config_file) if settings.web_config_file else WebConfig()
    for user in settings.status_users or {}:
        if web.auth_required and user not in web.users:
            # A typo here would lock a finance team out without a word: refuse to start.
            raise ConfigError(
                f"status.users.{user}", "not a basic_auth_users user of the web config"
            )
    if settings.status_users and not web.auth_required:
        log.warning("status.users has no effect without basic auth: every organization is shown")
    return web


def demo(args: argparse.Namespace) -> int:
    """The demo writes only into a database named on its own command line, or a temporary
    SQLite file that is removed however the demo ends (Ctrl-C, SIGTERM, a busy port)."""
    from exporter import demo as simulated
    from exporter.cli.commands import DEMO_DEFAULTS

    # The environment's and the config file's URL are for serve: never the demo's target.
    settings = settings_from(args, defaults=DEMO_DEFAULTS, flags_only=frozenset({"database.url"}))
    web = web_config(settings)
    logs.setup(settings.log_level, settings.log_format)
    warn_unknown_environment()
    # Until run_exporter takes over the signals: SIGTERM unwinds like Ctrl-C, so the
    # temporary sync log is still removed (the default action would just end the process).
    signal.signal(signal.SIGTERM, _interrupt)
    with_users = getattr(args, "with_users", False) and not settings.web_config_file
    # The sign-ins' web config, when there are sign-ins, goes with the demo too.
    users_home: contextlib.AbstractContextManager[str | None] = (
        tempfile.TemporaryDirectory(
            prefix="accounting-sync-demo-users-", ignore_cleanup_errors=True
        )
        if with_users
        else contextlib.nullcontext(None)
    )
    with simulated.demo_database(settings.database_url) as url, users_home as users_directory:
        settings = Settings(**{**settings.__dict__, "database_url": url})
        banner: Callable[[str], str] = simulated.banner
        if users_directory is not None:
            settings, web, banner = _demo_users(settings, Path(users_directory))
        engine = open_engine(settings, statement_timeout=settings.database_statement_timeout)
        try:
            simulation = simulated.prepare(engine, seed=args.seed)
            return run_exporter(settings, engine, web, background=[simulation], banner=banner)
        finally:
            engine.dispose()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _demo_users(
    settings: Settings, directory: Path
) -> tuple[Settings, WebConfig, Callable[[str], str]]:
    """Status page sign-ins for the demo: a global user and one per demo organization,
    written (web config with bcrypt hashes) into ``directory``, which goes with the demo."""
    from exporter import demo as simulated
    from exporter.serve.status.demo_users import GLOBAL_USER, write_demo_users

    users = write_demo_users(directory, [item.org_id for item in simulated.DEMO])
    settings = Settings(
        **{
            **settings.__dict__,
            "web_config_file": str(users.web_config_file),
            "status_users": users.status_users,
        }
    )
    web = web_config(settings)

    def banner(metrics_url: str) -> str:
        status_url = metrics_url.removesuffix(settings.web_telemetry_path) + "/status"
        # /metrics carries every organization: only the global administrator may read it.
        return simulated.banner(
            metrics_url,
            sign_in=f"{GLOBAL_USER}:{users.passwords[GLOBAL_USER]}",
            extra=users.banner(status_url),
        )

    return settings, web, banner


class Background(Protocol):
    """Something that runs beside the exporter (the demo pipeline, a change listener)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


def run_exporter(
    settings: Settings,
    engine: Engine,
    web: WebConfig,
    *,
    background: Sequence[Background] = (),
    banner: Callable[[str], str] | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT; then stop every thread and return 0."""
    from exporter.serve.server import MetricsServer

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    from exporter.source.reader import SnapshotReader

    # A partitioned or frozen database never answers; the refresh must still end (deadline.py).
    snapshots = SnapshotReader(
        engine,
        deadline=client_deadline(settings.database_statement_timeout),
        classifier=settings.classifier(),
    )
    refresher = Refresher(engine, settings.refresh_interval, reader=lambda _: snapshots.read())
    from exporter.serve.status import AccessRules, StatusSite

    access = AccessRules(settings.status_users, auth_required=web.auth_required)
    status = StatusSite(refresher, access, max_streams=settings.status_max_streams)
    try:
        server = MetricsServer(
            settings.web_listen_address, refresher, settings.web_telemetry_path, web, status
        )
    except OSError as exc:
        host, port = settings.web_listen_address
        # Exit 1: the configuration may be right, something else holds the port right now.
        raise OutsideFailure(
            f"cannot listen on {host or '*'}:{port}: {exc.strerror} "
            "(is another process using it? stop it, or pick another --web.listen-address)"
        ) from exc
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
        snapshots.abort()
        stopping.join(0.5)
    engine.dispose()
    return 0


def _change_listeners(settings: Settings, refresher: Refresher) -> list[Background]:
    """The PostgreSQL LISTEN connection, when enabled; SQLite has only the interval refresh."""
    from exporter.serve.listener import ChangeListener

    engine = refresher.engine
    if not settings.refresh_notify or engine.dialect.name != "postgresql":
        return []
    return [ChangeListener.for_engine(engine, refresher.request_refresh, settings.refresh_debounce)]
