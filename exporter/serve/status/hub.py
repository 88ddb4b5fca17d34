"""The event streams' meeting point with the refresher: one "latest state" slot.

The refresher's publish hook only swaps the slot and wakes the waiting streams; it never
writes to a socket, so a slow or stalled browser cannot delay a refresh or another
client. Each stream writes from its own request thread and, when it wakes, takes the
newest state (skipping any it was too slow to see) and sends the difference from what
that client already has. Open streams are counted against a bound, so a crowd of tabs
costs a known number of threads.
"""

from __future__ import annotations

import threading

from exporter.model import ServedState


class StreamHub:
    def __init__(self, max_streams: int, state: ServedState | None = None) -> None:
        self.max_streams = max_streams
        self._state = state or ServedState()
        self._changed = threading.Condition()
        self._open = 0
        self._closed = False

    @property
    def current(self) -> ServedState:
        return self._state

    @property
    def open_streams(self) -> int:
        return self._open

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, state: ServedState) -> None:
        """The refresher's hook: O(1) whatever the number of clients."""
        with self._changed:
            self._state = state
            self._changed.notify_all()

    def enter(self) -> bool:
        """Take a stream slot; False when the bound is reached (the caller answers 503)."""
        with self._changed:
            if self._closed or self._open >= self.max_streams:
                return False
            self._open += 1
            return True

    def leave(self) -> None:
        with self._changed:
            self._open -= 1

    def wait_newer(self, generation: int, timeout: float) -> ServedState | None:
        """The newest state past ``generation``, or None after ``timeout`` or on close."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._closed or self._state.generation != generation, timeout
            )
            if self._closed or self._state.generation == generation:
                return None
            return self._state

    def close(self) -> None:
        """Ends every stream (the server is stopping)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
