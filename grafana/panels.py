"""Building blocks every dashboard shares: datasources, health colours, queries, links.

One home for these keeps the three dashboards consistent: a health value means the same
word and the same colour everywhere, and every query deduplicates exporter replicas the
same way (``max by (org, connector)``), so two replicas scraped side by side never double
count and the dashboards do not depend on the recording rules being loaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.runtime import UnknownDataquery
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from exporter.classification import ERROR_CLASSES, HEALS_BY_ITSELF, NEEDS_ACTION
from grafana.classes import CLASS_WORDS, INACTIVE_COLOR

# Fixed uids: the tenant setup provisions per-organization datasources under the same uids,
# so one dashboard JSON serves the main organization and every tenant organization.
PROMETHEUS = dm.DataSourceRef(type_val="prometheus", uid="prometheus")
SYNC_LOG = dm.DataSourceRef(type_val="grafana-postgresql-datasource", uid="sync-log")

OVERVIEW_UID = "accounting-sync-overview"
ORG_UID = "accounting-sync-org"
ERRORS_UID = "accounting-sync-errors"

# Short enough that a sync finishing in the background shows up without a manual reload;
# the exporter re-reads the sync log at least this often (15 s default, NOTIFY on PostgreSQL).
REFRESH = "10s"
TIME_FROM = "now-24h"
TAGS = ["accounting-sync"]

GREEN, AMBER, RED = "green", "orange", "red"
GREY = INACTIVE_COLOR
# What health queries answer for an inactive integration: no sync is expected, so neither
# its green nor its amber says anything; it must never pass for healthy.
INACTIVE = -1
HEALTH_WORDS = {
    INACTIVE: ("Inactive", GREY),
    0: ("Healthy", GREEN),
    1: ("Failing", AMBER),
    2: ("Stale", RED),
}

ORG_VARIABLE = "org"
CONNECTOR_VARIABLE = "connector"
# Per-integration selector on the organization's dashboards.
ORG_SELECTOR = '{org="$org", connector=~"$connector"}'


def health_mappings() -> list[dm.ValueMapping]:
    """0/1/2 as words and colours; the colour drives stat backgrounds and table cells."""
    return [
        dm.ValueMap(
            options={
                str(value): dm.ValueMappingResult(text=text, color=color, index=index)
                for index, (value, (text, color)) in enumerate(HEALTH_WORDS.items())
            }
        )
    ]


def health(selector: str = ORG_SELECTOR) -> str:
    """Health per integration, ``INACTIVE`` (-1) where the integration is not active.

    The exporter still evaluates an inactive integration (it can be amber, never red);
    the dashboards replace that value so that every place showing health reads "Inactive".
    """
    raw = per_integration("accounting_sync_health", selector)
    inactive = f"({per_integration('accounting_sync_integration_active', selector)} == 0)"
    return f"({raw} unless on (org, connector) {inactive}) or ({inactive} - {-INACTIVE})"


def class_code(error_class: str) -> int:
    """A class as a number, so that a stat's value mapping can show it in words."""
    return ERROR_CLASSES.index(error_class) + 1


def run_error_class(selector: str, classes: Iterable[str] = ERROR_CLASSES) -> str:
    """The last finished run's class (as :func:`class_code`) where it failed as a whole.

    ``accounting_sync_last_run_error_class`` is 1 with the class as a label; a number per
    class lets Grafana map it to words and a colour, which it cannot do with a label.
    """
    wanted = set(classes)
    metric = "accounting_sync_last_run_error_class"
    parts = []
    for error_class in ERROR_CLASSES:
        if error_class in wanted:
            matcher = f'error_class="{error_class}"'
            one = f"{{{matcher}}}" if not selector else f"{selector[:-1]}, {matcher}}}"
            parts.append(f"{per_integration(metric, one)} * {class_code(error_class)}")
    return " or ".join(parts)


def class_color(error_class: str) -> str:
    if error_class in NEEDS_ACTION:
        return RED
    if error_class in HEALS_BY_ITSELF:
        return AMBER
    return GREY


def class_mappings(classes: Iterable[str] = ERROR_CLASSES) -> list[dm.ValueMapping]:
    """:func:`class_code` values as the class in words, red when a person must act."""
    return [
        dm.ValueMap(
            options={
                str(class_code(c)): dm.ValueMappingResult(
                    text=CLASS_WORDS[c], color=class_color(c), index=i
                )
                for i, c in enumerate(c for c in ERROR_CLASSES if c in set(classes))
            }
        )
    ]


def health_thresholds() -> db.ThresholdsConfig:
    """The first step is the base colour, so a value without a mapping still gets one."""
    return steps((None, GREEN), (1, AMBER), (2, RED))


def steps(*pairs: tuple[float | None, str]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=value, color=color) for value, color in pairs])
    )


def promql(
    expr: str, legend: str = "", *, ref: str = "A", instant: bool = True, table: bool = False
) -> prometheus.Dataquery:
    """An instant query for figures, a range query for history; table format for tables.

    Figures keep the time-series format so that labels stay on the field, where data links
    (``${__field.labels.org}``) and legends (``{{connector}}``) find them.
    """
    query = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(PROMETHEUS)
    if legend:
        query = query.legend_format(legend)
    if table:
        query = query.format(PromQueryFormat.TABLE)
    return query.instant() if instant else query.range()


def per_integration(metric: str, selector: str = ORG_SELECTOR) -> str:
    """One series per (org, connector) however many exporter replicas are scraped."""
    return f"max by (org, connector) ({metric}{selector})"


class SqlQuery(cogbuilder.Builder[cogvariants.Dataquery]):
    """A PostgreSQL datasource target; the SDK has no typed builder for that plugin."""

    def __init__(self, raw_sql: str, *, ref: str = "A", fmt: str = "table") -> None:
        self._data: dict[str, Any] = {
            "datasource": {"type": SYNC_LOG.type_val, "uid": SYNC_LOG.uid},
            "editorMode": "code",
            "format": fmt,
            "rawQuery": True,
            "rawSql": raw_sql.strip(),
            "refId": ref,
        }

    def build(self) -> cogvariants.Dataquery:
        return UnknownDataquery(dict(self._data))

    def ref_id(self, ref: str) -> Self:
        self._data["refId"] = ref
        return self


def link(title: str, url: str, tooltip: str = "") -> db.DashboardLink:
    return (
        db.DashboardLink(title)
        .type(dm.DashboardLinkType.LINK)
        .url(url)
        .tooltip(tooltip or title)
        .keep_time(True)
    )


def org_variable() -> db.QueryVariable:
    """A query variable named ``org``: tenant organizations replace it with a hidden constant."""
    return (
        db.QueryVariable(ORG_VARIABLE)
        .label("Organization")
        .datasource(PROMETHEUS)
        .query("label_values(accounting_sync_org_info, org)")
        .allow_custom_value(False)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
    )


def connector_variable() -> db.QueryVariable:
    return (
        db.QueryVariable(CONNECTOR_VARIABLE)
        .label("Connector")
        .datasource(PROMETHEUS)
        .query('label_values(accounting_sync_org_info{org="$org"}, connector)')
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .include_all(True)
        .all_value(".*")
        .current(dm.VariableOption(selected=True, text="All", value="$__all"))
    )


def base(uid: str, title: str, description: str) -> db.Dashboard:
    return (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .refresh(REFRESH)
        .time(TIME_FROM, "now")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .readonly()
        .timepicker(db.TimePicker().refresh_intervals(["10s", "30s", "1m", "5m"]))
    )
