"""Grafana for tenants: one Grafana organization per customer organization, set up through
Grafana's HTTP API (``grafana-client``), idempotently.

In each tenant organization:

- datasource ``prometheus`` goes through prom-label-proxy, which enforces ``org=<slug>``.
  The slug travels in a custom HTTP header whose value sits in ``secureJsonData``: Grafana's
  server adds it to every query and never shows it to the browser, so no URL, variable or
  edited query can change it;
- datasource ``sync-log`` logs in to PostgreSQL as the tenant's role, which row-level
  security limits to its organization (``exporter.admin.roles``);
- the organization and error-details dashboards, with the ``org`` variable turned into a
  hidden constant and links to the global overview removed.

The dashboards refer to datasources by these uids (the convention shared with
``grafana/``), so the same JSON works in the main organization, where the uids name the
unrestricted datasources. Tenant users are Viewers: an organization Admin could add a
datasource pointing straight at Prometheus or the database and bypass both guards.

The pure functions build what Grafana should hold; ``TenantSetup`` compares it with what
Grafana holds and writes only the differences, so a second run changes nothing.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from exporter.errors import UsageError

if TYPE_CHECKING:  # an optional dependency (the tenancy extra), imported when used
    from grafana_client import GrafanaApi

log = logging.getLogger(__name__)

PROMETHEUS_UID = "prometheus"
SYNC_LOG_UID = "sync-log"
TENANT_DATASOURCE_UIDS = frozenset({PROMETHEUS_UID, SYNC_LOG_UID})
# Grafana's built-in annotation source reads the current organization's annotations only.
BUILTIN_UIDS = frozenset({"-- Grafana --", "grafana"})
TENANT_DASHBOARD_UIDS = ("accounting-sync-org", "accounting-sync-errors")
ORG_VARIABLE = "org"
DEFAULT_PROXY_HEADER = "X-Accounting-Sync-Org"
SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class TenantSetupError(UsageError):
    """Bad input for the setup; ``str()`` is the one line shown to the user."""


@dataclass(frozen=True)
class Tenant:
    slug: str
    name: str

    def __post_init__(self) -> None:
        # The slug becomes a PromQL label value, a SQL literal in dashboards and a role name:
        # a conservative alphabet keeps all three safe without quoting rules of their own.
        if not SLUG.match(self.slug):
            raise TenantSetupError(f"organization {self.slug!r}: not a safe slug [A-Za-z0-9_.-]")
        if not self.name.strip():
            raise TenantSetupError(f"organization {self.slug!r}: empty display name")


@dataclass(frozen=True)
class Targets:
    """Where Grafana's server reaches the tenant-facing back ends."""

    proxy_url: str
    sync_log_host: str
    sync_log_database: str
    proxy_header: str = DEFAULT_PROXY_HEADER
    sync_log_sslmode: str = "require"


# --- what Grafana should hold (pure) ---------------------------------------------------------


def prometheus_datasource(tenant: Tenant, targets: Targets) -> dict[str, Any]:
    return {
        "uid": PROMETHEUS_UID,
        "name": "Prometheus",
        "type": "prometheus",
        "access": "proxy",
        "url": targets.proxy_url,
        "isDefault": True,
        "basicAuth": False,
        "readOnly": True,
        "jsonData": {
            "httpMethod": "POST",
            "timeInterval": "15s",
            "httpHeaderName1": targets.proxy_header,
        },
        "secureJsonData": {"httpHeaderValue1": tenant.slug},
    }


def sync_log_datasource(
    tenant: Tenant, targets: Targets, role: str, password: str
) -> dict[str, Any]:
    return {
        "uid": SYNC_LOG_UID,
        "name": "Sync log",
        "type": "grafana-postgresql-datasource",
        "access": "proxy",
        "url": targets.sync_log_host,
        "user": role,
        "isDefault": False,
        "basicAuth": False,
        "readOnly": True,
        "jsonData": {
            "database": targets.sync_log_database,
            "sslmode": targets.sync_log_sslmode,
            "postgresVersion": 1500,
            "timescaledb": False,
        },
        "secureJsonData": {"password": password},
    }


def datasource_refs(node: Any) -> Iterable[Any]:
    """Every ``datasource`` reference in a dashboard: panels, targets, variables, annotations."""
    if isinstance(node, dict):
        if "datasource" in node:
            yield node["datasource"]
        for key, child in node.items():
            if key != "datasource":
                yield from datasource_refs(child)
    elif isinstance(node, list):
        for child in node:
            yield from datasource_refs(child)


def dashboard_problems(dashboard: Mapping[str, Any], slug: str | None = None) -> list[str]:
    """Why a dashboard could reach beyond one tenant (empty when it cannot)."""
    problems = []
    for ref in datasource_refs(dashboard):
        uid = ref.get("uid") if isinstance(ref, dict) else ref
        if ref is None or uid in TENANT_DATASOURCE_UIDS or uid in BUILTIN_UIDS:
            continue
        problems.append(f"datasource reference {ref!r} is not one of the tenant datasources")
    for variable in dashboard.get("templating", {}).get("list", []):
        name, kind = variable.get("name"), variable.get("type")
        if kind == "datasource":
            problems.append(f"variable {name!r} lets the viewer choose a datasource")
        if name == ORG_VARIABLE and (kind != "constant" or variable.get("hide") != 2):
            problems.append(f"variable {name!r} is {kind}, not a hidden constant")
        if name == ORG_VARIABLE and slug is not None and variable.get("query") != slug:
            problems.append(f"variable {name!r} is {variable.get('query')!r}, not {slug!r}")
    return problems


def tenant_dashboard(dashboard: Mapping[str, Any], slug: str) -> dict[str, Any]:
    """The dashboard for one tenant: ``org`` fixed to ``slug`` and hidden; no global links."""
    result = copy.deepcopy(dict(dashboard))
    result.pop("id", None)
    result.pop("version", None)
    variables = result.setdefault("templating", {}).setdefault("list", [])
    constant = {
        "name": ORG_VARIABLE,
        "type": "constant",
        "hide": 2,
        "label": "Organization",
        "query": slug,
        "current": {"text": slug, "value": slug, "selected": True},
        "options": [{"text": slug, "value": slug, "selected": True}],
        "skipUrlSync": True,
    }
    index = next((i for i, v in enumerate(variables) if v.get("name") == ORG_VARIABLE), None)
    if index is None:
        variables.insert(0, constant)
    else:
        variables[index] = constant
    allowed = tuple(f"/d/{uid}" for uid in TENANT_DASHBOARD_UIDS)
    result["links"] = [
        link for link in result.get("links", []) if str(link.get("url", "")).startswith(allowed)
    ]
    problems = dashboard_problems(result, slug)
    if problems:
        raise TenantSetupError(f"dashboard {result.get('uid')!r}: {problems[0]}")
    return result


# The generated JSON travels inside the package, so the setup command finds the dashboards
# of its own release wherever it is installed and from whatever directory it runs.
PACKAGED_DASHBOARDS: Traversable = resources.files("exporter") / "dashboards"


def load_dashboards(directory: Traversable = PACKAGED_DASHBOARDS) -> list[dict[str, Any]]:
    """The organization and error-details dashboards from the generated JSON files."""
    found = []
    for uid in TENANT_DASHBOARD_UIDS:
        path = directory / f"{uid}.json"
        try:
            found.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise TenantSetupError(f"--dashboards: cannot load {path}: {exc}") from exc
    return found


def load_tenants(path: Path) -> list[Tenant]:
    """A YAML list of organizations: ``- {slug: hlf, name: Hørselshemmedes Landsforbund}``."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TenantSetupError(f"--tenants: cannot read {path}: {exc}") from exc
    if not isinstance(data, list) or not all(
        isinstance(item, dict) and set(item) == {"slug", "name"} for item in data
    ):
        raise TenantSetupError("--tenants: expected a list of {slug: ..., name: ...}")
    return [Tenant(str(item["slug"]), str(item["name"])) for item in data]


def org_mapping(tenants: Iterable[Tenant], org_ids: Mapping[str, int], prefix: str = "") -> str:
    """Grafana's OAuth ``org_mapping``: IdP group ``<prefix><slug>`` → its org, as Viewer."""
    pairs = [f"{prefix}{t.slug}:{org_ids[t.slug]}:Viewer" for t in tenants if t.slug in org_ids]
    return "org_mapping = " + " ".join(pairs)


# --- comparing with what Grafana holds ----------------------------------------------------------


def datasource_differs(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True when Grafana's copy differs in anything we set (secrets: only their presence)."""
    for key, wanted in desired.items():
        if key == "secureJsonData":
            present = existing.get("secureJsonFields") or {}
            if not all(present.get(name) for name in wanted):
                return True
        elif key == "jsonData":
            held = existing.get("jsonData") or {}
            if any(held.get(k) != v for k, v in wanted.items()):
                return True
        elif key == "readOnly":
            continue  # only file provisioning can set it; Grafana reports what it decided
        elif existing.get(key) != wanted:
            return True
    return False


def dashboard_differs(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    def comparable(d: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k not in ("id", "version")}

    return comparable(existing) != comparable(desired)


# --- talking to Grafana -------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a run did: the changes (empty on a second run) and the org ids for org_mapping."""

    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    org_ids: dict[str, int] = field(default_factory=dict)
    tenants: list[Tenant] = field(default_factory=list)


def grafana_api(url: str, auth: str | tuple[str, str], org_id: int | None = None) -> GrafanaApi:
    """A ``GrafanaApi`` for ``url``; ``org_id`` scopes every call to that organization."""
    from grafana_client import GrafanaApi

    parts = urlsplit(url)
    return GrafanaApi(
        auth=auth,
        host=parts.hostname or "localhost",
        port=parts.port,
        protocol=parts.scheme or "http",
        url_path_prefix=parts.path.strip("/"),
        organization_id=org_id,
    )


def _missing(exc: Exception) -> bool:
    return getattr(exc, "status_code", None) == 404


class TenantSetup:
    def __init__(
        self,
        url: str,
        auth: str | tuple[str, str],
        targets: Targets,
        dashboards: list[dict[str, Any]],
        *,
        update_secrets: bool = False,
        api_factory: Callable[..., GrafanaApi] = grafana_api,
    ) -> None:
        self.url, self.auth, self.targets = url, auth, targets
        self.dashboards = dashboards
        self.update_secrets = update_secrets
        self.api_factory = api_factory

    def apply(self, tenants: Iterable[Tenant], passwords: Mapping[str, str]) -> Outcome:
        """Make Grafana match; ``passwords`` maps each tenant slug to its role's password."""
        from exporter.admin.roles import tenant_role_name

        tenants = list(tenants)
        outcome = Outcome(tenants=tenants)
        desired_dashboards = {
            t.slug: [tenant_dashboard(d, t.slug) for d in self.dashboards] for t in tenants
        }
        main = self.api_factory(self.url, self.auth)
        orgs = {org["name"]: int(org["id"]) for org in main.organizations.list_organization()}
        for tenant in tenants:
            org_id = orgs.get(tenant.name)
            if org_id is None:
                created = main.organization.create_organization({"name": tenant.name})
                org_id = int(created["orgId"])
                orgs[tenant.name] = org_id
                outcome.changes.append(f"{tenant.slug}: created Grafana organization {org_id}")
            else:
                self._membership(main, tenant, org_id, outcome)
            outcome.org_ids[tenant.slug] = org_id
            api = self.api_factory(self.url, self.auth, org_id)
            role = tenant_role_name(tenant.slug)
            wanted = [
                prometheus_datasource(tenant, self.targets),
                sync_log_datasource(tenant, self.targets, role, passwords[tenant.slug]),
            ]
            for datasource in wanted:
                self._datasource(api, tenant, datasource, outcome)
            for other in api.datasource.list_datasources():
                if other.get("uid") not in TENANT_DATASOURCE_UIDS:
                    outcome.warnings.append(
                        f"{tenant.slug}: unexpected datasource {other.get('name')!r} "
                        f"(uid {other.get('uid')}) may reach other organizations; remove it"
                    )
            for dashboard in desired_dashboards[tenant.slug]:
                self._dashboard(api, tenant, dashboard, outcome)
            self._home(api, tenant, outcome)
        return outcome

    def _membership(self, main: GrafanaApi, tenant: Tenant, org_id: int, out: Outcome) -> None:
        """Org-scoped calls need the admin to be a member of an organization made elsewhere."""
        if not isinstance(self.auth, tuple):
            return
        login = self.auth[0]
        members = main.organizations.organization_user_list(org_id)
        if not any(login in (m.get("login"), m.get("email")) for m in members):
            main.organizations.organization_user_add(
                org_id, {"loginOrEmail": login, "role": "Admin"}
            )
            out.changes.append(f"{tenant.slug}: added {login} to Grafana organization {org_id}")

    def _datasource(
        self, api: GrafanaApi, tenant: Tenant, wanted: dict[str, Any], out: Outcome
    ) -> None:
        from grafana_client.client import GrafanaClientError

        uid = wanted["uid"]
        try:
            existing = api.datasource.get_datasource_by_uid(uid)
        except GrafanaClientError as exc:
            if not _missing(exc):
                raise
            api.datasource.create_datasource(wanted)
            out.changes.append(f"{tenant.slug}: created datasource {uid}")
            return
        if self.update_secrets or datasource_differs(existing, wanted):
            api.datasource.update_datasource_by_uid(uid, wanted)
            out.changes.append(f"{tenant.slug}: updated datasource {uid}")

    def _dashboard(
        self, api: GrafanaApi, tenant: Tenant, wanted: dict[str, Any], out: Outcome
    ) -> None:
        from grafana_client.client import GrafanaClientError

        uid = wanted["uid"]
        try:
            existing = api.dashboard.get_dashboard(uid)["dashboard"]
        except GrafanaClientError as exc:
            if not _missing(exc):
                raise
            existing = None
        if existing is not None and not dashboard_differs(existing, wanted):
            return
        api.dashboard.update_dashboard(
            {
                "dashboard": {**wanted, "id": None},
                "overwrite": True,
                "message": "accounting-sync-exporter grafana-tenants",
            }
        )
        verb = "imported" if existing is None else "updated"
        out.changes.append(f"{tenant.slug}: {verb} dashboard {uid}")

    def _home(self, api: GrafanaApi, tenant: Tenant, out: Outcome) -> None:
        home = TENANT_DASHBOARD_UIDS[0]
        if api.organization.get_preferences().get("homeDashboardUID") != home:
            api.client.PATCH("/org/preferences", json={"homeDashboardUID": home})
            out.changes.append(f"{tenant.slug}: home dashboard set to {home}")
