"""Collection: a watched model's name, id, access rules and event options.

Like PocketBase, a record event of collection ``posts`` is sent to subscriptions of
``posts/<id>`` (checked with the *view rule*), ``posts/*`` and the deprecated bare ``posts``
(checked with the *list rule*), and to the same topics spelled with the collection id when it
differs from the name. A :class:`RecordSchema` tells filters which fields exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from ..errors import WatchError
from ..protocol.options import SubscriptionOptions

Record = Mapping[str, Any]
"""A serialised record, as JSON-decoded data."""
Rule = Callable[[Record, Any, SubscriptionOptions], bool]
"""An access rule ``(record, auth, options) -> bool``; None means public."""

LIST = "list"
VIEW = "view"
BOOKKEEPING_KEYS = frozenset({"collectionId", "collectionName", "expand"})
"""Keys of a record that are not fields: a filter naming them never matches, as in PocketBase."""


@dataclass(frozen=True)
class RecordSchema:
    """The fields of a collection's records a filter may name: *columns*, and the *json* ones
    among them (only those have sub-paths, read like ``JSON_EXTRACT``)."""

    columns: frozenset[str]
    json: frozenset[str] = frozenset()

    @classmethod
    def of_record(cls, record: Record) -> "RecordSchema":
        """The schema read off one record (for a custom serializer): its keys but
        :data:`BOOKKEEPING_KEYS`, those holding an object or a list being JSON."""
        columns = frozenset(key for key in record if key not in BOOKKEEPING_KEYS)
        return cls(columns, frozenset(key for key in columns if isinstance(record[key], (dict, list))))

    def has(self, path: tuple[str, ...]) -> bool:
        """Whether the field path exists: a column, or a path inside a JSON column."""
        return path[0] in self.columns and (len(path) == 1 or path[0] in self.json)


@dataclass(frozen=True)
class Collection:
    """The realtime side of one watched model.

    *list_rule* guards ``<collection>/*`` (and the bare ``<collection>``), *view_rule*
    ``<collection>/<id>``; both get the serialised record, the subscriber's auth (None for a
    guest) and the subscription's options. With *transitions*, an update that makes a record
    visible to a subscription is sent to it as ``create``, and one that hides it as ``delete``.
    *schema* names the fields filters may use; None reads it off each record
    (:meth:`RecordSchema.of_record`).
    """

    name: str
    id: str
    list_rule: Optional[Rule] = None
    view_rule: Optional[Rule] = None
    transitions: bool = False
    schema: Optional[RecordSchema] = None

    def __post_init__(self) -> None:
        for label, value in (("name", self.name), ("id", self.id)):
            if not value or any(char in value for char in "/?\r\n"):
                raise WatchError(f"a collection {label} must be non-empty, without '/', '?' or line breaks: {value!r}")

    @property
    def names(self) -> tuple[str, ...]:
        """The name, and the id when it differs."""
        return (self.name,) if self.id == self.name else (self.name, self.id)

    def rule(self, kind: str) -> Optional[Rule]:
        """The rule of *kind* (:data:`LIST` or :data:`VIEW`)."""
        return self.list_rule if kind == LIST else self.view_rule

    def topics(self, record_id: str) -> list[tuple[str, str]]:
        """Every ``(topic, rule kind)`` an event of the record *record_id* is sent to."""
        topics = []
        for name in self.names:
            topics += [(f"{name}/{record_id}", VIEW), (f"{name}/*", LIST), (name, LIST)]
        return topics

    def owns_topic(self, topic: str) -> bool:
        """True when *topic* (a key without its ``?`` part) is one of this collection's."""
        return any(topic == name or topic.startswith(name + "/") for name in self.names)


def collection_name(model: type, name: str | None) -> str:
    """*name*, or by default the model's table name."""
    if name:
        return name
    table = getattr(model, "__tablename__", None)
    if not isinstance(table, str):
        raise WatchError(f"{model.__name__} has no __tablename__; pass collection=")
    return table
