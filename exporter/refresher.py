"""Owns the state being served and keeps it fresh.

A refresh reads one snapshot, evaluates health at the read time and swaps in a new
immutable ``Exposition``; a failed read keeps the previous snapshot and only flips
``source_up`` to 0, so a scrape never sees half a snapshot and never waits on the
database. APScheduler runs the refresh on an interval, one at a time, coalescing
missed runs; ``request_refresh()`` (change notifications) asks for one sooner.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine

from exporter.collector import ServedState
from exporter.exposition import Exposition
from exporter.health import evaluate_snapshot
from exporter.repository import read_snapshot
from exporter.snapshot import Snapshot

log = logging.getLogger(__name__)
JOB_ID = "refresh"


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
        self._again = threading.Event()
        self._ever_succeeded = threading.Event()
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
            self._again.clear()
            previous = self._exposition.state
            started = time.perf_counter()
            try:
                snapshot = self._reader(self.engine)
            except Exception as exc:  # any failure of the source keeps the last good state
                duration = time.perf_counter() - started
                if previous.source_up or previous.generation == 0:
                    log.error(
                        "cannot read the sync log; serving the last good snapshot",
                        extra={"error": _one_line(exc), "duration_seconds": round(duration, 3)},
                    )
                else:
                    log.debug("sync log still unreadable", extra={"error": _one_line(exc)})
                self._publish(
                    ServedState(
                        statuses=previous.statuses,
                        source_up=False,
                        last_refresh_at=previous.last_refresh_at,
                        refresh_duration=duration,
                        refresh_failures=previous.refresh_failures + 1,
                        generation=previous.generation + 1,
                    )
                )
                return False
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
                )
            )
            self._ever_succeeded.set()
            log.debug(
                "refreshed",
                extra={"integrations": len(statuses), "duration_seconds": round(duration, 4)},
            )
            return True

    def _publish(self, state: ServedState) -> None:
        exposition = Exposition(state)
        exposition.prerender()
        self._exposition = exposition  # one reference swap: scrapes see old or new, whole

    def _job(self) -> None:
        self.refresh()
        # A change announced while we were reading may not be in this snapshot.
        if self._again.is_set():
            self.request_refresh()

    def request_refresh(self) -> None:
        """Run a refresh as soon as the current one (if any) has finished."""
        if self._run_lock.locked():
            self._again.set()
            return
        job = self._scheduler.get_job(JOB_ID)
        if job is not None:
            job.modify(next_run_time=datetime.now(UTC))

    def start(self) -> None:
        self._scheduler.add_job(
            self._job,
            "interval",
            seconds=self.interval,
            id=JOB_ID,
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
