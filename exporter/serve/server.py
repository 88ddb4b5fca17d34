"""The HTTP edge: /metrics from the cached exposition, /healthz, /readyz and a landing page.

The standard library's threading server is enough here because a scrape only copies
bytes that the refresher rendered earlier; it never waits on the database. A custom
handler (rather than prometheus_client's) is what lets the exporter-toolkit web config
(TLS, basic auth, extra headers) apply to every path; basic auth spares only the
two probes, which carry no data.
"""

from __future__ import annotations

import html
import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from exporter import __version__
from exporter.exposition.body import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    wants_gzip,
    wants_openmetrics,
)
from exporter.serve.refresher import Refresher
from exporter.serve.status import AccessRules, StatusSite
from exporter.serve.webconfig import WebConfig

log = logging.getLogger(__name__)

# The probes answer without credentials (see docs/install.md): "OK" or "not ready", no data.
PROBES = ("/healthz", "/readyz")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        refresher: Refresher,
        telemetry_path: str,
        web: WebConfig,
        status: StatusSite,
    ) -> None:
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        if host == "":
            # ":9839" means every interface, as in Go; prefer dual-stack when available.
            self.address_family = socket.AF_INET6 if socket.has_dualstack_ipv6() else socket.AF_INET
            address = ("::" if self.address_family == socket.AF_INET6 else "0.0.0.0", address[1])
        self.refresher = refresher
        self.telemetry_path = telemetry_path
        self.web = web
        self.status = status
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line instead of socketserver's traceback on stderr.

        A client that fails the TLS handshake (plain HTTP, an untrusted certificate) or
        drops the connection is the client's problem; a traceback per probe would flood
        the log and bury real errors.
        """
        error = sys.exc_info()[1]
        fields = {"client": client_address[0], "error": f"{type(error).__name__}: {error}"}
        if isinstance(error, OSError | ValueError):  # ssl.SSLError is an OSError
            log.debug("request failed", extra=fields)
        else:  # a bug of ours: worth seeing, still without a traceback per request
            log.error("request failed", extra=fields)

    def get_request(self) -> tuple[Any, Any]:
        connection, address = super().get_request()
        if self.web.tls is not None:
            # Handshake in the request thread, not here, so one slow client cannot stall accept.
            connection = self.web.tls.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
        return connection, address


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = f"accounting-sync-exporter/{__version__}"
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(30)
        if self.server.web.tls is not None:
            try:
                self.connection.do_handshake()
            except (OSError, ValueError) as exc:
                log.debug("TLS handshake failed", extra={"error": str(exc)})
                raise

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http request", extra={"client": self.client_address[0], "line": format % args})

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path in PROBES:
            # Liveness and readiness answer without credentials, so that a container or
            # Kubernetes probe keeps working once basic auth is configured; they say only
            # "OK" or "not ready", nothing read from the sync log.
            self._probe(path)
            return
        identity = self.server.web.authorized(self.headers.get("Authorization"))
        if identity is None:
            self._send(
                401,
                b"Unauthorized\n",
                "text/plain; charset=utf-8",
                {"WWW-Authenticate": 'Basic realm="accounting-sync-exporter"'},
            )
            return
        if self.server.status.intercept(self, path, query, identity.user):
            return  # a status page, or a path this user may not see (serve/status/)
        if path == self.server.telemetry_path:
            self._metrics()
        elif path == "/":
            self._landing()
        else:
            self._send(404, b"Not Found\n", "text/plain; charset=utf-8")

    def _probe(self, path: str) -> None:
        if path == "/healthz" or self.server.refresher.ready:
            self._send(200, b"OK\n", "text/plain; charset=utf-8")
        else:
            self._send(503, b"not ready\n", "text/plain; charset=utf-8")

    def _metrics(self) -> None:
        openmetrics = wants_openmetrics(self.headers.get("Accept"))
        compressed = wants_gzip(self.headers.get("Accept-Encoding"))
        # Pieces written one by one, never joined: no copy of a large body per scrape.
        body = self.server.refresher.exposition.chunks(
            openmetrics=openmetrics, compressed=compressed
        )
        # Caches must not hand a gzip body to a client that did not ask for one.
        extra = {"Vary": "Accept-Encoding"}
        if compressed:
            extra["Content-Encoding"] = "gzip"
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        self._send(200, body, content_type, extra)

    def _landing(self) -> None:
        path = html.escape(self.server.telemetry_path)
        page = (
            "<!doctype html><html><head><title>Accounting sync exporter</title></head><body>"
            "<h1>Accounting sync exporter</h1>"
            f"<p>Version {html.escape(__version__)}</p><ul>"
            f'<li><a href="{path}">Metrics</a></li>'
            '<li><a href="/status">Status page</a></li>'
            '<li><a href="/healthz">Health</a></li><li><a href="/readyz">Readiness</a></li>'
            "</ul></body></html>"
        )
        self._send(200, page.encode(), "text/html; charset=utf-8")

    def _send(
        self,
        code: int,
        body: bytes | list[bytes],
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        parts = [body] if isinstance(body, bytes) else body
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(sum(len(part) for part in parts)))
            for name, value in {**self.server.web.headers, **(headers or {})}.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                for part in parts:
                    self.wfile.write(part)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("client went away", extra={"client": self.client_address[0]})


class MetricsServer:
    """Serves in a background thread; ``close()`` stops accepting and frees the port."""

    def __init__(
        self,
        address: tuple[str, int],
        refresher: Refresher,
        telemetry_path: str = "/metrics",
        web: WebConfig | None = None,
        status: StatusSite | None = None,
    ) -> None:
        web = web or WebConfig()
        status = status or StatusSite(refresher, AccessRules(None, auth_required=web.auth_required))
        self._server = _Server(address, refresher, telemetry_path, web, status)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def scheme(self) -> str:
        return "https" if self._server.web.tls is not None else "http"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.status.close()  # ends the open event streams
        self._server.shutdown()
        self._server.server_close()
