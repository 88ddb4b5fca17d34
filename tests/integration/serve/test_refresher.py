"""Refresh requests are never lost and never multiply (exporter/serve/refresher.py).

The refresher reads a real PostgreSQL sync log; a gate in front of the read holds a
refresh in the middle of its read, so the test decides exactly when requests arrive.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine

from exporter.model import Snapshot
from exporter.serve.refresher import JOB_ID, Refresher
from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.migrate import upgrade
from exporter.source.pipeline import Pipeline
from exporter.source.reader import read_snapshot
from tests.support import wait_until

pytestmark = pytest.mark.postgres


class GatedReader:
    """read_snapshot, but each read waits for ``release()`` and is counted."""

    def __init__(self) -> None:
        self.reads = 0
        self.pending_seen: list[int] = []
        self._gate = threading.Semaphore(0)
        self.inside = threading.Event()

    def __call__(self, engine: Engine) -> Snapshot:
        self.reads += 1
        self.inside.set()
        self._gate.acquire(timeout=30)
        self.inside.clear()
        snapshot = read_snapshot(engine)
        self.pending_seen.append(sum(i.pending_records for i in snapshot.integrations))
        return snapshot

    def release(self) -> None:
        self._gate.release()


@pytest.fixture
def refresher(pg_url):  # type: ignore[no-untyped-def]
    engine = create_sync_log_engine(normalize_url(pg_url))
    upgrade(engine)
    Pipeline(engine).register("hlf", "Hørselshemmedes Landsforbund", "dynamics")
    reader = GatedReader()
    refresher = Refresher(engine, interval=3600, reader=reader)
    refresher.start()
    yield refresher, reader, Pipeline(engine)
    for _ in range(5):
        reader.release()
    refresher.stop()
    engine.dispose()


def _nothing_queued(refresher: Refresher) -> bool:
    """No refresh is running or waiting on the worker (APScheduler counts submitted runs).

    A third refresh, had one been queued, would block at the closed gate and keep this
    count above zero, so waiting for zero cannot pass by luck.
    """
    executor = refresher._scheduler._lookup_executor("default")
    return executor._instances.get(JOB_ID, 0) == 0


def test_a_change_announced_during_a_read_gets_one_more_refresh(refresher):
    refresher, reader, pipeline = refresher
    wait_until(reader.inside.is_set, what="the start-up refresh to begin reading")
    # The start-up read is under way; a change is committed and announced now.
    pipeline.enqueue("hlf", "dynamics", [("expense", "E-1")])
    refresher.request_refresh()
    reader.release()
    wait_until(lambda: reader.reads == 2, what="the extra refresh the request asked for")
    reader.release()
    wait_until(lambda: len(reader.pending_seen) == 2, what="the extra refresh to finish")
    assert reader.pending_seen[-1] == 1
    wait_until(lambda: _nothing_queued(refresher), what="no further refresh queued")
    assert reader.reads == 2


def test_many_requests_during_a_read_make_one_more_refresh(refresher):
    refresher, reader, pipeline = refresher
    wait_until(reader.inside.is_set, what="the start-up refresh to begin reading")
    for number in range(50):
        pipeline.enqueue("hlf", "dynamics", [("expense", f"E-{number}")])
        refresher.request_refresh()
    reader.release()
    wait_until(lambda: reader.reads == 2, what="the one extra refresh")
    reader.release()
    wait_until(lambda: len(reader.pending_seen) == 2, what="the extra refresh to finish")
    assert reader.pending_seen[-1] == 50
    wait_until(lambda: _nothing_queued(refresher), what="no further refresh queued")
    assert reader.reads == 2
    counts = dict(refresher.state.refreshes)
    assert counts == {"interval": 1, "notification": 1}


def test_a_request_while_idle_refreshes_at_once(refresher):
    refresher, reader, pipeline = refresher
    reader.release()
    wait_until(lambda: len(reader.pending_seen) == 1, what="the start-up refresh")
    pipeline.enqueue("hlf", "dynamics", [("travel", "T-1")])
    refresher.request_refresh()
    wait_until(lambda: reader.reads == 2, what="the requested refresh")
    reader.release()
    wait_until(lambda: reader.pending_seen == [0, 1], what="the new record in the snapshot")
