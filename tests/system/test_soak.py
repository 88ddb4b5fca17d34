"""A long run under steady load: memory, threads and file descriptors must level off.

Ten minutes (``SOAK_SECONDS``) of scrapers, a pipeline that keeps writing, refreshes every
second and, once a minute, a few seconds of a locked table so the failure path runs too.
Not part of ``make test``: run it with ``make soak``. It prints what it measured and fails
if the resident memory of the last minute exceeds that of the first minute after warm-up
by more than a small allowance, or if threads or descriptors keep increasing.
"""

from __future__ import annotations

import http.client
import os
import statistics
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from exporter.source.engine import create_sync_log_engine, normalize_url
from tests.support import exporter_process, run_cli, value
from tests.system.test_load import keep_enqueuing, seed

pytestmark = pytest.mark.soak
SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
SAMPLE_EVERY = 5.0
# Python's allocator keeps some freed memory; a leak shows as steady growth well beyond it.
ALLOWED_GROWTH_BYTES = 8 * 1024 * 1024


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_soak_memory_threads_and_descriptors_level_off(pg_url, tmp_path, capsys):
    assert run_cli("db", "upgrade", "--database-url", pg_url).returncode == 0
    engine = create_sync_log_engine(normalize_url(pg_url))
    seed(engine, 200)
    args = [
        "--database-url", pg_url, "--refresh-interval", "1s",
        "--database.statement-timeout", "1s",
    ]  # fmt: skip
    locker = create_engine(normalize_url(pg_url))
    with exporter_process(args, tmp_path) as exporter:
        pid = exporter.process.pid
        host, port = exporter.url.removeprefix("http://").split(":")
        stop = threading.Event()
        errors: list[str] = []
        scrapes = [0]

        def scraper() -> None:
            while not stop.wait(0.05):
                connection = http.client.HTTPConnection(host, int(port), timeout=30)
                try:
                    connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
                    response = connection.getresponse()
                    response.read()
                    if response.status != 200:
                        errors.append(f"status {response.status}")
                    scrapes[0] += 1
                except (OSError, http.client.HTTPException) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                finally:
                    connection.close()

        def lock_now_and_then() -> None:
            while not stop.wait(60):
                with locker.connect() as session, session.begin():
                    session.execute(text("lock table sync_run in access exclusive mode"))
                    stop.wait(3)

        threads = [threading.Thread(target=scraper) for _ in range(5)]
        writer = threading.Thread(target=keep_enqueuing, args=(engine, stop, 0.2, 200, "dynamics"))
        threads += [writer, threading.Thread(target=lock_now_and_then)]
        for thread in threads:
            thread.start()
        samples: list[tuple[float, int, int, int]] = []
        began = time.monotonic()
        try:
            while (elapsed := time.monotonic() - began) < SECONDS:
                samples.append(
                    (
                        elapsed,
                        _rss_bytes(pid),
                        len(os.listdir(f"/proc/{pid}/task")),
                        len(os.listdir(f"/proc/{pid}/fd")),
                    )
                )
                time.sleep(SAMPLE_EVERY)  # the sampling period of a measurement, not a wait
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        last = exporter.metrics()
        log = exporter.log()
    engine.dispose()
    locker.dispose()

    window = max(1, int(60 / SAMPLE_EVERY))
    warm = samples[window : 2 * window] or samples[:window]
    end = samples[-window:]
    first_rss = statistics.median(s[1] for s in warm)
    last_rss = statistics.median(s[1] for s in end)
    with capsys.disabled():
        print(
            f"\nsoak: {SECONDS:.0f}s, {scrapes[0]} scrapes, {len(errors)} errors, "
            f"RSS {first_rss / 2**20:.1f} MiB after warm-up -> {last_rss / 2**20:.1f} MiB at the "
            f"end ({(last_rss - first_rss) / 2**20:+.1f} MiB), "
            f"threads {warm[0][2]} -> {max(s[2] for s in end)}, "
            f"fds {warm[0][3]} -> {max(s[3] for s in end)}, "
            f"refresh failures {value(last, 'accounting_sync_exporter_refresh_failures_total')}"
        )
    assert not errors, errors[:5]
    assert value(last, "accounting_sync_exporter_source_up") in (0, 1)
    assert last_rss - first_rss <= ALLOWED_GROWTH_BYTES
    # Request threads come and go; a leak would keep the count climbing past any sample.
    assert min(s[2] for s in end) <= max(s[2] for s in warm) + 2
    assert min(s[3] for s in end) <= max(s[3] for s in warm) + 2
    assert "Traceback" not in log
