"""Message: one named event and its JSON data, framed as Server-Sent Events.

PocketBase frames every event as ``id:<client id>\\nevent:<name>\\ndata:<json>\\n\\n``. Only the
``id:`` line differs between recipients, so a Message encodes everything after it once
(:attr:`Message.tail`) and each client prepends its own ``id:`` line.
"""

from __future__ import annotations

from typing import Any

from . import encoding
from .errors import InvalidArgument, MessageTooLarge

_LINE_BREAKS = ("\r", "\n")

PB_CONNECT = "PB_CONNECT"
"""The first event of every stream, carrying the client id; the SDK resubscribes on it, so only
the stream itself sends it (a direct send of it, local or from the backplane, is refused)."""


def check_event_name(name: str) -> None:
    """Raise :class:`InvalidArgument` if *name* cannot be an SSE event name (not a string, or it
    holds a line break)."""
    if not isinstance(name, str):
        raise InvalidArgument(f"a topic or event name must be a string, not {type(name).__name__} {name!r}")
    if any(c in name for c in _LINE_BREAKS):
        raise InvalidArgument(f"event name {name!r} contains a line break, which would break SSE framing")


def check_size(name: str, payload: bytes, limit: int) -> None:
    """Raise :class:`MessageTooLarge` when *payload*, the encoded data of message *name*, is over
    *limit* bytes (``RTBROKER_MAX_MESSAGE_SIZE``; every publisher checks with this)."""
    if len(payload) > limit:
        raise MessageTooLarge(
            f"message data for {name!r} is {len(payload)} bytes encoded, over RTBROKER_MAX_MESSAGE_SIZE ({limit} bytes)"
        )


class Message:
    """An event *name* with *data*, JSON-encoded once at construction.

    ``Message("example", {"test": 123})`` encodes the data compactly; use :meth:`raw` for data
    that is already encoded.
    """

    __slots__ = ("name", "data", "payload", "tail")

    def __init__(self, name: str, data: Any) -> None:
        self._init(name, data, encoding.dumps(data))

    def _init(self, name: str, data: Any, payload: bytes) -> None:
        check_event_name(name)
        self.name = name
        self.data = data
        self.payload = payload
        data_lines = payload.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\ndata:")
        self.tail = b"\nevent:" + encoding.utf8(name) + b"\ndata:" + data_lines + b"\n\n"

    @classmethod
    def raw(cls, name: str, payload: bytes | str) -> "Message":
        """Build a message whose data is already encoded; line breaks become extra ``data:`` lines."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        message = cls.__new__(cls)
        message._init(name, None, payload)
        return message

    def renamed(self, name: str) -> "Message":
        """Return the same data under another event name, without encoding it again."""
        if name == self.name:
            return self
        message = Message.__new__(Message)
        message._init(name, self.data, self.payload)
        return message

    def frame(self, client_id: str) -> bytes:
        """Return the complete SSE event bytes for the client *client_id*."""
        return b"id:" + client_id.encode("ascii") + self.tail

    def __repr__(self) -> str:
        return f"Message(name={self.name!r}, payload={self.payload[:60]!r})"
