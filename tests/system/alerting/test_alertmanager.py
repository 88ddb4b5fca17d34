"""The Alertmanager configuration: valid, routed as documented, and templates that say enough.

amtool checks what Alertmanager itself would reject; the routing table below is the promise
made in alerting/README.md (administrators get everything, each organization its own).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import require_binary

pytestmark = pytest.mark.alertmanager

AM_DIR = Path(__file__).resolve().parents[3] / "alerting" / "alertmanager"
CONFIG = AM_DIR / "alertmanager.yml"


def amtool(*args: str, cwd: Path = AM_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("amtool"), *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def test_amtool_accepts_the_configuration():
    result = amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 templates" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (
            [
                "alertname=AccountingSyncStale",
                "org=blindeforbundet",
                "connector=xledger",
                "severity=critical",
            ],
            "global-admins,org-blindeforbundet",
        ),
        (
            [
                "alertname=AccountingSyncRecordsFailed",
                "org=hlf",
                "connector=dynamics",
                "severity=warning",
            ],
            "global-admins,org-hlf",
        ),
        # An organization without its own receiver yet still reaches the administrators.
        (["alertname=AccountingSyncStale", "org=newcomer", "connector=xledger"], "global-admins"),
        # The exporter's own alerts carry no org: administrators only.
        (["alertname=AccountingSyncExporterDown", "job=accounting-sync-exporter"], "global-admins"),
        (["alertname=AccountingSyncLogUnavailable", "instance=a:9839"], "global-admins"),
    ],
)
def test_routes(labels, receivers):
    result = amtool(
        "config",
        "routes",
        "test",
        "--config.file",
        str(CONFIG),
        f"--verify.receivers={receivers}",
        *labels,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receivers


def test_a_wrong_expectation_fails_the_route_test():
    """The routing check above can fail: a receiver the alert does not reach is reported."""
    result = amtool(
        "config",
        "routes",
        "test",
        "--config.file",
        str(CONFIG),
        "--verify.receivers=global-admins",
        "org=hlf",
    )
    assert result.returncode != 0


def test_grouping_inhibition_and_resolved_notifications():
    config = yaml.safe_load(CONFIG.read_text())
    assert config["route"]["group_by"] == ["org", "connector"]
    [inhibit] = config["inhibit_rules"]
    assert inhibit["source_matchers"] == ['alertname="AccountingSyncStale"']
    assert 'severity="warning"' in inhibit["target_matchers"]
    assert inhibit["equal"] == ["org", "connector"]
    for receiver in config["receivers"]:
        for kind, settings in receiver.items():
            if kind.endswith("_configs"):
                assert all(item["send_resolved"] for item in settings), receiver["name"]


def test_every_routed_organization_has_a_receiver_and_the_reverse():
    config = yaml.safe_load(CONFIG.read_text())
    routed = {route["receiver"] for route in config["route"]["routes"]}
    defined = {receiver["name"] for receiver in config["receivers"]}
    assert routed == defined


def render(template: str, data: dict, tmp_path: Path) -> str:
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(data))
    result = amtool(
        "template",
        "render",
        "--template.glob",
        str(AM_DIR / "templates" / "*.tmpl"),
        "--template.text",
        template,
        "--template.data",
        str(data_file),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def notification(status: str, alerts: list[dict]) -> dict:
    common = dict(alerts[0]["labels"])
    for alert in alerts[1:]:
        common = {k: v for k, v in common.items() if alert["labels"].get(k) == v}
    return {
        "receiver": "org-hlf",
        "status": status,
        "alerts": alerts,
        "groupLabels": {k: common[k] for k in ("org", "connector") if k in common},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://am.invalid",
    }


AMBER = {
    "status": "firing",
    "labels": {
        "alertname": "AccountingSyncRecordsFailed",
        "org": "hlf",
        "org_name": "Hørselshemmedes Landsforbund",
        "connector": "dynamics",
        "severity": "warning",
    },
    "annotations": {
        "summary": "Hørselshemmedes Landsforbund: 3 records failed in the last dynamics sync",
        "description": "3 failed records in the last dynamics sync.",
        "dashboard_url": "https://grafana.invalid/d/accounting-sync-org?var-org=hlf",
        "error_details_url": "https://grafana.invalid/d/accounting-sync-errors?var-org=hlf",
        "runbook_url": "https://wiki.invalid/runbook#accountingsyncrecordsfailed",
    },
    "startsAt": "2026-03-02T08:15:00Z",
    "endsAt": "0001-01-01T00:00:00Z",
}


@pytest.mark.parametrize("template", ["accounting_sync.text", "accounting_sync.email.html"])
def test_a_notification_names_who_what_since_when_and_links(template, tmp_path):
    out = render(f'{{{{ template "{template}" . }}}}', notification("firing", [AMBER]), tmp_path)
    for expected in [
        "Hørselshemmedes Landsforbund (hlf)",
        "dynamics",
        "3 records failed in the last dynamics sync",
        "2026-03-02 08:15:00 UTC",
        "https://grafana.invalid/d/accounting-sync-org?var-org=hlf",
        "https://grafana.invalid/d/accounting-sync-errors?var-org=hlf",
        "https://wiki.invalid/runbook#accountingsyncrecordsfailed",
    ]:
        assert expected in out, f"{expected!r} missing from\n{out}"


def test_the_title_says_firing_or_resolved_and_for_whom(tmp_path):
    firing = render(
        '{{ template "accounting_sync.title" . }}', notification("firing", [AMBER]), tmp_path
    )
    assert firing == (
        "[FIRING] Hørselshemmedes Landsforbund (dynamics): "
        "Hørselshemmedes Landsforbund: 3 records failed in the last dynamics sync"
    )
    resolved_alert = {**AMBER, "status": "resolved", "endsAt": "2026-03-02T09:00:00Z"}
    resolved = notification("resolved", [resolved_alert])
    assert render('{{ template "accounting_sync.title" . }}', resolved, tmp_path).startswith(
        "[RESOLVED] Hørselshemmedes Landsforbund (dynamics):"
    )
    assert "Resolved: 2026-03-02 09:00:00 UTC" in render(
        '{{ template "accounting_sync.text" . }}', resolved, tmp_path
    )


def test_the_exporters_own_alerts_read_sensibly_without_an_organization(tmp_path):
    down = {
        "status": "firing",
        "labels": {
            "alertname": "AccountingSyncLogUnavailable",
            "instance": "a:9839",
            "job": "accounting-sync-exporter",
            "severity": "critical",
        },
        "annotations": {
            "summary": "The accounting sync exporter a:9839 cannot read the sync log",
            "description": "...",
            "dashboard_url": "https://g.invalid/d/x",
            "runbook_url": "https://wiki.invalid/r",
        },
        "startsAt": "2026-03-02T08:15:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
    }
    data = notification("firing", [down])
    title = render('{{ template "accounting_sync.title" . }}', data, tmp_path)
    assert title.startswith("[FIRING] Accounting sync exporter:")
    text = render('{{ template "accounting_sync.text" . }}', data, tmp_path)
    assert "Exporter: a:9839" in text and "Organization" not in text
