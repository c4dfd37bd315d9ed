"""Fan-out: deliver one message to its subscribers in chunks run concurrently on the runtime's pool.

This is the role Go's errgroup plays in PocketBase's broadcast example: split the recipients into
chunks, run the chunks, wait for all of them and return the first error for the caller to
surface (see :meth:`flask_rtbroker.state.BrokerState.deliver`). The JSON is encoded
once per notify and the SSE tail once per distinct subscription key; per recipient only a queue
append happens (plus the ``before_send`` hook when one is registered).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Optional

from .client import DefaultClient
from .concurrency import Runtime
from .message import Message
from .topic_index import Subscribers

BeforeSend = Callable[[DefaultClient, Message], Optional[Message]]
Recipient = Callable[[DefaultClient], bool]


class _RenamedMessages(dict[str, Message]):
    """The message under each subscription key it is delivered as, built on first use."""

    def __init__(self, message: Message) -> None:
        super().__init__()
        self.message = message

    def __missing__(self, key: str) -> Message:
        renamed = self[key] = self.message.renamed(key)
        return renamed


def _deliver_chunk(
    clients: list[DefaultClient],
    subscribers: Subscribers,
    messages: _RenamedMessages,
    before_send: BeforeSend | None,
) -> tuple[int, Exception | None]:
    """Queue the chunk's deliveries; a failing hook skips that client only. Return (count, first error)."""
    delivered = 0
    first_error: Exception | None = None
    for client in clients:
        for key in subscribers[client]:
            message: Message | None = messages[key]
            if before_send is not None:
                try:
                    message = before_send(client, message)  # type: ignore[arg-type]
                except Exception as exc:  # noqa: BLE001 - surfaced after every chunk ran
                    first_error = first_error or exc
                    continue
                if message is None:
                    continue
            if client.send(message):  # type: ignore[arg-type]
                delivered += 1
    return delivered, first_error


def fan_out(
    runtime: Runtime,
    subscribers: Subscribers,
    message: Message,
    *,
    chunk_size: int,
    recipient: Recipient | None = None,
    before_send: BeforeSend | None = None,
) -> tuple[int, Exception | None]:
    """Send *message* once per matching key of every subscriber; return how many were queued
    and the first error raised by *before_send* (None when none was).

    Every delivery is attempted: a hook that raises skips that delivery only. *recipient*, when
    given, selects which subscribers get it (targeted sends). The event name of each delivery is
    the subscriber's key. A client discarded meanwhile (or as a slow consumer) is not counted.
    """
    clients = list(subscribers) if recipient is None else [c for c in subscribers if recipient(c)]
    if not clients:
        return 0, None
    messages = _RenamedMessages(message)
    chunks = [clients[i : i + chunk_size] for i in range(0, len(clients), chunk_size)]
    results = runtime.run_all([partial(_deliver_chunk, chunk, subscribers, messages, before_send) for chunk in chunks])
    first_error = next((error for _, error in results if error is not None), None)
    return sum(count for count, _ in results), first_error
