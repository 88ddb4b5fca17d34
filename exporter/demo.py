"""The embedded demo: a seeded SQLite sync log and a simulated pipeline that keeps writing.

The seed covers every state a finance administrator can meet (green and staying green,
amber from validation errors with rejected records, an expired Dynamics client secret,
throttling that heals, a closed posting period, a pipeline running late, red after a long
silence, red never synced, and an inactive integration), and the simulation keeps the
healthy, flaky and throttled ones moving so that /metrics visibly changes within seconds.
"""

from __future__ import annotations

import logging
import random
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    func,
    inspect,
    select,
    text,
)

from exporter.errors import UsageError
from exporter.source.engine import redact, sqlite_path
from exporter.source.migrate import upgrade
from exporter.source.pipeline import Pipeline
from exporter.source.schema import Base, Organization

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoIntegration:
    org_id: str
    name: str
    connector: str
    # healthy, flaky, stale, never, expired_secret, throttled, period_closed, late, inactive
    story: str
    failure_rate: float = 0.0
    expected_interval_seconds: int | None = None


DEMO: tuple[DemoIntegration, ...] = (
    # Green and staying green: its syncs never fail, so it never drifts amber at random.
    DemoIntegration("blindeforbundet", "Norges Blindeforbund", "xledger", "healthy", 0.0, 900),
    # Amber from validation errors on records; some records are given up on (rejected).
    DemoIntegration("hlf", "Hørselshemmedes Landsforbund", "dynamics", "flaky", 0.25, 900),
    DemoIntegration("doveforbundet", "Norges Døveforbund", "xledger", "healthy", 0.0, 900),
    DemoIntegration("redd-barna", "Redd Barna", "dynamics", "stale"),
    DemoIntegration("kirkens-bymisjon", "Kirkens Bymisjon", "xledger", "never"),
    # The Dynamics client secret expired: every run fails until someone renews it.
    DemoIntegration(
        "turistforeningen", 'Den Norske Turistforening "DNT"', "dynamics", "expired_secret"
    ),
    # Xledger's burst limit now and then: a run fails, the next one gets through.
    DemoIntegration("kreftforeningen", "Kreftforeningen", "xledger", "throttled", 0.0, 900),
    # Business Central refuses the posting date: the period is closed.
    DemoIntegration("redningsselskapet", "Redningsselskapet", "dynamics", "period_closed"),
    # Expected every 15 minutes, silent for 45: late long before it turns red.
    DemoIntegration("sos-barnebyer", "SOS-barnebyer", "xledger", "late", 0.0, 900),
    DemoIntegration("naturvernforbundet", "Naturvernforbundet", "xledger", "inactive"),
)
RECORD_TYPES = ("expense", "travel", "invoice")
SIMULATED = ("healthy", "flaky", "throttled")  # the stories the simulated pipeline keeps moving
THROTTLED_EVERY = 6  # steps: the throttled integration fails one step in this many
EXPIRED_SECRET = (
    "AADSTS7000222",
    "AADSTS7000222: The provided client secret keys for app 'expense-sync' are expired. "
    "Visit the Azure portal to create new keys for your app.",
)
BURST_LIMIT = (
    "BAD_REQUEST.BURST_RATE_LIMIT_REACHED",
    "Burst rate limit reached: too many requests in a short time. Try again shortly.",
)
PERIOD_CLOSED = (
    None,
    "The Posting Date is not within your range of allowed posting dates in Gen. Journal "
    "Line Journal Template Name='GENERELT',Journal Batch Name='UTLEGG',Line No.='10000'",
)


# --- which database the demo may write into (kept apart from the seeded stories below)

# The demo's mark on a database it made: the sync log schema has no such table, so a
# production sync log never carries it.
DEMO_MARKER_TABLE = "accounting_sync_demo"
DEMO_MARKER = Table(
    DEMO_MARKER_TABLE,
    MetaData(),
    Column("made_by", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
# Tables a sync log may hold besides the demo's mark (the schema and its migrations' own).
_SYNC_LOG_TABLES = frozenset({*Base.metadata.tables, "alembic_version", "sync_tenant_role"})
_DATA_TABLES = ("sync_organization", "sync_integration", "sync_run", "sync_record")


@contextmanager
def demo_database(url: str | None) -> Iterator[str]:
    """The URL given on the demo's command line, or a temporary SQLite file's.

    The temporary directory goes when the block ends, however it ends: a stop, an error,
    Ctrl-C, SIGTERM (``cli.serve.demo`` turns it into an exception) or a busy port.
    """
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(
        prefix="accounting-sync-demo-", ignore_cleanup_errors=True
    ) as directory:
        yield f"sqlite:///{Path(directory) / 'sync-log.db'}"


def claim(engine: Engine) -> None:
    """Refuse a database that holds anything but the demo's own data; then mark it.

    Accepted: an empty database, a migrated sync log with no data yet, or one this demo
    made earlier (marked) that holds only the demo's organizations. Everything else could
    be someone's real sync log, where fake records would reach a real organization (one
    of them could well be called ``hlf``).
    """
    where = redact(engine.url.render_as_string(hide_password=False))
    path = sqlite_path(engine.url)
    if path is not None:  # a directory that cannot be made is named (OSError), not "unable to open"
        path.parent.mkdir(parents=True, exist_ok=True)
    tables = set(inspect(engine).get_table_names())
    foreign = sorted(tables - _SYNC_LOG_TABLES - {DEMO_MARKER.name})
    if foreign:
        raise UsageError(
            f"--database-url {where}: holds tables that are not a sync log's "
            f"({', '.join(foreign[:5])}); the demo writes only into an empty database"
        )
    demo_orgs = {item.org_id for item in DEMO}
    with engine.begin() as connection:
        if "sync_organization" in tables:
            orgs = set(connection.execute(select(Organization.id)).scalars())
            if DEMO_MARKER.name not in tables:
                has_data = orgs or any(
                    connection.execute(text(f"SELECT 1 FROM {name} LIMIT 1")).first()
                    for name in _DATA_TABLES
                    if name in tables
                )
                if has_data:
                    raise UsageError(
                        f"--database-url {where}: holds a sync log the demo did not make; "
                        "the demo writes only into an empty database or one of its own"
                    )
            elif orgs - demo_orgs:
                others = ", ".join(sorted(orgs - demo_orgs)[:5])
                raise UsageError(
                    f"--database-url {where}: holds organizations that are not the demo's "
                    f"({others}); the demo writes only into a database of its own"
                )
        DEMO_MARKER.create(connection, checkfirst=True)
        if connection.execute(select(DEMO_MARKER.c.made_by)).first() is None:
            connection.execute(
                DEMO_MARKER.insert().values(made_by="demo", created_at=datetime.now(UTC))
            )


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
            expected_interval_seconds=item.expected_interval_seconds,
            created_at=created,
        )
        last_good = {
            "stale": now - timedelta(hours=30),
            "inactive": now - timedelta(days=20),
            "late": now - timedelta(minutes=45),
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
        answer = {
            "expired_secret": EXPIRED_SECRET,
            "throttled": BURST_LIMIT,
            "period_closed": PERIOD_CLOSED,
        }.get(item.story)
        if answer is not None:
            code, message = answer
            run = pipeline.start_run(item.org_id, item.connector, at=now - timedelta(minutes=5))
            pipeline.finish_run(
                run, "failed", error_code=code, error_message=message, at=now - timedelta(minutes=4)
            )
        if item.story == "flaky":
            _sync(pipeline, item, ids, rng, now, failure_rate=0.5, give_up=(ids[0],))


def _sync(
    pipeline: Pipeline,
    item: DemoIntegration,
    ids: list[int],
    rng: random.Random,
    now: datetime,
    failure_rate: float,
    give_up: tuple[int, ...] = (),
) -> None:
    """One run over ``ids``: each fails with ``failure_rate``; those in ``give_up`` are
    rejected (the pipeline stops retrying them) and count as failed."""
    run = pipeline.start_run(item.org_id, item.connector, at=now - timedelta(seconds=2))
    failed = 0
    synced = []
    for record_id in ids:
        rejected = record_id in give_up
        if rejected or rng.random() < failure_rate:
            failed += 1
            code, message = rng.choice(ERRORS[item.connector])
            pipeline.record_failure(
                run, record_id, message, error_code=code, give_up=rejected, at=now
            )
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


# Record-level answers in the accounting systems' own words and codes (validation errors
# mostly, the common case of a record that needs a person), so the classes are realistic.
ERRORS = {
    "xledger": [
        ("INVALID_VALUE", "Account 6800 is not valid for posting in period 2026-11"),
        ("INVALID_VALUE", "VAT code 25 is not valid for the chosen account"),
        ("XL-DIM", "Dimension 'project' is required"),
    ],
    "dynamics": [
        ("Internal_InvalidTableRelation", "Vendor V10442 does not exist in company HLF01"),
        (
            "Application_FieldValidationException",
            "Financial dimension DEPARTMENT value 330 is blocked",
        ),
        ("Application_StringExceededLength", "Description is longer than 100 characters"),
        ("Request_EntityChanged", "Another user has changed the journal line; try again"),
    ],
}


class SimulatedPipeline:
    """Every ``tick`` seconds: new approved records arrive, and every few ticks a sync runs."""

    def __init__(self, engine: Engine, rng: random.Random, tick: float = 3.0) -> None:
        self.pipeline = Pipeline(engine)
        self.rng = rng
        self.tick = tick
        self._steps = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-pipeline", daemon=True)

    def step(self, now: datetime) -> None:
        self._steps += 1
        for item in DEMO:
            if item.story not in SIMULATED:
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
            if item.story == "throttled" and self._steps % THROTTLED_EVERY == 0:
                code, message = BURST_LIMIT
                run = self.pipeline.start_run(item.org_id, item.connector, at=now)
                self.pipeline.finish_run(
                    run, "failed", error_code=code, error_message=message, at=now
                )
            elif item.story == "throttled" or self.rng.random() < 0.4:
                ids = self.pipeline.pending(item.org_id, item.connector, limit=25)
                # Now and then the pipeline gives up on a record it cannot get past.
                give_up = tuple(ids[:1]) if item.failure_rate and self.rng.random() < 0.1 else ()
                _sync(self.pipeline, item, ids, self.rng, now, item.failure_rate, give_up)

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
    """Claim the database, migrate, seed it if empty; return the (not yet started) simulation."""
    rng = random.Random(seed)
    claim(engine)
    upgrade(engine)
    with engine.connect() as connection:
        empty = connection.execute(select(func.count()).select_from(Organization)).scalar_one() == 0
    if empty:
        seed_now = datetime.now(UTC)
        seed_sync_log(engine, seed_now, rng)
        log.info("seeded the demo sync log", extra={"organizations": len(DEMO)})
    return SimulatedPipeline(engine, rng)


def banner(url: str, *, sign_in: str | None = None, extra: str = "") -> str:
    """What the demo prints at start; ``sign_in`` (user:password) goes into the curl line
    when /metrics needs credentials, ``extra`` (the status page's users) before the end."""
    auth = f"-u {sign_in} " if sign_in else ""
    return (
        "\nAccounting sync exporter demo is running.\n"
        f"  Metrics:     {url}\n"
        f"  Try:         curl -s {auth}{url} | grep '^accounting_sync_health'\n"
        "  Organizations: " + ", ".join(f"{d.org_id} ({d.story})" for d in DEMO) + "\n"
        f"{extra}"
        "  Stop with Ctrl-C.\n"
    )
