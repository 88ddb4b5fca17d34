"""What the error details dashboard's SQL panels cost: ``python -m bench.dashboards``.

The panels classify every error row in SQL (a ``CASE`` generated from the exporter's
table) and look up each rejected record's last error. This builds the benchmark's sync
log (bench/data.py) and gives one organization a heavy load on top: tens of thousands
of record errors in the last day, with recognised and unrecognised codes and messages,
and thousands of rejected records whose last errors are spread over a month. Each SQL
panel is timed for that organization and for an ordinary one, with the short history
and again with 25 times the history, and the classifying query is put beside the
dashboard's plain group-by-code query over the same rows.

    python -m bench.dashboards                       # 2,000 integrations
    python -m bench.dashboards --integrations 200    # a quicker run
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import signal
import sys
from datetime import UTC, datetime, timedelta

import psycopg

from bench import data
from bench.measure import median_time
from tests.support.interpolate import (
    Context,
    TimeRange,
    Variable,
    expand_sql_macros,
    interpolate,
    load,
    targets,
)

HEAVY, ORDINARY = "org-00001", "org-00002"
ERRORS_PER_DAY = 50_000
REJECTED = 5_000

_HEAVY_LOAD = """
CREATE FUNCTION pg_temp.last_run(connector text) RETURNS bigint LANGUAGE sql STABLE AS $$
  SELECT id FROM sync_run
  WHERE org_id = 'org-00001' AND sync_run.connector = last_run.connector
    AND status <> 'running' AND finished_at IS NOT NULL
  ORDER BY finished_at DESC, id DESC LIMIT 1
$$;

WITH codes (n, code, message) AS (
  VALUES (0, 'Application_FieldValidationException', 'Amount: value is required'),
         (1, '429', 'Too Many Requests'),
         (2, NULL, 'The Posting Date is not within your range of allowed posting dates.'),
         (3, 'XL-422', 'Account 6800 does not exist'),
         (4, 'Internal_ServerError', 'Something went wrong'),
         (5, NULL, 'Your query timed out after 30 seconds'),
         (6, 'AADSTS7000222', 'The provided client secret keys are expired.'),
         (7, NULL, 'A message nobody has a rule for, somewhat long as real ones are')
)
INSERT INTO sync_record_error (run_id, org_id, connector, record_type, record_ref,
                               error_code, error_message, occurred_at)
SELECT CASE WHEN k %% 2 = 0 THEN (SELECT pg_temp.last_run('xledger'))
            ELSE (SELECT pg_temp.last_run('dynamics')) END,
       %(org)s, CASE WHEN k %% 2 = 0 THEN 'xledger' ELSE 'dynamics' END, 'expense',
       format('H-%%s', k), c.code, c.message,
       now() - (k * interval '86400 seconds') / %(errors)s::int
FROM generate_series(1, %(errors)s::int) AS k JOIN codes AS c ON c.n = k %% 8;

INSERT INTO sync_record (org_id, connector, record_type, record_ref, state, enqueued_at,
                         updated_at)
SELECT %(org)s, CASE WHEN k %% 2 = 0 THEN 'xledger' ELSE 'dynamics' END, 'expense',
       format('REJ-%%s', k), 'rejected', now() - k * interval '10 minutes',
       now() - k * interval '9 minutes'
FROM generate_series(1, %(rejected)s::int) AS k;

INSERT INTO sync_record_error (run_id, org_id, connector, record_type, record_ref,
                               error_code, error_message, occurred_at)
SELECT CASE WHEN k %% 2 = 0 THEN (SELECT pg_temp.last_run('xledger'))
            ELSE (SELECT pg_temp.last_run('dynamics')) END,
       %(org)s, CASE WHEN k %% 2 = 0 THEN 'xledger' ELSE 'dynamics' END, 'expense',
       format('REJ-%%s', k), 'Application_FieldValidationException',
       format('Attempt %%s failed', a), now() - k * interval '9 minutes' - a * interval '1 hour'
FROM generate_series(1, %(rejected)s::int) AS k CROSS JOIN generate_series(0, 2) AS a;

ANALYZE
"""


def queries(org: str) -> dict[str, str]:
    """Each SQL panel of the error details dashboard as the datasource receives it."""
    end = datetime.now(UTC)
    time_range = TimeRange(end - timedelta(hours=24), end, min_interval_seconds=60)
    context = Context({"org": Variable(org)}, time_range)
    out = {}
    for panel, target in targets(load()["accounting-sync-errors"]):
        if target["datasource"]["type"] == "grafana-postgresql-datasource":
            sql = interpolate(target["rawSql"], context, "grafana-postgresql-datasource")
            out[panel["title"]] = expand_sql_macros(sql, time_range)
    return out


def time_panels(url: str) -> dict[tuple[str, str], tuple[float, int]]:
    """(org, panel) -> (median seconds, rows)."""
    out = {}
    with psycopg.connect(url) as connection:

        def run(statement: str) -> list[tuple[object, ...]]:
            return connection.execute(statement.encode()).fetchall()

        for org in (HEAVY, ORDINARY):
            for title, sql in queries(org).items():
                seconds, rows = median_time(functools.partial(run, sql), 5)
                out[(org, title)] = (seconds, len(rows))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboards", description=__doc__)
    parser.add_argument("--integrations", type=int, default=2000)
    args = parser.parse_args(argv)
    # Stopped early, it still drops its throwaway database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    admin_url = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    scale = data.Scale(args.integrations, 20)
    with data.throwaway_database(admin_url) as url:
        from exporter.source.engine import create_sync_log_engine, normalize_url
        from exporter.source.migrate import upgrade

        engine = create_sync_log_engine(normalize_url(url))
        upgrade(engine)
        engine.dispose()
        data.build(url, scale)
        with psycopg.connect(url, autocommit=True) as connection:
            params = {"org": HEAVY, "errors": ERRORS_PER_DAY, "rejected": REJECTED}
            for statement in _HEAVY_LOAD.split(";\n\n"):
                connection.execute(statement.strip().rstrip(";"), params)  # type: ignore[arg-type]
        short = time_panels(url)
        data.lengthen(url, scale, 25)
        long = time_panels(url)
        rows = data.counts(url)
    print(f"# {platform.node()} load average {os.getloadavg()[0]:.1f}")
    print(
        f"{args.integrations} integrations; {HEAVY}: {ERRORS_PER_DAY:,} record errors in the "
        f"last 24 h, {REJECTED:,} rejected records (3 errors each). 25x: {rows}"
    )
    print("| organization | panel | rows | 1x ms | 25x ms | 25x / 1x |")
    print("|---|---|---|---|---|---|")
    for key, (seconds, count) in short.items():
        later, _ = long[key]
        print(
            f"| {key[0]} | {key[1]} | {count} | {seconds * 1000:.1f} | {later * 1000:.1f} "
            f"| {later / seconds:.2f} |"
        )
    for label, timings in (("1x", short), ("25x", long)):
        classified = timings[(HEAVY, "Failures by class")][0]
        plain = timings[(HEAVY, "Errors by code")][0]
        print(
            f"{label}: classifying {HEAVY}'s errors costs {classified / plain:.2f}x the plain "
            f"group by code ({classified * 1000:.0f} ms vs {plain * 1000:.0f} ms)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
