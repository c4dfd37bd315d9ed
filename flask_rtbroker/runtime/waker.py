"""The Waker protocol: the event a stream waits on and a sender sets."""

from __future__ import annotations

from typing import Protocol


class Waker(Protocol):
    """An event the stream waits on and :meth:`DefaultClient.send` sets (threading or gevent Event)."""

    def set(self) -> None: ...

    def clear(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...
