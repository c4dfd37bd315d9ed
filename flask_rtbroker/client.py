"""Client: one realtime connection, its subscriptions, a key/value store and a bounded queue.

Mirrors PocketBase's ``subscriptions.Client``. :meth:`DefaultClient.send` never blocks: it
appends to the client's queue and wakes the stream that drains it. A client whose queue is full
is a slow consumer and is discarded (its stream ends; the SDK reconnects and resubscribes).
"""

from __future__ import annotations

import sys
import threading
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Iterable

from .runtime.ids import new_client_id
from .runtime.waker import Waker
from .protocol.message import FRAME_OVERHEAD, Message, event_line, frame_size, framed_tail
from .protocol.options import SubscriptionOptions, matches_prefix, parse_options, subscription_cost

if TYPE_CHECKING:
    from .queue_memory import QueueMemory
    from .topic_index import TopicIndex
    from .write_through import SocketWriter

AUTH_KEY = "auth"
"""Store key of the client's auth identity (PocketBase's ``RealtimeClientAuthKey``)."""
IP_KEY = "ip"
"""Store key of the IP address the client's stream was opened from."""



class DisconnectReason(StrEnum):
    """Why a stream ended: the ``reason`` of ``client_disconnected`` and of ``stats()["disconnects_total"]``."""

    IDLE = "idle"
    """No message was delivered for ``RTBROKER_IDLE_TIMEOUT``."""
    LIFETIME = "lifetime"
    """The stream reached ``RTBROKER_MAX_LIFETIME`` (less its jitter)."""
    CLOSED = "closed"
    """The peer went away, or a write to it failed or timed out."""
    SLOW = "slow"
    """Its queue overflowed: a slow consumer."""
    DISCARDED = "discarded"
    """The app called ``client.discard()``."""
    SHUTDOWN = "shutdown"
    """The worker is stopping (graceful shutdown)."""
    REVOKED = "revoked"
    """``broker.clear_auth(user, disconnect=True)``."""


class DefaultClient:
    """A realtime client (PocketBase's ``DefaultClient``): a queue bounded at *queue_size*
    messages plus a waker event."""

    __slots__ = (
        "_id",
        "frame_prefix",
        "_subscriptions",
        "_store",
        "_queue",
        "_queue_size",
        "_queue_bytes",
        "_max_queue_bytes",
        "waker",
        "_index",
        "discard_reason",
        "dropped",
        "deadline",
        "max_batch",
        "subscription_bytes",
        "writer",
        "successor",
        "ending",
        "queue_memory",
        "__weakref__",
    )

    def __init__(
        self,
        client_id: str | None = None,
        *,
        queue_size: int = 1000,
        max_queue_bytes: int = 8 * 1024 * 1024,
        waker: Waker | None = None,
        queue_memory: "QueueMemory[DefaultClient] | None" = None,
    ) -> None:
        self._id = client_id or new_client_id()
        self.frame_prefix = b"id:" + self._id.encode("ascii")
        self._subscriptions: dict[str, SubscriptionOptions] = {}
        self._store: dict[str, Any] = {}
        # A list, not a deque: an idle client's queue costs 56 bytes instead of ~600. Each
        # delivery is two items, its event name then its message (one atomic extend, no tuple
        # kept). Consumers take the first n items then delete them; senders only append, so
        # nothing is lost between the two steps even with threads.
        self._queue: list[Any] = []
        self._queue_size = queue_size
        self._queue_bytes = 0
        self._max_queue_bytes = max_queue_bytes
        self.waker: Waker = waker if waker is not None else threading.Event()
        """Set whenever something is queued or the stream must look (the stream waits on it)."""
        self._index: TopicIndex[DefaultClient] | None = None
        self.discard_reason: DisconnectReason | None = None
        self.dropped = 0
        """Messages lost because the client was discarded as a slow consumer."""
        self.deadline = float("inf")
        """Monotonic time its stream next has to act (idle, lifetime, heartbeat)."""
        self.max_batch = 0
        """Most messages :meth:`take` found queued at once (the queue's high-water mark)."""
        self.subscription_bytes = 0
        """What the client's keys count against the subscription budgets."""
        self.writer: SocketWriter | None = None
        """Its stream's socket writer while write-through is on (see :mod:`.write_through`)."""
        self.ending: DisconnectReason | None = None
        """Set (with the waker) to end the stream while the client stays wanted: its session is
        kept (a graceful shutdown handing its ghosts over, see :mod:`.sessions`)."""
        self.successor: DefaultClient | None = None
        """The client that claimed this one's session (see :mod:`.sessions`): what is sent to
        this one once it is discarded goes there instead."""
        self.queue_memory = queue_memory
        """The process's bound on queued bytes (None: only this client's own bounds apply)."""

    @property
    def id(self) -> str:
        """The client id, sent to the client in ``PB_CONNECT`` and as every event's ``id:``."""
        return self._id

    # -- subscriptions -------------------------------------------------------------------------

    def subscriptions(self, *prefixes: str) -> dict[str, SubscriptionOptions]:
        """Return a copy of the subscriptions, all or those matching any of *prefixes*.

        A subscription matches a prefix when ``subscription + "?"`` starts with it, so
        ``subscriptions("posts/*?")`` finds ``posts/*`` and ``posts/*?options=...``.
        """
        if not prefixes:
            return dict(self._subscriptions)
        return {
            sub: options
            for sub, options in self._subscriptions.items()
            if any(matches_prefix(sub, prefix) for prefix in prefixes)
        }

    def subscribe(self, *subscriptions: str) -> None:
        """Add subscriptions, parsing their ``?options=``; empty strings are skipped."""
        added = []
        for sub in subscriptions:
            if not sub:
                continue
            if sub not in self._subscriptions:
                # Interned: thousands of clients subscribed to one topic share one key string.
                sub = sys.intern(sub)
                added.append(sub)
            self._subscriptions[sub] = parse_options(sub)
        if added:
            self.subscription_bytes += subscription_cost(added)
            if self._index is not None:
                self._index.add(self, added)

    def unsubscribe(self, *subscriptions: str) -> None:
        """Remove the given subscriptions, or all of them when called without arguments."""
        targets = list(subscriptions) if subscriptions else list(self._subscriptions)
        removed = [sub for sub in targets if self._subscriptions.pop(sub, None) is not None]
        if removed:
            self.subscription_bytes -= subscription_cost(removed)
            if self._index is not None:
                self._index.remove(self, removed)

    def set_subscriptions(self, subscriptions: Iterable[str]) -> None:
        """Replace the whole subscription set; keys kept in both sets never stop matching."""
        wanted = dict.fromkeys(sub for sub in subscriptions if sub)
        self.unsubscribe(*(sub for sub in list(self._subscriptions) if sub not in wanted))
        self.subscribe(*(sub for sub in wanted if sub not in self._subscriptions))

    def has_subscription(self, subscription: str) -> bool:
        """Return True if *subscription* is one of the client's keys, byte for byte."""
        return subscription in self._subscriptions

    def bind_index(self, index: "TopicIndex[DefaultClient] | None") -> None:
        """Attach the broker's topic index (None detaches); called by register/unregister."""
        if self._index is not None and self._subscriptions:
            self._index.remove(self, list(self._subscriptions))
        self._index = index
        if index is not None and self._subscriptions:
            index.add(self, list(self._subscriptions))

    # -- store ---------------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """Return the stored value of *key*, e.g. ``client.get(AUTH_KEY)``."""
        return self._store.get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Store *value* under *key*."""
        self._store[key] = value

    def unset(self, key: str) -> None:
        """Remove *key* from the store, if present."""
        self._store.pop(key, None)

    def store(self) -> dict[str, Any]:
        """Return a copy of the whole store."""
        return dict(self._store)

    # -- lifecycle and delivery ----------------------------------------------------------------

    def discard(self, reason: DisconnectReason = DisconnectReason.DISCARDED) -> None:
        """Mark the client as gone and wake its stream so it ends; idempotent (first reason wins).

        Nothing is queued after this. What is already queued is still written before the stream
        ends, except for a slow consumer, whose queue is dropped (counted in :attr:`dropped`).
        """
        if self.discard_reason is not None:
            return
        self.discard_reason = reason
        if reason == DisconnectReason.SLOW:
            self.dropped += self.clear_queue()
        self.waker.set()

    def clear_queue(self) -> int:
        """Drop everything queued (a slow consumer's queue, a stream that ended); return how
        many deliveries were dropped."""
        queue = self._queue
        count = len(queue)
        memory = self.queue_memory
        if memory is not None:
            for i in range(1, count, 2):
                memory.release(queue[i])
        del queue[:count]
        self._queue_bytes = 0
        return count // 2

    @property
    def is_discarded(self) -> bool:
        """True once :meth:`discard` was called."""
        return self.discard_reason is not None

    def send(self, message: Message, event: str | None = None) -> bool:
        """Queue *message* (delivered as event *event*, default its own name) without blocking,
        or write it through when the stream's socket is free; return whether it was queued or
        written. Past the message or byte bound of the client, or of the process when making
        room there discarded this client, the client is discarded as a slow consumer and
        nothing is queued."""
        if self.discard_reason is not None:
            successor = self.successor
            return successor.send(message, event) if successor is not None else False
        writer = self.writer
        if writer is not None and not writer.busy and not self._queue:
            same = event is None or event == message.name
            tail = message.tail
            try:
                if tail is not None and same:
                    writer.offer(self.frame_prefix + tail)
                else:
                    writer.offer_event(self.frame_prefix, message.event_line if same else event_line(event), message.data_lines)  # type: ignore[arg-type]
            except OSError:
                self.discard(DisconnectReason.CLOSED)
                return False
            if writer.busy:  # a partial write: the stream writes the rest
                self.waker.set()
            return True
        name = message.name if event is None else event
        size = len(message.data_lines) + len(name) + FRAME_OVERHEAD  # frame_size(), inlined
        if len(self._queue) >= 2 * self._queue_size or self._queue_bytes + size > self._max_queue_bytes:
            self.dropped += 1
            self.discard(DisconnectReason.SLOW)
            return False
        memory = self.queue_memory
        if memory is not None:
            if message.holders and not memory.locked:
                message.holders += 1  # counted already (see QueueMemory): greenlets need no call
            elif not (memory.hold(message) or self._make_room(memory, message, size)):
                self.dropped += 1
                self.discard(DisconnectReason.SLOW)
                return False
        self._queue.extend((name, message))
        self._queue_bytes += size
        self.waker.set()
        return True

    def _make_room(self, memory: "QueueMemory[DefaultClient]", message: Message, size: int) -> bool:
        """The process's bound is reached: make room there, then count the delivery if this
        client is still wanted."""
        memory.make_room(size)
        return self.discard_reason is None and memory.hold(message)

    def wake(self) -> None:
        """Wake the stream without queueing anything (e.g. to let it notice a closed socket)."""
        self.waker.set()

    def take(self) -> bytes:
        """Remove everything queued and return it framed for this client, as one write (b"" if
        nothing is queued)."""
        queue = self._queue
        count = len(queue)
        if count == 0:
            return b""
        prefix = self.frame_prefix
        memory = self.queue_memory
        if count == 2:  # the usual case: no list of parts
            name, message = queue[0], queue[1]
            del queue[:2]
            if queue:  # a thread appended meanwhile: only ours go
                self._queue_bytes -= len(message.data_lines) + len(name) + FRAME_OVERHEAD
            else:
                self._queue_bytes = 0
            if not self.max_batch:
                self.max_batch = 1
            if memory is not None:
                if message.holders > 1 and not memory.locked:
                    message.holders -= 1  # others still hold it: nothing to forget yet
                else:
                    memory.release(message)
            tail = message.tail
            if tail is not None and (name is message.name or name == message.name):
                return prefix + tail
            return prefix + framed_tail(message, name)
        if count // 2 > self.max_batch:
            self.max_batch = count // 2
        entries = queue[:count]
        del queue[:count]
        tails: list[bytes] = []
        for i in range(0, count, 2):
            name, message = entries[i], entries[i + 1]
            tails.append(framed_tail(message, name))
            self._queue_bytes -= frame_size(message, name)
            if memory is not None:
                memory.release(message)
        return prefix + prefix.join(tails)

    def adopt_queue(self, other: "DefaultClient") -> int:
        """Move everything *other* has queued to the end of this client's queue, in order, and
        wake this client's stream; return how many deliveries moved (a claimed session's replay).

        Both queues' bounds may be passed for that once: nothing is dropped."""
        count = other.queued
        if not count:
            return 0
        moved, other._queue = other._queue, []
        self._queue.extend(moved)
        self._queue_bytes += other._queue_bytes
        other._queue_bytes = 0
        self.waker.set()
        return count

    def queued_deliveries(self) -> list[tuple[str, Message]]:
        """What waits in the queue, as (event name, message) pairs in order (a copy)."""
        queue = self._queue[:]
        return [(queue[i], queue[i + 1]) for i in range(0, len(queue) - 1, 2)]

    @property
    def queued(self) -> int:
        """How many deliveries wait in the queue."""
        return len(self._queue) // 2

    @property
    def queued_bytes(self) -> int:
        """The bytes its queued deliveries make once framed, ``id:`` lines aside (about what its
        next write holds)."""
        return self._queue_bytes

    def __repr__(self) -> str:
        state = f" discarded={self.discard_reason}" if self.discard_reason else ""
        return f"<DefaultClient {self._id[:8]}... subscriptions={len(self._subscriptions)}{state}>"
