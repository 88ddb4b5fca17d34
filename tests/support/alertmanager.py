"""A real Alertmanager for tests, and a small HTTP server standing in for its receivers.

Only the far end is fake: the receivers' URLs point at ``receiver_server``, which records each
notification, so a test sees exactly what Alertmanager decided to send, to whom, and when.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.support import background_process, free_port, http_get, require_binary, wait_ready


@dataclass
class Received:
    """Every notification POSTed to the fake receivers, as (path, JSON body)."""

    items: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, path: str, body: dict[str, Any]) -> None:
        with self.lock:
            self.items.append((path, body))

    def at(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for p, body in self.items if p == path]

    def all(self) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return list(self.items)


@contextmanager
def receiver_server() -> Iterator[tuple[str, Received]]:
    """An HTTP server that records every POST; yields its URL and the record."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.add(self.path, json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def webhooks_only(config: Mapping[str, Any], receiver_url: str) -> dict[str, Any]:
    """The configuration with every receiver's notifications sent to ``receiver_url``:
    ``/webhook/<receiver>`` (Alertmanager's JSON) and ``/slack/<receiver>`` (chat text).
    Mail is dropped (no mail server here); the routing tree and inhibitions are untouched."""
    config = yaml.safe_load(yaml.safe_dump(dict(config)))
    for receiver in config["receivers"]:
        name = receiver["name"]
        receiver.pop("email_configs", None)
        for slack in receiver.get("slack_configs", []):
            slack["api_url"] = f"{receiver_url}/slack/{name}"
        receiver["webhook_configs"] = [
            {"url": f"{receiver_url}/webhook/{name}", "send_resolved": True}
        ]
    return dict(config)


@contextmanager
def alertmanager_server(config: Mapping[str, Any], work: Path) -> Iterator[str]:
    """A real ``prometheus-alertmanager`` with ``config``, on a free port, without clustering;
    yields its URL once it is ready."""
    binary = require_binary("prometheus-alertmanager")
    port = free_port()
    config_path = work / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(dict(config), allow_unicode=True))
    log_path = work / "alertmanager.log"
    args = [
        binary,
        f"--config.file={config_path}",
        f"--storage.path={work / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    with background_process(args, log_path) as process:
        url = f"http://127.0.0.1:{port}"
        wait_ready(f"{url}/-/ready", process, log_path)
        yield url


def post_alerts(am_url: str, alerts: Sequence[Mapping[str, Any]]) -> None:
    """Send alerts the way Prometheus does (API v2). Without ``startsAt`` Alertmanager takes
    the time of arrival, so group waits count from now, as for a freshly firing alert."""
    request = urllib.request.Request(
        f"{am_url}/api/v2/alerts",
        data=json.dumps(list(alerts)).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200, response.read()


def alert_states(am_url: str) -> list[dict[str, Any]]:
    """Every alert Alertmanager holds, with its status (state, inhibitedBy, silencedBy)."""
    status, _, body = http_get(f"{am_url}/api/v2/alerts")
    assert status == 200, body
    return list(json.loads(body))
