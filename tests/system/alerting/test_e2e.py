"""End to end: sync log -> two exporter replicas -> Prometheus with the project's rules ->
Alertmanager with the project's routing -> the receivers.

Everything is real except the far end: the receivers' URLs in a test copy of the Alertmanager
configuration point at a small HTTP server in this test, which records what arrives. Timings
are shortened (scrape and evaluation every second, grouping waits of a second); the rules and
the routing tree are the project's, untouched.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml

from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.migrate import upgrade
from exporter.source.pipeline import Pipeline, utcnow
from tests.support import (
    background_process,
    exporter_process,
    free_port,
    http_get,
    prometheus_server,
    require_binary,
    wait_ready,
    wait_until,
)
from tests.support.alertmanager import Received, receiver_server

pytestmark = [pytest.mark.postgres, pytest.mark.prometheus, pytest.mark.alertmanager]

ALERTING = Path(__file__).resolve().parents[3] / "alerting"
GRAFANA = "http://localhost:3000"  # the rules' documented default Grafana base URL
RED = ("blindeforbundet", "Norges Blindeforbund", "xledger")
AMBER = ("hlf", "Hørselshemmedes Landsforbund", "dynamics")
GREEN = ("kreftforeningen", "Kreftforeningen", "xledger")


def test_alertmanager_config(receiver_url: str) -> dict[str, Any]:
    """The project's configuration with short waits and every receiver sent to the test."""
    config = yaml.safe_load((ALERTING / "alertmanager" / "alertmanager.yml").read_text())
    config["templates"] = [str(ALERTING / "alertmanager" / "templates" / "*.tmpl")]
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    for receiver in config["receivers"]:
        name = receiver["name"]
        receiver.pop("email_configs", None)  # no mail server here; the templates are shared
        for slack in receiver.get("slack_configs", []):
            slack["api_url"] = f"{receiver_url}/slack/{name}"
        receiver["webhook_configs"] = [
            {"url": f"{receiver_url}/webhook/{name}", "send_resolved": True}
        ]
    return config


test_alertmanager_config.__test__ = False  # type: ignore[attr-defined]


def alerts_in(bodies: list[dict[str, Any]], alertname: str, status: str) -> list[dict[str, Any]]:
    return [
        alert
        for body in bodies
        for alert in body["alerts"]
        if alert["labels"]["alertname"] == alertname and alert["status"] == status
    ]


@dataclass
class Chain:
    received: Received
    am_url: str
    prom_url: str

    def delivered(self, path: str, alertname: str, status: str = "firing") -> list[dict]:
        """The alert as carried by each notification to ``path`` that has it."""
        found = [alerts_in([body], alertname, status) for body in self.received.at(path)]
        found = [alerts for alerts in found if alerts]
        # One alert per integration, however many replicas were scraped.
        assert all(len(alerts) == 1 for alerts in found), found
        return [alerts[0] for alerts in found]


def start_chain(stack: ExitStack, pg_url: str, tmp_path: Path) -> Chain:
    """Two exporter replicas, Prometheus with the project's rules, Alertmanager with its
    routing, and the fake receivers, all stopped when ``stack`` closes."""
    alertmanager = require_binary("prometheus-alertmanager")
    receiver_url, received = stack.enter_context(receiver_server())
    exporter_args = ["--database-url", pg_url, "--refresh-interval", "1s"]
    replicas = [stack.enter_context(exporter_process(exporter_args, tmp_path)) for _ in range(2)]

    am_port = free_port()
    am_config = tmp_path / "alertmanager.yml"
    am_config.write_text(yaml.safe_dump(test_alertmanager_config(receiver_url)))
    am_log = tmp_path / "alertmanager.log"
    am = stack.enter_context(
        background_process(
            [
                alertmanager,
                f"--config.file={am_config}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
            am_log,
        )
    )
    am_url = f"http://127.0.0.1:{am_port}"
    wait_ready(f"{am_url}/-/ready", am, am_log)

    prom_url = stack.enter_context(
        prometheus_server(
            [r.url.removeprefix("http://") for r in replicas],
            tmp_path,
            rule_files=[ALERTING / "rules" / "accounting-sync.rules.yml"],
            alertmanagers=[f"127.0.0.1:{am_port}"],
        )
    )
    return Chain(received, am_url, prom_url)


def test_red_amber_green_reach_the_right_receivers_and_red_resolves(pg_url, tmp_path):
    require_binary("prometheus")
    engine = create_sync_log_engine(normalize_url(pg_url))
    upgrade(engine)
    pipeline = Pipeline(engine)
    now = utcnow()
    # Red: last good sync 30 hours ago (window 24 h), and a record waiting for two days, whose
    # backlog warning the inhibition must keep silent while the integration is red.
    pipeline.register(*RED, created_at=now - timedelta(days=3))
    pipeline.add_finished_run(
        *RED[::2],
        "succeeded",
        started_at=now - timedelta(hours=30, minutes=1),
        finished_at=now - timedelta(hours=30),
        records_total=5,
    )
    stuck = pipeline.enqueue(*RED[::2], [("expense", "E-1001")], at=now - timedelta(days=2))
    # Amber: the last run left 3 of 10 records failed.
    pipeline.register(*AMBER, created_at=now - timedelta(days=3))
    pipeline.add_finished_run(
        *AMBER[::2],
        "partial",
        started_at=now - timedelta(minutes=2),
        finished_at=now - timedelta(minutes=1),
        records_total=10,
        records_failed=3,
    )
    # Green: a good run a minute ago.
    pipeline.register(*GREEN, created_at=now - timedelta(days=3))
    pipeline.add_finished_run(
        *GREEN[::2],
        "succeeded",
        started_at=now - timedelta(minutes=2),
        finished_at=now - timedelta(minutes=1),
        records_total=7,
    )

    with ExitStack() as stack:
        chain = start_chain(stack, pg_url, tmp_path)
        received, am_url, prom_url = chain.received, chain.am_url, chain.prom_url
        delivered = chain.delivered
        # Red: the org's own receiver and the administrators', once each, not once per replica.
        for receiver in ("org-blindeforbundet", "global-admins"):
            stale, *_ = wait_until(
                lambda r=receiver: delivered(f"/webhook/{r}", "AccountingSyncStale"),
                timeout=60,
                interval=0.2,
                what=f"AccountingSyncStale at {receiver}",
            )
            assert stale["labels"] == {
                "alertname": "AccountingSyncStale",
                "severity": "critical",
                "org": "blindeforbundet",
                "org_name": "Norges Blindeforbund",
                "connector": "xledger",
            }
            assert stale["annotations"]["summary"] == (
                "Norges Blindeforbund: no successful xledger sync in the last 24 hours"
            )
            assert stale["annotations"]["dashboard_url"] == (
                f"{GRAFANA}/d/accounting-sync-org?var-org=blindeforbundet"
            )
            assert stale["annotations"]["error_details_url"] == (
                f"{GRAFANA}/d/accounting-sync-errors?var-org=blindeforbundet"
            )

        # Amber: likewise, with the failed-record count and the error-details link.
        for receiver in ("org-hlf", "global-admins"):
            amber, *_ = wait_until(
                lambda r=receiver: delivered(f"/webhook/{r}", "AccountingSyncRecordsFailed"),
                timeout=30,
                interval=0.2,
                what=f"AccountingSyncRecordsFailed at {receiver}",
            )
            assert amber["labels"] == {
                "alertname": "AccountingSyncRecordsFailed",
                "severity": "warning",
                "org": "hlf",
                "org_name": "Hørselshemmedes Landsforbund",
                "connector": "dynamics",
            }
            assert "3 failed records" in amber["annotations"]["description"]
            assert amber["annotations"]["error_details_url"] == (
                f"{GRAFANA}/d/accounting-sync-errors?var-org=hlf"
            )
            assert (
                f"{GRAFANA}/d/accounting-sync-errors?var-org=hlf"
                in (amber["annotations"]["description"])
            )
        # The chat message (the project's template) names who, what, since when and the links.
        chat = wait_until(lambda: received.at("/slack/org-hlf"), timeout=30, what="chat message")
        text = json.dumps(chat, ensure_ascii=False)
        for expected in (
            "Hørselshemmedes Landsforbund (hlf)",
            "Connector: dynamics",
            "3 records failed in the last dynamics sync",
            "Since: ",
            f"{GRAFANA}/d/accounting-sync-org?var-org=hlf",
            f"{GRAFANA}/d/accounting-sync-errors?var-org=hlf",
        ):
            assert expected in text, f"{expected!r} not in {text}"

        # The red integration's backlog alert fires in Prometheus but is inhibited.
        def backlog_inhibited() -> bool:
            url = f"{am_url}/api/v2/alerts?" + urlencode(
                {"filter": 'alertname="AccountingSyncBacklogOld"'}
            )
            status, _, body = http_get(url)
            alerts = json.loads(body) if status == 200 else []
            return any(
                a["labels"].get("org") == "blindeforbundet" and a["status"]["inhibitedBy"]
                for a in alerts
            )

        wait_until(backlog_inhibited, timeout=30, interval=0.2, what="inhibited backlog alert")

        # Green: Prometheus has its series from both replicas, and nobody heard about it.
        def green_scraped() -> bool:
            query = 'count(accounting_sync_health{org="kreftforeningen"} == 0)'
            status, _, body = http_get(f"{prom_url}/api/v1/query?" + urlencode({"query": query}))
            result = json.loads(body)["data"]["result"] if status == 200 else []
            return bool(result) and result[0]["value"][1] == "2"

        wait_until(green_scraped, timeout=30, interval=0.2, what="green integration scraped")
        for path, body in received.all():
            assert "Kreftforeningen" not in json.dumps(body, ensure_ascii=False), path
            for alert in body.get("alerts", []):  # webhook bodies; chat bodies are text
                assert alert["labels"].get("org") != "kreftforeningen", path
                assert alert["labels"]["alertname"] != "AccountingSyncBacklogOld", path

        # Fixing red: the stuck record goes through in a good run; both receivers hear it.
        run = pipeline.start_run(*RED[::2])
        pipeline.mark_synced(stuck)
        pipeline.finish_run(run, "succeeded", records_total=1)
        for receiver in ("org-blindeforbundet", "global-admins"):
            resolved, *_ = wait_until(
                lambda r=receiver: delivered(f"/webhook/{r}", "AccountingSyncStale", "resolved"),
                timeout=60,
                interval=0.2,
                what=f"resolved AccountingSyncStale at {receiver}",
            )
            assert resolved["labels"]["org"] == "blindeforbundet"
            assert resolved["endsAt"] >= resolved["startsAt"]
        # Amber stays amber: it was not resolved along the way.
        assert not delivered("/webhook/org-hlf", "AccountingSyncRecordsFailed", "resolved")
    engine.dispose()


def test_an_expired_secret_pages_at_once_and_mutes_amber_and_rejected_records_warn(
    pg_url, tmp_path
):
    """The reconciliation alerts through the whole chain: a run that failed on an expired
    Entra client secret reaches the organization's receiver as ActionRequired with its
    class, the same integration's amber is muted while it fires, and a rejected record
    raises RecordsRejected for its own organization."""
    require_binary("prometheus")
    engine = create_sync_log_engine(normalize_url(pg_url))
    upgrade(engine)
    pipeline = Pipeline(engine)
    now = utcnow()
    expired = ("blindeforbundet", "Norges Blindeforbund", "dynamics")
    pipeline.register(*expired, created_at=now - timedelta(days=3))
    pipeline.add_finished_run(
        *expired[::2],
        "succeeded",
        started_at=now - timedelta(hours=1, minutes=1),
        finished_at=now - timedelta(hours=1),
        records_total=4,
    )
    pipeline.add_finished_run(
        *expired[::2],
        "failed",
        started_at=now - timedelta(minutes=2),
        finished_at=now - timedelta(minutes=1),
        error_code="AADSTS7000222",
        error_message="AADSTS7000222: The provided client secret keys are expired.",
    )
    pipeline.register(*AMBER, created_at=now - timedelta(days=3))
    [record] = pipeline.enqueue(*AMBER[::2], [("invoice", "F-2024-17")], at=now)
    run = pipeline.start_run(*AMBER[::2], at=now)
    pipeline.record_failure(
        run,
        record,
        "Document No. F-2024-17 already exists",
        error_code="Internal_EntityWithSameKeyExists",
        give_up=True,
    )
    pipeline.finish_run(run, "succeeded", records_total=1)

    with ExitStack() as stack:
        chain = start_chain(stack, pg_url, tmp_path)
        for receiver in ("org-blindeforbundet", "global-admins"):
            page, *_ = wait_until(
                lambda r=receiver: chain.delivered(f"/webhook/{r}", "AccountingSyncActionRequired"),
                timeout=60,
                interval=0.2,
                what=f"AccountingSyncActionRequired at {receiver}",
            )
            assert page["labels"] == {
                "alertname": "AccountingSyncActionRequired",
                "severity": "critical",
                "org": "blindeforbundet",
                "org_name": "Norges Blindeforbund",
                "connector": "dynamics",
                "error_class": "auth",
            }
            assert page["annotations"]["runbook_url"].endswith("#accountingsyncactionrequired-auth")
        rejected, *_ = wait_until(
            lambda: chain.delivered("/webhook/org-hlf", "AccountingSyncRecordsRejected"),
            timeout=60,
            interval=0.2,
            what="AccountingSyncRecordsRejected at org-hlf",
        )
        assert (rejected["labels"]["org"], rejected["labels"]["connector"]) == ("hlf", "dynamics")

        # The failed run also makes the integration amber: that alert fires in Prometheus,
        # and Alertmanager holds it back while ActionRequired says what to do.
        def amber_inhibited() -> bool:
            url = f"{chain.am_url}/api/v2/alerts?" + urlencode(
                {"filter": 'alertname="AccountingSyncRecordsFailed"'}
            )
            status, _, body = http_get(url)
            alerts = json.loads(body) if status == 200 else []
            return any(
                a["labels"].get("org") == "blindeforbundet" and a["status"]["inhibitedBy"]
                for a in alerts
            )

        wait_until(amber_inhibited, timeout=30, interval=0.2, what="inhibited amber alert")
        for path, body in chain.received.all():
            for alert in body.get("alerts", []):
                assert not (
                    alert["labels"]["alertname"] == "AccountingSyncRecordsFailed"
                    and alert["labels"].get("org") == "blindeforbundet"
                ), path
    engine.dispose()
