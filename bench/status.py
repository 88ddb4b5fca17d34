"""The status page's figures (issue 13), printed side by side.

- commit to pixels: a run committed to PostgreSQL until the row's health word changes in
  a real Chromium showing /status, at 2,000 integrations, refresh interval 60 s (so only
  the change notification and the event stream can bring it), p50 and p95;
- the overview's render time at 10,000 integrations (the server renders every page);
- /metrics latency with 50 open event streams beside none, while the pipeline commits.

    python -m bench.status            # alone (about two minutes)
    python -m bench                   # with every other benchmark
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg

from bench import data, latency
from bench.measure import TEXT, Exporter, exporter, percentile
from exporter.model import Health, IntegrationFacts, IntegrationStatus, ServedState
from exporter.serve.status import render
from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.migrate import upgrade

PIXEL_SCALE = 2000
RENDER_SCALE = 10000
PIXEL_SAMPLES = 30
STREAMS = 50
SCRAPES = 300
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
_RUN = """
INSERT INTO sync_run (org_id, connector, started_at, finished_at, status, records_total,
                      records_failed)
VALUES (%s, %s, %s, %s, %s, 20, %s)
"""
_BADGE = """([key, word]) => {
  for (const row of document.getElementById("rows").children) {
    if (row.dataset.key === key) return row.querySelector(".badge").textContent === word;
  }
  return false;
}"""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}" if seconds < 0.1 else f"{seconds * 1000:.0f}"


def render_time(integrations: int = RENDER_SCALE) -> tuple[float, float, int]:
    """Median seconds to render the overview and one changed row; the page's size."""
    now = datetime.now(UTC)
    healths = (Health.GREEN, Health.GREEN, Health.GREEN, Health.AMBER, Health.RED)
    statuses = tuple(
        IntegrationStatus(
            IntegrationFacts(
                org_id=f"org-{i:05d}", org_name=f"Organization {i}",
                connector="xledger" if i % 2 else "dynamics", active=i % 17 != 0,
                stale_after_seconds=86400, created_at=now - timedelta(days=400),
                pending_records=i % 7, last_run_records_failed=i % 3,
                last_success_at=now - timedelta(minutes=i % 90),
            ),
            healths[i % len(healths)],
            "reason",
        )
        for i in range(integrations)
    )  # fmt: skip
    state = ServedState(statuses=statuses, source_up=True, last_refresh_at=now.timestamp())
    page = render.Page("Accounting sync status", "/status/events", "b-1", 15, "v")
    times, row_times = [], []
    body = ""
    for _ in range(5):
        started = time.perf_counter()
        body = render.overview(page, state, statuses, now)
        times.append(time.perf_counter() - started)
        started = time.perf_counter()
        render.overview_row(statuses[0], now)
        row_times.append(time.perf_counter() - started)
    return statistics.median(times), statistics.median(row_times), len(body.encode())


def _pairs(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT org_id, connector FROM sync_integration").fetchall()
    return [(str(org), str(connector)) for org, connector in rows]


def commit_to_pixels(url: str, running: Exporter, samples: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    chooser = random.Random(13)
    pairs = _pairs(url)
    results = []
    with sync_playwright() as playwright, psycopg.connect(url, autocommit=True) as connection:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"http://127.0.0.1:{running.port}/status")
        page.wait_for_function("document.body.dataset.connected === 'true'")
        for _ in range(samples):
            org, connector = chooser.choice(pairs)
            key = f"{connector}:{org}"
            shown = page.evaluate(
                """(key) => { for (const r of document.getElementById("rows").children)
                   if (r.dataset.key === key) return r.querySelector(".badge").textContent; }""",
                key,
            )
            status, failed, word = (
                ("partial", 1, "Amber") if shown == "Green" else ("succeeded", 0, "Green")
            )
            finished = datetime.now(UTC)
            connection.execute(
                _RUN, (org, connector, finished - timedelta(minutes=1), finished, status, failed)
            )
            committed = time.perf_counter()
            page.wait_for_function(_BADGE, arg=[key, word], polling="raf", timeout=20000)
            results.append(time.perf_counter() - committed)
            time.sleep(chooser.uniform(0.3, 0.6))
        browser.close()
    return results


@contextmanager
def open_streams(port: int, count: int) -> Iterator[list[int]]:
    """``count`` event streams read continuously, as browsers would; yields bytes read."""
    received = [0] * count
    sockets = []
    stop = threading.Event()

    def read(index: int, sock: socket.socket) -> None:
        while not stop.is_set():
            try:
                chunk = sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            received[index] += len(chunk)

    threads = []
    # As a browser does: the stream starts from the snapshot its page showed.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status") as response:
        page = response.read().decode()
    since = page.split('data-event-id="', 1)[1].split('"', 1)[0]
    request = f"GET /status/events?since={since} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    for index in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(request)
        sockets.append(sock)
        thread = threading.Thread(target=read, args=(index, sock), daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + 30
    while not all(received) and time.monotonic() < deadline:
        time.sleep(0.05)  # every stream answered (a catch-up event, if the page was old)
    try:
        yield received
    finally:
        stop.set()
        for sock in sockets:
            sock.close()
        for thread in threads:
            thread.join(timeout=5)


@contextmanager
def committing(url: str, pairs: list[tuple[str, str]]) -> Iterator[None]:
    """The pipeline at work: a run every 0.5 s, so every stream has events to carry."""
    stop = threading.Event()

    def write() -> None:
        chooser = random.Random(5)
        with psycopg.connect(url, autocommit=True) as connection:
            while not stop.wait(0.5):
                org, connector = chooser.choice(pairs)
                now = datetime.now(UTC)
                connection.execute(_RUN, (org, connector, now, now, "succeeded", 0))

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def scrape_times(running: Exporter, count: int = SCRAPES) -> list[float]:
    return [running.get(TEXT, gzipped=True)[0] for _ in range(count)]


def run(admin_url: str) -> str:
    lines: list[str] = []
    seconds, row, size = render_time()
    lines.append(
        f"Status page render at {RENDER_SCALE:,} integrations: overview {_ms(seconds)} ms "
        f"({size / 1024:,.0f} KiB of HTML), one changed row {row * 1e6:.0f} µs (median of 5)"
    )
    with data.throwaway_database(admin_url) as url:
        engine = create_sync_log_engine(normalize_url(url))
        upgrade(engine)
        engine.dispose()
        data.build(url, data.Scale(PIXEL_SCALE, 3))
        pairs = _pairs(url)
        with exporter(url, "--refresh-interval", "60s") as running:
            pixels = commit_to_pixels(url, running, PIXEL_SAMPLES)
            # The same path without the page, side by side: what the browser adds.
            metrics = latency.commit_to_metrics(url, running, pairs, PIXEL_SAMPLES // 2)
            lines.append(
                f"Commit to pixels at {PIXEL_SCALE:,} integrations (Chromium, refresh interval "
                f"60 s): p50 {_ms(percentile(pixels, 50))} ms, p95 {_ms(percentile(pixels, 95))} "
                f"ms (n={len(pixels)}, max {_ms(max(pixels))} ms; goal p50 < 500 ms)"
            )
            lines.append(
                f"  beside commit to /metrics, same exporter: p50 {_ms(percentile(metrics, 50))} "
                f"ms, p95 {_ms(percentile(metrics, 95))} ms (n={len(metrics)})"
            )
            with committing(url, pairs):
                scrape_times(running, 20)  # warm up
                before = scrape_times(running)
                with open_streams(running.port, STREAMS) as received:
                    during = scrape_times(running)
                    carried = sum(received)
                after = scrape_times(running)
            lines.append(
                f"/metrics at {PIXEL_SCALE:,} integrations while the pipeline commits every "
                f"0.5 s, ms ({SCRAPES} scrapes each, gzip):"
            )
            for name, values in (
                ("no streams", before),
                (f"{STREAMS} streams", during),
                ("no streams again", after),
            ):
                lines.append(
                    f"  {name:<17} p50 {_ms(percentile(values, 50)):>6}  "
                    f"p95 {_ms(percentile(values, 95)):>6}  p99 {_ms(percentile(values, 99)):>6}"
                )
            baseline = max(percentile(before, 99), percentile(after, 99))
            lines.append(
                f"  p99 with {STREAMS} streams / worse of the two baselines: "
                f"{percentile(during, 99) / baseline:.2f} (goal <= 1.10); the streams carried "
                f"{carried / 2**20:.1f} MiB"
            )
    return "\n".join(lines)


def main() -> int:
    admin_url = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    started = time.monotonic()
    print(run(admin_url))
    print(f"(status bench took {time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
