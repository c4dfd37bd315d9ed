"""The envelope every backplane payload travels in: a JSON header line, then the body bytes.

``{"v":1,"o":"<origin>","k":"<kind>","ch":"<channel>","q":<sequence>,"ts":<ms>,...}\\n<body>``
— the header is compact JSON (it never holds a raw newline), the body is opaque (for a notify,
the message's already-encoded JSON data), so receivers never re-encode the data. ``ch``, ``q``
and ``ts`` are the :class:`Stamp` a sending process adds (see :mod:`.freshness`); versions before
0.3 neither send nor read them, and read every other field as before, so both understand each
other during a rolling upgrade.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..protocol import encoding
from ..errors import EnvelopeError

VERSION = 1
_STAMP_FIELDS = ("ch", "q", "ts")


class Stamp(NamedTuple):
    """What makes an envelope unique and dated: the channel it was published on, its origin's
    sequence number and when it was sent (milliseconds since the epoch)."""

    channel: str
    sequence: int
    sent_at: int


@dataclass(frozen=True)
class Envelope:
    """One backplane message: who sent it (*origin*), what it is (*kind*), fields, a body and,
    once a process sends it, its :class:`Stamp`."""

    origin: str
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)
    body: bytes = b""
    stamp: Stamp | None = None

    def encode(self) -> bytes:
        """Return the wire bytes."""
        header = {"v": VERSION, "o": self.origin, "k": self.kind, **self.fields}
        if self.stamp is not None:
            header.update(zip(_STAMP_FIELDS, self.stamp))
        return encoding.dumps(header) + b"\n" + self.body

    @classmethod
    def decode(cls, payload: bytes) -> "Envelope":
        """Parse wire bytes; raise :class:`EnvelopeError` for anything else."""
        header_bytes, newline, body = payload.partition(b"\n")
        try:
            header = encoding.loads(header_bytes) if newline else None
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("v") != VERSION:
            raise EnvelopeError(f"not a version {VERSION} envelope: {payload[:80]!r}")
        origin, kind = header.pop("o", None), header.pop("k", None)
        header.pop("v")
        if not isinstance(origin, str) or not isinstance(kind, str):
            raise EnvelopeError(f"envelope without origin or kind: {payload[:80]!r}")
        return cls(origin, kind, header, body, _stamp(header, payload))


def _stamp(header: dict[str, Any], payload: bytes) -> Stamp | None:
    """The stamp fields popped from *header*: None when there are none, all three or an error."""
    channel, sequence, sent_at = (header.pop(name, None) for name in _STAMP_FIELDS)
    if channel is None and sequence is None and sent_at is None:
        return None
    if not isinstance(channel, str) or not all(
        isinstance(number, int) and not isinstance(number, bool) for number in (sequence, sent_at)
    ):
        raise EnvelopeError(f"envelope with a malformed stamp: {payload[:80]!r}")
    return Stamp(channel, sequence, sent_at)  # type: ignore[arg-type]
