"""RecordEvent: one committed row change, as it travels to the broadcaster and the backplane.

Processes publish row events, not per-client messages: each process evaluates the access rules
and options for its own clients. On the backplane an event is an envelope of kind
:data:`KIND_RECORD` with the collection name in its header and ``{"action", "record",
"previous"}`` as its JSON body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .. import encoding

KIND_RECORD = "record"
CREATE = "create"
UPDATE = "update"
DELETE = "delete"
ACTIONS = (CREATE, UPDATE, DELETE)


@dataclass(frozen=True)
class RecordEvent:
    """*action* on a record of *collection*.

    *record* is the serialised row (before the deletion for a delete); *previous* is the row as
    it was before an update, when the watcher was asked to keep it (for transitions).
    """

    collection: str
    action: str
    record: Mapping[str, Any]
    previous: Mapping[str, Any] | None = None

    @property
    def record_id(self) -> str:
        """The record's id as a topic spells it."""
        return str(self.record["id"])

    def envelope_parts(self) -> tuple[dict[str, Any], bytes]:
        """The backplane header fields and body."""
        body = {"action": self.action, "record": self.record, "previous": self.previous}
        return {"c": self.collection}, encoding.dumps(body)

    @classmethod
    def from_envelope(cls, fields: Mapping[str, Any], body: bytes) -> "RecordEvent":
        """Rebuild an event from :meth:`envelope_parts`; raise ValueError when malformed."""
        data = encoding.loads(body)
        collection = fields.get("c")
        if (
            not isinstance(collection, str)
            or not isinstance(data, dict)
            or data.get("action") not in ACTIONS
            or not isinstance(data.get("record"), dict)
            or "id" not in data["record"]
            or not isinstance(data.get("previous"), (dict, type(None)))
        ):
            raise ValueError("not a record event")
        return cls(collection, data["action"], data["record"], data["previous"])
