"""The command line: the only package that knows every other one (nothing imports it)."""

from exporter.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
