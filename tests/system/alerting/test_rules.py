"""The Prometheus rules: valid for promtool, their unit tests pass, and they adapt to a deployment.

promtool runs here (not only in a make target) so that `make test` fails when a rule or its
unit test breaks, and under CI a missing promtool fails the run instead of skipping it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from alerting.render import DEFAULT_GRAFANA_URL, DEFAULT_RUNBOOK_URL, RULES, RenderError, render
from exporter.classification import ERROR_CLASSES, NEEDS_ACTION
from tests.support import require_binary

pytestmark = pytest.mark.prometheus

ALERTING = Path(__file__).resolve().parents[3] / "alerting"
CONTRACT_ALERTS = {
    "AccountingSyncStale",
    "AccountingSyncRecordsFailed",
    "AccountingSyncLogUnavailable",
    "AccountingSyncExporterDown",
    "AccountingSyncActionRequired",
    "AccountingSyncRecordsRejected",
    "AccountingSyncLate",
}
# Its runbook link names the class: one section per class that needs a person.
PER_CLASS_RUNBOOK = "AccountingSyncActionRequired"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args], capture_output=True, text=True, timeout=60
    )


def alerting_rules(text: str) -> dict[str, dict]:
    groups = yaml.safe_load(text)["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def test_promtool_accepts_the_rules():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", str(ALERTING / "tests" / "accounting-sync.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_and_the_annotations_people_need():
    rules = alerting_rules(RULES.read_text())
    assert rules.keys() >= CONTRACT_ALERTS
    tested = {
        case["alertname"]
        for test in yaml.safe_load((ALERTING / "tests" / "accounting-sync.test.yml").read_text())[
            "tests"
        ]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == rules.keys(), "every alert needs a firing case in the promtool tests"
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert {"summary", "description", "runbook_url", "dashboard_url"} <= rule[
            "annotations"
        ].keys(), name


def heading_anchors(markdown: str) -> set[str]:
    """The anchors a Markdown renderer gives the headings (GitHub's rule: lower case, spaces
    to hyphens, punctuation other than hyphens and underscores dropped)."""
    anchors = set()
    for line in markdown.splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_heading_anchors_follow_the_renderers_rule():
    assert heading_anchors("### AccountingSyncActionRequired: period_closed\n## A `b` c") == {
        "accountingsyncactionrequired-period_closed",
        "a-b-c",
    }


def test_every_runbook_link_points_at_a_section_of_the_runbook():
    anchors = heading_anchors((ALERTING / "README.md").read_text())
    for name, rule in alerting_rules(RULES.read_text()).items():
        url = rule["annotations"]["runbook_url"]
        if name == PER_CLASS_RUNBOOK:
            anchor = f"{name.lower()}-{{{{ $labels.error_class }}}}"
            assert url == f"{DEFAULT_RUNBOOK_URL}#{anchor}", name
            for error_class in sorted(NEEDS_ACTION):
                assert f"{name.lower()}-{error_class}" in anchors, (
                    f"alerting/README.md has no section for {name} {error_class}"
                )
        else:
            assert url == f"{DEFAULT_RUNBOOK_URL}#{name.lower()}", name
        assert name.lower() in anchors, f"alerting/README.md has no section for {name}"


def test_action_required_pages_for_exactly_the_classes_that_need_a_person(tmp_path):
    """The rules and the exporter's classification table agree: a run that failed with any
    class of the vocabulary pages if and only if the table says a person must act."""
    integrations = [(f"org{i}", error_class) for i, error_class in enumerate(ERROR_CLASSES)]
    series = []
    for org, error_class in integrations:
        labels = f'job="accounting-sync-exporter",instance="a:9839",org="{org}",connector="xledger"'
        failed = f'{labels},error_class="{error_class}"'
        series.append(
            {"series": f"accounting_sync_last_run_error_class{{{failed}}}", "values": "1x2"}
        )
        series.append(
            {
                "series": f'accounting_sync_org_info{{{labels},org_name="{org.upper()}"}}',
                "values": "1x2",
            }
        )
    query = 'ALERTS{alertname="AccountingSyncActionRequired",alertstate="firing"}'
    expected = [
        {
            "labels": (
                f'{{__name__="ALERTS",alertname="AccountingSyncActionRequired",'
                f'alertstate="firing",connector="xledger",error_class="{error_class}",'
                f'org="{org}",org_name="{org.upper()}",severity="critical"}}'
            ),
            "value": 1,
        }
        for org, error_class in integrations
        if error_class in NEEDS_ACTION
    ]
    assert len(expected) == len(NEEDS_ACTION) >= 1
    unit = tmp_path / "test.yml"
    unit.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(RULES)],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": series,
                        "promql_expr_test": [
                            {"expr": query, "eval_time": "1m", "exp_samples": expected}
                        ],
                    }
                ],
            }
        )
    )
    result = promtool("test", "rules", str(unit))
    assert result.returncode == 0, result.stdout + result.stderr


def test_render_with_defaults_changes_nothing():
    assert render(RULES.read_text()) == RULES.read_text()


def test_rendered_rules_point_at_the_deployment_and_still_pass_promtool(tmp_path):
    text = render(
        RULES.read_text(),
        grafana_url="https://grafana.example.org/monitoring/",
        runbook_url="https://wiki.example.org/runbooks/accounting-sync",
        job="accounting-sync",
    )
    rendered = tmp_path / "rules.yml"
    rendered.write_text(text)
    check = promtool("check", "rules", str(rendered))
    assert check.returncode == 0, check.stdout + check.stderr
    for name, rule in alerting_rules(text).items():
        annotations = rule["annotations"]
        assert annotations["dashboard_url"].startswith(
            "https://grafana.example.org/monitoring/d/accounting-sync-"
        ), name
        assert annotations["runbook_url"].startswith(
            "https://wiki.example.org/runbooks/accounting-sync#"
        ), name
    # The per-class anchor survives: each class still opens its own section.
    assert alerting_rules(text)[PER_CLASS_RUNBOOK]["annotations"]["runbook_url"] == (
        "https://wiki.example.org/runbooks/accounting-sync"
        "#accountingsyncactionrequired-{{ $labels.error_class }}"
    )
    assert DEFAULT_GRAFANA_URL not in text.split("groups:", 1)[1]
    assert 'job="accounting-sync"' in text
    assert 'job="accounting-sync-exporter"' not in text.split("groups:", 1)[1]


def test_rendered_rules_alert_on_the_renamed_job(tmp_path):
    """The exporter-down alert follows the job name: a renamed job's targets count as up."""
    rules = tmp_path / "rules.yml"
    rules.write_text(render(RULES.read_text(), job="sync"))
    unit = tmp_path / "test.yml"
    unit.write_text(
        yaml.safe_dump(
            {
                "rule_files": ["rules.yml"],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": [
                            {"series": 'up{job="sync",instance="a"}', "values": "1x10"}
                        ],
                        "alert_rule_test": [
                            {
                                "eval_time": "10m",
                                "alertname": "AccountingSyncExporterDown",
                                "exp_alerts": [],
                            }
                        ],
                    }
                ],
            }
        )
    )
    result = promtool("test", "rules", str(unit))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("flag", "kwargs"),
    [
        ("--grafana-url", {"grafana_url": "grafana.example.org"}),
        ("--runbook-url", {"runbook_url": "https://wiki.example.org/page#section"}),
        ("--job", {"job": 'a"b'}),
    ],
)
def test_render_rejects_a_bad_value_naming_the_flag(flag, kwargs):
    with pytest.raises(RenderError, match=f"^{flag}:"):
        render(RULES.read_text(), **kwargs)


def test_render_command_exits_2_with_one_line(tmp_path):
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "alerting.render",
            "--grafana-url",
            "ftp://x",
            "--runbook-url",
            "https://wiki.example.org/rb",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ALERTING.parent,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--grafana-url" in result.stderr


def test_render_requires_the_runbook_url_so_no_alert_links_to_the_placeholder(tmp_path):
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "alerting.render", "--grafana-url", "https://grafana.example.org"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ALERTING.parent,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "--runbook-url" in result.stderr
