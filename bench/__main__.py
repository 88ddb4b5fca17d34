"""``make bench``: every figure of issue 6, measured in one run, printed side by side.

For each scale (integrations) a throwaway database is built with a short history, then
lengthened to 25 times that history; the exporter's read is timed at both, beside the
generic DISTINCT ON / GROUP BY reference on the same data. With the long history the
real exporter process is started and scraped. At 2,000 integrations the commit-to-
/metrics latency is measured with change notification and with polling only; at the
largest scale the reference also runs inside prometheus-sql-exporter. Then the write path
(bench/write_path.py): the pipeline's writes with the project's triggers on and off.

    python -m bench                      # 100, 2000 and 10000 integrations
    python -m bench --scales 100 2000    # a quicker run
    python -m bench.write_path           # only the write path (issue 11): triggers on/off
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace

import psycopg

from bench import data, latency, reference, write_path
from bench.measure import OPENMETRICS, TEXT, exporter, median_time, percentile
from exporter.exposition.body import Exposition
from exporter.health import evaluate_snapshot
from exporter.model import ServedState
from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.migrate import upgrade
from exporter.source.reader import SNAPSHOT_STATEMENT, read_snapshot

HISTORY_FACTOR = 25
RUNS_SHORT = 20  # runs per integration in the short history (hourly syncs)
LATENCY_SCALE = 2000
NOTIFY_SAMPLES = 40
POLL_SAMPLES = 4
SCRAPES = 40


@dataclass
class Read:
    read: float  # read_snapshot as the exporter runs it (summary statement), median seconds
    lookups: float  # the per-integration index-lookup statement (SQLite's), median seconds
    evaluate: float
    render: float  # both formats from scratch (the first refresh), median seconds
    rerender: float  # both formats after a refresh that changed one integration
    reference: float  # the generic DISTINCT ON / GROUP BY status query, median seconds


@dataclass
class ScaleResult:
    integrations: int
    rows_short: dict[str, int]
    rows_long: dict[str, int]
    short: Read
    long: Read
    scrapes: dict[str, tuple[float, float, int]] = field(default_factory=dict)
    peak_rss: int = 0
    exporter_refresh: float = 0.0


def measure_read(url: str) -> Read:
    engine = create_sync_log_engine(normalize_url(url))
    try:
        read, snapshot = median_time(lambda: read_snapshot(engine), 5)
        with engine.connect() as connection:
            lookups, _ = median_time(lambda: connection.execute(SNAPSHOT_STATEMENT).all(), 5)
        evaluate, statuses = median_time(lambda: evaluate_snapshot(snapshot, snapshot.read_at), 5)
        state = ServedState(statuses=statuses, source_up=True)

        def render_cold() -> Exposition:
            exposition = Exposition(state)
            exposition.prerender()
            return exposition

        render, previous = median_time(render_cold, 3)
        changed = (*statuses[1:], replace(statuses[0], reason="changed"))

        def render_warm() -> None:
            Exposition(ServedState(statuses=changed), previous=previous).prerender()

        rerender, _ = median_time(render_warm, 5)
    finally:
        engine.dispose()
    ref, rows = reference.time_with_psycopg(url)
    if rows != len(snapshot.integrations):
        raise RuntimeError(
            f"reference saw {rows} integrations, exporter {len(snapshot.integrations)}"
        )
    return Read(read, lookups, evaluate, render, rerender, ref)


def measure_scrapes(running) -> dict[str, tuple[float, float, int]]:  # type: ignore[no-untyped-def]
    results = {}
    for name, accept, gzipped in (
        ("text", TEXT, False),
        ("text+gzip", TEXT, True),
        ("openmetrics", OPENMETRICS, False),
        ("openmetrics+gzip", OPENMETRICS, True),
    ):
        running.get(accept, gzipped)  # the first scrape of a format may render it
        times = []
        size = 0
        for _ in range(SCRAPES):
            seconds, body = running.get(accept, gzipped)
            times.append(seconds)
            size = len(body)
        results[name] = (percentile(times, 50), percentile(times, 95), size)
    return results


def run_scale(admin_url: str, integrations: int, latencies: dict[str, list[float]]) -> ScaleResult:
    scale = data.Scale(integrations, RUNS_SHORT)
    with data.throwaway_database(admin_url) as url:
        engine = create_sync_log_engine(normalize_url(url))
        upgrade(engine)
        engine.dispose()
        started = time.monotonic()
        data.build(url, scale)
        short = measure_read(url)
        rows_short = data.counts(url)
        data.lengthen(url, scale, HISTORY_FACTOR)
        long = measure_read(url)
        rows_long = data.counts(url)
        print(
            f"  {integrations} integrations: data {time.monotonic() - started:.0f} s, "
            f"read {short.read * 1000:.0f} -> {long.read * 1000:.0f} ms",
            file=sys.stderr,
            flush=True,
        )
        result = ScaleResult(integrations, rows_short, rows_long, short, long)
        with exporter(url) as running:
            result.scrapes = measure_scrapes(running)
            if integrations == LATENCY_SCALE:
                pairs = _integrations(url)
                latencies["notification"] = latency.commit_to_metrics(
                    url, running, pairs, NOTIFY_SAMPLES
                )
            result.exporter_refresh = _reported_refresh(running.text())
            result.peak_rss = running.peak_rss_bytes()
        if integrations == LATENCY_SCALE:
            with exporter(url, "--refresh.notify", "false") as polling:
                latencies["polling"] = latency.commit_to_metrics(
                    url, polling, _integrations(url), POLL_SAMPLES, pause=(0.0, 3.0), timeout=40
                )
        if integrations == max(SCALES):
            global SQL_EXPORTER
            SQL_EXPORTER = reference.time_in_sql_exporter(url)
    return result


SCALES = [100, 2000, 10000]
SQL_EXPORTER: reference.SqlExporterRun | None = None


def _integrations(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as connection:
        return [
            (str(org), str(connector))
            for org, connector in connection.execute(
                "SELECT org_id, connector FROM sync_integration ORDER BY 1, 2"
            )
        ]


def _reported_refresh(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("accounting_sync_exporter_refresh_duration_seconds "):
            return float(line.split()[1])
    return 0.0


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            names = [row.split(":", 1)[1].strip() for row in info if row.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} CPUs ({cpu}), {memory:.1f} GiB RAM, {system}"


def server_version(admin_url: str) -> str:
    with psycopg.connect(admin_url) as connection:
        row = connection.execute("SHOW server_version").fetchone()
        buffers = connection.execute("SHOW shared_buffers").fetchone()
    return f"PostgreSQL {row[0] if row else '?'} (shared_buffers {buffers[0] if buffers else '?'})"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}" if seconds < 0.1 else f"{seconds * 1000:.0f}"


def report(results: list[ScaleResult], latencies: dict[str, list[float]], admin_url: str) -> str:
    load = os.getloadavg()
    lines = [
        f"machine: {machine()}",
        f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
        " (other work on the machine inflates every wall-clock figure)",
        f"database: {server_version(admin_url)}",
        f"history: {RUNS_SHORT} runs per integration (short) and {RUNS_SHORT * HISTORY_FACTOR} "
        f"(x{HISTORY_FACTOR}); one synced record per run, an error per partial run, "
        f"{data.PENDING_PER_INTEGRATION} pending records per integration",
        "",
        "Commit-to-/metrics latency at "
        f"{LATENCY_SCALE:,} integrations (25x history), default 15 s interval:",
    ]
    for name in ("notification", "polling"):
        values = latencies.get(name, [])
        if values:
            lines.append(
                f"  {name:<13} p50 {_ms(percentile(values, 50)):>7} ms   "
                f"p95 {_ms(percentile(values, 95)):>7} ms   "
                f"(n={len(values)}, max {_ms(max(values))} ms)"
            )
    lines += [
        "",
        "Snapshot read, ms (median of 5; the exporter's one statement) vs the generic "
        "reference (DISTINCT ON / GROUP BY, median of 3):",
        f"  {'integrations':>12} {'runs':>10} {'read 1x':>8} {'read 25x':>9} {'ratio':>6}"
        f" {'lookup 1x':>9} {'lookup 25x':>10} {'ratio':>6}"
        f" {'ref 1x':>8} {'ref 25x':>9} {'ratio':>6}",
    ]
    for r in results:
        lines.append(
            f"  {r.integrations:>12,} {r.rows_long['sync_run']:>10,} {_ms(r.short.read):>8}"
            f" {_ms(r.long.read):>9} {r.long.read / r.short.read:>6.2f}"
            f" {_ms(r.short.lookups):>9} {_ms(r.long.lookups):>10}"
            f" {r.long.lookups / r.short.lookups:>6.2f}"
            f" {_ms(r.short.reference):>8} {_ms(r.long.reference):>9}"
            f" {r.long.reference / r.short.reference:>6.2f}"
        )
    lines += [
        "  read = read_snapshot as the exporter runs it (trigger-kept last run + grouped",
        "  pending); lookup = the per-integration index-lookup statement (used on SQLite);",
        "  ref = generic DISTINCT ON / GROUP BY status query.",
        "",
        "Rest of a refresh, ms (25x): evaluate health / render both formats from scratch /",
        "re-render after one integration changed:",
        "  "
        + ", ".join(
            f"{r.integrations:,}: {_ms(r.long.evaluate)} / {_ms(r.long.render)} / "
            f"{_ms(r.long.rerender)}"
            for r in results
        ),
        "Refresh duration the running exporter reported (read + evaluate): "
        + ", ".join(f"{r.integrations:,}: {_ms(r.exporter_refresh)} ms" for r in results),
        "",
        "/metrics from the running exporter (25x history), p50 / p95 ms and body size:",
        f"  {'integrations':>12} " + " ".join(f"{name:>24}" for name in results[0].scrapes),
    ]
    for r in results:
        cells = [
            f"{_ms(p50)}/{_ms(p95)} {size / 1024:,.0f}KiB" for p50, p95, size in r.scrapes.values()
        ]
        lines.append(f"  {r.integrations:>12,} " + " ".join(f"{c:>24}" for c in cells))
    lines += [
        "",
        "Exporter peak RSS (VmHWM): "
        + ", ".join(f"{r.integrations:,}: {r.peak_rss / 2**20:.0f} MiB" for r in results),
    ]
    if SQL_EXPORTER is not None:
        largest = results[-1]
        lines.append(
            f"prometheus-sql-exporter, same status query at {largest.integrations:,} integrations "
            f"(25x): {_ms(SQL_EXPORTER.query_seconds)} ms per run of the query "
            f"({SQL_EXPORTER.series:,} series) vs the exporter's read {_ms(largest.long.read)} ms"
        )
    else:
        lines.append(
            "prometheus-sql-exporter: not installed (apt-get install prometheus-sql-exporter)"
        )
    return "\n".join(lines)


def _ensure_sql_exporter() -> None:
    """Install Debian's prometheus-sql-exporter when missing and root or sudo is available."""
    if (
        subprocess.run(
            ["sh", "-c", "command -v prometheus-sql-exporter"], capture_output=True
        ).returncode
        == 0
    ):
        return
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    for command in (
        [*prefix, "apt-get", "update", "-qq"],
        [*prefix, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq",
         "--no-install-recommends", "prometheus-sql-exporter"],
    ):  # fmt: skip
        if subprocess.run(command, capture_output=True).returncode != 0:
            print("bench: could not install prometheus-sql-exporter", file=sys.stderr)
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--scales", type=int, nargs="+", default=SCALES)
    parser.add_argument(
        "--no-write-path", action="store_true", help="skip the write-path benchmark (issue 11)"
    )
    args = parser.parse_args(argv)
    admin_url = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    SCALES[:] = sorted(args.scales)
    _ensure_sql_exporter()
    started = time.monotonic()
    latencies: dict[str, list[float]] = {}
    results = [run_scale(admin_url, n, latencies) for n in SCALES]
    print(report(results, latencies, admin_url))
    if not args.no_write_path:
        print()
        print(write_path.report(write_path.run(admin_url)))

    from bench import status  # the status page's figures (bench/status.py runs them alone too)

    print("\n" + status.run(admin_url))
    print(f"\n(bench took {statistics.fmean([time.monotonic() - started]):.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
