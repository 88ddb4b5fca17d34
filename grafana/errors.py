"""``accounting-sync-errors``: the failed records of one organization, from the sync log.

Read with the PostgreSQL datasource (uid ``sync-log``): in a tenant Grafana organization
that datasource logs in as the tenant's database role, which row-level security limits to
the tenant's rows, so the ``org`` filter here is a convenience, not the security boundary.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import table, timeseries

from grafana import panels as p

# The last finished run of each of the organization's integrations, as the health rules
# define it (latest finished_at, not running), and the records that failed in it.
LAST_RUN_FAILURES_SQL = """
SELECT
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
"""

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


def last_run_failures() -> table.Panel:
    return (
        table.Panel()
        .title("Failed records of the last finished sync")
        .description(
            "Each connector's last finished run and the records that failed in it: what "
            "to fix before the next sync. Not limited by the time range."
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
        .with_panel(last_run_failures())
        .with_panel(errors_over_time())
        .with_panel(errors_by_code())
    )
