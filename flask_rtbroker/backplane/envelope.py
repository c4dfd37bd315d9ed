"""The envelope every backplane payload travels in: a JSON header line, then the body bytes.

``{"v":1,"o":"<origin>","k":"<kind>",...}\\n<body>`` — the header is compact JSON (it never holds
a raw newline), the body is opaque (for a notify, the message's already-encoded JSON data), so
receivers never re-encode the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import encoding
from ..errors import EnvelopeError

VERSION = 1


@dataclass(frozen=True)
class Envelope:
    """One backplane message: who sent it (*origin*), what it is (*kind*), fields and a body."""

    origin: str
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)
    body: bytes = b""

    def encode(self) -> bytes:
        """Return the wire bytes."""
        header = {"v": VERSION, "o": self.origin, "k": self.kind, **self.fields}
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
        return cls(origin, kind, header, body)
