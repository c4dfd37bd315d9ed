"""Fan-out: deliver to a topic's subscribers in chunks run concurrently on the runtime's pool.

This is the role Go's errgroup plays in PocketBase's broadcast example: split the recipients into
chunks, run the chunks, wait for all of them and return the first error for the caller to
surface (see :meth:`flask_rtbroker.state.BrokerState.deliver`). It is the one local delivery
routine: ``notify`` (made here or in another process) and record events use it, so a failure
has one policy everywhere — what fails for one delivery skips that delivery only.

A notify's JSON is encoded once and shared by every key and every queue: a delivery is the
message and the key's name (framed when written, see :func:`~flask_rtbroker.protocol.message.frame_parts`),
so per recipient only a queue append or a write happens (plus the ``before_send`` hook, given
the message renamed to the key, when one is registered).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Mapping, Optional, Union

from .client import DefaultClient
from .runtime.concurrency import Runtime
from .protocol.message import Message
from .topic_index import Subscribers

BeforeSend = Callable[[DefaultClient, Message], Optional[Message]]
Recipient = Callable[[DefaultClient], bool]
ClientMessages = Callable[[DefaultClient], Mapping[str, Optional[Message]]]
"""For one client, its message for each subscription key (None: nothing for that key), delivered
under the key's name. A lookup that raises fails that one delivery (record events build their
messages this way)."""
Messages = Union[Message, ClientMessages]
"""One message for everyone (delivered under each key's name), or a message per client and key."""


@dataclass
class Delivery:
    """What one fan-out did: deliveries queued, deliveries that failed, the first failure."""

    queued: int = 0
    failed: int = 0
    first_error: Exception | None = None

    def add(self, other: "Delivery") -> None:
        """Fold *other* into this one (keeping the earliest first error)."""
        self.queued += other.queued
        self.failed += other.failed
        self.first_error = self.first_error or other.first_error


class _RenamedMessages(dict[str, Message]):
    """For ``before_send``: the message renamed to each key, built on first use and shared by
    every client (the copies share the encoded data)."""

    def __init__(self, message: Message) -> None:
        super().__init__()
        self.message = message

    def __missing__(self, key: str) -> Message:
        renamed = self[key] = self.message.renamed(key)
        return renamed


def _deliver_chunk(
    clients: list[DefaultClient],
    subscribers: Subscribers,
    shared: Message | None,
    renamed: Mapping[str, Message] | None,
    per_client: ClientMessages | None,
    before_send: BeforeSend | None,
) -> Delivery:
    """Queue the chunk's deliveries; what fails skips that delivery only."""
    result = Delivery()
    for client in clients:
        keys = subscribers[client]
        try:
            messages = None if per_client is None else per_client(client)
        except Exception as exc:  # noqa: BLE001 - surfaced after every chunk ran
            result.failed += len(keys)
            result.first_error = result.first_error or exc
            continue
        for key in keys:
            try:
                message = shared if messages is None else messages[key]
                if message is None:
                    continue
                if before_send is not None:
                    message = before_send(client, renamed[key] if messages is None else message.renamed(key))  # type: ignore[index]
                    if message is not None and client.send(message):
                        result.queued += 1
                elif client.send(message, key):
                    result.queued += 1
            except Exception as exc:  # noqa: BLE001 - surfaced after every chunk ran
                result.failed += 1
                result.first_error = result.first_error or exc
    return result


def fan_out(
    runtime: Runtime,
    subscribers: Subscribers,
    messages: Messages,
    *,
    chunk_size: int,
    recipient: Recipient | None = None,
    before_send: BeforeSend | None = None,
) -> Delivery:
    """Deliver *messages* once per matching key of every subscriber (those *recipient* selects).

    Every delivery is attempted: a message lookup or a *before_send* that raises skips that
    delivery only and is counted as failed. The event name of each delivery is the subscriber's
    key. A client discarded meanwhile (or as a slow consumer) is not counted as queued.
    """
    clients = list(subscribers) if recipient is None else [c for c in subscribers if recipient(c)]
    if not clients:
        return Delivery()
    shared, per_client = (messages, None) if isinstance(messages, Message) else (None, messages)
    renamed = _RenamedMessages(shared) if shared is not None and before_send is not None else None
    chunks = [clients[i : i + chunk_size] for i in range(0, len(clients), chunk_size)]
    results = runtime.run_all([partial(_deliver_chunk, chunk, subscribers, shared, renamed, per_client, before_send) for chunk in chunks])
    total = Delivery()
    for result in results:
        total.add(result)
    return total
