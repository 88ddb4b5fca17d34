"""Durations are spelled as Prometheus spells them, so values copy between the two unchanged."""

from __future__ import annotations

import pytest

from exporter.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("1ms", 0.001),
        ("15s", 15),
        ("5m", 300),
        ("1h", 3600),
        ("1d", 86400),
        ("1w", 7 * 86400),
        ("1y", 365 * 86400),
        ("1h30m", 5400),
        ("2m30s", 150),
        ("1s500ms", 1.5),
        ("1d12h", 36 * 3600),
        ("1y1w1d1h1m1s1ms", 365 * 86400 + 7 * 86400 + 86400 + 3600 + 60 + 1 + 0.001),
        ("0s", 0),
        ("90s", 90),
        (" 15s ", 15),
    ],
)
def test_prometheus_spellings_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "15",  # a bare number: Prometheus wants a unit
        "s",
        "1.5s",  # Prometheus durations have no fractions
        "-1s",
        "15S",
        "15 s",
        "15sec",
        "1h 30m",
        "1h30",
        "PT15S",
        "15s!",
    ],
)
def test_other_spellings_are_rejected_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["30m1h", "1s1m", "500ms1s", "1s1s", "1m1m", "1ms1y"])
def test_units_must_go_from_largest_to_smallest_each_once(text: str) -> None:
    with pytest.raises(ValueError, match="largest to smallest"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.5, "500ms"), (15, "15s"), (300, "5m"), (5400, "1h30m"), (86400, "1d"), (0, "0s")],
)
def test_format_writes_the_shortest_spelling_that_parses_back(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)
