"""The Alertmanager configuration: valid, routed as documented, and templates that say enough.

amtool checks what Alertmanager itself would reject; the routing table below is the promise
made in alerting/README.md (administrators get everything, each organization its own).
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from tests.support import require_binary, wait_until
from tests.support.alertmanager import (
    alert_states,
    alertmanager_server,
    post_alerts,
    receiver_server,
    webhooks_only,
)

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
        # A run that needs a person: the organization's people and the administrators.
        (
            [
                "alertname=AccountingSyncActionRequired",
                "org=blindeforbundet",
                "connector=xledger",
                "error_class=auth",
                "severity=critical",
            ],
            "global-admins,org-blindeforbundet",
        ),
        (
            [
                "alertname=AccountingSyncActionRequired",
                "org=hlf",
                "connector=dynamics",
                "error_class=period_closed",
                "severity=critical",
            ],
            "global-admins,org-hlf",
        ),
        (
            [
                "alertname=AccountingSyncRecordsRejected",
                "org=hlf",
                "connector=dynamics",
                "severity=warning",
            ],
            "global-admins,org-hlf",
        ),
        (
            ["alertname=AccountingSyncActionRequired", "org=newcomer", "error_class=auth"],
            "global-admins",
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
    stale, action_required = config["inhibit_rules"]
    assert stale["source_matchers"] == ['alertname="AccountingSyncStale"']
    assert 'severity="warning"' in stale["target_matchers"]
    assert stale["equal"] == ["org", "connector"]
    assert action_required["source_matchers"] == ['alertname="AccountingSyncActionRequired"']
    assert action_required["equal"] == ["org", "connector"]
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


ACTION_REQUIRED = {
    **AMBER,
    "labels": {
        "alertname": "AccountingSyncActionRequired",
        "org": "hlf",
        "org_name": "Hørselshemmedes Landsforbund",
        "connector": "dynamics",
        "error_class": "period_closed",
        "severity": "critical",
    },
    "annotations": {
        **AMBER["annotations"],
        "summary": "Hørselshemmedes Landsforbund: dynamics sync stopped, the period is closed",
        "runbook_url": "https://wiki.invalid/runbook#accountingsyncactionrequired-period_closed",
    },
}


@pytest.mark.parametrize(
    ("template", "class_line"),
    [
        ("accounting_sync.text", "Error class: period_closed"),
        ("accounting_sync.email.html", "<td>Error class</td><td>period_closed</td>"),
    ],
)
def test_a_run_that_needs_a_person_names_its_class_and_its_runbook_section(
    template, class_line, tmp_path
):
    data = notification("firing", [ACTION_REQUIRED])
    out = render(f'{{{{ template "{template}" . }}}}', data, tmp_path)
    for expected in [
        "dynamics sync stopped, the period is closed",
        class_line,
        "AccountingSyncActionRequired (severity critical)",
        "https://wiki.invalid/runbook#accountingsyncactionrequired-period_closed",
    ]:
        assert expected in out, f"{expected!r} missing from\n{out}"
    assert "Error class" not in render(
        f'{{{{ template "{template}" . }}}}', notification("firing", [AMBER]), tmp_path
    )


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


def alert(alertname: str, org: str, connector: str, **labels: str) -> dict:
    """An alert as Prometheus sends it from the project's rules (no startsAt: it fires now)."""
    return {
        "labels": {"alertname": alertname, "org": org, "connector": connector, **labels},
        "annotations": {
            "summary": f"{alertname} for {org} {connector}",
            "dashboard_url": f"https://grafana.invalid/d/accounting-sync-org?var-org={org}",
            "runbook_url": f"https://wiki.invalid/runbook#{alertname.lower()}",
        },
    }


def test_action_required_goes_out_at_once_and_mutes_amber_for_its_integration_only(tmp_path):
    """The project's routing tree and inhibitions in a real Alertmanager. The default group wait
    is raised to an hour here, so whatever arrives during the test skipped it; only the
    receivers' addresses change."""
    config = yaml.safe_load(CONFIG.read_text())
    config["templates"] = [str(AM_DIR / "templates" / "*.tmpl")]
    config["route"]["group_wait"] = "1h"
    action_required = alert(
        "AccountingSyncActionRequired",
        "blindeforbundet",
        "xledger",
        error_class="auth",
        severity="critical",
        org_name="Norges Blindeforbund",
    )
    amber_same = alert(
        "AccountingSyncRecordsFailed", "blindeforbundet", "xledger", severity="warning"
    )
    late_same = alert("AccountingSyncLate", "blindeforbundet", "xledger", severity="warning")
    amber_other_connector = alert(
        "AccountingSyncRecordsFailed", "blindeforbundet", "dynamics", severity="warning"
    )
    amber_other_org = alert("AccountingSyncRecordsFailed", "hlf", "dynamics", severity="warning")
    rejected_same = alert(
        "AccountingSyncRecordsRejected", "blindeforbundet", "xledger", severity="warning"
    )

    with receiver_server() as (receiver_url, received):
        am_config = webhooks_only(config, receiver_url)
        with alertmanager_server(am_config, tmp_path) as am_url:
            post_alerts(
                am_url,
                [
                    action_required,
                    amber_same,
                    late_same,
                    amber_other_connector,
                    amber_other_org,
                    rejected_same,
                ],
            )

            # At once, to the organization's people and to the administrators, on its own.
            for receiver in ("org-blindeforbundet", "global-admins"):
                [body] = wait_until(
                    lambda r=receiver: received.at(f"/webhook/{r}"),
                    timeout=30,
                    interval=0.2,
                    what=f"AccountingSyncActionRequired at {receiver}",
                )
                [delivered] = body["alerts"]
                assert delivered["status"] == "firing"
                assert delivered["labels"] == action_required["labels"]
            # The chat message is the project's template, with the organization's name.
            [chat] = wait_until(
                lambda: received.at("/slack/global-admins"), timeout=30, what="chat message"
            )
            assert "Norges Blindeforbund" in json.dumps(chat, ensure_ascii=False)
            # Everything else waits for the (here: hour-long) group wait.
            assert {path for path, _ in received.all()} == {
                "/webhook/org-blindeforbundet",
                "/webhook/global-admins",
                "/slack/global-admins",
            }

            def status_of(wanted: dict) -> dict | None:
                for held in alert_states(am_url):
                    if held["labels"] == wanted["labels"]:
                        return held["status"]
                return None

            [source] = [a for a in alert_states(am_url) if a["labels"] == action_required["labels"]]

            def muted_as_documented() -> bool:
                return all(
                    (status_of(a) or {}).get("inhibitedBy") == [source["fingerprint"]]
                    for a in (amber_same, late_same)
                ) and all(
                    (status_of(a) or {}).get("state") == "active"
                    for a in (amber_other_connector, amber_other_org, rejected_same)
                )

            wait_until(muted_as_documented, timeout=30, interval=0.2, what="inhibitions")
            assert status_of(amber_same)["state"] == "suppressed"

            # Once the run that needed a person is fixed (the alert resolves), amber speaks again.
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            post_alerts(am_url, [{**action_required, "endsAt": now}])
            wait_until(
                lambda: (
                    (status_of(amber_same) or {}).get("state") == "active"
                    and (status_of(late_same) or {}).get("state") == "active"
                ),
                timeout=30,
                interval=0.2,
                what="amber no longer inhibited",
            )
