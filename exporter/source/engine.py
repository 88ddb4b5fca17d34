"""Turning a database URL into an engine the exporter can trust.

Users paste plain ``postgresql://`` URLs from their platform; SQLAlchemy would pick
psycopg2 for those, which this project does not ship, so the driver is chosen here.
"""

from __future__ import annotations

import os
import sqlite3
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from exporter.errors import UsageError


class DatabaseURLError(ValueError):
    """The URL cannot name a database this exporter supports."""


def normalize_url(raw: str, password_file: str | None = None) -> URL:
    """Parse ``raw``, choose the psycopg 3 driver for PostgreSQL and add a file-held password."""
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise DatabaseURLError(
            f"not a database URL (expected postgresql://user@host/db or sqlite:///path): "
            f"{redact(raw)!r}"
        ) from exc
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    elif backend != "sqlite":
        raise DatabaseURLError(
            f"unsupported database {backend!r} (use postgresql://... or sqlite:///path)"
        )
    if password_file:
        try:
            url = url.set(password=read_secret_file(password_file))
        except ValueError as exc:
            raise DatabaseURLError(f"password file: {exc}") from exc
    return url


def read_secret_file(path: str) -> str:
    """The one secret a file holds, without its trailing newline (as Docker secrets end).

    Errors name the file, never its content, which is the secret.
    """
    try:
        secret = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read {path!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path!r} is not UTF-8 text") from None
    if not secret:
        raise ValueError(f"{path!r} is empty")
    return secret


def engine_for(
    raw_url: str,
    password_file: str | None = None,
    *,
    statement_timeout: float | None = None,
    existing_only: bool = False,
) -> Engine:
    """The engine every command uses: the URL as the user wrote it, the password from a file."""
    return create_sync_log_engine(
        normalize_url(raw_url, password_file),
        statement_timeout=statement_timeout,
        existing_only=existing_only,
    )


def redact(raw: str) -> str:
    """The URL with its password hidden, for log lines and error messages."""
    try:
        return make_url(raw).render_as_string(hide_password=True)
    except ArgumentError:
        return _mask_password(raw)


def _mask_password(raw: str) -> str:
    """What was typed, so a typo can be seen, but never what may be a password.

    In ``scheme://user:secret@host`` (however mistyped) the secret is what follows the
    last colon before the last ``@``, unless that colon starts ``://``.
    """
    at = raw.rfind("@")
    colon = raw.rfind(":", 0, at) if at > 0 else -1
    if colon < 0 or raw.startswith(":/", colon):
        return raw
    return f"{raw[: colon + 1]}***{raw[at:]}"


def create_sync_log_engine(
    url: URL,
    *,
    statement_timeout: float | None = None,
    pool_size: int = 2,
    existing_only: bool = False,
) -> Engine:
    """An engine with bounded connections and, on PostgreSQL, a server-side statement timeout.

    The timeout lives on the server so that a slow query ends there too instead of
    holding locks after the exporter has given up on it.
    """
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.get_backend_name() == "sqlite":
        connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": 30}
        path = sqlite_path(url)
        if existing_only and path is not None:
            # A reader opens the file read-write but never creates it (SQLite's mode=rw):
            # a mistyped path stays a failing read that names it, not a new empty sync log.
            kwargs["creator"] = partial(
                sqlite3.connect, f"file:{quote(str(path))}?mode=rw", uri=True, **connect_args
            )
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        _configure_sqlite(engine)
        return engine
    connect_args = {"connect_timeout": 5, "application_name": "accounting-sync-exporter"}
    if statement_timeout:
        connect_args["options"] = f"-c statement_timeout={int(statement_timeout * 1000)}"
    engine = create_engine(
        url,
        connect_args=connect_args,
        pool_size=pool_size,
        max_overflow=2,
        pool_recycle=1800,
        **kwargs,
    )
    return engine


def _configure_sqlite(engine: Engine) -> None:
    """WAL lets the simulated pipeline write while the exporter reads one consistent view."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Leave transaction control to our explicit BEGIN below (pysqlite's own is lazy).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")


def require_existing_sqlite(raw_url: str, flag: str = "--database-url") -> None:
    """Readers open an existing SQLite file only: SQLite would create a mistyped one, empty,
    and the exporter would serve "no integrations" instead of saying the path is wrong."""
    try:
        path = sqlite_path(normalize_url(raw_url))
    except DatabaseURLError:
        return  # reported with its own message where the engine is made
    if path is not None and not path.is_file():
        raise UsageError(
            f"{flag}: no SQLite sync log at {str(path)!r} "
            "(a new one is made by `accounting-sync-exporter db upgrade`)"
        )


def sqlite_path(url: URL) -> Path | None:
    """The file behind a SQLite URL, so callers can create its directory first."""
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(os.path.expanduser(str(url.database)))
    return None
