"""The two kinds of failure a user can be shown, and how each is said.

Everything that stops a command is one of two things: the user asked for something that
cannot work (a bad flag, key, file or value: exit 2, fix the input), or something outside
failed (the database, Grafana, the disk: exit 1, try again or call someone). Modules raise
these; only the command line's entry point prints them and picks the exit code, so every
error reads the same way: one line, ``accounting-sync-exporter: error: <what, naming the key>``.
"""

from __future__ import annotations

PROG = "accounting-sync-exporter"


class ExporterError(Exception):
    """A failure meant for the user: ``str()`` is the one line they are shown."""

    exit_code = 1

    def __init__(self, message: str, *, prog: str | None = None) -> None:
        super().__init__(message)
        self.prog = prog or PROG


class UsageError(ExporterError):
    """Bad usage or configuration: the input must change (exit code 2)."""

    exit_code = 2


class OutsideFailure(ExporterError):
    """Something outside the exporter failed (a server, a network, a disk): exit code 1."""

    exit_code = 1


def one_line(exc: BaseException) -> str:
    """An exception as one log-friendly line: its type and the first line of its text."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
