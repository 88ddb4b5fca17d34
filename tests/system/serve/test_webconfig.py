"""The protected endpoint: exporter-toolkit web config with TLS and bcrypt basic auth.

A self-signed certificate is made with the ``openssl`` command, the exporter runs as a real
process, and a client that verifies that certificate talks to it over a real TLS handshake.
Wrong or missing credentials get 401 on every path but the two probes, which answer
only "OK" / "not ready" without credentials; the log, even at debug level, holds no secret.
"""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import pytest

from exporter.cli import main
from tests.support import (
    EXPORTER,
    free_port,
    http_get,
    parse_metrics,
    require_binary,
    run_cli,
    stop_process,
    value,
    wait_until,
)

PASSWORD = "correct-horse-battery-staple"
WRONG = "Tr0ub4dor&3"
DB_PASSWORD = "db-pa55word-never-logged"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = require_binary("openssl")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def web_config(tmp_path: Path, certificate: tuple[Path, Path]) -> Path:
    cert, key = certificate
    (tmp_path / "cert.pem").write_bytes(cert.read_bytes())
    (tmp_path / "key.pem").write_bytes(key.read_bytes())
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=6)).decode()
    path = tmp_path / "web.yml"
    # Relative file names resolve against the web config's directory, as in exporter-toolkit.
    path.write_text(
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
    )
    return path


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@contextmanager
def tls_exporter(args: list[str], tmp_path: Path, context: ssl.SSLContext) -> Iterator[tuple]:
    port = free_port()
    log_path = tmp_path / "exporter.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [*EXPORTER, "serve", "--web.listen-address", f"127.0.0.1:{port}", *args],
            stdout=log_file, stderr=subprocess.STDOUT, text=True, env={**os.environ},
        )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, log_path.read_text()
            return (
                http_get(url + "/readyz", _basic("prometheus", PASSWORD), context=context)[0] == 200
            )

        wait_until(ready, timeout=20, what="the TLS exporter to be ready")
        yield url, process, log_path
    finally:
        stop_process(process)


def test_tls_and_basic_auth_protect_every_data_path_and_no_secret_is_logged(
    pg_url, web_config, certificate, tmp_path
):
    assert run_cli("db", "upgrade", "--database-url", pg_url).returncode == 0
    # Trust authentication ignores the password, so it can be a marker to look for in the log.
    url_with_password = pg_url.replace("postgres@", f"postgres:{DB_PASSWORD}@", 1)
    assert DB_PASSWORD in url_with_password
    verify = ssl.create_default_context(cafile=str(certificate[0]))
    args = [
        "--database-url", url_with_password, "--web.config.file", str(web_config),
        "--log.level", "debug",
    ]  # fmt: skip
    with tls_exporter(args, tmp_path, verify) as (url, process, log_path):
        status, headers, body = http_get(
            url + "/metrics", _basic("prometheus", PASSWORD), context=verify
        )
        assert status == 200
        assert value(parse_metrics(body.decode()), "accounting_sync_exporter_source_up") == 1
        assert headers.get("X-Content-Type-Options") == "nosniff"

        for path in ("/metrics", "/", "/metrics/../healthz", "/healthzx"):
            for credentials in (
                {},
                _basic("prometheus", WRONG),
                _basic("someone", PASSWORD),
                {"Authorization": "Basic not-base64!"},
                {"Authorization": f"Bearer {PASSWORD}"},
            ):
                status, headers, body = http_get(url + path, credentials, context=verify)
                assert status == 401, (path, credentials)
                assert "Basic" in headers.get("WWW-Authenticate", "")
                assert b"accounting_sync" not in body

        # The certificate is what the client verified: a client trusting nothing else fails.
        with pytest.raises(urllib.error.URLError) as refused:
            http_get(url + "/metrics", _basic("prometheus", PASSWORD))
        assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
        # Plain HTTP on the TLS port gets no metrics.
        plain = url.replace("https://", "http://")
        try:
            status, _, body = http_get(plain + "/metrics", _basic("prometheus", PASSWORD))
        except (OSError, urllib.error.URLError):
            pass
        else:
            assert status != 200 and b"accounting_sync" not in body

        # The probes: through without credentials (a container HEALTHCHECK has none), and
        # with wrong ones, yet they carry nothing read from the sync log.
        for path in ("/healthz", "/readyz", "/healthz?verbose=1"):
            for credentials in ({}, _basic("prometheus", WRONG), _basic("prometheus", PASSWORD)):
                status, headers, body = http_get(url + path, credentials, context=verify)
                assert (status, body) == (200, b"OK\n"), (path, credentials)
                assert "WWW-Authenticate" not in headers
        assert process.poll() is None
    log = log_path.read_text()
    assert "https://" in log  # it says where it listens
    key_body = certificate[1].read_text().splitlines()[1]
    hashed = web_config.read_text().split("prometheus: '")[1].split("'")[0]
    for secret in (
        PASSWORD,
        WRONG,
        DB_PASSWORD,
        hashed,
        key_body,
        _basic("prometheus", PASSWORD)["Authorization"].split()[1],
    ):
        assert secret not in log, f"secret in the log: {secret[:6]}..."
    assert "Traceback" not in log, log


def _check(capsys, *argv: str) -> tuple[int, list[str]]:  # type: ignore[no-untyped-def]
    code = main(["serve", "--check-config", "--database-url", "sqlite:///x.db", *argv])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("tls_config: {}\n", "tls_config"),
        ("tls_server_config:\n  cert_file: cert.pem\n", "tls_server_config.key_file"),
        ("tls_server_config:\n  cert_file: missing.pem\n  key_file: key.pem\n", "cert_file"),
        ("tls_server_config:\n  cert_file: 5\n  key_file: key.pem\n", "cert_file"),
        ("tls_server_config:\n  certfile: cert.pem\n", "tls_server_config.certfile"),
        ("tls_server_config: [cert.pem]\n", "tls_server_config"),
        (
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  min_version: TLS9\n",
            "tls_server_config.min_version",
        ),
        (
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"
            "  min_version: [TLS12]\n",
            "tls_server_config.min_version",
        ),
        (
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"
            "  client_auth_type: [RequireAnyClientCert]\n",
            "tls_server_config.client_auth_type",
        ),
        (
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"
            "  client_auth_type: RequireAndVerifyClientCert\n",
            "tls_server_config.client_ca_file",
        ),
        ("basic_auth_users:\n  admin: plaintext-password\n", "basic_auth_users.admin"),
        ("basic_auth_users:\n  admin: '$2b$10$tooshort'\n", "basic_auth_users.admin"),
        ("basic_auth_users: [admin]\n", "basic_auth_users"),
        ("http_server_config:\n  headers: [X-Frame-Options]\n", "http_server_config.headers"),
        ("http_server_config:\n  gzip: true\n", "http_server_config.gzip"),
        ("- a list\n", "top level"),
        ("basic_auth_users: {admin: x\n", "YAML"),
    ],
)
def test_a_bad_web_config_is_named(capsys, tmp_path, certificate, content, named):
    for item in certificate:
        (tmp_path / item.name).write_bytes(item.read_bytes())
    path = tmp_path / "web.yml"
    path.write_text(content)
    code, lines = _check(capsys, "--web.config.file", str(path))
    assert code == 2, lines
    assert len(lines) == 1 and named in lines[0], lines
    assert "plaintext-password" not in lines[0]


def test_a_web_config_that_is_not_text_is_named(capsys, tmp_path):
    path = tmp_path / "web.yml"
    path.write_bytes(b"\xff\xfe\x00binary")
    code, lines = _check(capsys, "--web.config.file", str(path))
    assert code == 2 and len(lines) == 1 and "--web.config.file" in lines[0], lines


def test_a_valid_web_config_passes_the_check(capsys, web_config):
    code, lines = _check(capsys, "--web.config.file", str(web_config))
    assert code == 0, lines
