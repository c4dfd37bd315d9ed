"""ORM bulk statements on a watched model: one record event per affected row, or one ``gap``.

:func:`run_with_changes` runs the statement of a ``do_orm_execute`` event and reports what it
changed, row by row, in the statement's order:

- ``update(Model).where(...)`` and ``delete(Model).where(...)`` (and the by-primary-key forms,
  ``session.execute(update(Model), [{"id": ..., ...}, ...])``): the affected rows are selected
  first with the statement's own WHERE clause (``FOR UPDATE`` where the database has it, so no
  other transaction changes the set before the statement runs), serialised as they were, the
  statement runs, and the updated rows are selected again. A delete carries the row as it was;
  an update that changed nothing serialised is not an event.
- ``insert(Model)`` with a VALUES list or a list of parameter sets, and the dialects' upserts
  (``on_conflict_do_update``/``do_nothing``): the statement gets ``RETURNING`` of the primary
  key where the database supports it (PostgreSQL, SQLite 3.35+, MariaDB 10.5+), then the rows
  are selected by key. An upsert reports ``update`` for rows that existed: on PostgreSQL from
  the row's ``xmax``, elsewhere when the statement's values name the primary key of a row that
  was there before. Without ``RETURNING`` (MySQL), only inserts whose values carry the primary
  key are seen.

Statements of any size: rows are selected by key :data:`KEYS_PER_SELECT` keys at a time, and a
statement that affects more than :data:`MAX_ROW_EVENTS` rows is not followed row by row: it
runs as it is and is reported as one :data:`BULK` change, which becomes one ``gap`` event per
subscription of the collection ("refetch"). The app's statement itself runs whatever happens
to the reading: a read that fails is logged, rolled back to a savepoint on PostgreSQL (where a
failed statement would abort the transaction) and reported as :data:`BULK` too.

The rows are read by a session of its own on the statement's connection (same transaction), so
the caller's session, its identity map and its unflushed changes, is left as it was.

Cost: one extra SELECT for an insert or delete, two for an update, each of the affected rows
only (at most :data:`MAX_ROW_EVENTS` + 1, in chunks); nothing for statements on models nobody
watches.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Generic, Iterable, Iterator, NamedTuple, Sequence, TypeVar, Union

from sqlalchemy import literal_column, select, tuple_
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapper, ORMExecuteState, Session

from .event import CREATE, DELETE, UPDATE

log = logging.getLogger("flask_rtbroker.records")

T = TypeVar("T")
Capture = Callable[[Any], T]
"""Serialises one ORM row now (while it is as the event should show it)."""
R = TypeVar("R")

MAX_ROW_EVENTS = 10_000
"""Most rows a bulk statement is followed for, one event each; past it, one :data:`BULK` change."""
KEYS_PER_SELECT = 500
"""Primary keys bound in one SELECT (SQLite before 3.32 takes 999 parameters, PostgreSQL 65,535)."""


class _Bulk:
    """The statement's changes are not known row by row (too many, or reading them failed)."""

    def __repr__(self) -> str:
        return "BULK"


BULK = _Bulk()
"""What :func:`run_with_changes` reports for a statement whose rows are not followed."""


class Change(NamedTuple, Generic[T]):
    """One affected row: its action, the row captured after the change (before it, for a
    delete) and, for an update, the row captured before it."""

    action: str
    row: T
    previous: T | None


Changes = Union[list[Change[T]], _Bulk]
"""The rows a statement changed, or :data:`BULK`."""


class _ReadFailed(Exception):
    """Reading the affected rows failed (logged); the statement runs without them."""


def _chunks(keys: Sequence[tuple[Any, ...]]) -> Iterator[Sequence[tuple[Any, ...]]]:
    for start in range(0, len(keys), KEYS_PER_SELECT):
        yield keys[start : start + KEYS_PER_SELECT]


def _key_filter(mapper: Mapper[Any], keys: Sequence[tuple[Any, ...]]) -> Any:
    columns = mapper.primary_key
    if len(columns) == 1:
        return columns[0].in_([key[0] for key in keys])
    return tuple_(*columns).in_(keys)


def _query(mapper: Mapper[Any], where: Any, *, lock: bool = False, limit: int | None = None) -> Any:
    """SELECT the rows of *mapper* matching *where* (None: all), in primary key order."""
    query = select(mapper).order_by(*mapper.primary_key).execution_options(populate_existing=True)
    if where is not None:
        query = query.where(where)
    if limit is not None:
        query = query.limit(limit)
    return query.with_for_update() if lock else query


def _load(reader: Session, mapper: Mapper[Any], where: Any, *, lock: bool = False) -> list[Any] | None:
    """The rows matching *where*; None when there are more than :data:`MAX_ROW_EVENTS` (counted
    by their keys first, so a statement of millions of rows costs one SELECT of that many keys)."""
    probe = select(*mapper.primary_key).limit(MAX_ROW_EVENTS + 1)
    if len(reader.execute(probe if where is None else probe.where(where)).all()) > MAX_ROW_EVENTS:
        return None
    rows = list(reader.execute(_query(mapper, where, lock=lock, limit=MAX_ROW_EVENTS + 1)).scalars())
    return None if len(rows) > MAX_ROW_EVENTS else rows  # rows added since the probe


def _load_keys(reader: Session, mapper: Mapper[Any], keys: Sequence[tuple[Any, ...]], *, lock: bool = False) -> list[Any]:
    """The rows with primary keys *keys*, :data:`KEYS_PER_SELECT` keys per SELECT."""
    rows: list[Any] = []
    for chunk in _chunks(keys):
        rows += reader.execute(_query(mapper, _key_filter(mapper, chunk), lock=lock)).scalars()
    return rows


def _reading(connection: Connection, mapper: Mapper[Any], read: Callable[[], R]) -> R:
    """*read*'s rows; :class:`_ReadFailed` (logged) when it raises. On PostgreSQL the read runs
    in a savepoint, so its failure leaves the app's transaction usable."""
    savepoint = connection.begin_nested() if connection.dialect.name == "postgresql" else None
    try:
        rows = read()
    except Exception as exc:  # noqa: BLE001 - the app's statement runs whatever happens here
        if savepoint is not None:
            savepoint.rollback()
        log.exception("could not read the rows a bulk statement on %s changes: its subscribers get a gap event",
                      mapper.class_.__name__)
        raise _ReadFailed from exc
    if savepoint is not None:
        savepoint.commit()
    return rows


def _identity(mapper: Mapper[Any], row: Any) -> tuple[Any, ...]:
    return tuple(mapper.primary_key_from_instance(row))


def _keys_in_parameters(mapper: Mapper[Any], parameter_sets: Iterable[Any]) -> list[tuple[Any, ...]] | None:
    """The primary keys named by every parameter set, or None when one lacks them."""
    names = [mapper.get_property_by_column(column).key for column in mapper.primary_key]
    keys = []
    for parameters in parameter_sets:
        if not isinstance(parameters, dict) or not all(name in parameters for name in names):
            return None
        keys.append(tuple(parameters[name] for name in names))
    return keys


def _parameter_sets(state: ORMExecuteState) -> list[Any]:
    """The statement's rows of values: its executemany parameters or its VALUES list."""
    if isinstance(state.parameters, list) and state.parameters:
        return state.parameters
    multi = getattr(state.statement, "_multi_values", ())
    if multi:
        return [
            {getattr(column, "key", column): value for column, value in row.items()} if isinstance(row, dict) else row
            for row in multi[0]
        ]
    values = getattr(state.statement, "_values", None)
    if values:
        return [{getattr(column, "key", column): getattr(value, "value", value) for column, value in values.items()}]
    return [state.parameters] if isinstance(state.parameters, dict) and state.parameters else []


def _changed_by_where(
    state: ORMExecuteState, reader: Session, mapper: Mapper[Any], capture: Capture[T]
) -> tuple[Any, Changes[T]]:
    statement: Any = state.statement
    connection = reader.connection()
    given = None if statement.whereclause is not None else _keys_in_parameters(mapper, _parameter_sets(state))
    if given is not None and len(given) > MAX_ROW_EVENTS:
        return state.invoke_statement(), BULK
    try:
        if given is not None:
            by_key = given
            rows: list[Any] | None = _reading(connection, mapper, lambda: _load_keys(reader, mapper, by_key, lock=True))
        else:  # the statement's WHERE, or none: every row
            rows = _reading(connection, mapper, lambda: _load(reader, mapper, statement.whereclause, lock=True))
    except _ReadFailed:
        return state.invoke_statement(), BULK
    if rows is None:
        return state.invoke_statement(), BULK
    before = [capture(row) for row in rows]
    if state.is_delete:
        result = state.invoke_statement()
        return result, [Change(DELETE, old, None) for old in before]
    keys = [_identity(mapper, row) for row in rows]
    result = state.invoke_statement()
    try:
        after_rows = _reading(connection, mapper, lambda: _load_keys(reader, mapper, keys))
    except _ReadFailed:
        return result, BULK
    after = {_identity(mapper, row): row for row in after_rows}
    return result, [Change(UPDATE, capture(after[key]), old) for key, old in zip(keys, before) if key in after]


def _inserted(
    state: ORMExecuteState, reader: Session, mapper: Mapper[Any], capture: Capture[T]
) -> tuple[Any, Changes[T]]:
    statement: Any = state.statement
    connection = reader.connection()
    dialect = connection.dialect
    upsert = getattr(statement, "_post_values_clause", None) is not None
    parameter_sets = _parameter_sets(state)
    if len(parameter_sets) > MAX_ROW_EVENTS:
        return state.invoke_statement(), BULK
    given = _keys_in_parameters(mapper, parameter_sets)
    existed: set[tuple[Any, ...]] = set()
    if upsert and dialect.name != "postgresql" and given:
        try:
            existed = {_identity(mapper, row) for row in _reading(connection, mapper, lambda: _load_keys(reader, mapper, given))}
        except _ReadFailed:
            return state.invoke_statement(), BULK
    if dialect.insert_returning and not statement._returning:
        columns = list(mapper.primary_key)
        if upsert and dialect.name == "postgresql":
            columns.append(literal_column("(xmax = 0)"))
        many = isinstance(state.parameters, list) and len(state.parameters) > 1
        statement = statement.returning(*columns, sort_by_parameter_order=many)
        result = state.invoke_statement(statement=statement)
        returned = [tuple(row) for row in result]
        width = len(mapper.primary_key)
        keys = [row[:width] for row in returned]
        if upsert and dialect.name == "postgresql":
            existed = {row[:width] for row in returned if not row[width]}
    else:
        result = state.invoke_statement()
        if given is None:
            log.warning("a bulk INSERT into %s on %s gives no record events: the database has no RETURNING and the "
                        "values carry no primary key", mapper.class_.__name__, dialect.name)
        keys = given or []
    if len(keys) > MAX_ROW_EVENTS:  # an INSERT ... SELECT
        return result, BULK
    try:
        loaded = _reading(connection, mapper, lambda: _load_keys(reader, mapper, keys))
    except _ReadFailed:
        return result, BULK
    rows = {_identity(mapper, row): row for row in loaded}
    return result, [Change(UPDATE if key in existed else CREATE, capture(rows[key]), None) for key in keys if key in rows]


def run_with_changes(state: ORMExecuteState, capture: Capture[T]) -> tuple[Any, Changes[T]]:
    """Run *state*'s bulk INSERT/UPDATE/DELETE (``state.bind_mapper`` is its model) and return
    ``(its result, the rows it changed or BULK)``, each row passed through *capture* at the
    moment the event should show it."""
    mapper = state.bind_mapper
    assert mapper is not None and (state.is_insert or state.is_update or state.is_delete)
    # The rows are read by a session of our own on the statement's connection: same transaction,
    # but the caller's session (its identity map, its pending objects) is left alone.
    if state.session.autoflush:
        state.session.flush()  # as the statement itself would, before we read what it will change
    connection = state.session.connection(bind_arguments={"mapper": mapper})
    with Session(bind=connection, autoflush=False) as reader:
        if state.is_insert:
            return _inserted(state, reader, mapper, capture)
        return _changed_by_where(state, reader, mapper, capture)
