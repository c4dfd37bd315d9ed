"""RecordEvent: one committed row change, as it travels to the broadcaster and the backplane.

Processes publish row events, not per-client messages: each process evaluates the access rules
and options for its own clients. On the backplane an event is a :class:`RecordWire`: an envelope of kind
:data:`KIND_RECORD` with the collection name in its header and ``{"action", "record",
"previous"}`` as its JSON body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from ..protocol import encoding
from ..backplane import Envelope
from ..errors import EnvelopeError
from ..protocol.message import check_size
from .collection import Collection

KIND_RECORD = "record"
CREATE = "create"
UPDATE = "update"
DELETE = "delete"
ACTIONS = (CREATE, UPDATE, DELETE)
GAP = "gap"
"""Not a row change: changes were made that are not sent one by one (refetch). Its record is
``{"collectionId", "collectionName"}``, and it goes to every subscription of the collection."""


def collection_channel(collection: str) -> str:
    """The backplane channel of *collection*'s record events."""
    return "c:" + collection


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

    def wire(self, max_message_size: int) -> "RecordWire":
        """This event as a backplane item; :class:`MessageTooLarge` when its body (record and
        previous record) is over twice *max_message_size*."""
        body = encoding.dumps({"action": self.action, "record": self.record, "previous": self.previous})
        check_size(f"{self.collection} record event", body, 2 * max_message_size)
        return RecordWire(self.collection, body)


def gap_event(collection: Collection) -> RecordEvent:
    """The :data:`GAP` event of *collection*."""
    return RecordEvent(collection.name, GAP, {"collectionId": collection.id, "collectionName": collection.name})


@dataclass(frozen=True)
class RecordWire:
    """A :class:`RecordEvent` on the backplane (a :class:`~flask_rtbroker.wire.WireItem` of kind
    :data:`KIND_RECORD`): the collection in the header, the event's JSON as the body."""

    KIND: ClassVar[str] = KIND_RECORD
    collection: str
    body: bytes

    @property
    def channel(self) -> str:
        """The collection's channel: its listeners are the processes with a subscriber of it."""
        return collection_channel(self.collection)

    def fields(self) -> dict[str, Any]:
        return {"c": self.collection}

    @staticmethod
    def parse(envelope: Envelope) -> RecordEvent:
        """The event in *envelope*; raise :class:`EnvelopeError` when it is malformed."""
        data = encoding.loads(envelope.body)
        collection = envelope.fields.get("c")
        if (
            not isinstance(collection, str)
            or not isinstance(data, dict)
            or data.get("action") not in (*ACTIONS, GAP)
            or not isinstance(data.get("record"), dict)
            or ("id" not in data["record"] and data["action"] != GAP)
            or not isinstance(data.get("previous"), (dict, type(None)))
        ):
            raise EnvelopeError("not a record event")
        return RecordEvent(collection, data["action"], data["record"], data["previous"])
