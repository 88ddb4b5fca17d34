"""The demo's stories, read back through the exporter's own reader and health rules.

In-process on an SQLite file, with the clock passed in: the simulated pipeline is stepped
many times and each story must show what the demo promises, at every step, not just on
average (a green organization that turned amber at random would teach a new user that
amber means nothing).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from exporter.demo import DEMO, THROTTLED_EVERY, SimulatedPipeline, seed_sync_log
from exporter.health import evaluate_snapshot
from exporter.model import Health, IntegrationStatus
from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.migrate import upgrade
from exporter.source.reader import read_snapshot

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
STEPS = 3 * THROTTLED_EVERY


@pytest.fixture
def demo(sqlite_url: str) -> Iterator[Engine]:
    engine = create_sync_log_engine(normalize_url(sqlite_url))
    upgrade(engine)
    seed_sync_log(engine, T0, random.Random(7))
    yield engine
    engine.dispose()


def statuses(engine: Engine, now: datetime) -> dict[str, IntegrationStatus]:
    snapshot = read_snapshot(engine, now)
    return {s.facts.org_id: s for s in evaluate_snapshot(snapshot, now)}


def test_the_seed_tells_every_story(demo: Engine) -> None:
    seen = statuses(demo, T0)
    assert set(seen) == {item.org_id for item in DEMO}
    health = {org: s.health for org, s in seen.items()}
    assert health["blindeforbundet"] == Health.GREEN
    assert health["redd-barna"] == health["kirkens-bymisjon"] == Health.RED
    classes = {org: s.facts.last_run_error_class for org, s in seen.items()}
    assert classes["turistforeningen"] == "auth"  # the expired client secret
    assert classes["kreftforeningen"] == "throttled"
    assert classes["redningsselskapet"] == "period_closed"
    assert seen["hlf"].facts.rejected_records >= 1
    assert {name for name, _ in seen["hlf"].facts.last_run_failures_by_class} <= {
        "validation",
        "conflict",
    }
    late = seen["sos-barnebyer"].facts
    assert late.expected_interval_seconds is not None and late.last_success_at is not None
    silence = (T0 - late.last_success_at).total_seconds()
    assert 2 * late.expected_interval_seconds < silence < late.stale_after_seconds
    assert seen["sos-barnebyer"].health == Health.GREEN  # late is not red (yet)
    assert not seen["naturvernforbundet"].facts.active


def test_green_stays_green_and_throttling_heals(demo: Engine) -> None:
    simulation = SimulatedPipeline(demo, random.Random(11))
    throttled_classes = []
    for step in range(1, STEPS + 1):
        now = T0 + timedelta(seconds=3 * step)
        simulation.step(now)
        seen = statuses(demo, now)
        for org in ("blindeforbundet", "doveforbundet"):
            assert seen[org].health == Health.GREEN, (step, org, seen[org].reason)
        throttled_classes.append(seen["kreftforeningen"].facts.last_run_error_class)
        # The stories nobody fixes stay as they are.
        assert seen["turistforeningen"].facts.last_run_error_class == "auth"
        assert seen["redningsselskapet"].facts.last_run_error_class == "period_closed"
    # Throttled now and then, healed by the next run every time.
    assert throttled_classes.count("throttled") == STEPS // THROTTLED_EVERY
    assert throttled_classes.count(None) == STEPS - STEPS // THROTTLED_EVERY
