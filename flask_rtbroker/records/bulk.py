"""ORM bulk statements on a watched model: one record event per affected row.

:func:`run_with_events` runs the statement of a ``do_orm_execute`` event and reports what it
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

The rows are read by a session of its own on the statement's connection (same transaction), so
the caller's session, its identity map and its unflushed changes, is left as it was.

Cost: one extra SELECT for an insert or delete, two for an update, each of the affected rows
only; nothing for statements on models nobody watches.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Generic, Iterable, NamedTuple, Sequence, TypeVar

from sqlalchemy import literal_column, select, tuple_
from sqlalchemy.orm import Mapper, ORMExecuteState, Session

from .event import CREATE, DELETE, UPDATE

log = logging.getLogger("flask_rtbroker.records")

T = TypeVar("T")
Capture = Callable[[Any], T]
"""Serialises one ORM row now (while it is as the event should show it)."""


class Change(NamedTuple, Generic[T]):
    """One affected row: its action, the row captured after the change (before it, for a
    delete) and, for an update, the row captured before it."""

    action: str
    row: T
    previous: T | None


def _key_filter(mapper: Mapper[Any], keys: Sequence[tuple[Any, ...]]) -> Any:
    columns = mapper.primary_key
    if len(columns) == 1:
        return columns[0].in_([key[0] for key in keys])
    return tuple_(*columns).in_(keys)


def _load(reader: Session, mapper: Mapper[Any], where: Any, *, lock: bool = False) -> list[Any]:
    """The rows of *mapper* matching *where* (None: all), as *reader* (on the statement's own
    connection and transaction) sees them, in primary key order."""
    query = select(mapper).order_by(*mapper.primary_key).execution_options(populate_existing=True)
    if where is not None:
        query = query.where(where)
    if lock:
        query = query.with_for_update()
    return list(reader.execute(query).scalars())


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
) -> tuple[Any, list[Change[T]]]:
    statement: Any = state.statement
    keys = None if statement.whereclause is not None else _keys_in_parameters(mapper, _parameter_sets(state))
    if statement.whereclause is None and keys is None:
        rows = _load(reader, mapper, None, lock=True)  # no WHERE: every row
    elif keys is not None:
        rows = _load(reader, mapper, _key_filter(mapper, keys), lock=True) if keys else []
    else:
        rows = _load(reader, mapper, statement.whereclause, lock=True)
    before = [capture(row) for row in rows]
    if state.is_delete:
        result = state.invoke_statement()
        return result, [Change(DELETE, old, None) for old in before]
    keys = [_identity(mapper, row) for row in rows]
    result = state.invoke_statement()
    after = {_identity(mapper, row): row for row in _load(reader, mapper, _key_filter(mapper, keys))} if keys else {}
    return result, [Change(UPDATE, capture(after[key]), old) for key, old in zip(keys, before) if key in after]


def _inserted(
    state: ORMExecuteState, reader: Session, mapper: Mapper[Any], capture: Capture[T]
) -> tuple[Any, list[Change[T]]]:
    statement: Any = state.statement
    dialect = state.session.get_bind(mapper=mapper).dialect
    upsert = getattr(statement, "_post_values_clause", None) is not None
    given = _keys_in_parameters(mapper, _parameter_sets(state))
    existed: set[tuple[Any, ...]] = set()
    if upsert and dialect.name != "postgresql" and given:
        existed = {_identity(mapper, row) for row in _load(reader, mapper, _key_filter(mapper, given))}
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
    rows = {_identity(mapper, row): row for row in _load(reader, mapper, _key_filter(mapper, keys))} if keys else {}
    return result, [Change(UPDATE if key in existed else CREATE, capture(rows[key]), None) for key in keys if key in rows]


def run_with_changes(state: ORMExecuteState, capture: Capture[T]) -> tuple[Any, list[Change[T]]]:
    """Run *state*'s bulk INSERT/UPDATE/DELETE (``state.bind_mapper`` is its model) and return
    ``(its result, the rows it changed)``, each row passed through *capture* at the moment the
    event should show it."""
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
