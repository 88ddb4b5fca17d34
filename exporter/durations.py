"""Durations written the way Prometheus writes them (``500ms``, ``15s``, ``5m``, ``1h30m``).

Operators copy values between Prometheus, Alertmanager and this exporter's flags, so the
exporter accepts exactly the same spelling instead of inventing its own.
"""

from __future__ import annotations

import re

_UNITS = {
    "y": 365 * 24 * 3600.0,
    "w": 7 * 24 * 3600.0,
    "d": 24 * 3600.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 0.001,
}
_PART = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
_ORDER = ["y", "w", "d", "h", "m", "s", "ms"]


def parse_duration(text: str) -> float:
    """Return the duration in seconds, or raise ``ValueError`` naming the expected form."""
    value = text.strip()
    if not value:
        raise ValueError("empty duration")
    pos = 0
    total = 0.0
    last_unit = -1
    for match in _PART.finditer(value):
        if match.start() != pos:
            break
        unit_rank = _ORDER.index(match.group(2))
        if unit_rank <= last_unit:
            raise ValueError(f"not a duration: {text!r} (units must go from largest to smallest)")
        last_unit = unit_rank
        total += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(value):
        raise ValueError(f"not a duration: {text!r} (expected e.g. 500ms, 15s, 5m, 1h)")
    return total


def format_duration(seconds: float) -> str:
    """The shortest Prometheus spelling of ``seconds`` (used in log lines and --help)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit in _ORDER:
        size = round(_UNITS[unit] * 1000)
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(parts)
