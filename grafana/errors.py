"""``accounting-sync-errors``: what failed for one organization, why, and who must act.

Run-level failures come from Prometheus (the exporter classifies them, operator rules
included); record errors and rejected records come from the sync log, classified in SQL
by the exporter's built-in table (grafana/classes.py).

Read with the PostgreSQL datasource (uid ``sync-log``): in a tenant Grafana organization
that datasource logs in as the tenant's database role, which row-level security limits to
the tenant's rows, so the ``org`` filter here is a convenience, not the security boundary.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common as cm

from exporter.classification import ERROR_CLASSES, HEALS_BY_ITSELF, NEEDS_ACTION
from grafana import panels as p
from grafana.classes import classify_join, heals_case, literal, words_case

SELECTOR = '{org="${org}"}'


def _class_list(classes: frozenset[str]) -> str:
    return ", ".join(literal(c) for c in ERROR_CLASSES if c in classes)


# Failures a person must deal with first, then those nobody recognised, then the ones
# the next runs are expected to get past.
URGENCY = (
    f"CASE WHEN c.error_class IN ({_class_list(NEEDS_ACTION)}) THEN 0"
    f" WHEN c.error_class IN ({_class_list(HEALS_BY_ITSELF)}) THEN 2 ELSE 1 END"
)
CLASS_COLUMNS = f"""  c.error_class,
  {words_case("c.error_class")} AS what_it_means,
  {heals_case("c.error_class")} AS heals_by_itself"""

# The last finished run of each of the organization's integrations, as the health rules
# define it (latest finished_at, not running), and the records that failed in it.
LAST_RUN_FAILURES_SQL = (
    """
SELECT
  e."time",
  e.connector,
  e.record_type,
  e.record_ref,
  e.error_code,
  e.error_message,
"""
    + CLASS_COLUMNS
    + """,
  e.run_id
FROM (
  SELECT
    e.id,
    e.occurred_at AS "time",
    e.connector,
    e.record_type,
    e.record_ref,
    e.error_code,
    e.error_message,
    e.run_id
  FROM sync_record_error e
  WHERE e.org_id = '${org}'
    AND e.run_id IN (
      SELECT (
        SELECT r.id
        FROM sync_run r
        WHERE r.org_id = i.org_id
          AND r.connector = i.connector
          AND r.status <> 'running'
          AND r.finished_at IS NOT NULL
        ORDER BY r.finished_at DESC, r.id DESC
        LIMIT 1
      )
      FROM sync_integration i
      WHERE i.org_id = '${org}'
    )
  ORDER BY e.occurred_at DESC, e.id DESC
  -- A run can fail tens of thousands of records: show (and classify) the newest only.
  LIMIT 1000
) e
"""
    + classify_join("e.error_code", "e.error_message")
    + """
ORDER BY e."time" DESC, e.id DESC
"""
)

ERRORS_OVER_TIME_SQL = """
SELECT
  $__timeGroupAlias(occurred_at, $__interval),
  connector,
  count(*) AS errors
FROM sync_record_error
WHERE org_id = '${org}'
  AND $__timeFilter(occurred_at)
GROUP BY 1, 2
ORDER BY 1, 2
"""

ERRORS_BY_CODE_SQL = """
SELECT
  coalesce(error_code, '(none)') AS error_code,
  connector,
  count(*) AS errors,
  max(occurred_at) AS last_seen
FROM sync_record_error
WHERE org_id = '${org}'
  AND $__timeFilter(occurred_at)
GROUP BY 1, 2
ORDER BY errors DESC, error_code
"""


FAILURES_BY_CLASS_SQL = (
    """
SELECT
"""
    + CLASS_COLUMNS
    + """,
  e.connector,
  coalesce(e.error_code, '(none)') AS error_code,
  count(*) AS errors,
  (array_agg(e.error_message ORDER BY e.occurred_at DESC, e.id DESC))[1] AS latest_message,
  max(e.occurred_at) AS last_seen
FROM sync_record_error e
"""
    + classify_join("e.error_code", "e.error_message")
    + """
WHERE e.org_id = '${org}'
  AND $__timeFilter(e.occurred_at)
GROUP BY c.error_class, e.connector, coalesce(e.error_code, '(none)')
ORDER BY """
    + URGENCY
    + """, errors DESC, error_code, e.connector
LIMIT 200
"""
)

# Each rejected record with the last error logged for it (same organization, connector,
# record type and reference), newest first; bounded so a flood cannot stall the panel.
# The last errors come from one pass over the organization's errors joined to the (at
# most 500) rejected records: there is no index by record reference on
# sync_record_error, and a lookup per record walked the organization's whole error
# history once per record (bench/dashboards.py measured a minute on a busy one).
REJECTED_SQL = (
    """
WITH rejected AS (
  SELECT r.id, r.org_id, r.connector, r.record_type, r.record_ref, r.enqueued_at, r.updated_at
  FROM sync_record r
  WHERE r.org_id = '${org}'
    AND r.state = 'rejected'
  ORDER BY r.updated_at DESC, r.id DESC
  LIMIT 500
),
last_error AS (
  SELECT DISTINCT ON (e.connector, e.record_type, e.record_ref)
    e.connector, e.record_type, e.record_ref, e.error_code, e.error_message, e.occurred_at
  FROM sync_record_error e
  JOIN rejected r
    ON e.org_id = r.org_id
   AND e.connector = r.connector
   AND e.record_type = r.record_type
   AND e.record_ref = r.record_ref
  WHERE e.org_id = '${org}'
  ORDER BY e.connector, e.record_type, e.record_ref, e.occurred_at DESC, e.id DESC
)
SELECT
  r.updated_at AS "time",
  r.connector,
  r.record_type,
  r.record_ref,
  r.enqueued_at,
  last_error.error_code,
  last_error.error_message,
"""
    + CLASS_COLUMNS
    + """,
  last_error.occurred_at AS last_error_at
FROM rejected r
LEFT JOIN last_error
  ON last_error.connector = r.connector
 AND last_error.record_type = r.record_type
 AND last_error.record_ref = r.record_ref
"""
    + classify_join(
        "last_error.error_code",
        "last_error.error_message",
        only_if="last_error.occurred_at IS NOT NULL",
    )
    + """
ORDER BY r.updated_at DESC, r.id DESC
"""
)

RUN_ERROR_CLASS = p.run_error_class(SELECTOR)
FAILED_BY_CLASS = (
    "max by (org, connector, error_class) "
    f"(accounting_sync_last_run_failed_records_by_class{SELECTOR})"
)


def run_failure() -> stat.Panel:
    return (
        stat.Panel()
        .title("Why the last sync failed as a whole")
        .description(
            "For each connector whose last finished run failed outright (nothing synced), "
            "the class of its error in words: red when a person must act, orange when the "
            "next runs are expected to get past it. Classified by the exporter, with the "
            "operators' own rules from its configuration."
        )
        .datasource(p.PROMETHEUS)
        .with_target(p.promql(RUN_ERROR_CLASS, "{{connector}}"))
        .graph_mode(cm.BigValueGraphMode.NONE)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .mappings(p.class_mappings())
        .thresholds(p.steps((None, p.GREY)))
        .color_mode(cm.BigValueColorMode.BACKGROUND_SOLID)
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        .no_value("The last sync did not fail as a whole")
        .height(6)
        .span(12)
    )


def failed_by_class() -> bargauge.Panel:
    return (
        bargauge.Panel()
        .title("Failed records of the last sync, by class")
        .description(
            "The last finished run's record errors per connector and class, as the "
            "exporter classified them (its configured rules included)."
        )
        .datasource(p.PROMETHEUS)
        .with_target(p.promql(FAILED_BY_CLASS, "{{connector}}: {{error_class}}"))
        .orientation(cm.VizOrientation.HORIZONTAL)
        .display_mode(cm.BarGaugeDisplayMode.BASIC)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(p.steps((None, p.AMBER)))
        .min(0)
        .no_value("No failed records in the last sync")
        .height(6)
        .span(12)
    )


def failures_by_class() -> table.Panel:
    return (
        table.Panel()
        .title("Failures by class")
        .description(
            "Record errors in the time range by class and code, those a person must act "
            "on first, with the latest message. Classified in SQL by the exporter's "
            "built-in table; rules added in the exporter's configuration do not apply here."
        )
        .datasource(p.SYNC_LOG)
        .with_target(p.SqlQuery(FAILURES_BY_CLASS_SQL))
        .no_value("No record errors in the time range")
        .height(9)
        .span(24)
    )


def rejected_records() -> table.Panel:
    return (
        table.Panel()
        .title("Rejected records")
        .description(
            "Records the pipeline gave up on, newest first (at most 500), with the last "
            "error logged for each. They reach the accounting system only if a person "
            "fixes and resubmits them. Not limited by the time range."
        )
        .datasource(p.SYNC_LOG)
        .with_target(p.SqlQuery(REJECTED_SQL))
        .no_value("No rejected records")
        .height(10)
        .span(24)
    )


def last_run_failures() -> table.Panel:
    return (
        table.Panel()
        .title("Failed records of the last finished sync")
        .description(
            "Each connector's last finished run and the records that failed in it (the "
            "newest 1,000), with the class of each error and whether it heals by itself: "
            "what to fix before the next sync. Not limited by the time range."
        )
        .datasource(p.SYNC_LOG)
        .with_target(p.SqlQuery(LAST_RUN_FAILURES_SQL))
        .no_value("No failed records in the last sync")
        .height(12)
        .span(24)
    )


def errors_over_time() -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title("Record errors over time")
        .description("Record failures logged in each interval, per connector.")
        .datasource(p.SYNC_LOG)
        .with_target(p.SqlQuery(ERRORS_OVER_TIME_SQL, fmt="time_series"))
        .min(0)
        .height(8)
        .span(12)
    )


def errors_by_code() -> table.Panel:
    return (
        table.Panel()
        .title("Errors by code")
        .description("Record failures in the time range, grouped by error code.")
        .datasource(p.SYNC_LOG)
        .with_target(p.SqlQuery(ERRORS_BY_CODE_SQL))
        .height(8)
        .span(12)
    )


def build() -> db.Dashboard:
    return (
        p.base(
            p.ERRORS_UID,
            "Accounting sync: error details",
            "The failed records of one organization, read from the sync log.",
        )
        .with_variable(p.org_variable())
        .link(
            p.link(
                "Organization",
                f"/d/{p.ORG_UID}?var-org=${{org}}&${{__url_time_range}}",
                "Back to this organization's dashboard",
            )
        )
        .link(p.link("Overview", f"/d/{p.OVERVIEW_UID}?${{__url_time_range}}", "All organizations"))
        .with_panel(run_failure())
        .with_panel(failed_by_class())
        .with_panel(last_run_failures())
        .with_panel(failures_by_class())
        .with_panel(rejected_records())
        .with_panel(errors_over_time())
        .with_panel(errors_by_code())
    )
