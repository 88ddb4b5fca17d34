"""Giving up on a database that does not answer, from the client side.

The server-side ``statement_timeout`` covers a slow query, but in a network partition or
with a frozen server nothing comes back and nothing is closed: a blocking read would then
wait forever, and the exporter would keep reporting ``source_up 1`` over an ever older
snapshot. SIGTERM has the same problem with a refresh that is stuck on a lock. In both
cases we shut down the sockets of the engine's connections. The blocked call then fails
at once, the refresh ends as a failure, and the pool replaces the dead connections (pre-ping).
"""

from __future__ import annotations

import os
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, event

T = TypeVar("T")


class ConnectionTracker:
    """Every DBAPI connection one engine opens, so a stuck read can be cut off.

    An object rather than a module-level registry: each reader owns its own, so two
    exporters in one process (tests, benchmarks) never abort each other's connections.
    """

    def __init__(self, engine: Engine) -> None:
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        if engine.dialect.name != "sqlite":  # a local file has no socket to cut off
            event.listen(engine, "connect", self._on_connect)

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        with self._lock:
            self._connections.add(dbapi_connection)

    def abort(self) -> int:
        """Shut down the socket of each open connection; returns how many were shut down.

        ``shutdown`` applies to the socket itself, not to one descriptor of it, so shutting
        down a duplicate wakes a thread blocked on the original without closing that
        descriptor under it. (Closing the connection object from another thread would not
        be safe.)
        """
        with self._lock:
            connections = list(self._connections)
        aborted = 0
        for connection in connections:
            try:
                if getattr(connection, "closed", True):
                    continue
                duplicate = os.dup(connection.fileno())
            except Exception:  # closed meanwhile, or a driver without a socket: nothing to do
                continue
            try:
                with socket.socket(fileno=duplicate) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
                aborted += 1
            except OSError:
                continue
        return aborted


def client_deadline(statement_timeout: float) -> float:
    """How long a read may take before the exporter stops waiting for the server.

    The server cancels the statement after ``statement_timeout``. If it has not answered by
    this deadline, which leaves at least one more second of slack, it cannot answer.
    """
    return statement_timeout + max(1.0, statement_timeout)


def with_deadline(call: Callable[[], T], seconds: float, tracker: ConnectionTracker) -> T:
    """``call()``, but the tracked connections are aborted if it runs longer than ``seconds``."""
    timer = threading.Timer(seconds, tracker.abort)
    timer.daemon = True
    timer.start()
    try:
        return call()
    finally:
        timer.cancel()
