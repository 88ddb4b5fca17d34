"""The reference: the same per-integration status as a generic SQL exporter would compute it.

What a user of ``prometheus-sql-exporter`` (Debian's package of justwatchcom/sql_exporter)
would naturally write: the last finished run with DISTINCT ON, the last success with
GROUP BY, the pending records with GROUP BY, and the health rules as a CASE. Those read
every run of the history, which is the point of the comparison.

It is timed two ways: with psycopg exactly like the exporter's own read, and inside
``prometheus-sql-exporter`` itself, from the query timings in its own debug log.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
import yaml
from sqlalchemy.engine import make_url

from bench.measure import free_port, median_time

STATUS_QUERY = """
WITH last_run AS (
    SELECT DISTINCT ON (org_id, connector) org_id, connector, status, records_failed, finished_at
    FROM sync_run
    WHERE status <> 'running' AND finished_at IS NOT NULL
    ORDER BY org_id, connector, finished_at DESC, id DESC
), last_success AS (
    SELECT org_id, connector, max(finished_at) AS finished_at
    FROM sync_run
    WHERE status IN ('succeeded', 'partial')
    GROUP BY org_id, connector
), pending AS (
    SELECT org_id, connector, count(*) AS pending, min(enqueued_at) AS oldest
    FROM sync_record
    WHERE state = 'pending'
    GROUP BY org_id, connector
)
SELECT i.org_id AS org, i.connector,
       coalesce(p.pending, 0)::float AS pending,
       coalesce(r.records_failed, 0)::float AS failed,
       coalesce(extract(epoch FROM s.finished_at), 0)::float AS last_success,
       coalesce(extract(epoch FROM r.finished_at), 0)::float AS last_run,
       CASE
           WHEN i.active AND now() - coalesce(s.finished_at, i.created_at)
                > i.stale_after_seconds * interval '1 second' THEN 2
           WHEN r.records_failed > 0 OR r.status = 'failed' THEN 1
           ELSE 0
       END::float AS health
FROM sync_integration AS i
LEFT JOIN last_run AS r USING (org_id, connector)
LEFT JOIN last_success AS s USING (org_id, connector)
LEFT JOIN pending AS p USING (org_id, connector)
"""
VALUES = ["pending", "failed", "last_success", "last_run", "health"]


def time_with_psycopg(url: str, repeat: int = 3) -> tuple[float, int]:
    """Median seconds of the status query and the number of rows it returns."""
    with psycopg.connect(url) as connection:

        def run() -> int:
            return len(connection.execute(STATUS_QUERY).fetchall())

        return median_time(run, repeat)


@dataclass
class SqlExporterRun:
    query_seconds: float
    series: int


def time_in_sql_exporter(url: str, timeout: float = 300) -> SqlExporterRun | None:
    """Run the status query once in prometheus-sql-exporter; None if it is not installed."""
    binary = shutil.which("prometheus-sql-exporter")
    if binary is None:
        return None
    parts = make_url(url)
    dsn = (
        f"postgres://{parts.username or 'postgres'}@{parts.host or '127.0.0.1'}:"
        f"{parts.port or 5432}/{parts.database}?sslmode=disable"
    )
    config = {
        "jobs": [
            {
                "name": "accounting_sync",
                "interval": "1h",  # once at start-up, timed from its own log
                "connections": [dsn],
                "queries": [
                    {
                        "name": "integration_status",
                        "help": "Per-integration sync status",
                        "labels": ["org", "connector"],
                        "values": VALUES,
                        "query": STATUS_QUERY,
                    }
                ],
            }
        ]
    }
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        config_path = Path(directory) / "sql-exporter.yml"
        config_path.write_text(yaml.safe_dump(config))
        log_path = Path(directory) / "log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [binary, "-config.file", str(config_path),
                 "-web.listen-address", f"127.0.0.1:{port}"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                timing = _query_seconds(log_path.read_text(errors="replace"))
                if timing is not None:
                    series = _count_series(port)
                    return SqlExporterRun(timing, series)
                if process.poll() is not None:
                    break
                time.sleep(0.2)
            raise RuntimeError(f"prometheus-sql-exporter: {log_path.read_text()[-2000:]}")
        finally:
            process.terminate()
            process.wait(timeout=20)


def _query_seconds(log: str) -> float | None:
    started = finished = None
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") == "Running Query":
            started = _parse_time(entry["ts"])
        elif entry.get("msg") == "Query finished" and started is not None:
            finished = _parse_time(entry["ts"])
            return (finished - started).total_seconds()
    return None


def _parse_time(text: str) -> datetime:
    # Go writes nanoseconds; Python parses up to microseconds.
    head, _, rest = text.partition(".")
    fraction = rest.rstrip("Z")[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{head}.{fraction}+00:00")


def _count_series(port: int) -> int:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return sum(1 for line in text.splitlines() if line.startswith("sql_integration_status{"))
