"""In-memory backplane: the default, and the test double for several workers in one process.

``memory://`` is a private bus: nothing to publish to, so cross-process work is skipped.
``memory://NAME`` joins the bus NAME of this process; apps on the same bus behave like workers
sharing a Redis.
"""

from __future__ import annotations

import queue
import threading
import weakref
from typing import Any, Iterator

from .base import READY, Backplane

_buses: dict[str, "weakref.WeakSet[MemoryBackplane]"] = {}
_buses_lock = threading.Lock()
_STOP = object()
SWEEP_CHECK = 1.0
"""Seconds an idle listener waits before it checks whether a channel sweep is due."""


class MemoryBackplane(Backplane):
    """A bus inside this process; *name* None makes it private. It routes like Redis: a payload
    reaches the members listening on its channel."""

    routes = True

    def __init__(self, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.url = f"memory://{name or ''}"
        self._inbox: Any = None
        if name is not None:
            with _buses_lock:
                _buses.setdefault(name, weakref.WeakSet()).add(self)

    @property
    def has_peers(self) -> bool:
        return self.name is not None

    def publish_to(self, channel: str, payload: bytes) -> int:
        if self.name is None:
            return 0
        with _buses_lock:
            members = list(_buses.get(self.name, ()))
        reached = 0
        for member in members:
            if member._inbox is not None and member.listening_to(channel):
                member._inbox.put(payload)
                reached += 1
        return reached

    def subscribe_now(self, channels: list[str]) -> None:
        for channel in channels:
            self.confirmed(channel)

    def unsubscribe_now(self, channels: list[str]) -> None:
        """Nothing to do: :meth:`~Backplane.sweep` already stopped :meth:`listening_to` them."""

    def listen(self) -> Iterator[bytes]:
        assert self._runtime is not None, "start() creates the inbox"
        self._inbox = self._runtime.queue()
        self.subscribe_now(sorted(self.channels()))
        yield READY
        while True:
            self.sweep()  # due on a timer, or promptly: busy or idle
            try:
                payload = self._inbox.get(timeout=SWEEP_CHECK)
            except queue.Empty:
                continue
            if payload is _STOP:
                return
            yield payload

    def close(self) -> None:
        super().close()
        if self._inbox is not None:
            self._inbox.put(_STOP)
