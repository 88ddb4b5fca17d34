"""The embedded demo: a seeded SQLite sync log and a simulated pipeline that keeps writing.

The seed covers every state a finance administrator can meet (green, amber from failed
records, amber from an aborted run, red after a long silence, red never synced, and an
inactive integration), and the simulation keeps the healthy ones moving so that
/metrics visibly changes within seconds.
"""

from __future__ import annotations

import logging
import random
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, func, select

from exporter.source.migrate import upgrade
from exporter.source.pipeline import Pipeline
from exporter.source.schema import Organization

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoIntegration:
    org_id: str
    name: str
    connector: str
    story: str  # healthy, flaky, stale, never, aborted, inactive
    failure_rate: float = 0.0


DEMO: tuple[DemoIntegration, ...] = (
    DemoIntegration("blindeforbundet", "Norges Blindeforbund", "xledger", "healthy", 0.03),
    DemoIntegration("hlf", "Hørselshemmedes Landsforbund", "dynamics", "flaky", 0.25),
    DemoIntegration("doveforbundet", "Norges Døveforbund", "xledger", "healthy", 0.05),
    DemoIntegration("redd-barna", "Redd Barna", "dynamics", "stale"),
    DemoIntegration("kirkens-bymisjon", "Kirkens Bymisjon", "xledger", "never"),
    DemoIntegration("turistforeningen", 'Den Norske Turistforening "DNT"', "dynamics", "aborted"),
    DemoIntegration("naturvernforbundet", "Naturvernforbundet", "xledger", "inactive"),
)
RECORD_TYPES = ("expense", "travel", "invoice")


def default_database_url() -> str:
    directory = Path(tempfile.mkdtemp(prefix="accounting-sync-demo-"))
    return f"sqlite:///{directory / 'sync-log.db'}"


def seed_sync_log(engine: Engine, now: datetime, rng: random.Random) -> None:
    """Write the demo organizations and a history that puts each in its state."""
    pipeline = Pipeline(engine)
    for item in DEMO:
        created = now - timedelta(days=30 if item.story != "never" else 2)
        pipeline.register(
            item.org_id,
            item.name,
            item.connector,
            active=item.story != "inactive",
            created_at=created,
        )
        last_good = {
            "stale": now - timedelta(hours=30),
            "inactive": now - timedelta(days=20),
            "never": None,
        }.get(item.story, now - timedelta(minutes=10))
        if last_good is not None:
            for hours_ago in (48, 24, 12):
                at = last_good - timedelta(hours=hours_ago)
                pipeline.add_finished_run(
                    item.org_id,
                    item.connector,
                    "succeeded",
                    started_at=at - timedelta(seconds=40),
                    finished_at=at,
                    records_total=rng.randint(5, 40),
                )
            pipeline.add_finished_run(
                item.org_id,
                item.connector,
                "succeeded",
                started_at=last_good - timedelta(seconds=30),
                finished_at=last_good,
                records_total=12,
            )
        refs = [
            (rng.choice(RECORD_TYPES), f"{item.org_id[:3].upper()}-{n:05d}")
            for n in range(rng.randint(3, 9))
        ]
        ids = pipeline.enqueue(
            item.org_id,
            item.connector,
            refs,
            at=now - timedelta(hours=2 if item.story != "healthy" else 0),
        )
        if item.story == "aborted":
            run = pipeline.start_run(item.org_id, item.connector, at=now - timedelta(minutes=5))
            pipeline.finish_run(
                run,
                "failed",
                at=now - timedelta(minutes=4),
                error_message="401 Unauthorized: the API token has expired",
            )
        if item.story == "flaky":
            _sync(pipeline, item, ids, rng, now, failure_rate=0.5)


def _sync(
    pipeline: Pipeline,
    item: DemoIntegration,
    ids: list[int],
    rng: random.Random,
    now: datetime,
    failure_rate: float,
) -> None:
    run = pipeline.start_run(item.org_id, item.connector, at=now - timedelta(seconds=2))
    failed = 0
    synced = []
    for record_id in ids:
        if rng.random() < failure_rate:
            failed += 1
            code, message = rng.choice(ERRORS[item.connector])
            pipeline.record_failure(run, record_id, message, error_code=code, at=now)
        else:
            synced.append(record_id)
    pipeline.mark_synced(synced, at=now)
    pipeline.finish_run(
        run,
        "partial" if failed else "succeeded",
        records_total=len(ids),
        records_failed=failed,
        at=now,
    )


ERRORS = {
    "xledger": [
        ("XL-ACCOUNT", "Account 6800 is closed for posting in period 2026-11"),
        ("XL-VAT", "VAT code 25 is not valid for the chosen account"),
        ("XL-DIM", "Dimension 'project' is required"),
    ],
    "dynamics": [
        ("DYN-VENDOR", "Vendor V10442 does not exist in company HLF01"),
        ("DYN-DIM", "Financial dimension DEPARTMENT value 330 is blocked"),
        ("DYN-PERIOD", "The ledger period is on hold"),
    ],
}


class SimulatedPipeline:
    """Every ``tick`` seconds: new approved records arrive, and every few ticks a sync runs."""

    def __init__(self, engine: Engine, rng: random.Random, tick: float = 3.0) -> None:
        self.pipeline = Pipeline(engine)
        self.rng = rng
        self.tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-pipeline", daemon=True)

    def step(self, now: datetime) -> None:
        for item in DEMO:
            if item.story not in ("healthy", "flaky"):
                continue
            count = self.rng.randint(0, 3)
            self.pipeline.enqueue(
                item.org_id,
                item.connector,
                [
                    (
                        self.rng.choice(RECORD_TYPES),
                        f"{item.org_id[:3].upper()}-{self.rng.randint(10000, 99999)}",
                    )
                    for _ in range(count)
                ],
                at=now,
            )
            if self.rng.random() < 0.4:
                ids = self.pipeline.pending(item.org_id, item.connector, limit=25)
                _sync(self.pipeline, item, ids, self.rng, now, item.failure_rate)

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self.step(datetime.now(UTC))
            except Exception:  # the demo keeps going through a locked or missing database
                log.exception("simulated pipeline step failed")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def prepare(engine: Engine, seed: int | None = None) -> SimulatedPipeline:
    """Migrate, seed an empty sync log, and return the (not yet started) simulation."""
    rng = random.Random(seed)
    upgrade(engine)
    with engine.connect() as connection:
        empty = connection.execute(select(func.count()).select_from(Organization)).scalar_one() == 0
    if empty:
        seed_now = datetime.now(UTC)
        seed_sync_log(engine, seed_now, rng)
        log.info("seeded the demo sync log", extra={"organizations": len(DEMO)})
    return SimulatedPipeline(engine, rng)


def banner(url: str) -> str:
    return (
        "\nAccounting sync exporter demo is running.\n"
        f"  Metrics:     {url}\n"
        f"  Try:         curl -s {url} | grep '^accounting_sync_health'\n"
        "  Organizations: " + ", ".join(f"{d.org_id} ({d.story})" for d in DEMO) + "\n"
        "  Stop with Ctrl-C.\n"
    )
