"""Every ``accounting_sync_*`` name that a dashboard, a rule or a document uses is published.

A renamed metric would otherwise empty a panel or silence an alert without any error: PromQL
answers an unknown name with no series. The names are read from the files themselves and
compared with ``metrics.EXPOSED_NAMES``, so metrics added to the table (or to the files) on
other branches are checked without touching this test.

- A recording rule ``level:metric:operation`` is not in the table; the metric between the
  colons is, and the rule must be recorded in the rule files.
- The documents also name database objects with the same prefix (the NOTIFY channel, roles,
  functions). Those are the exporter's own string constants, or the argument of ``--role`` in
  a documented command, and are not metric names.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import yaml

import exporter
from exporter.exposition import metrics

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = Path(exporter.__file__).parent

# `accounting_sync_<slug>` in prose is a pattern, not a name: the stem must not be empty.
NAME = re.compile(r"(?<![A-Za-z0-9_:.])((?:[a-z_]+:)?accounting_sync_[A-Za-z0-9_]+(?::[a-z_]+)?)")
ROLE_ARGUMENT = re.compile(r"--role[ =](accounting_sync_[A-Za-z0-9_]+)")


def dashboard_files() -> list[Path]:
    return sorted((ROOT / "grafana" / "dashboards").glob("*.json"))


def rule_files() -> list[Path]:
    return sorted((ROOT / "alerting" / "rules").glob("*.yml"))


def rule_test_files() -> list[Path]:
    return sorted((ROOT / "alerting" / "tests").glob("*.yml"))


def document_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "alerting" / "README.md", *sorted(ROOT.glob("docs/*.md"))]


def names_in(text: str) -> Iterator[str]:
    yield from NAME.findall(text)


def recorded_series() -> set[str]:
    """The series the recording rules create (``record:``), from every rule file."""
    recorded = set()
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            recorded |= {rule["record"] for rule in group["rules"] if "record" in rule}
    return recorded


def exporter_identifiers() -> set[str]:
    """``accounting_sync_*`` strings the exporter assigns to constants: database objects.

    Only module-level assignments count (``CHANNEL = "accounting_sync_changed"``), not
    docstrings or messages, so a stale metric name in a docstring is not excused here.
    """
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if path == Path(metrics.__file__):
            continue
        for node in ast.parse(path.read_text()).body:
            if (
                isinstance(node, ast.Assign | ast.AnnAssign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                found |= set(NAME.findall(node.value.value))
    return found


def unknown_names(used: Iterable[str], recorded: set[str], excused: set[str]) -> set[str]:
    """The names in ``used`` that would find no series once the exporter is scraped."""
    unknown = set()
    for name in used:
        if name in excused:
            continue
        if ":" in name:
            parts = name.split(":")
            if name not in recorded or len(parts) != 3 or parts[1] not in metrics.EXPOSED_NAMES:
                unknown.add(name)
        elif name not in metrics.EXPOSED_NAMES:
            unknown.add(name)
    return unknown


def test_the_sources_scanned_are_there_and_name_metrics():
    # Guards the test itself: a moved folder would otherwise make every check below vacuous.
    for files in (dashboard_files(), rule_files(), rule_test_files(), document_files()):
        assert files and all(path.is_file() for path in files)
        assert any(set(names_in(path.read_text())) & metrics.EXPOSED_NAMES for path in files)
    assert recorded_series()


@pytest.mark.parametrize(
    "path",
    [*dashboard_files(), *rule_files(), *rule_test_files()],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_name_in_dashboards_and_rules_is_in_the_metric_table(path: Path):
    # PromQL only: nothing in these files may name a database object.
    used = set(names_in(path.read_text()))
    assert unknown_names(used, recorded_series(), excused=set()) == set()


@pytest.mark.parametrize("path", document_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_metric_a_document_names_is_in_the_metric_table(path: Path):
    documents = "\n".join(p.read_text() for p in document_files())
    roles = set(ROLE_ARGUMENT.findall(documents))
    used = set(names_in(path.read_text()))
    excused = exporter_identifiers() | roles
    assert unknown_names(used, recorded_series(), excused) == set()


def test_a_renamed_metric_or_recording_rule_is_reported():
    recorded = recorded_series()
    (rule,) = sorted(r for r in recorded if ":accounting_sync_health:" in r)
    text = (
        "max by (org) (accounting_sync_health) "
        "+ accounting_sync_helth{org='hlf'} "
        f"+ {rule} + {rule.replace(':max', ':avg')} "
        "+ org_connector:accounting_sync_helth:max"
    )
    assert unknown_names(names_in(text), recorded, excused=set()) == {
        "accounting_sync_helth",
        rule.replace(":max", ":avg"),
        "org_connector:accounting_sync_helth:max",
    }


def test_database_identifiers_are_not_taken_for_metric_names():
    identifiers = exporter_identifiers()
    # The NOTIFY channel is an exporter constant; no metric may share a database name.
    assert any(name.endswith("_changed") for name in identifiers)
    assert not identifiers & metrics.EXPOSED_NAMES
