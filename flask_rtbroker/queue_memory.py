"""QueueMemory: what the client queues of one process hold, each message's data counted once.

A notify's data is encoded once and shared by every key and every queue it is delivered to
(see :mod:`.message`), so what the queues hold is each queued message once: its data and its
object, counted when the first queue takes it and forgotten when the last one lets it go (a
queued delivery itself is two list slots, its event name, a key the client holds anyway, and the
message, bounded by each client's own queue bound; the framing is built when the stream
writes). Past
``RTBROKER_QUEUE_MEMORY`` the process makes room by discarding the clients with the most bytes
queued as slow consumers (their streams end; the SDK reconnects and resubscribes), biggest
first, until the queues hold at most three quarters of the bound.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable, Generic, Iterable, Protocol, TypeVar

if TYPE_CHECKING:
    from .protocol.message import Message


class Queued(Protocol):
    """What making room reads of a client: the bytes its queue holds."""

    @property
    def queued_bytes(self) -> int: ...


Client = TypeVar("Client", bound=Queued)
"""The counted client type (a :class:`~flask_rtbroker.client.DefaultClient` in the broker)."""

MESSAGE_OVERHEAD = 160
"""Bytes counted for a queued message's object and event line, once however many queues hold it."""
ROOM_FRACTION = 0.75
"""Making room discards clients until the queues hold at most this fraction of the bound."""


class QueueMemory(Generic[Client]):
    """The process's queued bytes and their bound; iterating *clients* lists the clients that may be
    discarded (by *discard*, as slow consumers) when the bound is hit. *locked*: guard the counts
    with a lock (threads); where only greenlets run (not *locked*) a client may count a further
    holder of an already counted message itself (``message.holders += 1``, no call)."""

    def __init__(
        self,
        limit: int,
        clients: Iterable[Client],
        discard: Callable[[Client], None],
        *,
        locked: bool = True,
    ) -> None:
        self.limit = limit
        self.total = 0
        """Bytes the process's queues hold, as counted here."""
        self.discarded = 0
        """Clients discarded to make room."""
        self._clients = clients
        self._discard = discard
        self.locked = locked
        self._lock = threading.Lock() if locked else None
        # Chosen once: greenlets need no lock (nothing else runs while a count changes).
        self.hold: Callable[["Message"], bool] = self._hold_locked if locked else self._hold
        """Count one more queued delivery of a message; False, counting nothing, when it would
        pass the bound."""
        self.release: Callable[["Message"], None] = self._release_locked if locked else self._release
        """Forget one queued delivery of a message counted by :attr:`hold`."""

    def _hold_locked(self, message: "Message") -> bool:
        with self._lock:  # type: ignore[union-attr]
            return self._hold(message)

    def _hold(self, message: "Message") -> bool:
        """Count one more queued delivery of *message*; False, counting nothing, when it would
        pass the bound."""
        if not message.holders:
            size = MESSAGE_OVERHEAD + len(message.data_lines)
            if self.total + size > self.limit:
                return False
            self.total += size
        message.holders += 1
        return True

    def _release_locked(self, message: "Message") -> None:
        with self._lock:  # type: ignore[union-attr]
            self._release(message)

    def _release(self, message: "Message") -> None:
        """Forget one queued delivery of *message* counted by :meth:`hold`."""
        message.holders -= 1
        if not message.holders:
            self.total -= MESSAGE_OVERHEAD + len(message.data_lines)

    def make_room(self, needed: int) -> None:
        """Discard the clients with the most queued bytes as slow consumers, biggest first, until
        *needed* more bytes fit within three quarters of the bound (or no queue holds anything)."""
        target = self.limit * ROOM_FRACTION - needed
        if self.total <= target:
            return
        queued = sorted((c for c in self._clients if c.queued_bytes), key=lambda c: c.queued_bytes, reverse=True)
        for client in queued:
            if self.total <= target:
                break
            self._discard(client)
            self.discarded += 1
