"""Every PromQL query of every dashboard, run by a real Prometheus over the real exporter.

One Prometheus for the module scrapes two exporter replicas (as a highly available
deployment would) over a PostgreSQL sync log seeded with a red, an amber and a green
organization. Each query is interpolated as Grafana would (variables, ``$__interval`` ...)
and run through Prometheus' HTTP API, instant and over a range: no errors, the expected
value for each health state, one organization's series only on its dashboard, and no
double counting across replicas.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import text

from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.migrate import upgrade
from exporter.source.pipeline import Pipeline
from tests.conftest import ADMIN_URL
from tests.support import exporter_process, http_get, prometheus_server, wait_until
from tests.support.interpolate import ALL, Context, TimeRange, Variable, interpolate, load, targets
from tests.support.interpolate import panels as dashboard_panels
from tests.support.interpolate import variables as dashboard_variables

pytestmark = [pytest.mark.postgres, pytest.mark.prometheus]

DASHBOARDS = load()
NOW = datetime.now(UTC).replace(microsecond=0)
RED_LAST_SUCCESS = NOW - timedelta(hours=30)
ORGS = ("redorg", "amberorg", "greenorg", "idleorg")
CONNECTORS = {
    "redorg": {"xledger"},
    "amberorg": {"xledger", "dynamics"},
    "greenorg": {"dynamics"},
    "idleorg": {"xledger"},
}
# redorg/xledger, amberorg/xledger, amberorg/dynamics, greenorg/dynamics, idleorg/xledger
INTEGRATIONS = 5
REPLICAS = 2


def seed(pipeline: Pipeline) -> None:
    """A red, an amber (one of two connectors failing), a green and an inactive organization.

    Red's last run failed as a whole on an expired client secret (action required); amber's
    last run left records failed by class and one rejected; the inactive one's last run
    timed out (a class that heals by itself), so its own health would be amber.
    """
    old = NOW - timedelta(days=10)
    pipeline.register("redorg", "Red Org AS", "xledger", created_at=old)
    pipeline.add_finished_run(
        "redorg",
        "xledger",
        "succeeded",
        started_at=RED_LAST_SUCCESS - timedelta(minutes=2),
        finished_at=RED_LAST_SUCCESS,
        records_total=5,
    )
    pipeline.add_finished_run(
        "redorg",
        "xledger",
        "failed",
        started_at=NOW - timedelta(hours=2, minutes=1),
        finished_at=NOW - timedelta(hours=2),
        # No code: the message decides (Microsoft Entra's answer for an expired secret).
        error_message="AADSTS7000222: The provided client secret keys for app are expired.",
    )
    pipeline.enqueue("redorg", "xledger", [("expense", f"R-{i}") for i in range(4)])

    pipeline.register("amberorg", "Amber Forbund", "xledger", created_at=old)
    pipeline.register("amberorg", "Amber Forbund", "dynamics", created_at=old)
    amber_run = pipeline.add_finished_run(
        "amberorg",
        "xledger",
        "partial",
        started_at=NOW - timedelta(minutes=11),
        finished_at=NOW - timedelta(minutes=10),
        records_total=7,
        records_failed=3,
    )
    invalid, throttled = pipeline.enqueue(
        "amberorg", "xledger", [("invoice", f"A-{i}") for i in range(3)]
    )[:2]
    (given_up,) = pipeline.enqueue("amberorg", "xledger", [("invoice", "A-R")])
    at = NOW - timedelta(minutes=10)
    # Two stay pending for a retry; one is given up on (rejected).
    pipeline.record_failure(
        amber_run,
        invalid,
        "Amount is required",
        error_code="Application_FieldValidationException",
        at=at,
    )
    pipeline.record_failure(amber_run, throttled, "Too Many Requests", error_code="429", at=at)
    pipeline.record_failure(
        amber_run,
        given_up,
        "Dimension value is invalid",
        error_code="Application_FieldValidationException",
        give_up=True,
        at=at,
    )
    pipeline.add_finished_run(
        "amberorg",
        "dynamics",
        "succeeded",
        started_at=NOW - timedelta(minutes=6),
        finished_at=NOW - timedelta(minutes=5),
        records_total=2,
    )

    pipeline.register("greenorg", "Grønn Organisasjon", "dynamics", created_at=old)
    pipeline.add_finished_run(
        "greenorg",
        "dynamics",
        "succeeded",
        started_at=NOW - timedelta(minutes=3),
        finished_at=NOW - timedelta(minutes=2),
        records_total=9,
    )
    pipeline.enqueue("greenorg", "dynamics", [("travel", "G-1")])

    pipeline.register("idleorg", "Idle Org", "xledger", active=False, created_at=old)
    pipeline.add_finished_run(
        "idleorg",
        "xledger",
        "succeeded",
        started_at=NOW - timedelta(hours=20, minutes=1),
        finished_at=NOW - timedelta(hours=20),
        records_total=1,
    )
    pipeline.add_finished_run(
        "idleorg",
        "xledger",
        "failed",
        started_at=NOW - timedelta(hours=19, minutes=1),
        finished_at=NOW - timedelta(hours=19),
        error_message="Your query timed out",
    )


@dataclass
class Prometheus:
    url: str

    def api(self, path: str, **params: Any) -> Any:
        status, _, body = http_get(f"{self.url}/api/v1/{path}?{urlencode(params, doseq=True)}")
        payload = json.loads(body)
        assert status == 200 and payload["status"] == "success", f"{path} {params}: {payload}"
        return payload["data"]

    def instant(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", expr
        return data["result"]

    def range(self, expr: str, time_range: TimeRange) -> list[dict[str, Any]]:
        data = self.api(
            "query_range",
            query=expr,
            start=time_range.start.timestamp(),
            end=time_range.end.timestamp(),
            step=time_range.interval_seconds,
        )
        return data["result"]


@pytest.fixture(scope="module")
def sync_log(pg_admin) -> Iterator[str]:
    name = f"ase_dash_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = normalize_url(ADMIN_URL).set(database=name)
    plain = url.render_as_string(hide_password=False).replace("+psycopg", "")
    engine = create_sync_log_engine(url)
    upgrade(engine)
    seed(Pipeline(engine))
    engine.dispose()
    yield plain
    with pg_admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def prometheus(sync_log, tmp_path_factory) -> Iterator[Prometheus]:
    work = tmp_path_factory.mktemp("prometheus")
    args = ["--database-url", sync_log, "--refresh-interval", "1s"]
    with (
        exporter_process(args, work) as first,
        exporter_process(args, work) as second,
    ):
        targets_ = [first.url.removeprefix("http://"), second.url.removeprefix("http://")]
        with prometheus_server(targets_, work) as url:
            server = Prometheus(url)

            def scraped_everything() -> bool:
                result = server.instant("count(accounting_sync_health)")
                # Both replicas, every integration, and a few samples of history.
                up = server.instant("count_over_time(up[1m]) >= 3")
                return (
                    bool(result)
                    and result[0]["value"][1] == str(INTEGRATIONS * REPLICAS)
                    and len(up) == REPLICAS
                )

            wait_until(scraped_everything, timeout=60, interval=0.2, what="prometheus scrapes")
            yield server


def time_range() -> TimeRange:
    end = datetime.now(UTC)
    return TimeRange(end - timedelta(minutes=5), end, min_interval_seconds=1.0)


def context(uid: str, org: str | None) -> Context:
    values: dict[str, Variable] = {}
    for name, variable in dashboard_variables(DASHBOARDS[uid]).items():
        if name == "org":
            assert org is not None
            values[name] = Variable(org)
        else:  # connector: Grafana's default selection, All
            values[name] = Variable(
                ALL, variable.get("multi", False), True, variable.get("allValue")
            )
    return Context(values, time_range())


def prometheus_queries(uid: str, org: str | None) -> list[tuple[str, str, str, bool]]:
    """(panel title, refId, interpolated expr, instant) for every PromQL target."""
    ctx = context(uid, org)
    return [
        (
            panel["title"],
            target["refId"],
            interpolate(target["expr"], ctx, "prometheus"),
            bool(target.get("instant")),
        )
        for panel, target in targets(DASHBOARDS[uid])
        if target["datasource"]["type"] == "prometheus"
    ]


def by_connector(result: list[dict[str, Any]]) -> dict[str, float]:
    values = {}
    for series in result:
        key = series["metric"].get("connector", "")
        assert key not in values, f"two series for {key}: {result}"
        values[key] = float(series["value"][1])
    return values


def results(prometheus: Prometheus, uid: str, org: str | None) -> dict[str, list[dict]]:
    """Each figure panel's instant result by title (one query per figure panel)."""
    out: dict[str, list[dict]] = {}
    for title, ref, expr, instant in prometheus_queries(uid, org):
        if instant and ref == "A":
            assert title not in out, f"two figures titled {title}"
            out[title] = prometheus.instant(expr)
    return out


def label_values(prometheus: Prometheus, query: str) -> set[str]:
    """Grafana's ``label_values(selector, label)`` through the series API, as it asks."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
    assert match, query
    series = prometheus.api("series", **{"match[]": match.group(1)})
    return {s[match.group(2)] for s in series if match.group(2) in s}


@pytest.mark.parametrize(
    "uid,org",
    [("accounting-sync-overview", None)]
    + [(uid, org) for uid in ("accounting-sync-org", "accounting-sync-errors") for org in ORGS],
)
def test_every_promql_query_runs_instant_and_over_a_range(prometheus, uid, org):
    ctx = context(uid, org)
    for name, variable in dashboard_variables(DASHBOARDS[uid]).items():
        expected = set(ORGS) if name == "org" else CONNECTORS[str(org)]
        found = label_values(prometheus, interpolate(variable["query"], ctx, "prometheus"))
        assert found == expected, name
    for title, _, expr, instant in prometheus_queries(uid, org):
        assert "$" not in expr, f"{title}: uninterpolated {expr}"
        if instant:
            prometheus.instant(expr)
        else:
            series = prometheus.range(expr, ctx.time_range)
            assert series, f"{title}: no history for {expr}"


@pytest.mark.parametrize("org", ORGS)
def test_the_org_dashboard_shows_only_the_chosen_organization(prometheus, org):
    for title, _, expr, instant in prometheus_queries("accounting-sync-org", org):
        found = prometheus.instant(expr) if instant else prometheus.range(expr, time_range())
        orgs = {series["metric"].get("org") for series in found}
        if re.search(r"accounting_sync_(?!exporter_)", expr):
            assert orgs <= {org}, f"{title}: {orgs}"
        else:  # the exporter's own health: no tenant data, no org label
            assert orgs == {None}, f"{title}: {orgs}"


EXPECTED = {
    # panel: {org: {connector: value}}; absent org means no series at all.
    "Health": {
        "redorg": {"xledger": 2},
        "amberorg": {"xledger": 1, "dynamics": 0},
        "greenorg": {"dynamics": 0},
        # Inactive reads -1 ("Inactive", grey), although its last run failed (amber).
        "idleorg": {"xledger": -1},
    },
    "Warning": {"redorg": {"xledger": 24}},
    "Active connector": {
        "redorg": {"xledger": 1},
        "amberorg": {"xledger": 1, "dynamics": 1},
        "greenorg": {"dynamics": 1},
    },
    "Records pending": {
        "redorg": {"xledger": 4},
        "amberorg": {"xledger": 3, "dynamics": 0},
        "greenorg": {"dynamics": 1},
        "idleorg": {"xledger": 0},
    },
    "Failed in the last sync": {
        "redorg": {"xledger": 0},
        "amberorg": {"xledger": 3, "dynamics": 0},
        "greenorg": {"dynamics": 0},
        "idleorg": {"xledger": 0},
    },
}


@pytest.mark.parametrize("org", ORGS)
def test_the_org_dashboard_figures_for_each_health_state(prometheus, org):
    found = results(prometheus, "accounting-sync-org", org)
    for title, per_org in EXPECTED.items():
        assert by_connector(found[title]) == per_org.get(org, {}), title
    assert by_connector(found["Sync log"]) == {"": 1}
    last = by_connector(found["Last successful sync"])
    since = by_connector(found["Since the last successful sync"])
    assert set(last) == set(since) == set(EXPECTED["Health"][org])
    if org == "redorg":
        assert last == {"xledger": RED_LAST_SUCCESS.timestamp() * 1000}
        ago = datetime.now(UTC) - RED_LAST_SUCCESS
        assert abs(since["xledger"] - ago.total_seconds()) < 60, "x ago, from the real time"
    for value in since.values():
        assert 0 <= value < 31 * 3600 + (datetime.now(UTC) - NOW).total_seconds()


HISTORY = {
    "Health over time": EXPECTED["Health"],
    "Records pending": EXPECTED["Records pending"],
    "Records failed in the last sync": EXPECTED["Failed in the last sync"],
}


@pytest.mark.parametrize("org", ORGS)
def test_the_org_dashboard_history_ends_at_the_current_figures(prometheus, org):
    shown = set()
    for title, _, expr, instant in prometheus_queries("accounting-sync-org", org):
        if instant or title not in HISTORY:
            continue
        latest = {
            series["metric"]["connector"]: float(series["values"][-1][1])
            for series in prometheus.range(expr, time_range())
        }
        assert latest == HISTORY[title][org], title
        shown.add(title)
    assert shown == set(HISTORY)


def test_the_overview_counts_organizations_by_worst_connector_without_double_counting(prometheus):
    found = results(prometheus, "accounting-sync-overview", None)
    assert by_connector(found["Red"]) == {"": 1}
    assert by_connector(found["Amber"]) == {"": 1}, "amberorg is amber although dynamics is green"
    assert by_connector(found["Green"]) == {"": 1}, "idleorg is not green"
    assert by_connector(found["Inactive"]) == {"": 1}
    # Two replicas are scraped: a plain sum would say 16 and 6.
    assert by_connector(found["Records pending"]) == {"": 8}
    assert by_connector(found["Failed in the last syncs"]) == {"": 3}
    assert by_connector(found["Sync log"]) == {"": 1}


def test_the_overview_table_has_one_row_per_integration_with_its_display_name(prometheus):
    queries = [
        q for q in prometheus_queries("accounting-sync-overview", None) if q[0] == "Organizations"
    ]
    rows: dict[tuple[str, str], dict[str, float]] = {}
    names = {}
    for _, ref, expr, _ in queries:
        for series in prometheus.instant(expr):
            labels = series["metric"]
            key = (labels["org"], labels["connector"])
            assert ref not in rows.setdefault(key, {}), f"duplicate row {key} in {ref}"
            rows[key][ref] = float(series["value"][1])
            names[labels["org"]] = labels["org_name"]
    assert names == {
        "redorg": "Red Org AS",
        "amberorg": "Amber Forbund",
        "greenorg": "Grønn Organisasjon",
        "idleorg": "Idle Org",
    }
    health = {key: columns["A"] for key, columns in rows.items()}
    assert health == {
        ("redorg", "xledger"): 2,
        ("amberorg", "xledger"): 1,
        ("amberorg", "dynamics"): 0,
        ("greenorg", "dynamics"): 0,
        ("idleorg", "xledger"): -1,
    }
    assert rows[("amberorg", "xledger")]["B"] == 3 and rows[("amberorg", "xledger")]["C"] == 3
    assert rows[("redorg", "xledger")]["D"] == RED_LAST_SUCCESS.timestamp() * 1000


def test_labels_used_by_data_links_are_on_every_series_the_panel_returns(prometheus):
    for uid, model in DASHBOARDS.items():
        for panel, target in targets(model):
            links = json.dumps(panel.get("fieldConfig", {}).get("defaults", {}).get("links", []))
            needed = set(re.findall(r"__(?:field\.labels|data\.fields)\.(\w+)", links))
            if not needed or target["datasource"]["type"] != "prometheus":
                continue
            # Some panels show something only in one state (Action required: redorg).
            seen = 0
            for org in [None] if uid == "accounting-sync-overview" else ORGS:
                ctx = context(uid, org)
                expr = interpolate(target["expr"], ctx, "prometheus")
                found = (
                    prometheus.instant(expr)
                    if target.get("instant")
                    else prometheus.range(expr, ctx.time_range)
                )
                for series in found:
                    assert needed <= set(series["metric"]), f"{uid} {panel['title']}: {series}"
                seen += len(found)
            assert seen, f"{uid} {panel['title']}: no series for any organization"


def test_a_sync_finishing_in_the_background_reaches_the_dashboard(prometheus, sync_log):
    """No manual step: pipeline write -> exporter refresh -> scrape -> the panel's query."""
    finished = datetime.now(UTC).replace(microsecond=0)
    engine = create_sync_log_engine(normalize_url(sync_log))
    Pipeline(engine).add_finished_run(
        "greenorg",
        "dynamics",
        "succeeded",
        started_at=finished - timedelta(seconds=30),
        finished_at=finished,
        records_total=1,
    )
    engine.dispose()
    (expr,) = [
        q[2]
        for q in prometheus_queries("accounting-sync-org", "greenorg")
        if q[0] == "Last successful sync"
    ]

    def shows_the_new_sync() -> bool:
        return by_connector(prometheus.instant(expr)) == {"dynamics": finished.timestamp() * 1000}

    wait_until(shows_the_new_sync, timeout=30, interval=0.2, what="the new sync on the dashboard")


# Below: panels over the reconciliation metrics (rejected records, error classes). They
# hold once the exporter publishes accounting_sync_rejected_records and the error class
# series (DESIGN.md, "Reconciliation and error classes").


def mapped(uid: str, title: str, value: float) -> tuple[str, str]:
    """The words and colour a panel's value mapping shows for a value, as Grafana would."""
    (panel,) = [p for p in dashboard_panels(DASHBOARDS[uid]) if p["title"] == title]
    for mapping in panel["fieldConfig"]["defaults"]["mappings"]:
        option = mapping["options"].get(f"{value:g}")
        if option:
            return option["text"], option["color"]
    raise AssertionError(f"{uid} {title}: {value} has no words")


REJECTED = {
    "redorg": {"xledger": 0},
    "amberorg": {"xledger": 1, "dynamics": 0},
    "greenorg": {"dynamics": 0},
    "idleorg": {"xledger": 0},
}


@pytest.mark.parametrize("org", ORGS)
def test_the_org_dashboard_shows_rejected_records_and_action_required_in_words(prometheus, org):
    found = results(prometheus, "accounting-sync-org", org)
    assert by_connector(found["Rejected records"]) == REJECTED[org]
    action = by_connector(found["Action required"])
    if org != "redorg":
        # amber: records failed, the run did not; idle: timed out, which heals by itself.
        assert action == {}, "the notice shows only while a person must act"
        return
    assert set(action) == {"xledger"}
    words, colour = mapped("accounting-sync-org", "Action required", action["xledger"])
    assert "credentials" in words or "secret" in words, words
    assert colour == "red"


@pytest.mark.parametrize("org", ORGS)
def test_the_error_details_say_why_the_last_run_failed_and_count_records_by_class(prometheus, org):
    found = results(prometheus, "accounting-sync-errors", org)
    run = by_connector(found["Why the last sync failed as a whole"])
    words = {
        connector: mapped("accounting-sync-errors", "Why the last sync failed as a whole", value)
        for connector, value in run.items()
    }
    if org == "redorg":
        assert set(words) == {"xledger"} and words["xledger"][1] == "red"
        assert "credentials" in words["xledger"][0] or "secret" in words["xledger"][0]
    elif org == "idleorg":
        assert set(words) == {"xledger"}
        assert "timed out" in words["xledger"][0] and words["xledger"][1] == "orange"
    else:
        assert words == {}
    by_class = {
        (s["metric"]["connector"], s["metric"]["error_class"]): float(s["value"][1])
        for s in found["Failed records of the last sync, by class"]
    }
    expected = {("xledger", "validation"): 2, ("xledger", "throttled"): 1}
    assert by_class == (expected if org == "amberorg" else {})


def test_the_overview_counts_rejected_records_per_row_and_in_total(prometheus):
    found = results(prometheus, "accounting-sync-overview", None)
    assert by_connector(found["Rejected records"]) == {"": 1}, "two replicas, counted once"
    organize = next(
        t
        for p in dashboard_panels(DASHBOARDS["accounting-sync-overview"])
        if p["title"] == "Organizations"
        for t in p["transformations"]
        if t["id"] == "organize"
    )
    (ref,) = [
        name.removeprefix("Value #")
        for name, shown in organize["options"]["renameByName"].items()
        if shown == "Rejected"
    ]
    queries = prometheus_queries("accounting-sync-overview", None)
    (expr,) = [q[2] for q in queries if q[0] == "Organizations" and q[1] == ref]
    column = {
        (s["metric"]["org"], s["metric"]["connector"]): float(s["value"][1])
        for s in prometheus.instant(expr)
    }
    assert column == {
        (org, connector): value
        for org, per_connector in REJECTED.items()
        for connector, value in per_connector.items()
    }
