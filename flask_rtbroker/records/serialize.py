"""Turning an ORM row into a PocketBase-style record.

The default serializer takes every column attribute, keys in alphabetical order like PocketBase,
with ``id`` (the single primary key, as a string), ``collectionId`` and ``collectionName``. A
custom ``serialize(row) -> dict`` may return anything JSON-encodable with an ``id``;
``collectionId``/``collectionName`` are added when it leaves them out. Either way the result
goes through JSON once, so access rules, filters and every process see the same plain data
(datetimes as ISO 8601 strings, and so on).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from sqlalchemy import JSON, and_, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Mapper

from ..errors import WatchError
from ..protocol import encoding
from .collection import Collection, Record, RecordSchema

Serializer = Callable[[Any], Mapping[str, Any]]
"""``serialize(row) -> dict``: a row as a record; it should read the row's attributes by name."""


def column_serializer(model: type, collection: Collection) -> Serializer:
    """The default serializer of *model*: its columns, the primary key as ``id``, sorted keys."""
    mapper: Mapper[Any] = sa_inspect(model)
    if len(mapper.primary_key) != 1:
        raise WatchError(f"{model.__name__} has a composite primary key; pass serialize= to watch()")
    id_key = mapper.get_property_by_column(mapper.primary_key[0]).key
    keys = [attr.key for attr in mapper.column_attrs]
    fixed = {"collectionId": collection.id, "collectionName": collection.name}

    def serialize(row: Any) -> dict[str, Any]:
        data = {key: getattr(row, key) for key in keys}
        data.update(fixed, id=str(getattr(row, id_key)))
        return dict(sorted(data.items()))

    return serialize


def column_schema(model: type) -> RecordSchema:
    """The schema of the default serializer's records: ``id`` and the column attributes, JSON
    columns (SQLAlchemy's ``JSON`` type and its dialect variants) marked as such."""
    mapper: Mapper[Any] = sa_inspect(model)
    columns = {attr.key: attr.columns[0] for attr in mapper.column_attrs}
    json = frozenset(key for key, column in columns.items() if isinstance(column.type, JSON))
    return RecordSchema(frozenset(columns) | {"id"}, json)


def values_before_update(row: Any, connection: Any) -> dict[str, Any]:
    """The column values *row* had before its pending update (call it before the flush writes).

    They come from the attribute history; when a changed attribute was never loaded (e.g. set
    after a commit expired the row), they are read from the database through *connection*.
    """
    state = sa_inspect(row)
    old: dict[str, Any] = {}
    for attr in state.mapper.column_attrs:
        history = state.attrs[attr.key].history
        if history.deleted:
            old[attr.key] = history.deleted[0]
        elif history.added:
            return _select_row(state, connection)
    return old


def _select_row(state: Any, connection: Any) -> dict[str, Any]:
    mapper = state.mapper
    columns = {attr.key: attr.columns[0] for attr in mapper.column_attrs}
    where = and_(*(column == value for column, value in zip(mapper.primary_key, state.identity)))
    stored = connection.execute(select(*columns.values()).select_from(mapper.persist_selectable).where(where)).one()
    return dict(zip(columns, stored))


class _BeforeUpdate:
    """A stand-in for a row that reads its column attributes as they were before the update."""

    __slots__ = ("_row", "_old")

    def __init__(self, row: Any, old: dict[str, Any]) -> None:
        self._row = row
        self._old = old

    def __getattr__(self, name: str) -> Any:
        if name in self._old:
            return self._old[name]
        return getattr(self._row, name)


class RecordSerializer:
    """A collection's serializer: the user's (or the default) plus the PocketBase bookkeeping."""

    def __init__(self, model: type, collection: Collection, serialize: Serializer | None = None) -> None:
        self.model = model
        self.collection = collection
        self.serialize = serialize if serialize is not None else column_serializer(model, collection)

    def __call__(self, row: Any) -> Record:
        """The record of *row* as plain JSON data."""
        data = dict(self.serialize(row))
        data.setdefault("collectionId", self.collection.id)
        data.setdefault("collectionName", self.collection.name)
        if data.get("id") in (None, ""):
            raise WatchError(f"serialize() gave a {self.model.__name__} record without an id")
        return encoding.loads(encoding.dumps(data))

    def before_update(self, row: Any, connection: Any) -> Record:
        """The record of *row* as it was before its pending update (call it before the flush writes)."""
        return self(_BeforeUpdate(row, values_before_update(row, connection)))
