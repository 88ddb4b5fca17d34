"""``accounting-sync-exporter healthcheck``: the container's probe of its own exporter.

A HEALTHCHECK that hard-codes ``http://127.0.0.1:9839/healthz`` turns the container
unhealthy as soon as the port or TLS changes. This reads the listen address and the web
config the way ``serve`` does (``--config``, ``ACCOUNTING_SYNC_*``, flags), so the probe
follows the exporter's own configuration. It asks /healthz (or /readyz), which answer
without credentials and carry no data, so no password is needed here either.
"""

from __future__ import annotations

import http.client
import ssl

from exporter.config import Settings
from exporter.errors import OutsideFailure
from exporter.serve.webconfig import WebConfig, load_web_config


def _local_host(host: str) -> str:
    """Where the exporter can be reached from inside its own container."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def probe(settings: Settings, *, ready: bool = False, timeout: float = 3.0) -> str:
    """One GET of the probe path; returns its answer, or raises ``OutsideFailure``."""
    web = load_web_config(settings.web_config_file) if settings.web_config_file else WebConfig()
    host, port = settings.web_listen_address
    host = _local_host(host)
    path = "/readyz" if ready else "/healthz"
    connection: http.client.HTTPConnection
    if web.tls is not None:
        # The exporter's own certificate need not name 127.0.0.1; the probe sends nothing
        # secret and reads only "OK", so it does not verify whom it talks to.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    scheme = "https" if web.tls is not None else "http"
    url = f"{scheme}://{host}:{port}{path}"
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read(256).decode("utf-8", "replace").strip()
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        raise OutsideFailure(f"{url}: {exc}") from exc
    finally:
        connection.close()
    if response.status != 200:
        raise OutsideFailure(f"{url}: {response.status} {body}")
    return f"{url}: {body}"
