"""The dashboards' structure: contract uids, links that resolve, health colours, freshness.

Grafana cannot run here; these checks read the committed JSON (what Grafana provisions)
and the provisioning files, and fail on what a user would hit: a stale export, a link to a
dashboard or variable that does not exist, a health value shown as a bare number.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from exporter.classification import ERROR_CLASSES, HEALS_BY_ITSELF, NEEDS_ACTION
from grafana import build
from tests.support.interpolate import load, panels, targets, variables

ROOT = Path(__file__).resolve().parents[3]
PROVISIONING = ROOT / "grafana" / "provisioning"
UIDS = {"accounting-sync-overview", "accounting-sync-org", "accounting-sync-errors"}
PROMETHEUS = {"type": "prometheus", "uid": "prometheus"}
SYNC_LOG = {"type": "grafana-postgresql-datasource", "uid": "sync-log"}
# Grafana's own variables a URL may use, and the per-row values data links may use.
BUILTIN = re.compile(r"^(__url_time_range|__from|__to|__field\.labels\.\w+|__data\.fields\.\w+)$")

DASHBOARDS = load()


def all_links(model):
    """(where, url) for dashboard links, panel links and field data links (defaults, overrides)."""
    for link in model.get("links", []):
        yield f"dashboard {model['uid']}", link["url"]
    for panel in panels(model):
        where = f"{model['uid']} panel {panel.get('title')!r}"
        for link in panel.get("links", []):
            yield where, link["url"]
        field_config = panel.get("fieldConfig", {})
        for link in field_config.get("defaults", {}).get("links", []):
            yield where, link["url"]
        for override in field_config.get("overrides", []):
            for prop in override["properties"]:
                if prop["id"] == "links":
                    for link in prop["value"]:
                        yield where, link["url"]


def test_the_committed_json_is_what_the_code_builds():
    assert build.stale_files() == [], "run make dashboards and commit grafana/dashboards"


def test_a_stale_or_missing_export_is_detected(tmp_path):
    for name in build.BUILDERS:
        shutil.copy(build.OUTPUT / name, tmp_path / name)
    assert build.stale_files(tmp_path) == []
    edited = tmp_path / "accounting-sync-org.json"
    edited.write_text(edited.read_text().replace('"10s"', '"1h"'))
    (tmp_path / "accounting-sync-errors.json").unlink()
    assert sorted(build.stale_files(tmp_path)) == [
        "accounting-sync-errors.json",
        "accounting-sync-org.json",
    ]


def test_the_three_contract_dashboards_exist_and_refresh_by_themselves():
    assert set(DASHBOARDS) == UIDS
    for uid, model in DASHBOARDS.items():
        refresh = model.get("refresh")
        assert refresh, f"{uid} has no auto refresh"
        match = re.fullmatch(r"(\d+)([sm])", refresh)
        assert match, f"{uid}: refresh {refresh!r}"
        seconds = int(match.group(1)) * (60 if match.group(2) == "m" else 1)
        assert seconds <= 30, f"{uid} refreshes every {refresh}: too slow to see a sync finish"


@pytest.mark.parametrize("uid", ["accounting-sync-org", "accounting-sync-errors"])
def test_org_is_a_prometheus_query_variable_the_tenant_setup_can_replace(uid):
    org = variables(DASHBOARDS[uid]).get("org")
    assert org is not None, f"{uid} has no org variable"
    assert org["type"] == "query"
    assert org["datasource"] == PROMETHEUS
    assert "accounting_sync_org_info" in org["query"]
    assert not org.get("multi") and not org.get("includeAll"), "one organization at a time"


def test_every_link_resolves_to_an_existing_dashboard_and_variable():
    checked = 0
    for model in DASHBOARDS.values():
        own = set(variables(model))
        for where, url in all_links(model):
            parts = urlsplit(url)
            match = re.fullmatch(r"/d/([\w-]+)", parts.path)
            assert match, f"{where}: {url} is not a dashboard link"
            target = match.group(1)
            assert target in DASHBOARDS, f"{where}: {url} points to unknown uid {target}"
            target_variables = set(variables(DASHBOARDS[target]))
            for key, _ in parse_qsl(parts.query.replace("${__url_time_range}", "")):
                if key.startswith("var-"):
                    assert key[4:] in target_variables, f"{where}: {target} has no {key[4:]}"
            for reference in re.findall(r"\$\{([^}]+)\}", url):
                name = reference.split(":")[0]
                assert name in own or BUILTIN.match(name), f"{where}: unknown ${{{name}}}"
            assert "${__url_time_range}" in url, f"{where}: {url} drops the time range"
            checked += 1
    assert checked >= 6


def test_the_drill_downs_the_issue_asks_for_exist():
    def urls(uid, title):
        model = DASHBOARDS[uid]
        return [u for w, u in all_links(model) if w.endswith(f"panel {title!r}")]

    assert any(
        u.startswith("/d/accounting-sync-errors?var-org=")
        for u in urls("accounting-sync-org", "Failed in the last sync")
    )
    assert any(
        u.startswith("/d/accounting-sync-org?var-org=")
        for u in urls("accounting-sync-overview", "Organizations")
    )


def grey(colour: str) -> bool:
    """A neutral grey: equal red, green and blue, neither black nor white."""
    match = re.fullmatch(r"#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})", colour.lower())
    if not match:
        return colour in {"gray", "grey"} or colour.endswith("-gray")
    red, green, blue = (int(part, 16) for part in match.groups())
    return red == green == blue and 0x40 <= red <= 0xC0


def _health_configs():
    """The field configs that display accounting_sync_health values, by where they are."""
    org = {p["title"]: p for p in panels(DASHBOARDS["accounting-sync-org"])}
    overview = {p["title"]: p for p in panels(DASHBOARDS["accounting-sync-overview"])}
    yield "org Health", org["Health"]["fieldConfig"]["defaults"]
    yield "org Health over time", org["Health over time"]["fieldConfig"]["defaults"]
    table = overview["Organizations"]["fieldConfig"]["overrides"]
    column = next(o for o in table if o["matcher"]["options"] == "Health")
    yield "overview Health column", {p["id"]: p["value"] for p in column["properties"]}


@pytest.mark.parametrize("where,config", list(_health_configs()), ids=lambda v: str(v)[:30])
def test_every_health_value_has_a_word_and_a_colour(where, config):
    options = {}
    for mapping in config["mappings"]:
        assert mapping["type"] == "value"
        options.update(mapping["options"])
    assert set(options) >= {"-1", "0", "1", "2"}, where
    words = [options[v]["text"] for v in ("0", "1", "2")]
    colours = [options[v]["color"] for v in ("0", "1", "2")]
    assert len(set(words)) == 3 and all(words), words
    assert colours == ["green", "orange", "red"], colours
    # The health queries answer -1 for an inactive integration (tests/system/grafana).
    assert options["-1"]["text"] == "Inactive", where
    assert grey(options["-1"]["color"]), options["-1"]
    steps = config["thresholds"]["steps"]
    assert steps[0]["value"] is None and steps[0]["color"] == "green", "base colour first"
    assert [(s["value"], s["color"]) for s in steps[1:]] == [(1, "orange"), (2, "red")]


def test_the_overview_table_colours_health_cells_and_sorts_worst_first():
    overview = {p["title"]: p for p in panels(DASHBOARDS["accounting-sync-overview"])}
    table = overview["Organizations"]
    column = next(
        o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == "Health"
    )
    cell = next(p["value"] for p in column["properties"] if p["id"] == "custom.cellOptions")
    assert cell["type"] == "color-background"
    assert table["options"]["sortBy"] == [{"displayName": "Health", "desc": True}]


def test_the_overview_table_has_a_rejected_column_next_to_failed():
    overview = {p["title"]: p for p in panels(DASHBOARDS["accounting-sync-overview"])}
    table = overview["Organizations"]
    organize = next(t for t in table["transformations"] if t["id"] == "organize")["options"]
    columns = {
        organize["renameByName"].get(name, name): position
        for name, position in organize["indexByName"].items()
    }
    assert columns["Rejected"] == columns["Failed in the last sync"] + 1
    (ref,) = [n[len("Value #") :] for n, r in organize["renameByName"].items() if r == "Rejected"]
    (target,) = [t for t in table["targets"] if t["refId"] == ref]
    assert "accounting_sync_rejected_records" in target["expr"]
    assert target["format"] == "table"


def test_the_org_dashboard_shows_rejected_records_and_links_them_to_the_error_details():
    org = {p["title"]: p for p in panels(DASHBOARDS["accounting-sync-org"])}
    rejected = org["Rejected records"]
    (target,) = rejected["targets"]
    assert "accounting_sync_rejected_records" in target["expr"] and target["instant"]
    (link,) = rejected["fieldConfig"]["defaults"]["links"]
    assert link["url"].startswith("/d/accounting-sync-errors?var-org=")
    errors = {p["title"]: p for p in panels(DASHBOARDS["accounting-sync-errors"])}
    assert "FROM sync_record r" in errors["Rejected records"]["targets"][0]["rawSql"]


def _mapped_words(panel):
    options = {}
    for mapping in panel["fieldConfig"]["defaults"]["mappings"]:
        assert mapping["type"] == "value"
        options.update(mapping["options"])
    return options


def test_the_action_required_notice_says_each_class_in_red_words():
    """The query answers a number per class (checked on Prometheus); here, each is words."""
    org = {p["title"]: p for p in panels(DASHBOARDS["accounting-sync-org"])}
    notice = org["Action required"]
    options = _mapped_words(notice)
    assert len(options) == len(NEEDS_ACTION)
    for value in options.values():
        assert value["color"] == "red"
        assert value["text"] and value["text"] not in ERROR_CLASSES, "words, not the class name"
    assert len({v["text"] for v in options.values()}) == len(NEEDS_ACTION)
    expr = notice["targets"][0]["expr"]
    for error_class in ERROR_CLASSES:
        assert (f'error_class="{error_class}"' in expr) == (error_class in NEEDS_ACTION)
    assert notice["fieldConfig"]["defaults"]["noValue"] == "No action required"
    assert notice["options"]["colorMode"].startswith("background")


def test_the_run_failure_panel_words_every_class_and_colours_it_by_who_must_act():
    errors = {p["title"]: p for p in panels(DASHBOARDS["accounting-sync-errors"])}
    options = _mapped_words(errors["Why the last sync failed as a whole"])
    assert len(options) == len(ERROR_CLASSES)
    colours = sorted(v["color"] for v in options.values())
    assert colours.count("red") == len(NEEDS_ACTION)
    assert colours.count("orange") == len(HEALS_BY_ITSELF)
    assert len({v["text"] for v in options.values()}) == len(ERROR_CLASSES)


def test_the_stale_warning_says_the_contract_sentence_in_red():
    org = {p["title"]: p for p in panels(DASHBOARDS["accounting-sync-org"])}
    warning = org["Warning"]
    (target,) = warning["targets"]
    assert target["legendFormat"] == "No successful sync in the last"
    assert warning["fieldConfig"]["defaults"]["unit"] == "suffix: hours"
    # Every window (any value >= 0) is red; the base colour only shows without data.
    assert warning["fieldConfig"]["defaults"]["thresholds"]["steps"] == [
        {"color": "green", "value": None},
        {"color": "red", "value": 0},
    ]
    assert warning["fieldConfig"]["defaults"]["noValue"]
    assert warning["options"]["colorMode"].startswith("background")


def test_every_query_uses_one_of_the_two_fixed_datasources():
    kinds = set()
    for uid, model in DASHBOARDS.items():
        for panel, target in targets(model):
            ds = target["datasource"]
            assert ds in (PROMETHEUS, SYNC_LOG), f"{uid} {panel['title']}: {ds}"
            assert panel.get("datasource") == ds, f"{uid} {panel['title']}: mixed datasources"
            assert ("expr" in target) == (ds == PROMETHEUS)
            assert ("rawSql" in target) == (ds == SYNC_LOG)
            kinds.add(ds["uid"])
        for variable in variables(model).values():
            assert variable["datasource"] == PROMETHEUS
    assert kinds == {"prometheus", "sync-log"}


def test_provisioning_declares_the_datasource_uids_and_loads_the_dashboards():
    files = sorted((PROVISIONING / "datasources").glob("*.yml"))
    assert files
    declared = {}
    for path in files:
        for source in yaml.safe_load(path.read_text())["datasources"]:
            declared[source["uid"]] = source
    assert declared["prometheus"]["type"] == "prometheus"
    assert declared["sync-log"]["type"] == "grafana-postgresql-datasource"
    assert all(s.get("orgId", 1) == 1 for s in declared.values()), "main organization"
    (provider_file,) = (PROVISIONING / "dashboards").glob("*.yml")
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    assert provider["type"] == "file" and provider["orgId"] == 1
    assert provider["options"]["path"]


@pytest.mark.parametrize("uid", sorted(UIDS))
def test_the_json_is_a_grafana_dashboard_model_the_sdk_reads_back_unchanged(uid):
    """Hand edits or keys Grafana 11.6 does not know would not survive the round trip."""
    model = DASHBOARDS[uid]
    back = json.loads(json.dumps(Dashboard.from_json(model), cls=JSONEncoder))
    assert back == model
    assert model["schemaVersion"] >= 39


@pytest.mark.parametrize("uid", sorted(UIDS))
def test_panels_fit_the_grid_without_overlapping(uid):
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(DASHBOARDS[uid]):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
