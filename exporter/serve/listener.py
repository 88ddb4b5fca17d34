"""The PostgreSQL change listener: turns the sync log's NOTIFYs into refresh requests.

Migration 0002 makes every write to the tables the snapshot reads send a notification on
``accounting_sync_changed``. This thread LISTENs on a connection of its own (a pooled
connection would lose its LISTEN when returned to the pool) and asks the refresher for a
refresh. It throttles rather than waits: the first notification after a quiet spell asks
at once (so a finished sync shows within one refresh), and the rest of a burst is folded
into at most one more request per ``debounce`` window, sent when the window closes. A
thousand record writes thus cause a handful of refreshes, and the last write is always
covered by one.

The connection is expected to drop (server restart, failover, an idle-connection killer):
the listener reconnects with capped exponential back-off and asks for a refresh after
every reconnect, because notifications sent while it was away are lost. The interval
refresh keeps running meanwhile, so a long outage of the listener only costs freshness.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy import Engine

from exporter.errors import one_line

log = logging.getLogger(__name__)

CHANNEL = "accounting_sync_changed"
# How often the wait for notifications wakes up to notice stop() and to check the connection.
_POLL_SECONDS = 0.5
# A quiet connection is checked this often, so a half-open socket is noticed and replaced.
_PING_SECONDS = 30.0
_RETRY_FIRST = 0.5
_RETRY_MAX = 30.0


def connect_kwargs(engine: Engine) -> dict[str, Any]:
    """psycopg.connect() arguments for the engine's database (password file included)."""
    _, kwargs = engine.dialect.create_connect_args(engine.url)
    kwargs = {key: value for key, value in kwargs.items() if key != "context"}
    return {
        **kwargs,
        "autocommit": True,
        "connect_timeout": 5,
        "application_name": "accounting-sync-exporter-listener",
        # Kernel keepalives notice a peer that vanished without closing the connection.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        # And data the peer never acknowledges (the 30 s SELECT 1 sent into a network
        # partition) fails the connection after 10 s instead of blocking the listener.
        "tcp_user_timeout": 10_000,
    }


class Throttle:
    """Leading-edge throttle with a trailing call: pure, driven by the caller's clock.

    ``notice(now)`` returns True when the caller should act now; otherwise the event is
    remembered and ``due(now)`` becomes True once the window since the last action ends.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._last_action: float | None = None
        self._owed = False

    def notice(self, now: float) -> bool:
        if self._last_action is None or now - self._last_action >= self.window:
            self._last_action = now
            self._owed = False
            return True
        self._owed = True
        return False

    def deadline(self) -> float | None:
        """When the owed action falls due, or None if nothing is owed."""
        if not self._owed or self._last_action is None:
            return None
        return self._last_action + self.window

    def due(self, now: float) -> bool:
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return False
        self._last_action = now
        self._owed = False
        return True


class ChangeListener:
    """A daemon thread that LISTENs, throttles and reconnects; ``start()``/``stop()``."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        on_change: Callable[[], None],
        debounce: float,
        *,
        channel: str = CHANNEL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self._on_change = on_change
        self._throttle = Throttle(debounce)
        self._channel = channel
        self._clock = clock
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.reconnects = 0
        self._thread = threading.Thread(target=self._run, name="change-listener", daemon=True)

    @classmethod
    def for_engine(
        cls, engine: Engine, on_change: Callable[[], None], debounce: float
    ) -> ChangeListener:
        kwargs = connect_kwargs(engine)
        return cls(lambda: psycopg.connect(**kwargs), on_change, debounce)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        retry = _RETRY_FIRST
        first = True
        while not self._stop.is_set():
            try:
                with self._connect() as connection:
                    connection.execute(f"LISTEN {self._channel}")
                    self.connected.set()
                    if first:
                        log.info("listening for sync log changes", extra={"channel": self._channel})
                    else:
                        self.reconnects += 1
                        log.info("change listener reconnected", extra={"channel": self._channel})
                    # Anything committed while we were not listening went unannounced.
                    self._fire()
                    first = False
                    retry = _RETRY_FIRST
                    self._listen(connection)
            except Exception as exc:  # psycopg.Error above all; nothing may end this thread
                self.connected.clear()
                if self._stop.is_set():
                    break
                log.warning(
                    "change listener lost its connection; retrying",
                    extra={"error": one_line(exc), "retry_seconds": retry},
                )
                self._stop.wait(retry)
                retry = min(retry * 2, _RETRY_MAX)
        self.connected.clear()

    def _listen(self, connection: psycopg.Connection[Any]) -> None:
        quiet_since = self._clock()
        while not self._stop.is_set():
            deadline = self._throttle.deadline()
            timeout = _POLL_SECONDS
            if deadline is not None:
                timeout = max(0.0, min(timeout, deadline - self._clock()))
            for _ in connection.notifies(timeout=timeout):
                quiet_since = self._clock()
                if self._throttle.notice(quiet_since):
                    self._fire()
                elif deadline is None:
                    break  # an action is now owed: wait only until its deadline
            now = self._clock()
            if self._throttle.due(now):
                self._fire()
            if now - quiet_since > _PING_SECONDS:
                connection.execute("SELECT 1")
                quiet_since = now

    def _fire(self) -> None:
        try:
            self._on_change()
        except Exception:  # a refresher problem must not kill the listener
            log.exception("refresh request failed")
