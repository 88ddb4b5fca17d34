"""Commit-to-/metrics latency: from a pipeline's COMMIT returning to the first scrape showing it.

Each sample commits one finished run for one integration with a finish time never used
before, then scrapes (gzip, as Prometheus does) until that integration's
``accounting_sync_last_run_timestamp_seconds`` carries the new time. The scrape loop's
own cost (a few milliseconds per scrape, plus up to 10 ms between scrapes) is part of
what is measured. Samples are spaced
by a random pause longer than the default debounce, as independent syncs finishing would
be; consecutive commits inside one debounce window would measure the throttle instead.
"""

from __future__ import annotations

import gzip
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import psycopg
from prometheus_client.utils import floatToGoString

from bench.measure import Exporter

# A scrape every 10 ms: fine enough for the figures, not so tight that the polling itself
# (a new connection and a request thread in the exporter each time) slows the refresh down.
POLL_SECONDS = 0.01

_INSERT_RUN = """
INSERT INTO sync_run (org_id, connector, started_at, finished_at, status, records_total)
VALUES (%s, %s, %s, %s, 'succeeded', 20)
"""


def commit_to_metrics(
    url: str,
    exporter: Exporter,
    integrations: Sequence[tuple[str, str]],
    samples: int,
    *,
    pause: tuple[float, float] = (0.3, 0.6),
    timeout: float = 60.0,
) -> list[float]:
    """Seconds from each commit to the scrape that first shows it."""
    chooser = random.Random(6)
    results = []
    with psycopg.connect(url, autocommit=True) as connection:
        for _ in range(samples):
            org, connector = chooser.choice(integrations)
            # A fresh microsecond-precision time: the series value identifies this commit.
            finished = datetime.now(UTC)
            expected = (
                f'accounting_sync_last_run_timestamp_seconds{{connector="{connector}",'
                f'org="{org}"}} {floatToGoString(finished.timestamp())}\n'
            ).encode()
            connection.execute(
                _INSERT_RUN, (org, connector, finished - timedelta(minutes=3), finished)
            )
            committed = time.perf_counter()
            deadline = committed + timeout
            while True:
                _, body = exporter.get(gzipped=True)
                seen = time.perf_counter()
                if expected in gzip.decompress(body):
                    results.append(seen - committed)
                    break
                if seen > deadline:
                    raise RuntimeError(f"commit not visible after {timeout} s: {expected!r}")
                time.sleep(POLL_SECONDS)
            time.sleep(chooser.uniform(*pause))
    return results
