"""Serve wiring: the refresher, the reader, the HTTP server and the listeners, started
together and stopped in order on SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sqlalchemy import Engine

from exporter import __version__, config, logs
from exporter.config import Settings
from exporter.durations import format_duration
from exporter.errors import PROG, OutsideFailure
from exporter.serve.refresher import Refresher
from exporter.serve.webconfig import WebConfig
from exporter.source.deadline import client_deadline
from exporter.source.engine import engine_for, redact

log = logging.getLogger("exporter")


def settings_from(args: argparse.Namespace, defaults: dict[str, Any] | None = None) -> Settings:
    flags = {key: getattr(args, key, None) for key in config.OPTIONS_BY_KEY}
    return config.load(flags, getattr(args, "config", None), defaults=defaults)


def open_engine(settings: Settings, *, statement_timeout: float | None = None) -> Engine:
    return engine_for(
        settings.require_database_url(),
        settings.database_password_file,
        statement_timeout=statement_timeout,
    )


def serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    settings.require_database_url()
    web = web_config(settings)
    if args.check_config:
        print(f"{PROG}: configuration is valid")
        return 0
    logs.setup(settings.log_level, settings.log_format)
    engine = open_engine(settings, statement_timeout=settings.database_statement_timeout)
    return run_exporter(settings, engine, web)


def web_config(settings: Settings) -> WebConfig:
    from exporter.serve.webconfig import load_web_config

    return load_web_config(settings.web_config_file) if settings.web_config_file else WebConfig()


def demo(args: argparse.Namespace) -> int:
    from exporter import demo as simulated

    settings = settings_from(args, defaults={"refresh.interval": 2.0})
    web = web_config(settings)
    logs.setup(settings.log_level, settings.log_format)
    url = settings.database_url or simulated.default_database_url()
    settings = Settings(**{**settings.__dict__, "database_url": url})
    engine = open_engine(settings, statement_timeout=settings.database_statement_timeout)
    simulation = simulated.prepare(engine, seed=args.seed)
    return run_exporter(settings, engine, web, background=[simulation], banner=simulated.banner)


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
    try:
        server = MetricsServer(
            settings.web_listen_address, refresher, settings.web_telemetry_path, web
        )
    except OSError as exc:
        host, port = settings.web_listen_address
        raise OutsideFailure(f"--web.listen-address {host}:{port}: {exc.strerror}") from exc
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
