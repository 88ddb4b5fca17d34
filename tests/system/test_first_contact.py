"""What a person meets in the first hour (issue 14): curl on /metrics, probes behind basic
auth, a mistyped SQLite path, a never-migrated database, a busy port, the admin commands'
errors. Real processes, a real curl, a real PostgreSQL.
"""

from __future__ import annotations

import base64
import gzip
import os
import socket
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest

from exporter.admin.alert_receivers import generated_header
from tests.support import (
    EXPORTER,
    exporter_process,
    free_port,
    http_get,
    parse_metrics,
    require_binary,
    run_cli,
    stop_process,
    value,
    wait_until,
)

FAST = ["--refresh-interval", "500ms", "--refresh.notify", "false"]
RUNTIME_FAMILIES = ("process_", "python_")


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """A migrated SQLite sync log with one integration."""
    path = tmp_path / "sync-log.db"
    assert run_cli("db", "upgrade", "--database-url", f"sqlite:///{path}").returncode == 0
    from exporter.source.engine import create_sync_log_engine, normalize_url
    from exporter.source.pipeline import Pipeline

    engine = create_sync_log_engine(normalize_url(f"sqlite:///{path}"))
    Pipeline(engine).register("hlf", "Hørselshemmedes Landsforbund", "dynamics")
    engine.dispose()
    return path


def _curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    curl = require_binary("curl")
    return subprocess.run([curl, "-sS", *args], capture_output=True, timeout=30)


def test_curl_compressed_sees_every_series_and_gzip_q0_gets_plain_text(served, tmp_path):
    with exporter_process(["--database-url", f"sqlite:///{served}", *FAST], tmp_path) as exporter:
        url = exporter.url + "/metrics"
        headers_file = tmp_path / "headers.txt"
        compressed = _curl("--compressed", "-D", str(headers_file), url)
        assert compressed.returncode == 0, compressed.stderr
        headers = headers_file.read_text().lower()
        assert "content-encoding: gzip" in headers
        assert "vary: accept-encoding" in headers
        text = compressed.stdout.decode()
        samples = parse_metrics(text)
        assert value(samples, "accounting_sync_health", org="hlf", connector="dynamics") == 0
        for prefix in RUNTIME_FAMILIES:  # the families the second gzip member used to hold
            assert any(name.startswith(prefix) for name, _ in samples), prefix
        # The raw body: one gzip member that Python reads to the same series.
        raw = _curl("-H", "Accept-Encoding: gzip", url).stdout
        assert raw[:2] == b"\x1f\x8b"
        assert set(parse_metrics(gzip.decompress(raw).decode())) == set(samples)

        for refused in ("gzip;q=0", "identity, gzip;q=0", "*;q=0"):
            status, plain_headers, body = http_get(url, {"Accept-Encoding": refused})
            assert status == 200
            assert "Content-Encoding" not in plain_headers, refused
            assert plain_headers.get("Vary") == "Accept-Encoding"
            assert set(parse_metrics(body.decode())) == set(samples)


def _web_config(tmp_path: Path) -> Path:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=6)).decode()
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    return path


def test_probes_answer_without_credentials_and_carry_no_data(pg_url, tmp_path):
    """Before the first read (a database never migrated) and after: no 401, no data."""
    web = _web_config(tmp_path)
    args = ["--database-url", pg_url, "--web.config.file", str(web), *FAST]
    with exporter_process(args, tmp_path, ready=False) as exporter:
        wait_until(
            lambda: "cannot read the sync log" in exporter.log(), what="the failed first read"
        )
        status, _, body = http_get(exporter.url + "/readyz")
        assert (status, body) == (503, b"not ready\n")
        status, _, body = http_get(exporter.url + "/healthz")
        assert (status, body) == (200, b"OK\n")
        assert http_get(exporter.url + "/metrics")[0] == 401
        # Never migrated: it says there is nothing to serve yet, and how to fix it.
        log = exporter.log()
        assert "no snapshot to serve yet" in log
        assert "serving the last good snapshot" not in log
        assert "db upgrade" in log

        assert run_cli("db", "upgrade", "--database-url", pg_url).returncode == 0
        wait_until(lambda: http_get(exporter.url + "/readyz")[0] == 200, what="ready")
        assert http_get(exporter.url + "/readyz")[2] == b"OK\n"
        token = base64.b64encode(b"prometheus:s3cret").decode()
        status, _, body = http_get(exporter.url + "/metrics", {"Authorization": f"Basic {token}"})
        assert status == 200 and b"accounting_sync_exporter_source_up 1.0" in body


def test_a_mistyped_sqlite_path_creates_no_file_and_is_named(served, tmp_path):
    typo = served.with_name("sync-lgo.db")
    args = ["--database-url", f"sqlite:///{typo}", *FAST]
    with exporter_process(args, tmp_path, ready=False) as exporter:
        wait_until(
            lambda: value(exporter.metrics(), "accounting_sync_exporter_refresh_failures_total"),
            what="a failed refresh",
        )
        assert value(exporter.metrics(), "accounting_sync_exporter_source_up") == 0
        assert str(typo) in exporter.log() and "db upgrade" in exporter.log()
    assert not typo.exists()
    assert sorted(p.name for p in served.parent.glob("sync-lgo*")) == []

    generated = run_cli(
        "alertmanager-config", "--database-url", f"sqlite:///{typo}",
        "--base", str(_base(tmp_path)), "--contacts", str(_contacts(tmp_path)),
    )  # fmt: skip
    assert generated.returncode == 2, generated.stderr
    assert str(typo) in generated.stderr and len(generated.stderr.splitlines()) == 1
    assert not typo.exists()


def _base(tmp_path: Path) -> Path:
    path = tmp_path / "base.yml"
    path.write_text(
        "# Our Alertmanager: the on-call team owns this file.\n"
        "route:\n  receiver: admins  # everything unrouted\n"
        "receivers:\n  - name: admins\n"
    )
    return path


def _contacts(tmp_path: Path) -> Path:
    path = tmp_path / "contacts.yml"
    path.write_text("hlf:\n  webhook: [https://bridge.example.com/hlf]\n")
    return path


def test_alertmanager_config_says_loudly_that_its_output_is_generated(served, tmp_path):
    result = run_cli(
        "alertmanager-config", "--database-url", f"sqlite:///{served}",
        "--base", str(_base(tmp_path)), "--contacts", str(_contacts(tmp_path)),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    head = result.stdout.splitlines()[:3]
    assert head[0].startswith("# GENERATED by `accounting-sync-exporter alertmanager-config`")
    assert "base.yml" in head[1]
    assert "comments are not copied" in head[2]
    assert result.stdout.startswith(generated_header(str(tmp_path / "base.yml")))
    amtool = require_binary("amtool")
    output = tmp_path / "alertmanager.yml"
    output.write_text(result.stdout)
    check = subprocess.run(
        [amtool, "check-config", str(output)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_busy_port_exits_1_saying_the_port_is_taken(served):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli(
            "serve", "--database-url", f"sqlite:///{served}",
            "--web.listen-address", f"127.0.0.1:{port}",
        )  # fmt: skip
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "another process" in line
    assert "Traceback" not in result.stderr


def test_grafana_tenants_names_a_bad_url_and_a_missing_extra(tmp_path):
    auth = tmp_path / "auth"
    auth.write_text("admin:admin\n")
    common = [
        "grafana-tenants", "--grafana.auth-file", str(auth),
        "--prometheus.proxy-url", "http://proxy:8080", "--sync-log.host", "pg:5432",
        "--sync-log.database", "synclog", "--db-password-dir", str(tmp_path),
    ]  # fmt: skip
    bad_url = run_cli(*common, "--grafana.url", "not-a-url")
    assert bad_url.returncode == 2
    (line,) = bad_url.stderr.strip().splitlines()
    assert "--grafana.url" in line and "not-a-url" in line
    assert "urllib3" not in bad_url.stderr and "Traceback" not in bad_url.stderr

    # Without the [tenancy] extra (its client made unimportable in a real process).
    without_extra = subprocess.run(
        [
            sys.executable, "-c",
            "import sys; sys.modules['grafana_client'] = None; "
            "from exporter.cli import main; sys.exit(main(sys.argv[1:]))",
            *common, "--grafana.url", f"http://127.0.0.1:{free_port()}",
            "--tenants", str(_tenants(tmp_path)),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert without_extra.returncode == 2, without_extra.stderr
    (line,) = without_extra.stderr.strip().splitlines()
    assert "[tenancy]" in line and "Traceback" not in without_extra.stderr


def _tenants(tmp_path: Path) -> Path:
    path = tmp_path / "tenants.yml"
    path.write_text("- {slug: hlf, name: HLF}\n")
    return path


def test_grafana_tenants_help_names_the_tenant_role_convention():
    result = run_cli("grafana-tenants", "--help")
    assert "accounting_sync_<slug>" in result.stdout


def test_nothing_is_printed_on_stdout_by_exporter_errors():
    result = subprocess.run([*EXPORTER, "db"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("usage: accounting-sync-exporter db")


def test_the_container_probe_follows_the_port_and_tls_and_needs_no_password(served, tmp_path):
    openssl = require_binary("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=exporter",
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    web = _web_config(tmp_path)
    web.write_text(
        web.read_text() + "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"
    )
    port = free_port()
    env = {
        "ACCOUNTING_SYNC_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "ACCOUNTING_SYNC_WEB_CONFIG_FILE": str(web),
    }
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [*EXPORTER, "serve", "--database-url", f"sqlite:///{served}", *FAST],
            stdout=log_file, stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )  # fmt: skip
    try:
        ready = wait_until(
            lambda: (r := run_cli("healthcheck", "--ready", env=env)).returncode == 0 and r,
            timeout=30,
            what="the probe to pass",
        )
        assert ready.stdout.strip() == f"https://127.0.0.1:{port}/readyz: OK"
        assert run_cli("healthcheck", env=env).returncode == 0
    finally:
        stop_process(process)
    down = run_cli("healthcheck", env=env)
    assert down.returncode == 1
    (line,) = down.stderr.strip().splitlines()
    assert f"127.0.0.1:{port}/healthz" in line
