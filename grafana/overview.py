"""``accounting-sync-overview``: what a global administrator sees.

A summary first (how many organizations are green, amber, red; total pending and failed),
then one row per organization and connector, worst first, each drilling down to
``accounting-sync-org`` with ``var-org`` set.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from grafana import panels as p

ALL = ""  # no selector: every organization
# An organization is as healthy as its worst active connector; with none active, Inactive.
ORG_HEALTH = f"max by (org) ({p.health(ALL)})"
WITH_NAME = (
    " * on (org, connector) group_left (org_name)"
    " max by (org, connector, org_name) (accounting_sync_org_info)"
)
DRILL_DOWN = f"/d/{p.ORG_UID}?var-org=${{__data.fields.org}}&${{__url_time_range}}"


def _count(title: str, value: int, color: str, description: str = "") -> stat.Panel:
    return (
        _summary(
            title, description or f"Organizations whose worst active connector is {title.lower()}."
        )
        .with_target(p.promql(f"count(({ORG_HEALTH}) == {value}) or vector(0)"))
        .thresholds(p.steps((None, "text"), (1, color)))
        .color_mode(cm.BigValueColorMode.BACKGROUND_SOLID)
    )


def _summary(title: str, description: str) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(p.PROMETHEUS)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .height(4)
        .span(3)
    )


def _total(title: str, metric: str, description: str) -> stat.Panel:
    return (
        _summary(title, description)
        .with_target(p.promql(f"sum({p.per_integration(metric, ALL)}) or vector(0)"))
        .thresholds(p.steps((None, "blue")))
        .color_mode(cm.BigValueColorMode.VALUE)
    )


def source_notice() -> stat.Panel:
    return (
        _summary(
            "Sync log",
            "Whether every exporter could read the sync log at its last refresh; when not, "
            "the figures are the last good reading.",
        )
        .with_target(p.promql("min(accounting_sync_exporter_source_up)"))
        .mappings(
            [
                dm.ValueMap(
                    options={
                        "1": dm.ValueMappingResult(text="Readable", color=p.GREEN, index=0),
                        "0": dm.ValueMappingResult(
                            text="Unreadable: figures may be stale", color=p.RED, index=1
                        ),
                    }
                )
            ]
        )
        .thresholds(p.steps((None, "text")))
        .color_mode(cm.BigValueColorMode.BACKGROUND_SOLID)
        .no_value("Unknown")
    )


def organizations() -> table.Panel:
    columns = {
        "A": ("Health", p.health(ALL)),
        "B": ("Pending", p.per_integration("accounting_sync_pending_records", ALL)),
        "C": ("Failed in the last sync", p.per_integration("accounting_sync_failed_records", ALL)),
        "D": (
            "Last successful sync",
            f"{p.per_integration('accounting_sync_last_success_timestamp_seconds', ALL)} * 1000",
        ),
        "E": (
            "Since the last successful sync",
            f"time() - {p.per_integration('accounting_sync_last_success_timestamp_seconds', ALL)}",
        ),
        "F": ("Rejected", p.per_integration("accounting_sync_rejected_records", ALL)),
    }
    # Column order on screen; refs stay stable so saved links and tests keep meaning.
    order = ["A", "B", "C", "F", "D", "E"]
    panel = (
        table.Panel()
        .title("Organizations")
        .description(
            "One row per organization and connector, worst health first. Click a row to "
            "open that organization's dashboard."
        )
        .datasource(p.PROMETHEUS)
        .height(12)
        .span(24)
        .data_links([p.link("Open organization", DRILL_DOWN)])
        .sort_by([cb.TableSortByFieldState().display_name("Health").desc(True)])
        .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True},
                    "indexByName": {
                        "org_name": 0,
                        "connector": 1,
                        **{f"Value #{ref}": i + 2 for i, ref in enumerate(order)},
                        "org": 10,
                    },
                    "renameByName": {
                        "org_name": "Organization",
                        "connector": "Connector",
                        **{f"Value #{ref}": name for ref, (name, _) in columns.items()},
                    },
                },
            )
        )
        .override_by_name("org", [dm.DynamicConfigValue(id_val="custom.hidden", value=True)])
        .override_by_name(
            "Health",
            [
                dm.DynamicConfigValue(id_val="mappings", value=p.health_mappings()),
                dm.DynamicConfigValue(id_val="thresholds", value=p.health_thresholds().build()),
                dm.DynamicConfigValue(
                    id_val="custom.cellOptions",
                    value={"type": "color-background", "mode": "basic"},
                ),
            ],
        )
        .override_by_name(
            "Rejected",
            [
                dm.DynamicConfigValue(
                    id_val="thresholds", value=p.steps((None, "text"), (1, p.RED)).build()
                ),
                dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
            ],
        )
        .override_by_name(
            "Last successful sync",
            [dm.DynamicConfigValue(id_val="unit", value="dateTimeAsIso")],
        )
        .override_by_name(
            "Since the last successful sync",
            [dm.DynamicConfigValue(id_val="unit", value="dtdurations")],
        )
    )
    for ref, (_, expr) in columns.items():
        panel = panel.with_target(p.promql(f"({expr}){WITH_NAME}", ref=ref, table=True))
    return panel


def pending_history() -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title("Records pending by organization")
        .description("Records in state pending over time. Click a line to drill down.")
        .datasource(p.PROMETHEUS)
        .with_target(
            p.promql(
                p.per_integration("accounting_sync_pending_records", ALL),
                "{{org}} ({{connector}})",
                instant=False,
            )
        )
        .data_links(
            [
                p.link(
                    "Open organization",
                    f"/d/{p.ORG_UID}?var-org=${{__field.labels.org}}&${{__url_time_range}}",
                )
            ]
        )
        .min(0)
        .height(8)
        .span(24)
    )


def build() -> db.Dashboard:
    return (
        p.base(
            p.OVERVIEW_UID,
            "Accounting sync: overview",
            "Every organization's sync to its accounting system, worst first.",
        )
        .with_panel(_count("Red", 2, p.RED))
        .with_panel(_count("Amber", 1, p.AMBER))
        .with_panel(_count("Green", 0, p.GREEN))
        .with_panel(
            _count(
                "Inactive",
                p.INACTIVE,
                p.GREY,
                "Organizations with no active integration: no sync is expected.",
            )
        )
        .with_panel(
            _total(
                "Records pending",
                "accounting_sync_pending_records",
                "Records waiting to reach the accounting systems, all organizations.",
            )
        )
        .with_panel(
            _total(
                "Failed in the last syncs",
                "accounting_sync_failed_records",
                "records_failed of each integration's last finished run, summed.",
            )
        )
        .with_panel(
            _total(
                "Rejected records",
                "accounting_sync_rejected_records",
                "Records given up on, all organizations: each waits for a person.",
            )
        )
        .with_panel(source_notice())
        .with_panel(organizations())
        .with_panel(pending_history())
    )
