"""What Grafana does to a query before a datasource runs it, so tests can run it for real.

Grafana itself cannot run everywhere the tests run. Its query pipeline is small enough to
reproduce: template variables (``$org``, ``${org}``, ``${org:regex}``), the built-in
interval and range variables, and the PostgreSQL datasource's SQL macros
(``$__timeFilter(col)``, ``$__timeGroupAlias(col, 1m)`` ...). Spellings follow Grafana 11.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parents[2] / "grafana" / "dashboards"
ALL = "$__all"

# $name, ${name}, ${name:format}, [[name]] (Grafana's variable regex, simplified).
VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\${(\w+)(?:\.([^:^}]+))?(?::([^}]+))?}")
SQL_MACRO = re.compile(r"\$(__\w+)\(([^)]*)\)")


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime
    max_data_points: int = 1000
    min_interval_seconds: float = 15.0  # the datasource's timeInterval (scrape interval)

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def interval_seconds(self) -> float:
        """``$__interval``: range / max data points, rounded as Grafana rounds, floored."""
        raw = round_interval(self.seconds / self.max_data_points)
        return max(raw, self.min_interval_seconds)

    @property
    def rate_interval_seconds(self) -> float:
        return max(self.interval_seconds + self.min_interval_seconds, 4 * self.min_interval_seconds)


# Grafana's rangeutil.roundInterval, in seconds: (upper bound, rounded interval).
_ROUNDING = (
    (0.015, 0.01),
    (0.035, 0.02),
    (0.075, 0.05),
    (0.15, 0.1),
    (0.35, 0.2),
    (0.75, 0.5),
    (1.5, 1),
    (3.5, 2),
    (7.5, 5),
    (12.5, 10),
    (17.5, 15),
    (25, 20),
    (45, 30),
    (90, 60),
    (210, 120),
    (450, 300),
    (750, 600),
    (1050, 900),
    (1500, 1200),
    (2700, 1800),
    (5400, 3600),
    (9000, 7200),
    (16200, 10800),
    (24300, 21600),
    (54000, 43200),
    (129600, 86400),
)


def round_interval(seconds: float) -> float:
    if seconds <= 0.01:
        return 0.001
    for bound, rounded in _ROUNDING:
        if seconds <= bound:
            return rounded
    return 604800.0


def duration(seconds: float) -> str:
    """Seconds as Grafana writes an interval: ``15s``, ``1m``, ``500ms``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds}s"


@dataclass(frozen=True)
class Variable:
    """A dashboard variable's current value, with what decides how Grafana formats it."""

    value: str
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None


@dataclass
class Context:
    variables: dict[str, Variable] = field(default_factory=dict)
    time_range: TimeRange | None = None


def builtins(time_range: TimeRange) -> dict[str, str]:
    start_ms = int(time_range.start.timestamp() * 1000)
    end_ms = int(time_range.end.timestamp() * 1000)
    return {
        "__interval": duration(time_range.interval_seconds),
        "__interval_ms": str(int(time_range.interval_seconds * 1000)),
        "__rate_interval": duration(time_range.rate_interval_seconds),
        "__range": duration(round(time_range.seconds)),
        "__range_s": str(round(time_range.seconds)),
        "__range_ms": str(round(time_range.seconds * 1000)),
        "__from": str(start_ms),
        "__to": str(end_ms),
        "__url_time_range": f"from={start_ms}&to={end_ms}",
    }


def _regex_escape(value: str) -> str:
    return re.sub(r"[\\^$*+?.()|{}\[\]/]", lambda m: "\\" + m.group(0), value)


def interpolate(text: str, context: Context, datasource: str) -> str:
    """Replace variables as the datasource's ``interpolateVariable`` would.

    ``datasource`` is ``prometheus`` or ``grafana-postgresql-datasource``: a single value
    reaches PromQL with backslashes and quotes escaped, and SQL with single quotes doubled.
    """
    plain = builtins(context.time_range) if context.time_range else {}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if name in plain:
            return plain[name]
        variable = context.variables.get(name)
        if variable is None:
            return match.group(0)  # not a variable: Grafana leaves it alone
        if variable.value == ALL and variable.all_value is not None:
            return variable.all_value  # custom all values are never formatted
        if fmt == "regex":
            return _regex_escape(variable.value)
        if fmt in {"raw", "text"}:
            return variable.value
        if datasource == "prometheus":
            if variable.multi or variable.include_all:
                return _regex_escape(variable.value)
            return variable.value.replace("\\", "\\\\").replace("'", "\\\\'")
        if variable.multi or variable.include_all:
            return "'" + variable.value.replace("'", "''") + "'"
        return variable.value.replace("'", "''")

    return VARIABLE.sub(replace, text)


def expand_sql_macros(sql: str, time_range: TimeRange) -> str:
    """The PostgreSQL datasource's macros, as its Go macro engine writes them."""

    def stamp(moment: datetime) -> str:
        text = moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return text

    def replace(match: re.Match[str]) -> str:
        name, args = match.group(1), [a.strip() for a in match.group(2).split(",")]
        start, end = time_range.start, time_range.end
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{stamp(start)}' AND '{stamp(end)}'"
        if name == "__timeFrom":
            return f"'{stamp(start)}'"
        if name == "__timeTo":
            return f"'{stamp(end)}'"
        if name in {"__timeGroup", "__timeGroupAlias"}:
            seconds = parse_duration(args[1].strip("'"))
            size = f"{seconds:g}"
            group = f"floor(extract(epoch from {args[0]})/{size})*{size}"
            return group + (' AS "time"' if name == "__timeGroupAlias" else "")
        if name == "__unixEpochFilter":
            return f"{args[0]} >= {int(start.timestamp())} AND {args[0]} <= {int(end.timestamp())}"
        raise ValueError(f"unknown macro ${name}")

    return SQL_MACRO.sub(replace, sql)


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", text)
    if not match:
        raise ValueError(f"not an interval: {text!r}")
    size = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
    return float(match.group(1)) * size


def load(directory: Path = DASHBOARDS) -> dict[str, dict[str, Any]]:
    """The committed dashboards by uid."""
    models = (json.loads(p.read_text(encoding="utf-8")) for p in sorted(directory.glob("*.json")))
    return {model["uid"]: model for model in models}


def panels(model: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in model.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep theirs inside


def targets(model: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in panels(model):
        for target in panel.get("targets", []):
            yield panel, target


def variables(model: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in model.get("templating", {}).get("list", [])}
