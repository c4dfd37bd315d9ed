"""Message: one named event and its JSON data, framed as Server-Sent Events.

PocketBase frames every event as ``id:<client id>\\nevent:<name>\\ndata:<json>\\n\\n``. A
Message encodes its data once (:attr:`Message.data_lines`); the ``id:`` line of each client and the
``event:`` line of each subscription key are put in front of that shared block when the event is
written (:func:`frame_parts`), so a notify delivered under a thousand keys holds its data once.
"""

from __future__ import annotations

from typing import Any

from . import encoding
from ..errors import InvalidArgument, MessageTooLarge

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


DATA_END = b"\n\n"
"""What ends every event, after its data lines."""
FRAME_OVERHEAD = 17
"""The bytes of an event's framing besides its id, name and data (``\\nevent:``, ``\\ndata:``, the end)."""
SMALL_DATA = 16 * 1024
"""Data up to this size also keeps its whole framed tail (see :attr:`Message.tail`)."""


def event_line(name: str) -> bytes:
    """The ``event:`` line of *name* up to its first ``data:``, as it goes between ``id:`` and the data."""
    return b"\nevent:" + encoding.utf8(name) + b"\ndata:"


class Message:
    """An event *name* with *data*, JSON-encoded once at construction.

    ``Message("example", {"test": 123})`` encodes the data compactly; use :meth:`raw` for data
    that is already encoded. Messages renamed from one another share their data block.
    """

    __slots__ = ("name", "data", "payload", "data_lines", "event_line", "tail", "holders", "origin_id")

    def __init__(self, name: str, data: Any) -> None:
        self._init(name, data, encoding.dumps(data), None)

    def _init(self, name: str, data: Any, payload: bytes, data_lines: bytes | None) -> None:
        check_event_name(name)
        self.name = name
        self.data = data
        self.payload = payload
        if data_lines is None:  # compact JSON has no raw line break: the payload itself, no copy
            data_lines = payload
            if b"\n" in payload or b"\r" in payload:
                data_lines = payload.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\ndata:")
        self.data_lines = data_lines
        """The data as SSE ``data:`` lines (after the first ``data:``), shared by renamed copies."""
        self.event_line = event_line(name)
        self.tail: bytes | None = self.event_line + data_lines + DATA_END if len(data_lines) <= SMALL_DATA else None
        """Every byte after the ``id:`` line's value under its own name, for small data only (one
        concatenation per delivery); large data is written from its buffers."""
        self.holders = 0
        """How many client queues hold this message (see :class:`~flask_rtbroker.queue_memory.QueueMemory`)."""
        self.origin_id: tuple[str, int] | None = None
        """The backplane's (origin, sequence) of a broadcast notify: the same in every process
        (what a session handed over between processes is deduplicated by, :mod:`.sessions`)."""

    @classmethod
    def raw(cls, name: str, payload: bytes | str) -> "Message":
        """Build a message whose data is already encoded; line breaks become extra ``data:`` lines."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        message = cls.__new__(cls)
        message._init(name, None, payload, None)
        return message

    def renamed(self, name: str) -> "Message":
        """Return the same data under another event name, sharing the encoded data."""
        if name == self.name:
            return self
        message = Message.__new__(Message)
        message._init(name, self.data, self.payload, self.data_lines)
        message.origin_id = self.origin_id
        return message

    def frame(self, client_id: str) -> bytes:
        """Return the complete SSE event bytes for the client *client_id*."""
        return b"".join(frame_parts(b"id:" + client_id.encode("ascii"), self, self.name))

    def __repr__(self) -> str:
        return f"Message(name={self.name!r}, payload={self.payload[:60]!r})"


def frame_parts(prefix: bytes, message: Message, name: str) -> tuple[bytes, bytes, bytes, bytes]:
    """The four buffers of *message* delivered as event *name* to the client whose ``id:`` line is
    *prefix*: written together (joined or with one ``sendmsg``), never copied per key."""
    line = message.event_line if name is message.name or name == message.name else event_line(name)
    return prefix, line, message.data_lines, DATA_END


def framed_tail(message: Message, name: str) -> bytes:
    """Every byte of *message* delivered as event *name* after the ``id:`` line's value."""
    if message.tail is not None and (name is message.name or name == message.name):
        return message.tail
    return b"".join(frame_parts(b"", message, name))


def frame_size(message: Message, name: str) -> int:
    """About the bytes of :func:`frame_parts` after the ``id:`` line (the name counted in characters)."""
    return len(message.data_lines) + len(name) + FRAME_OVERHEAD
