"""The Grafana tenant setup, run through the real command line against a stand-in of
Grafana's HTTP API (Grafana cannot run on this machine). The stand-in keeps state per
organization the way Grafana does (secrets are write-only: reads return only which secure
fields are set) and records every call, so a second run can be shown to change nothing.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.admin.grafana_tenants import (
    TENANT_DASHBOARD_UIDS,
    TENANT_DATASOURCE_UIDS,
    dashboard_problems,
    datasource_refs,
    load_dashboards,
    tenant_dashboard,
)
from tests.support import run_cli

ROOT = Path(__file__).resolve().parents[3]
REAL_DASHBOARDS = ROOT / "grafana" / "dashboards"
ADMIN = ("admin", "admin-secret")
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


class GrafanaStandIn:
    """The endpoints of Grafana's HTTP API that grafana-client calls for the setup."""

    def __init__(self) -> None:
        self.orgs: dict[int, str] = {1: "Main Org."}
        self.members: dict[int, set[str]] = {1: {ADMIN[0]}}
        self.datasources: dict[int, dict[str, dict[str, Any]]] = {1: {}}
        self.secrets: dict[int, dict[str, dict[str, str]]] = {1: {}}
        self.dashboards: dict[int, dict[str, dict[str, Any]]] = {1: {}}
        self.preferences: dict[int, dict[str, Any]] = {1: {"homeDashboardUID": ""}}
        self.calls: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def writes(self) -> list[tuple[str, str, int]]:
        return [call for call in self.calls if call[0] in WRITES]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        grafana = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self, method: str) -> None:
                expected = "Basic " + base64.b64encode(":".join(ADMIN).encode()).decode()
                if self.headers.get("Authorization") != expected:
                    return self._reply(401, {"message": "Unauthorized"})
                org = int(self.headers.get("X-Grafana-Org-Id") or 1)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with grafana.lock:
                    grafana.calls.append((method, self.path, org))
                    if ADMIN[0] not in grafana.members.get(org, set()):
                        return self._reply(401, {"message": "not a member of this organization"})
                    status, reply = grafana.route(method, self.path, org, body)
                self._reply(status, reply)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

        return Handler

    def _public(self, org: int, uid: str) -> dict[str, Any]:
        stored = copy.deepcopy(self.datasources[org][uid])
        stored["secureJsonFields"] = {key: True for key in self.secrets[org].get(uid, {})}
        return stored

    def route(self, method: str, path: str, org: int, body: Any) -> tuple[int, Any]:
        path = path.split("?")[0]
        if (method, path) == ("GET", "/api/orgs"):
            return 200, [{"id": i, "name": n} for i, n in self.orgs.items()]
        if (method, path) == ("POST", "/api/orgs"):
            if body["name"] in self.orgs.values():
                return 409, {"message": "Organization name taken"}
            new = max(self.orgs) + 1
            self.orgs[new] = body["name"]
            for table in (self.datasources, self.secrets, self.dashboards):
                table[new] = {}
            self.preferences[new] = {"homeDashboardUID": ""}
            self.members[new] = {ADMIN[0]}  # Grafana makes the creator an Admin of it
            return 200, {"message": "Organization created", "orgId": new}
        match = re.fullmatch(r"/api/orgs/(\d+)/users", path)
        if match:
            members = self.members.setdefault(int(match.group(1)), set())
            if method == "GET":
                return 200, [{"login": login, "role": "Admin"} for login in sorted(members)]
            members.add(body["loginOrEmail"])
            return 200, {"message": "User added to organization"}
        if (method, path) == ("GET", "/api/datasources"):
            return 200, [self._public(org, uid) for uid in self.datasources[org]]
        if (method, path) == ("POST", "/api/datasources"):
            uid = body["uid"]
            if uid in self.datasources[org]:
                return 409, {"message": "data source with the same uid already exists"}
            return self._store_datasource(org, uid, body)
        match = re.fullmatch(r"/api/datasources/uid/([^/]+)", path)
        if match:
            uid = match.group(1)
            if uid not in self.datasources[org]:
                return 404, {"message": "Data source not found"}
            if method == "GET":
                return 200, self._public(org, uid)
            if method == "PUT":
                return self._store_datasource(org, uid, body)
        if (method, path) == ("POST", "/api/dashboards/db"):
            dashboard = copy.deepcopy(body["dashboard"])
            old = self.dashboards[org].get(dashboard["uid"])
            dashboard["id"] = old["id"] if old else len(self.dashboards[org]) + 1
            dashboard["version"] = old["version"] + 1 if old else 1
            self.dashboards[org][dashboard["uid"]] = dashboard
            return 200, {"status": "success", "uid": dashboard["uid"], "id": dashboard["id"]}
        match = re.fullmatch(r"/api/dashboards/uid/([^/]+)", path)
        if match and method == "GET":
            if match.group(1) not in self.dashboards[org]:
                return 404, {"message": "Dashboard not found"}
            return 200, {"dashboard": self.dashboards[org][match.group(1)], "meta": {}}
        if path == "/api/org/preferences":
            if method == "GET":
                return 200, dict(self.preferences[org])
            self.preferences[org].update(body)
            return 200, {"message": "Preferences updated"}
        return 404, {"message": f"stand-in has no {method} {path}"}

    def _store_datasource(self, org: int, uid: str, body: dict[str, Any]) -> tuple[int, Any]:
        body = copy.deepcopy(body)
        secure = body.pop("secureJsonData", None) or {}
        self.secrets[org].setdefault(uid, {}).update(secure)
        body["id"] = self.datasources[org].get(uid, {}).get("id", len(self.datasources[org]) + 1)
        body["orgId"] = org
        self.datasources[org][uid] = body
        return 200, {"message": "Datasource added", "datasource": self._public(org, uid)}

    def add_org_made_elsewhere(self, name: str) -> int:
        new = max(self.orgs) + 1
        self.orgs[new] = name
        for table in (self.datasources, self.secrets, self.dashboards):
            table[new] = {}
        self.preferences[new] = {"homeDashboardUID": ""}
        self.members[new] = {"someone-else"}
        return new

    def org_id(self, name: str) -> int:
        return next(i for i, n in self.orgs.items() if n == name)


@pytest.fixture
def grafana() -> Iterator[GrafanaStandIn]:
    stand_in = GrafanaStandIn()
    stand_in.thread.start()
    yield stand_in
    stand_in.server.shutdown()
    stand_in.server.server_close()


FIXTURE_DASHBOARDS = {
    "accounting-sync-org": {
        "uid": "accounting-sync-org",
        "title": "Accounting sync: organization",
        "templating": {
            "list": [
                {
                    "name": "org",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "prometheus"},
                    "query": "label_values(accounting_sync_org_info, org)",
                }
            ]
        },
        "links": [
            {"title": "Overview", "url": "/d/accounting-sync-overview"},
            {"title": "Errors", "url": "/d/accounting-sync-errors?var-org=${org}"},
        ],
        "panels": [
            {
                "type": "stat",
                "datasource": {"type": "prometheus", "uid": "prometheus"},
                "targets": [{"expr": 'accounting_sync_health{org="$org"}'}],
            }
        ],
    },
    "accounting-sync-errors": {
        "uid": "accounting-sync-errors",
        "title": "Accounting sync: failed records",
        "templating": {"list": [{"name": "org", "type": "custom", "query": "hlf,other"}]},
        "panels": [
            {
                "type": "table",
                "datasource": {"type": "grafana-postgresql-datasource", "uid": "sync-log"},
                "targets": [{"rawSql": "SELECT * FROM sync_record_error WHERE org_id = '$org'"}],
            }
        ],
    },
}

TENANTS = [
    {"slug": "blindeforbundet", "name": "Norges Blindeforbund"},
    {"slug": "hlf", "name": "Hørselshemmedes Landsforbund"},
]


@pytest.fixture
def setup_files(tmp_path: Path) -> dict[str, Path]:
    dashboards = tmp_path / "dashboards"
    dashboards.mkdir()
    for uid, dashboard in FIXTURE_DASHBOARDS.items():
        (dashboards / f"{uid}.json").write_text(json.dumps(dashboard))
    tenants = tmp_path / "tenants.yml"
    tenants.write_text(yaml.safe_dump(TENANTS, allow_unicode=True))
    auth = tmp_path / "grafana-auth"
    auth.write_text(":".join(ADMIN) + "\n")
    passwords = tmp_path / "passwords"
    passwords.mkdir()
    for tenant in TENANTS:
        (passwords / f"accounting_sync_{tenant['slug']}").write_text(f"pw-{tenant['slug']}\n")
    return {"dashboards": dashboards, "tenants": tenants, "auth": auth, "passwords": passwords}


def _setup(
    grafana: GrafanaStandIn, files: dict[str, Path], *extra: str, cwd: Path | None = None
) -> Any:
    args = [
        "grafana-tenants",
        "--grafana.url", grafana.url,
        "--grafana.auth-file", str(files["auth"]),
        "--prometheus.proxy-url", "http://prom-label-proxy:8080",
        "--sync-log.host", "postgres:5432",
        "--sync-log.database", "synclog",
        "--db-password-dir", str(files["passwords"]),
    ]  # fmt: skip
    if "dashboards" in files:
        args += ["--dashboards", str(files["dashboards"])]
    if "tenants" in files:
        args += ["--tenants", str(files["tenants"])]
    return run_cli(*args, *extra, cwd=cwd)


def _assert_tenant_org(grafana: GrafanaStandIn, slug: str, name: str) -> None:
    org = grafana.org_id(name)
    datasources = grafana.datasources[org]
    assert set(datasources) == TENANT_DATASOURCE_UIDS

    prometheus = datasources["prometheus"]
    assert prometheus["url"] == "http://prom-label-proxy:8080"
    assert prometheus["jsonData"]["httpHeaderName1"] == "X-Accounting-Sync-Org"
    assert grafana.secrets[org]["prometheus"] == {"httpHeaderValue1": slug}

    sync_log = datasources["sync-log"]
    assert sync_log["type"] == "grafana-postgresql-datasource"
    assert sync_log["user"] == f"accounting_sync_{slug}"
    assert sync_log["jsonData"]["database"] == "synclog"
    assert grafana.secrets[org]["sync-log"] == {"password": f"pw-{slug}"}
    for datasource in datasources.values():
        assert datasource["readOnly"] is True
        # Nothing the browser can read carries the tenant's secrets.
        assert f"pw-{slug}" not in json.dumps(datasource)
    assert slug not in json.dumps(prometheus)

    assert set(grafana.dashboards[org]) == set(TENANT_DASHBOARD_UIDS)
    for dashboard in grafana.dashboards[org].values():
        assert dashboard_problems(dashboard, slug) == []
        org_var = [v for v in dashboard["templating"]["list"] if v["name"] == "org"]
        assert org_var and org_var[0]["type"] == "constant" and org_var[0]["query"] == slug
        assert org_var[0]["hide"] == 2
        assert "accounting-sync-overview" not in json.dumps(dashboard.get("links", []))
    assert grafana.preferences[org]["homeDashboardUID"] == "accounting-sync-org"


def test_without_dashboards_it_imports_the_installed_copy_from_any_directory(
    grafana, setup_files, tmp_path
):
    del setup_files["dashboards"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _setup(grafana, setup_files, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    for tenant in TENANTS:
        org = grafana.org_id(tenant["name"])
        for uid in TENANT_DASHBOARD_UIDS:
            committed = json.loads((REAL_DASHBOARDS / f"{uid}.json").read_text())
            imported = grafana.dashboards[org][uid]
            assert imported["title"] == committed["title"]
            assert len(imported["panels"]) == len(committed["panels"])


def test_one_grafana_organization_per_tenant_with_its_own_datasources_and_dashboards(
    grafana, setup_files
):
    result = _setup(grafana, setup_files)
    assert result.returncode == 0, result.stderr
    assert sorted(grafana.orgs.values()) == sorted(
        ["Main Org.", "Norges Blindeforbund", "Hørselshemmedes Landsforbund"]
    )
    for tenant in TENANTS:
        _assert_tenant_org(grafana, tenant["slug"], tenant["name"])
    # The main organization (global administrators) is left to file provisioning.
    assert grafana.datasources[1] == {} and grafana.dashboards[1] == {}
    mapping = result.stdout.strip().splitlines()[-1]
    assert mapping == (
        f"org_mapping = blindeforbundet:{grafana.org_id('Norges Blindeforbund')}:Viewer "
        f"hlf:{grafana.org_id('Hørselshemmedes Landsforbund')}:Viewer"
    )


def test_a_second_run_changes_nothing(grafana, setup_files):
    assert _setup(grafana, setup_files).returncode == 0
    first_writes = len(grafana.writes())
    assert first_writes > 0
    grafana.calls.clear()
    again = _setup(grafana, setup_files)
    assert again.returncode == 0, again.stderr
    assert grafana.writes() == []
    assert grafana.calls, "the second run did not even look"
    assert "no changes" in again.stdout


def test_drift_is_repaired_and_only_drift(grafana, setup_files):
    assert _setup(grafana, setup_files).returncode == 0
    hlf = grafana.org_id("Hørselshemmedes Landsforbund")
    grafana.datasources[hlf]["prometheus"]["url"] = "http://prometheus:9090"  # around the proxy
    grafana.dashboards[hlf]["accounting-sync-errors"]["templating"]["list"][0]["type"] = "query"
    grafana.calls.clear()
    result = _setup(grafana, setup_files)
    assert result.returncode == 0, result.stderr
    assert sorted((m, p) for m, p, org in grafana.writes()) == [
        ("POST", "/api/dashboards/db"),
        ("PUT", "/api/datasources/uid/prometheus"),
    ]
    assert {org for _, _, org in grafana.writes()} == {hlf}
    _assert_tenant_org(grafana, "hlf", "Hørselshemmedes Landsforbund")


def test_an_existing_organization_is_reused_and_the_admin_joins_it(grafana, setup_files):
    existing = grafana.add_org_made_elsewhere("Hørselshemmedes Landsforbund")
    result = _setup(grafana, setup_files)
    assert result.returncode == 0, result.stderr
    assert list(grafana.orgs.values()).count("Hørselshemmedes Landsforbund") == 1
    assert grafana.members[existing] == {"someone-else", ADMIN[0]}
    _assert_tenant_org(grafana, "hlf", "Hørselshemmedes Landsforbund")
    assert f"hlf:{existing}:Viewer" in result.stdout


def test_a_foreign_datasource_in_a_tenant_organization_is_reported(grafana, setup_files):
    assert _setup(grafana, setup_files).returncode == 0
    hlf = grafana.org_id("Hørselshemmedes Landsforbund")
    grafana.datasources[hlf]["direct"] = {"uid": "direct", "name": "Direct", "type": "prometheus"}
    result = _setup(grafana, setup_files)
    assert result.returncode == 0
    assert "hlf: unexpected datasource 'Direct'" in result.stderr


@pytest.mark.parametrize(
    ("break_it", "named"),
    [
        (lambda f: (f["passwords"] / "accounting_sync_hlf").unlink(), "--db-password-dir"),
        (lambda f: f["tenants"].write_text("- {slug: 'a b', name: X}\n"), "slug"),
        (lambda f: f["tenants"].write_text("hlf: X\n"), "--tenants"),
        (lambda f: (f["dashboards"] / "accounting-sync-org.json").unlink(), "--dashboards"),
        (lambda f: f["auth"].write_text(""), "--grafana.auth-file"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_touches_nothing(grafana, setup_files, break_it, named):
    break_it(setup_files)
    result = _setup(grafana, setup_files)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert grafana.writes() == []


def test_wrong_grafana_credentials_fail_without_changes(grafana, setup_files):
    setup_files["auth"].write_text("admin:wrong")
    result = _setup(grafana, setup_files)
    assert result.returncode != 0
    assert "Grafana" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert grafana.writes() == []


def test_the_isolation_check_catches_what_would_leak():
    leaky = copy.deepcopy(FIXTURE_DASHBOARDS["accounting-sync-org"])
    leaky["panels"][0]["datasource"] = {"type": "prometheus", "uid": "prometheus-direct"}
    leaky["templating"]["list"].append({"name": "ds", "type": "datasource", "query": "prometheus"})
    problems = dashboard_problems(leaky)
    assert any("prometheus-direct" in p for p in problems)
    assert any("'ds'" in p for p in problems)
    assert any("'org'" in p for p in problems)  # still a query variable


def test_the_real_dashboards_become_tenant_dashboards_that_cannot_reach_another_org():
    """Over grafana/dashboards/*.json as generated by `make dashboards`."""
    for source in load_dashboards(REAL_DASHBOARDS):
        dashboard = tenant_dashboard(source, "hlf")
        assert dashboard_problems(dashboard, "hlf") == []
        refs = {ref["uid"] for ref in datasource_refs(dashboard) if isinstance(ref, dict)}
        assert refs <= TENANT_DATASOURCE_UIDS | {"-- Grafana --", "grafana"}, refs
        assert refs & TENANT_DATASOURCE_UIDS, "a dashboard that queries nothing?"
        variables = dashboard["templating"]["list"]
        org = [v for v in variables if v["name"] == "org"]
        assert org == [v for v in variables if v["type"] == "constant"]
        assert org[0]["query"] == "hlf" and org[0]["hide"] == 2
        # Other variables query through the tenant's datasources only (checked above) and
        # none offers a choice of organization.
        for variable in variables:
            if variable["name"] != "org":
                assert "org_info, org)" not in str(variable.get("query")), variable


@pytest.mark.postgres
def test_from_the_sync_log_with_roles_the_grafana_datasource_reads_only_its_org(
    grafana, setup_files, pg_url, pg_admin
):
    """End to end on the database side: organizations come from the sync log, the command
    creates each tenant's role, and the credentials it gives Grafana see one org only."""
    import psycopg
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from exporter.source.engine import create_sync_log_engine, normalize_url
    from exporter.source.migrate import upgrade
    from exporter.source.pipeline import Pipeline

    suffix = os.urandom(4).hex()
    slugs = [f"a{suffix}", f"b{suffix}"]
    engine = create_sync_log_engine(normalize_url(pg_url))
    upgrade(engine)
    for slug in slugs:
        Pipeline(engine).register(slug, f"Org {slug}", "xledger")
    files = {k: v for k, v in setup_files.items() if k != "tenants"}
    passwords = files["passwords"] / "generated"
    files["passwords"] = passwords
    roles = [f"accounting_sync_{slug}" for slug in slugs]
    try:
        result = _setup(grafana, files, "--database-url", pg_url, "--ensure-db-roles")
        assert result.returncode == 0, result.stderr
        again = _setup(grafana, files, "--database-url", pg_url, "--ensure-db-roles")
        assert again.returncode == 0 and "no changes" in again.stdout
        for slug, role in zip(slugs, roles, strict=True):
            assert (passwords / role).stat().st_mode & 0o077 == 0
            org = grafana.org_id(f"Org {slug}")
            datasource = grafana.datasources[org]["sync-log"]
            url = make_url(pg_url)
            with psycopg.connect(
                host=url.host,
                port=url.port or 5432,
                dbname=url.database,
                user=datasource["user"],
                password=grafana.secrets[org]["sync-log"]["password"],
            ) as connection:
                seen = connection.execute("SELECT id FROM sync_organization").fetchall()
            assert seen == [(slug,)]
    finally:
        with engine.begin() as connection:
            for role in roles:
                exists = connection.execute(
                    text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}
                ).first()
                if exists:
                    connection.execute(text(f'DROP OWNED BY "{role}"'))
        engine.dispose()
        with pg_admin.connect() as connection:
            for role in roles:
                connection.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
