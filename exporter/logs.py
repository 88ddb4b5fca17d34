"""Structured, levelled logs: logfmt by default (as Prometheus' own tools log), or JSON.

Fields are passed with ``extra={...}``; anything that is not a standard ``LogRecord``
attribute becomes a key, so call sites stay plain ``logging`` calls.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

LEVELS = ("debug", "info", "warn", "error")
FORMATS = ("logfmt", "json")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower().replace("warning", "warn"),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    if record.exc_info and record.exc_info[1] is not None:
        fields["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
    return fields


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\\\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str, ensure_ascii=False)


def setup(level: str = "info", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel({"warn": "WARNING"}.get(level, level.upper()))
    # APScheduler logs every job execution at INFO, and at WARNING each tick skipped while a
    # slow refresh runs (every interval of an outage); the refresh metrics already say both.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    # Alembic announces each of its autogenerate plugins at INFO when imported: noise here.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # Alembic's migration logger says which dialect it picked on every run; keep only what
    # it migrates ("Running upgrade ...").
    migration = logging.getLogger("alembic.runtime.migration")
    if not any(isinstance(f, _AlembicChatter) for f in migration.filters):
        migration.addFilter(_AlembicChatter())


class _AlembicChatter(logging.Filter):
    _NOISE = ("Context impl ", "Will assume ")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self._NOISE)
