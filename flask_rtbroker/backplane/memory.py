"""In-memory backplane: the default, and the test double for several workers in one process.

``memory://`` is a private bus: nothing to publish to, so cross-process work is skipped.
``memory://NAME`` joins the bus NAME of this process; apps on the same bus behave like workers
sharing a Redis.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Iterator

from .base import READY, Backplane

_buses: dict[str, "weakref.WeakSet[MemoryBackplane]"] = {}
_buses_lock = threading.Lock()
_STOP = object()


class MemoryBackplane(Backplane):
    """A bus inside this process; *name* None makes it private."""

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

    def publish(self, payload: bytes) -> None:
        if self.name is None:
            return
        with _buses_lock:
            members = list(_buses.get(self.name, ()))
        for member in members:
            if member._inbox is not None:
                member._inbox.put(payload)

    def listen(self) -> Iterator[bytes]:
        assert self._runtime is not None, "start() creates the inbox"
        self._inbox = self._runtime.queue()
        yield READY
        while True:
            payload = self._inbox.get()
            if payload is _STOP:
                return
            yield payload

    def close(self) -> None:
        super().close()
        if self._inbox is not None:
            self._inbox.put(_STOP)
