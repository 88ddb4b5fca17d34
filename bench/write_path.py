"""What the sync pipeline pays for being observed: its writes with the project's triggers
on and off, measured side by side in one run on one database (issue 11).

Three modes, switched by enabling and disabling triggers (foreign keys stay on in all):

- ``off``: every trigger the project installs is disabled (``DISABLE TRIGGER USER`` on the
  tables that have them), what the pipeline would pay without the exporter;
- ``0005``: the statement-level summary triggers of migration 0005 and the change
  notifications, as shipped;
- ``0002``: migration 0002's row trigger instead (its function is still installed), for
  comparison; it is skipped for the largest backfill, which would take minutes.

Measured:

1. one ``INSERT ... SELECT`` backfilling 20, 80 and 320 finished runs for each of 1,000
   integrations, from an empty run table each time (median of the repeats);
2. a steady pipeline as ``Pipeline`` writes: start a run, enqueue records, mark them
   synced, finish the run, each step its own transaction;
3. 8 concurrent writers, each transaction finishing 4 runs in one statement, of 40 shared
   integrations (heavy overlap) and of all 1,000: throughput, the share of sampled writer
   time spent waiting for a lock, and deadlocks (retried and counted; PostgreSQL's own
   count beside it). Here 0005 is also split into its halves, ``notify-only`` (0002's
   change notifications) and ``summary-only`` (0005's summary triggers), to tell apart
   what each costs when writers commit at the same time.

    python -m bench.write_path          # alone (1.5 to 3.5 minutes here, by load)
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import errors

from bench import data
from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.migrate import upgrade
from exporter.source.pipeline import Pipeline

INTEGRATIONS = 1000
BACKFILL_RUNS = (20, 80, 320)
OLD_TRIGGER_MAX_RUNS = 80
BACKFILL_REPEATS = {20: 3, 80: 3, 320: 2}
STEADY_BLOCKS = 4  # alternating blocks per mode, so drift on a shared machine hits all
STEADY_CYCLES = 30  # pipeline cycles per block
STEADY_RECORDS = 5
WRITERS = 8
WRITER_TRANSACTIONS = 60
RUNS_PER_TRANSACTION = 4
SHARED_INTEGRATIONS = (40, 1000)  # heavy overlap, and the same writers spread over all
MODES = ("off", "0005", "0002")
# The concurrent writers also run with one half of 0005's mode at a time, to tell the cost
# of the summary's row locks from that of the change notifications (migration 0002).
CONCURRENT_MODES = ("off", "notify-only", "summary-only", "0005", "0002", "off")
TABLES_WITH_TRIGGERS = ("sync_organization", "sync_integration", "sync_run", "sync_record")
T0 = datetime(2026, 11, 1, tzinfo=UTC)

_BACKFILL = """
INSERT INTO sync_run (org_id, connector, started_at, finished_at, status, records_total,
                      records_failed)
SELECT i.org_id, i.connector, %(t0)s - k * interval '1 hour' - interval '3 minutes',
       %(t0)s - k * interval '1 hour',
       CASE WHEN k %% 13 = 0 THEN 'failed' WHEN k %% 7 = 0 THEN 'partial' ELSE 'succeeded' END,
       20, CASE WHEN k %% 7 = 0 THEN 1 ELSE 0 END
FROM sync_integration AS i CROSS JOIN generate_series(1, %(runs)s) AS k
"""


def set_mode(connection: psycopg.Connection, mode: str) -> None:
    """Enable exactly the triggers of ``mode`` (internal, foreign-key triggers stay on)."""
    for table in TABLES_WITH_TRIGGERS:
        connection.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    if mode == "off":
        return
    if mode != "summary-only":
        for table in TABLES_WITH_TRIGGERS:
            connection.execute(f"ALTER TABLE {table} ENABLE TRIGGER {table}_notify_change")
    if mode == "notify-only":
        return
    connection.execute("ALTER TABLE sync_run ENABLE TRIGGER sync_run_last_run_truncate")
    if mode in ("0005", "summary-only"):
        for event in ("insert", "update", "delete"):
            connection.execute(f"ALTER TABLE sync_run ENABLE TRIGGER sync_run_summary_{event}")
    else:
        connection.execute("ALTER TABLE sync_run ENABLE TRIGGER sync_run_last_run")


def _fresh(connection: psycopg.Connection) -> None:
    """An empty run table and a vacuumed integration table, so every measurement starts
    alike (0002's trigger leaves thousands of dead integration rows behind)."""
    connection.execute("TRUNCATE sync_run CASCADE")
    connection.execute("TRUNCATE sync_record")
    connection.execute("SELECT accounting_sync_rebuild_summary()")
    connection.execute("VACUUM ANALYZE sync_integration, sync_run, sync_record")


def measure_backfill(connection: psycopg.Connection) -> dict[tuple[str, int], float]:
    samples: dict[tuple[str, int], list[float]] = {}
    for repeat in range(max(BACKFILL_REPEATS.values())):
        for runs in BACKFILL_RUNS:
            if repeat >= BACKFILL_REPEATS[runs]:
                continue
            for mode in MODES:
                if mode == "0002" and (runs > OLD_TRIGGER_MAX_RUNS or samples.get((mode, runs))):
                    continue  # one sample of the old trigger is plenty, and slow enough
                set_mode(connection, mode)
                _fresh(connection)
                started = time.perf_counter()
                connection.execute(_BACKFILL, {"t0": T0, "runs": runs})
                samples.setdefault((mode, runs), []).append(time.perf_counter() - started)
    return {key: statistics.median(values) for key, values in samples.items()}


def measure_steady(url: str, connection: psycopg.Connection) -> dict[str, float]:
    """Seconds per pipeline cycle (four transactions), by mode."""
    set_mode(connection, "off")
    _fresh(connection)
    connection.execute(_BACKFILL, {"t0": T0, "runs": 20})
    connection.execute("SELECT accounting_sync_rebuild_summary()")
    connection.execute("VACUUM ANALYZE")
    pairs = connection.execute(
        "SELECT org_id, connector FROM sync_integration ORDER BY 1, 2"
    ).fetchall()
    engine = create_sync_log_engine(normalize_url(url))
    pipeline = Pipeline(engine)
    spent = dict.fromkeys(MODES, 0.0)
    cycles = dict.fromkeys(MODES, 0)
    at = T0
    try:
        for block in range(STEADY_BLOCKS):
            for mode in MODES[block % len(MODES) :] + MODES[: block % len(MODES)]:
                set_mode(connection, mode)
                started = time.perf_counter()
                for n in range(STEADY_CYCLES):
                    org, connector = pairs[(block * STEADY_CYCLES + n) % len(pairs)]
                    at += timedelta(seconds=1)
                    run = pipeline.start_run(org, connector, at=at)
                    ids = pipeline.enqueue(
                        org,
                        connector,
                        [("expense", f"E-{block}-{n}-{k}") for k in range(STEADY_RECORDS)],
                        at=at,
                    )
                    pipeline.mark_synced(ids, at=at)
                    pipeline.finish_run(run, "succeeded", records_total=len(ids), at=at)
                spent[mode] += time.perf_counter() - started
                cycles[mode] += STEADY_CYCLES
    finally:
        engine.dispose()
    return {mode: spent[mode] / cycles[mode] for mode in MODES}


@dataclass
class Concurrent:
    seconds: float
    runs: int
    deadlocks: int  # caught by the writers (and retried)
    server_deadlocks: int  # pg_stat_database.deadlocks, the server's own count
    lock_wait_share: float  # sampled writer backends waiting on a lock / all writer samples
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def throughput(self) -> float:
        return self.runs / self.seconds


def _writer(
    url: str, batches: list[list[int]], start: threading.Barrier, result: Concurrent
) -> None:
    with psycopg.connect(url, autocommit=True, application_name="bench-writer") as connection:
        start.wait()
        for batch in batches:
            while True:
                try:
                    connection.execute(
                        "UPDATE sync_run SET status = 'succeeded', records_total = 4,"
                        " finished_at = started_at + interval '2 minutes'"
                        " WHERE id = ANY(%s)",
                        (batch,),
                    )
                    break
                except errors.DeadlockDetected:
                    with result.lock:
                        result.deadlocks += 1


def _sample_lock_waits(url: str, stop: threading.Event, counts: list[int]) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        while not stop.is_set():
            row = connection.execute(
                "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'), count(*)"
                " FROM pg_stat_activity WHERE application_name = 'bench-writer'"
                " AND state = 'active'"
            ).fetchone()
            if row:
                counts[0] += int(row[0])
                counts[1] += int(row[1])
            stop.wait(0.005)


def measure_concurrent(
    url: str, connection: psycopg.Connection, mode: str, shared: int
) -> Concurrent:
    set_mode(connection, "off")
    _fresh(connection)
    total = WRITERS * WRITER_TRANSACTIONS * RUNS_PER_TRANSACTION
    # Running runs of a few shared integrations, inserted in random order, so that the
    # order of ids (the order an UPDATE visits them) is unrelated to the integrations.
    ids = [
        int(row[0])
        for row in connection.execute(
            "INSERT INTO sync_run (org_id, connector, started_at, status)"
            " SELECT i.org_id, i.connector, %(t0)s, 'running'"
            " FROM (SELECT org_id, connector FROM sync_integration ORDER BY 1, 2 LIMIT %(n)s) AS i"
            " CROSS JOIN generate_series(1, %(per)s) ORDER BY random() RETURNING id",
            {"t0": T0, "n": shared, "per": -(-total // shared)},
        )
    ]
    connection.execute("VACUUM ANALYZE sync_run")
    set_mode(connection, mode)
    random.Random(7).shuffle(ids)
    result = Concurrent(0.0, len(ids), 0, 0, 0.0)
    start = threading.Barrier(WRITERS + 1)
    threads = []
    for writer in range(WRITERS):
        mine = ids[writer::WRITERS]
        batches = [
            mine[n : n + RUNS_PER_TRANSACTION] for n in range(0, len(mine), RUNS_PER_TRANSACTION)
        ]
        threads.append(threading.Thread(target=_writer, args=(url, batches, start, result)))
    for thread in threads:
        thread.start()
    before = _server_deadlocks(connection)
    stop = threading.Event()
    counts = [0, 0]
    sampler = threading.Thread(target=_sample_lock_waits, args=(url, stop, counts))
    sampler.start()
    start.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    result.server_deadlocks = _server_deadlocks(connection) - before
    result.lock_wait_share = counts[0] / counts[1] if counts[1] else 0.0
    left = connection.execute("SELECT count(*) FROM sync_run WHERE status = 'running'").fetchone()
    if left and left[0]:
        result.errors.append(f"{left[0]} runs left running")
    return result


def _server_deadlocks(connection: psycopg.Connection) -> int:
    # The statistics collector reports with a delay; a new snapshot of it for each read.
    connection.execute("SELECT pg_stat_clear_snapshot()")
    row = connection.execute(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    return int(row[0]) if row else 0


@dataclass
class WritePathResult:
    backfill: dict[tuple[str, int], float]
    steady: dict[str, float]
    concurrent: dict[tuple[int, str], list[Concurrent]]
    seconds: float


def run(admin_url: str, progress: Callable[[str], None] | None = None) -> WritePathResult:
    say = progress or (lambda text: print(text, file=sys.stderr, flush=True))
    started = time.monotonic()
    with data.throwaway_database(admin_url) as url:
        engine = create_sync_log_engine(normalize_url(url))
        upgrade(engine)
        engine.dispose()
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(
                "CREATE TRIGGER sync_run_last_run AFTER INSERT OR UPDATE OR DELETE ON sync_run"
                " FOR EACH ROW EXECUTE FUNCTION accounting_sync_note_run()"
            )  # migration 0002's row trigger, for comparison (set_mode enables one or other)
            data.add_integrations(connection, INTEGRATIONS, pending=0)
            say("  write path: backfill")
            backfill = measure_backfill(connection)
            say("  write path: steady pipeline")
            steady = measure_steady(url, connection)
            say("  write path: concurrent writers")
            concurrent: dict[tuple[int, str], list[Concurrent]] = {}
            for shared in SHARED_INTEGRATIONS:
                for mode in CONCURRENT_MODES:  # off first and last: its mean is the base
                    measured = measure_concurrent(url, connection, mode, shared)
                    concurrent.setdefault((shared, mode), []).append(measured)
    return WritePathResult(backfill, steady, concurrent, time.monotonic() - started)


def report(result: WritePathResult) -> str:
    b = result.backfill
    lines = [
        f"Write path (issue 11), {INTEGRATIONS:,} integrations, foreign keys on in every mode;"
        " off = the project's triggers disabled, 0005 = as shipped, 0002 = the old row trigger:",
        "",
        "One INSERT ... SELECT backfill, median of "
        + ", ".join(f"{n} ({runs})" for runs, n in BACKFILL_REPEATS.items())
        + " runs (0002: one run):",
        f"  {'runs/integration':>16} {'rows':>8} {'off ms':>8} {'0005 ms':>8} {'0005/off':>8}"
        f" {'0002 ms':>8} {'0002/off':>8} {'us/row off':>10} {'us/row 0005':>11}",
    ]
    for runs in BACKFILL_RUNS:
        rows = runs * INTEGRATIONS
        off, new = b[("off", runs)], b[("0005", runs)]
        old = b.get(("0002", runs))
        lines.append(
            f"  {runs:>16} {rows:>8,} {off * 1000:>8.0f} {new * 1000:>8.0f} {new / off:>8.2f}"
            + (
                f" {old * 1000:>8.0f} {old / off:>8.2f}"
                if old is not None
                else f" {'skipped':>8} {'':>8}"
            )
            + f" {off / rows * 1e6:>10.2f} {new / rows * 1e6:>11.2f}"
        )
    small, large = BACKFILL_RUNS[0], BACKFILL_RUNS[-1]

    def per_row(mode: str, runs: int) -> float:
        return b[(mode, runs)] / (runs * INTEGRATIONS)

    added = [
        (b[("0005", runs)] - b[("off", runs)]) / (runs * INTEGRATIONS) for runs in BACKFILL_RUNS
    ]
    lines += [
        "  cost the triggers add per row (0005 - off), us: "
        + ", ".join(
            f"{runs}: {cost * 1e6:.2f}" for runs, cost in zip(BACKFILL_RUNS, added, strict=True)
        )
        + " (at or below 0: within the noise)",
        f"  per-row cost {large} vs {small} runs/integration: 0005 x"
        f"{per_row('0005', large) / per_row('0005', small):.2f}, off x"
        f"{per_row('off', large) / per_row('off', small):.2f}"
        + (
            f"; 0002 {OLD_TRIGGER_MAX_RUNS} vs {small}: x"
            f"{per_row('0002', OLD_TRIGGER_MAX_RUNS) / per_row('0002', small):.2f}"
            if ("0002", OLD_TRIGGER_MAX_RUNS) in b
            else ""
        ),
        "",
        f"Steady pipeline (start run, enqueue {STEADY_RECORDS} records, mark synced, finish;"
        f" 4 transactions), {STEADY_BLOCKS * STEADY_CYCLES} cycles per mode in alternating"
        " blocks:",
        "  "
        + "   ".join(
            f"{mode} {result.steady[mode] * 1000:.2f} ms/cycle"
            + ("" if mode == "off" else f" (x{result.steady[mode] / result.steady['off']:.2f})")
            for mode in MODES
        ),
        "",
        f"{WRITERS} concurrent writers, {RUNS_PER_TRANSACTION} runs finished per statement"
        " (statement = transaction); off = mean of the first and last run:",
        f"  {'integrations':>12} {'mode':>12} {'runs/s':>8} {'vs off':>7} {'lock-wait share':>15}"
        f" {'deadlocks':>9} {'(server)':>8}",
    ]
    for shared in SHARED_INTEGRATIONS:
        off = statistics.fmean(c.throughput for c in result.concurrent[(shared, "off")])
        for mode in dict.fromkeys(CONCURRENT_MODES):
            runs = result.concurrent[(shared, mode)]
            throughput = statistics.fmean(c.throughput for c in runs)
            wait = statistics.fmean(c.lock_wait_share for c in runs)
            problems = [e for c in runs for e in c.errors]
            lines.append(
                f"  {shared:>12,} {mode:>12} {throughput:>8.0f} {throughput / off:>7.0%}"
                f" {wait:>15.0%} {sum(c.deadlocks for c in runs):>9}"
                f" {sum(c.server_deadlocks for c in runs):>8}"
                + (f"  ERRORS: {'; '.join(problems)}" if problems else "")
            )
    lines.append(f"(write path took {result.seconds:.0f} s)")
    return "\n".join(lines)


def main() -> int:
    admin_url = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    print(report(run(admin_url)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
