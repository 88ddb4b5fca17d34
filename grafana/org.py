"""``accounting-sync-org``: what an organization administrator sees.

The health indicator comes first and largest; the figures a finance team acts on (pending,
failed in the last sync, last successful sync) next to it; history below. Every query is
filtered by ``org`` so that, with the tenant's label-enforcing proxy, nothing else is asked for.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import stat, statetimeline, table, timeseries
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from exporter.classification import NEEDS_ACTION
from grafana import panels as p

RAW_HEALTH = p.per_integration("accounting_sync_health")
HEALTH = p.health()
STALE_WINDOW_HOURS = (
    f"{p.per_integration('accounting_sync_stale_after_seconds')} / 3600"
    f" and on (org, connector) ({RAW_HEALTH} == 2)"
)
ACTION_REQUIRED = p.run_error_class(p.ORG_SELECTOR, NEEDS_ACTION)
ERROR_DETAILS = f"/d/{p.ERRORS_UID}?var-org=${{__field.labels.org}}&${{__url_time_range}}"
LAST_SUCCESS = p.per_integration("accounting_sync_last_success_timestamp_seconds")

RUNS_SQL = """
SELECT
  started_at AS "time",
  connector,
  status,
  finished_at,
  records_total,
  records_failed,
  error_message
FROM sync_run
WHERE org_id = '${org}'
  AND connector ~ '^(${connector:regex})$'
  AND $__timeFilter(started_at)
ORDER BY started_at DESC, id DESC
LIMIT 200
"""


def _stat(title: str, description: str) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(p.PROMETHEUS)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def health() -> stat.Panel:
    return (
        _stat(
            "Health",
            "Green: the last sync succeeded. Amber: the last finished sync failed or left "
            "records failed. Red: no successful sync within the integration's window "
            "(stale_after_seconds, 24 hours by default). Grey, Inactive: the integration "
            "is switched off, so no sync is expected. One value per connector.",
        )
        .with_target(p.promql(HEALTH, "{{connector}}"))
        .mappings(p.health_mappings())
        .thresholds(p.health_thresholds())
        .color_mode(cm.BigValueColorMode.BACKGROUND_SOLID)
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        .no_value("No integration")
        .height(7)
        .span(8)
    )


def stale_warning() -> stat.Panel:
    """Shown in red only while health is red; the window is the integration's real one."""
    return (
        _stat(
            "Warning",
            "Appears when an active integration has had no successful sync for longer than "
            "its window. The number is that window, read from the exporter.",
        )
        .with_target(p.promql(STALE_WINDOW_HOURS, "No successful sync in the last"))
        .unit("suffix: hours")
        .decimals(0)
        # Any window is red; the base colour is only seen without data, i.e. not stale.
        .thresholds(p.steps((None, p.GREEN), (0, p.RED)))
        .color_mode(cm.BigValueColorMode.BACKGROUND_SOLID)
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        .no_value("Synced within the expected window")
        .height(7)
        .span(8)
    )


def action_required() -> stat.Panel:
    """Only while the last finished run failed as a whole for a reason no retry gets past."""
    return (
        _stat(
            "Action required",
            "Appears when a connector's last finished sync failed as a whole for a reason "
            "that will not heal by itself (credentials, permissions, a closed period, "
            "invalid or duplicate data): no sync will succeed until someone acts. The "
            "same condition pages through the AccountingSyncActionRequired alert.",
        )
        .with_target(p.promql(ACTION_REQUIRED, "{{connector}}"))
        .mappings(p.class_mappings(NEEDS_ACTION))
        .thresholds(p.steps((None, p.RED)))
        .color_mode(cm.BigValueColorMode.BACKGROUND_SOLID)
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        .no_value("No action required")
        .data_links([p.link("Error details", ERROR_DETAILS, "Why the last sync failed")])
        .height(5)
        .span(16)
    )


def rejected() -> stat.Panel:
    return (
        _stat(
            "Rejected records",
            "Records the pipeline gave up on: they reach the accounting system only if a "
            "person fixes and resubmits them. Click for the records and their last error.",
        )
        .with_target(
            p.promql(p.per_integration("accounting_sync_rejected_records"), "{{connector}}")
        )
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        .thresholds(p.steps((None, p.GREEN), (1, p.RED)))
        .color_mode(cm.BigValueColorMode.VALUE)
        .data_links([p.link("Rejected records", ERROR_DETAILS, "The rejected records")])
        .height(5)
        .span(8)
    )


def connector() -> stat.Panel:
    return (
        _stat("Active connector", "The accounting system each active integration syncs to.")
        .with_target(
            p.promql(
                p.per_integration("accounting_sync_integration_active") + " == 1",
                "{{connector}}",
            )
        )
        .text_mode(cm.BigValueTextMode.NAME)
        .color_mode(cm.BigValueColorMode.NONE)
        .no_value("None active")
        .height(7)
        .span(4)
    )


def source_notice() -> stat.Panel:
    return (
        _stat(
            "Sync log",
            "Whether the exporter could read the sync log at its last refresh. When it "
            "cannot, every figure on this page is the last good reading and may be out of date.",
        )
        # The exporter's own series first; through a tenant's label-enforcing proxy it is
        # hidden (it has no org label), and the recording rule's per-integration copy
        # (alerting/rules) answers instead.
        .with_target(
            p.promql(
                "min(accounting_sync_exporter_source_up)"
                ' or min(org_connector:accounting_sync_exporter_source_up:min{org="$org"})'
            )
        )
        .mappings(
            [
                dm.ValueMap(
                    options={
                        "1": dm.ValueMappingResult(text="Readable", color=p.GREEN, index=0),
                        "0": dm.ValueMappingResult(
                            text="Exporter cannot read the sync log: figures may be stale",
                            color=p.RED,
                            index=1,
                        ),
                    }
                )
            ]
        )
        # The mapping colours 0 and 1; no data (neither series visible, e.g. a tenant whose
        # Prometheus does not load the project's rules) stays neutral.
        .thresholds(p.steps((None, "text")))
        .color_mode(cm.BigValueColorMode.BACKGROUND_SOLID)
        .no_value("Unknown")
        .height(7)
        .span(4)
    )


def pending() -> stat.Panel:
    return (
        _stat("Records pending", "Approved records waiting to reach the accounting system.")
        .with_target(
            p.promql(p.per_integration("accounting_sync_pending_records"), "{{connector}}")
        )
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        .thresholds(p.steps((None, "blue")))
        .color_mode(cm.BigValueColorMode.VALUE)
        .height(5)
        .span(6)
    )


def failed() -> stat.Panel:
    return (
        _stat(
            "Failed in the last sync",
            "records_failed of the last finished run. Click for the failed records.",
        )
        .with_target(p.promql(p.per_integration("accounting_sync_failed_records"), "{{connector}}"))
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        .thresholds(p.steps((None, p.GREEN), (1, p.AMBER)))
        .color_mode(cm.BigValueColorMode.VALUE)
        .data_links(
            [p.link("Failed records", ERROR_DETAILS, "The failed records of the last finished run")]
        )
        .height(5)
        .span(6)
    )


def last_success() -> stat.Panel:
    return (
        _stat("Last successful sync", "finished_at of the last succeeded or partial run.")
        .with_target(p.promql(f"{LAST_SUCCESS} * 1000", "{{connector}}"))
        .unit("dateTimeAsIso")
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        .color_mode(cm.BigValueColorMode.NONE)
        .no_value("Never")
        .height(5)
        .span(6)
    )


def since_success() -> stat.Panel:
    return (
        _stat("Since the last successful sync", "How long ago the last successful sync finished.")
        .with_target(p.promql(f"time() - {LAST_SUCCESS}", "{{connector}}"))
        .unit("dtdurations")
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        .color_mode(cm.BigValueColorMode.NONE)
        .no_value("Never")
        .height(5)
        .span(6)
    )


def _history(title: str, description: str, expr: str, unit: str = "short") -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(p.PROMETHEUS)
        .with_target(p.promql(expr, "{{connector}}", instant=False))
        .unit(unit)
        .min(0)
        .legend(
            cb.VizLegendOptions()
            .show_legend(True)
            .display_mode(cm.LegendDisplayMode.LIST)
            .placement(cm.LegendPlacement.BOTTOM)
        )
        .height(8)
        .span(12)
    )


def health_history() -> statetimeline.Panel:
    return (
        statetimeline.Panel()
        .title("Health over time")
        .description("The health indicator per connector, as Prometheus recorded it.")
        .datasource(p.PROMETHEUS)
        .with_target(p.promql(HEALTH, "{{connector}}", instant=False))
        .mappings(p.health_mappings())
        .thresholds(p.health_thresholds())
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
        .height(5)
        .span(24)
    )


def runs_table() -> table.Panel:
    return (
        table.Panel()
        .title("Sync runs")
        .description("Every run started in the time range, newest first, from the sync log.")
        .datasource(p.SYNC_LOG)
        .with_target(p.SqlQuery(RUNS_SQL))
        .height(9)
        .span(24)
    )


def build() -> db.Dashboard:
    return (
        p.base(
            p.ORG_UID,
            "Accounting sync: organization",
            "Health of one organization's sync to its accounting system.",
        )
        .with_variable(p.org_variable())
        .with_variable(p.connector_variable())
        .link(p.link("Overview", f"/d/{p.OVERVIEW_UID}?${{__url_time_range}}", "All organizations"))
        .link(
            p.link(
                "Error details",
                f"/d/{p.ERRORS_UID}?var-org=${{org}}&${{__url_time_range}}",
                "Failed records of this organization",
            )
        )
        .with_panel(health())
        .with_panel(stale_warning())
        .with_panel(connector())
        .with_panel(source_notice())
        .with_panel(action_required())
        .with_panel(rejected())
        .with_panel(pending())
        .with_panel(failed())
        .with_panel(last_success())
        .with_panel(since_success())
        .with_row(db.Row("History"))
        .with_panel(health_history())
        .with_panel(
            _history(
                "Records pending",
                "Records in state pending over time.",
                p.per_integration("accounting_sync_pending_records"),
            )
        )
        .with_panel(
            _history(
                "Records failed in the last sync",
                "records_failed of the last finished run over time.",
                p.per_integration("accounting_sync_failed_records"),
            )
        )
        .with_panel(
            _history(
                "Runs finished",
                "Sync runs that finished in each interval (succeeded, partial or failed).",
                # $__rate_interval is $__interval plus one scrape: each pair of
                # consecutive samples falls in exactly one window, so no run is missed
                # at a window boundary and none is counted twice.
                "max by (org, connector) (changes("
                f"accounting_sync_last_run_timestamp_seconds{p.ORG_SELECTOR}[$__rate_interval]))",
            )
        )
        .with_panel(
            _history(
                "Last run duration",
                "How long the last finished run took.",
                p.per_integration("accounting_sync_last_run_duration_seconds"),
                unit="s",
            )
        )
        .with_panel(runs_table())
    )
