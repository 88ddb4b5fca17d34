"""Owns the state being served and keeps it fresh.

A refresh reads one snapshot, evaluates health at the read time and swaps in a new
immutable ``Exposition``; a failed read keeps the previous snapshot and only flips
``source_up`` to 0, so a scrape never sees half a snapshot and never waits on the
database. APScheduler runs the refresh on an interval, one at a time, coalescing
missed runs; ``request_refresh()`` (change notifications) asks for one sooner.

A request must never be lost and never multiply: a change committed while a refresh is
reading may be missing from that snapshot, so a request that arrives after the read has
begun queues exactly one more refresh, and any number of requests arriving before that
queued refresh begins its read ride along with it. The job may have two instances (one
running, one queued behind it on the single worker thread) for exactly this reason; the
worker being single keeps refreshes strictly one after another.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from psycopg.errors import UndefinedTable
from sqlalchemy import Engine

from exporter.errors import one_line
from exporter.exposition.body import Exposition
from exporter.health import evaluate_snapshot
from exporter.model import ServedState, Snapshot
from exporter.source.cleaning import ProblemLog
from exporter.source.reader import read_snapshot

log = logging.getLogger(__name__)
JOB_ID = "refresh"
INTERVAL = "interval"
NOTIFICATION = "notification"


NOT_MIGRATED_HINT = "the sync log has no schema yet: run `accounting-sync-exporter db upgrade`"


def not_migrated(exc: BaseException) -> bool:
    """Whether a read failed for want of the sync log's tables (a database never migrated)."""
    cause = getattr(exc, "orig", None) or exc
    return isinstance(cause, UndefinedTable) or "no such table" in str(cause)


class Refresher:
    def __init__(
        self,
        engine: Engine,
        interval: float,
        *,
        reader: Callable[[Engine], Snapshot] = read_snapshot,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.interval = interval
        self._reader = reader
        self._clock = clock
        self._exposition = Exposition(ServedState())
        self._run_lock = threading.Lock()
        self._request_lock = threading.Lock()
        self._requested = False  # a refresh has been asked for and has not begun reading yet
        self._ever_succeeded = threading.Event()
        # Remembers what was already logged, so a bad row costs one line, not one a refresh.
        self._problems = ProblemLog()
        # Called with each new state (the status page's event streams); each must be O(1).
        self._subscribers: list[Callable[[ServedState], None]] = []
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1)}, timezone=UTC
        )

    @property
    def exposition(self) -> Exposition:
        return self._exposition

    @property
    def state(self) -> ServedState:
        return self._exposition.state

    @property
    def ready(self) -> bool:
        """True once a snapshot has been read: before that /metrics has no integrations."""
        return self._ever_succeeded.is_set()

    def refresh(self) -> bool:
        """Read, evaluate and publish one snapshot; returns whether the read succeeded."""
        with self._run_lock:
            with self._request_lock:
                trigger = NOTIFICATION if self._requested else INTERVAL
                self._requested = False
            previous = self._exposition.state
            refreshes = _count(previous.refreshes, trigger)
            started = time.perf_counter()
            try:
                snapshot = self._reader(self.engine)
            except Exception as exc:  # any failure of the source keeps the last good state
                duration = time.perf_counter() - started
                if previous.source_up or previous.generation == 0:
                    fields = {"error": one_line(exc), "duration_seconds": round(duration, 3)}
                    if not_migrated(exc):
                        fields["hint"] = NOT_MIGRATED_HINT
                    served = (
                        "serving the last good snapshot"
                        if previous.last_refresh_at is not None
                        else "no snapshot to serve yet"
                    )
                    log.error(f"cannot read the sync log; {served}", extra=fields)
                else:
                    log.debug("sync log still unreadable", extra={"error": one_line(exc)})
                self._publish(
                    ServedState(
                        statuses=previous.statuses,
                        source_up=False,
                        last_refresh_at=previous.last_refresh_at,
                        refresh_duration=duration,
                        refresh_failures=previous.refresh_failures + 1,
                        generation=previous.generation + 1,
                        refreshes=refreshes,
                    )
                )
                return False
            self._problems.report(snapshot.problems)
            statuses = evaluate_snapshot(snapshot, snapshot.read_at)
            duration = time.perf_counter() - started
            if not previous.source_up and previous.generation > 0:
                log.info("sync log readable again", extra={"integrations": len(statuses)})
            self._publish(
                ServedState(
                    statuses=statuses,
                    source_up=True,
                    last_refresh_at=snapshot.read_at.timestamp(),
                    refresh_duration=duration,
                    refresh_failures=previous.refresh_failures,
                    generation=previous.generation + 1,
                    refreshes=refreshes,
                )
            )
            self._ever_succeeded.set()
            log.debug(
                "refreshed",
                extra={"integrations": len(statuses), "duration_seconds": round(duration, 4)},
            )
            return True

    def _publish(self, state: ServedState) -> None:
        exposition = Exposition(state, previous=self._exposition)
        exposition.prerender()
        self._exposition = exposition  # one reference swap: scrapes see old or new, whole
        for callback in self._subscribers:
            try:
                callback(state)
            except Exception:  # a subscriber's bug must not stop the refreshes
                log.exception("state subscriber failed")

    def subscribe(self, callback: Callable[[ServedState], None]) -> None:
        """Have ``callback`` called with every state published from now on."""
        self._subscribers.append(callback)

    def request_refresh(self) -> None:
        """Refresh as soon as possible: now if idle, else once the current refresh ends."""
        with self._request_lock:
            if self._requested:  # a refresh that has not started reading yet will cover it
                return
            self._requested = True
        try:
            job = self._scheduler.get_job(JOB_ID)
            if job is not None:
                job.modify(next_run_time=datetime.now(UTC))
        except Exception:  # stopping: the scheduler is gone, nothing left to refresh for
            log.debug("refresh request after shutdown ignored")

    def start(self) -> None:
        self._scheduler.add_job(
            self.refresh,
            "interval",
            seconds=self.interval,
            id=JOB_ID,
            next_run_time=datetime.now(UTC),
            max_instances=2,
            coalesce=True,
            misfire_grace_time=None,
        )
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)


def _count(counts: tuple[tuple[str, int], ...], trigger: str) -> tuple[tuple[str, int], ...]:
    totals = dict(counts)
    totals[trigger] = totals.get(trigger, 0) + 1
    return tuple(sorted(totals.items()))
