"""The status page's event streams on the real HTTP server: bounds, stalls, resync, headers.

The refresher reads hand-built snapshots here (its reader is a parameter), so each test
decides exactly what changes between two refreshes.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from exporter.model import IntegrationFacts, Snapshot
from exporter.serve.refresher import Refresher
from exporter.serve.server import MetricsServer
from exporter.serve.status import AccessRules, StatusSite
from exporter.source.engine import create_sync_log_engine, normalize_url
from tests.support import http_get, wait_until

NOW = datetime.now(UTC)


def facts(org: str, failed: int = 0, name: str | None = None) -> IntegrationFacts:
    return IntegrationFacts(
        org_id=org,
        org_name=name or f"Organization {org}",
        connector="xledger",
        active=True,
        stale_after_seconds=86400,
        created_at=NOW - timedelta(days=3),
        last_run_status="partial" if failed else "succeeded",
        last_run_finished_at=NOW - timedelta(minutes=1),
        last_run_records_failed=failed,
        last_success_at=NOW - timedelta(minutes=1),
    )


@dataclass
class Site:
    url: str
    refresher: Refresher
    snapshot: list[tuple[IntegrationFacts, ...]]

    def publish(self, *integrations: IntegrationFacts) -> None:
        self.snapshot[0] = integrations
        assert self.refresher.refresh()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_sync_log_engine(normalize_url(f"sqlite:///{tmp_path / 'log.db'}"))
    yield engine
    engine.dispose()


@pytest.fixture
def site(engine: Engine) -> Iterator[Site]:
    current: list[tuple[IntegrationFacts, ...]] = [(facts("hlf"), facts("dnt", failed=2))]
    refresher = Refresher(
        engine, 3600, reader=lambda _: Snapshot(read_at=datetime.now(UTC), integrations=current[0])
    )
    refresher.refresh()
    status = StatusSite(refresher, AccessRules(None, auth_required=False), max_streams=2,
                        keepalive=0.5)  # fmt: skip
    server = MetricsServer(("127.0.0.1", 0), refresher, status=status)
    server.start()
    yield Site(f"http://127.0.0.1:{server.port}", refresher, current)
    server.close()


class Stream:
    """One raw event stream: what a browser's EventSource reads."""

    def __init__(
        self, url: str, path: str = "/status/events", headers: dict[str, str] | None = None
    ):
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=10)
        self.connection.request("GET", path, headers=headers or {})
        self.response = self.connection.getresponse()

    def next_event(self) -> tuple[str, str, dict[str, object]]:
        name = event_id = ""
        while True:
            line = self.response.fp.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                self.response.fp.readline()
                return name, event_id, data

    def close(self) -> None:
        self.response.close()  # the response holds the socket too
        self.connection.close()


def test_one_stream_past_the_bound_gets_a_clear_503_and_the_rest_keep_working(site: Site) -> None:
    streams = [Stream(site.url), Stream(site.url)]
    assert [s.response.status for s in streams] == [200, 200]
    status, headers, body = http_get(site.url + "/status/events")
    assert status == 503
    assert headers["Retry-After"] == "10"
    assert b"Too many open live-update streams (2)" in body
    assert http_get(site.url + "/metrics")[0] == 200
    assert http_get(site.url + "/status")[0] == 200
    site.publish(facts("hlf", failed=1), facts("dnt", failed=2))
    for stream in streams:  # the open streams still get every change
        name, _, data = stream.next_event()  # the full first event
        while "xledger:hlf" not in data["rows"] or "Amber" not in str(data["rows"]):
            name, _, data = stream.next_event()
        assert name == "overview"
    streams[0].close()
    opened: list[Stream] = []

    def slot_freed() -> bool:
        opened.append(Stream(site.url))
        return opened[-1].response.status == 200

    wait_until(slot_freed, what="a freed stream slot")
    for stream in (streams[1], *opened):
        stream.close()


def test_a_stalled_client_holds_up_neither_refreshes_nor_other_clients(site: Site) -> None:
    host, port = site.url.removeprefix("http://").split(":")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((host, int(port)))
    stalled.sendall(b"GET /status/events HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
    healthy = Stream(site.url)
    healthy.next_event()
    big = "x" * 200_000  # many large events: the stalled socket's buffers fill at once
    for round_ in range(20):
        done = threading.Event()

        def refresh(n: int = round_, finished: threading.Event = done) -> None:
            site.publish(facts("hlf", failed=n % 2, name=f"{big}{n}"), facts("dnt", failed=2))
            finished.set()

        threading.Thread(target=refresh, daemon=True).start()
        wait_until(done.is_set, timeout=5, what=f"refresh {round_} despite the stalled client")
    wait_until(lambda: "x19" in json.dumps(healthy.next_event()[2]), timeout=20,
               what="the newest state at the healthy client")  # fmt: skip
    stalled.close()
    healthy.close()


def test_a_reconnect_with_the_current_event_id_gets_only_what_is_new(site: Site) -> None:
    first = Stream(site.url)
    _, event_id, data = first.next_event()
    assert set(data["rows"]) == {"xledger:hlf", "xledger:dnt"}  # a full sync on a fresh stream
    first.close()
    again = Stream(site.url, headers={"Last-Event-ID": event_id})
    site.publish(facts("hlf", failed=3), facts("dnt", failed=2))
    _, newer, data = again.next_event()
    assert newer != event_id
    assert set(data["rows"]) == {"xledger:hlf"}  # only the row that changed
    assert "order" not in data  # amber beside amber: the rows keep their order
    site.publish(facts("hlf", failed=3), facts("dnt", failed=0))
    _, _, data = again.next_event()
    assert set(data["rows"]) == {"xledger:dnt"}
    assert data["order"] == ["xledger:hlf", "xledger:dnt"]  # worst first: amber above green
    again.close()


def test_pages_carry_security_headers_and_assets_are_cached(site: Site) -> None:
    status, headers, body = http_get(site.url + "/status")
    assert status == 200
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"
    assert b"<script>" not in body  # no inline script: the only one has a src
    script = body.split(b'<script src="', 1)[1].split(b'"', 1)[0].decode()
    status, headers, _ = http_get(site.url + script)
    assert status == 200 and "immutable" in headers["Cache-Control"]
    assert headers["Content-Type"].startswith("text/javascript")
    assert http_get(site.url + "/status/org/nobody")[0] == 404
    assert http_get(site.url + "/status/static/../../etc/passwd")[0] == 404


def test_a_page_loaded_a_refresh_ago_catches_up_with_only_the_changes(site: Site) -> None:
    _, _, page = http_get(site.url + "/status")
    since = page.decode().split('data-event-id="', 1)[1].split('"', 1)[0]
    site.publish(
        facts("hlf", failed=4), facts("dnt", failed=2)
    )  # after the page, before its stream
    late = Stream(site.url, f"/status/events?since={since}")
    _, event_id, data = late.next_event()
    assert set(data["rows"]) == {"xledger:hlf"}
    assert event_id != since
    late.close()
    stranger = Stream(site.url, "/status/events?since=another-process-7")
    _, _, data = stranger.next_event()
    assert set(data["rows"]) == {"xledger:hlf", "xledger:dnt"}  # unknown: everything
    stranger.close()
