"""Record events delivered off the committing request, in commit order.

A commit's events are broadcast to this process's subscribers after the commit, by whatever
committed. A small broadcast stays there (its subscribers get it sooner, and the committing
request costs little more); a large one, or any while earlier ones wait, goes on the process's
queue, drained in order by one background greenlet or thread, so a request that commits to a
collection with thousands of subscribers answers without evaluating their rules.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable

from ..runtime.concurrency import Runtime
from .event import RecordEvent

log = logging.getLogger("flask_rtbroker.records")

INLINE_SUBSCRIBERS = 64
"""A broadcast to at most this many subscribers (over the event's topics) runs inline."""


class DeliveryQueue:
    """Broadcasts batches of events through *broadcast*, inline or on a background task."""

    def __init__(self, runtime: Callable[[], Runtime], broadcast: Callable[[list[RecordEvent]], None]) -> None:
        self._runtime = runtime
        self._broadcast = broadcast
        self._queue: Any = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self.waiting = 0
        """Batches queued and not yet broadcast."""

    def deliver(self, events: list[RecordEvent], subscribers: int) -> None:
        """Broadcast *events* (reaching about *subscribers* subscriptions) now when small and
        nothing waits, else queue them behind what waits."""
        if subscribers <= INLINE_SUBSCRIBERS and not self.waiting:
            self._broadcast(events)
            return
        with self._lock:
            if self._pid != os.getpid():  # first use in this process (or after a fork)
                self._pid, self._queue = os.getpid(), self._runtime().queue()
                self._runtime().spawn(self._drain)
            self.waiting += 1
            self._queue.put(events)

    def _drain(self) -> None:
        queue = self._queue
        while True:
            events = queue.get()
            if events is None:
                return
            try:
                self._broadcast(events)
            except Exception:  # noqa: BLE001 - one failed batch must not stop later ones
                log.exception("a queued record broadcast failed")
            finally:
                with self._lock:
                    self.waiting -= 1

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds until nothing waits (tests, shutdown); True when so."""
        runtime = self._runtime()
        for _ in range(max(1, int(timeout / 0.01))):
            if not self.waiting:
                return True
            runtime.sleep(0.01)
        return not self.waiting

    def close(self) -> None:
        """Stop the background task once what waits is broadcast."""
        with self._lock:
            if self._queue is not None and self._pid == os.getpid():
                self._queue.put(None)
                self._pid = None
