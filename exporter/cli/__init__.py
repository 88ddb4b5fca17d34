"""The command line: the only package that knows every other one (nothing imports it)."""

from exporter.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
