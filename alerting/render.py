"""Adapt the committed rules file to one deployment: its Grafana, its runbook, its scrape job.

The rules carry links that people click from a notification, so they must point at the
deployment's Grafana. The committed file keeps documented defaults and stays a valid rules
file on its own (the promtool tests run against it exactly); this module is the one place that
knows which strings those defaults are, so a deployment renders its copy instead of editing it:

    python -m alerting.render --grafana-url https://grafana.example.org \\
        --runbook-url https://wiki.example.org/accounting-sync-runbook --job accounting-sync \\
        --output /etc/prometheus/rules/accounting-sync.rules.yml
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

RULES = Path(__file__).parent / "rules" / "accounting-sync.rules.yml"
DEFAULT_GRAFANA_URL = "http://localhost:3000"
DEFAULT_RUNBOOK_URL = "https://runbooks.example.com/accounting-sync/alerting/README.md"
DEFAULT_JOB = "accounting-sync-exporter"

_URL = re.compile(r"^https?://[^\s\"'{}#?]+$")
_JOB = re.compile(r"^[^\"\\\s]+$")


class RenderError(ValueError):
    """A bad value, reported as one line naming the flag."""


def render(
    text: str,
    *,
    grafana_url: str = DEFAULT_GRAFANA_URL,
    runbook_url: str = DEFAULT_RUNBOOK_URL,
    job: str = DEFAULT_JOB,
) -> str:
    """The rules text with the three deployment values replaced (defaults leave it unchanged)."""
    grafana_url = grafana_url.rstrip("/")
    if not _URL.match(grafana_url):
        raise RenderError(f"--grafana-url: not an http(s) URL without query: {grafana_url!r}")
    if not _URL.match(runbook_url):
        raise RenderError(f"--runbook-url: not an http(s) URL without fragment: {runbook_url!r}")
    if not _JOB.match(job):
        raise RenderError(f"--job: a job name without quotes, backslashes or spaces: {job!r}")
    text = text.replace(f"{DEFAULT_GRAFANA_URL}/d/", f"{grafana_url}/d/")
    text = text.replace(f"{DEFAULT_RUNBOOK_URL}#", f"{runbook_url}#")
    return text.replace(f'job="{DEFAULT_JOB}"', f'job="{job}"')


class _Parser(argparse.ArgumentParser):
    """One line and exit code 2 for a bad or missing flag, as the exporter's own commands."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(
        prog="python -m alerting.render",
        description="Write the accounting sync rules for one deployment.",
    )
    parser.add_argument("--grafana-url", default=DEFAULT_GRAFANA_URL, help="Grafana base URL")
    parser.add_argument(
        "--runbook-url",
        required=True,
        help="where alerting/README.md is published: every alert links to a section of it "
        "(required, so that no alert links to the placeholder)",
    )
    parser.add_argument("--job", default=DEFAULT_JOB, help="the exporter's scrape job name")
    parser.add_argument("--output", type=Path, help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    try:
        text = render(
            RULES.read_text(),
            grafana_url=args.grafana_url,
            runbook_url=args.runbook_url,
            job=args.job,
        )
    except RenderError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
