"""Watching SQLAlchemy models: committed inserts, updates and deletes become RecordEvents.

Works with any ORM ``Session`` (plain SQLAlchemy, ``sessionmaker``, ``scoped_session``,
Flask-SQLAlchemy's ``db.session``):

- mapper events note each change while a flush runs, in the order the flush writes the rows;
  an update that changes no column is not an event;
- a delete is serialised in ``before_delete``, while the row is still there, so rules and
  filters see the record as it was; inserts and updates are serialised once their flush is
  done (generated ids and defaults are there);
- changes are kept per session with the transaction or savepoint they were flushed in: rolling
  back a savepoint drops its changes, rolling back the transaction drops them all;
- when the outermost transaction has committed, each watch's *sink* gets its events in commit
  order (after the transaction ended, so the sink may use the database again).

- ORM bulk statements on a watched model (``session.execute(update(Model).where(...))``,
  ``delete``, ``insert`` with many rows, upserts) are run through :mod:`.bulk`, which reports
  each affected row; their events join the same per-transaction log. A statement of more than
  :data:`~.bulk.MAX_ROW_EVENTS` rows is one ``gap`` event instead, and a commit with a ``gap``
  for a watch delivers only that one (the subscribers refetch).

Not seen (nothing is emitted for them): Core statements on tables (``update(table)``,
``connection.execute``), the legacy ``bulk_save_objects`` family, and changes made outside
SQLAlchemy (for those, PostgreSQL's database capture: :mod:`.capture`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from sqlalchemy import event
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, SessionTransaction, object_session

from .bulk import run_with_changes
from .collection import Record
from .event import CREATE, DELETE, GAP, UPDATE, RecordEvent, gap_event
from .serialize import RecordSerializer

log = logging.getLogger("flask_rtbroker.records")

Sink = Callable[[list[RecordEvent]], None]
"""Receives a commit's events, in commit order."""

_INFO_KEY = "flask_rtbroker.records"


class ModelWatch:
    """One registration: a model, how its rows become records, and where the events go.

    With *with_previous*, update events carry the record as it was before the update.
    """

    def __init__(self, model: type, serializer: RecordSerializer, sink: Sink, *, with_previous: bool = False) -> None:
        self.model = model
        self.serializer = serializer
        self.sink = sink
        self.with_previous = with_previous

    def close(self) -> None:
        """Stop watching."""
        remove_watch(self)


@dataclass
class _Change:
    """A change noted during a flush; create/update rows are serialised when the flush is done."""

    watch: ModelWatch
    action: str
    row: Any
    record: Optional[Record] = None
    previous: Optional[Record] = None


@dataclass
class _SessionLog:
    """What one session changed in its current transaction."""

    flushing: list[_Change] = field(default_factory=list)
    pending: list[tuple[SessionTransaction, ModelWatch, RecordEvent]] = field(default_factory=list)
    committed: bool = False


_watches: dict[type, list[ModelWatch]] = {}
_lock = threading.Lock()
_sessions_listened = False


def add_watch(watch: ModelWatch) -> ModelWatch:
    """Start delivering *watch.model*'s committed changes to *watch.sink*."""
    global _sessions_listened
    with _lock:
        if not _sessions_listened:
            _listen_sessions()
            _sessions_listened = True
        if watch.model not in _watches:
            _listen_model(watch.model)
        # copy on write: the event handlers read the list without the lock
        _watches[watch.model] = [*_watches.get(watch.model, ()), watch]
    return watch


def remove_watch(watch: ModelWatch) -> None:
    """Stop delivering to *watch*; unknown watches are ignored."""
    with _lock:
        _watches[watch.model] = [w for w in _watches.get(watch.model, ()) if w is not watch]


# -- mapper events: note changes during the flush -----------------------------------------------


def _log(session: Session) -> _SessionLog:
    session_log = session.info.get(_INFO_KEY)
    if session_log is None:
        session_log = session.info[_INFO_KEY] = _SessionLog()
    return session_log


def _note(model: type, row: Any, action: str, connection: Any) -> None:
    watches = _watches.get(model)
    session = object_session(row)
    if not watches or session is None:
        return
    if action == UPDATE and not session.is_modified(row, include_collections=False):
        return
    session_log = _log(session)
    for watch in watches:
        try:
            record = watch.serializer(row) if action == DELETE else None
            previous = watch.serializer.before_update(row, connection) if action == UPDATE and watch.with_previous else None
        except Exception:  # noqa: BLE001 - a broken serializer must not break the user's flush
            log.exception("could not serialise a %s %s for its record event", action, model.__name__)
            continue
        session_log.flushing.append(_Change(watch, action, row, record, previous))


def _listen_model(model: type) -> None:
    def after_insert(mapper: Any, connection: Any, row: Any) -> None:
        _note(model, row, CREATE, connection)

    def before_update(mapper: Any, connection: Any, row: Any) -> None:
        _note(model, row, UPDATE, connection)

    def before_delete(mapper: Any, connection: Any, row: Any) -> None:
        _note(model, row, DELETE, connection)

    event.listen(model, "after_insert", after_insert, propagate=True)
    event.listen(model, "before_update", before_update, propagate=True)
    event.listen(model, "before_delete", before_delete, propagate=True)


# -- session events: keep, drop or deliver -----------------------------------------------------


def _after_flush_postexec(session: Session, flush_context: Any) -> None:
    session_log = session.info.get(_INFO_KEY)
    if session_log is None or not session_log.flushing:
        return
    transaction = session.get_nested_transaction() or session.get_transaction()
    for change in session_log.flushing:
        try:
            record = change.record if change.record is not None else change.watch.serializer(change.row)
        except Exception:  # noqa: BLE001 - see _note
            log.exception("could not serialise a %s %s for its record event", change.action, change.watch.model.__name__)
            continue
        collection = change.watch.serializer.collection.name
        session_log.pending.append((transaction, change.watch, RecordEvent(collection, change.action, record, change.previous)))
    session_log.flushing.clear()


def _within(transaction: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False


def _after_soft_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    session_log = session.info.get(_INFO_KEY)
    if session_log is None:
        return
    session_log.flushing.clear()
    session_log.pending = [entry for entry in session_log.pending if not _within(entry[0], previous_transaction)]


def _after_commit(session: Session) -> None:
    session_log = session.info.get(_INFO_KEY)
    if session_log is not None and not session.in_nested_transaction():
        session_log.committed = True


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return
    session_log = session.info.pop(_INFO_KEY, None)
    if session_log is None or not session_log.committed or not session_log.pending:
        return
    by_watch: dict[ModelWatch, list[RecordEvent]] = {}
    for _, watch, record_event in session_log.pending:
        by_watch.setdefault(watch, []).append(record_event)
    for watch, events in by_watch.items():
        gaps = [record_event for record_event in events if record_event.action == GAP]
        if gaps:
            events = gaps[:1]  # the subscribers refetch: the rest would only repeat what they read
        try:
            watch.sink(events)
        except Exception:  # noqa: BLE001 - the commit already happened; never fail it
            log.exception("could not broadcast %d %s record event(s)", len(events), watch.model.__name__)


def _watches_of(mapper: Mapper[Any]) -> list[ModelWatch]:
    """The watches of *mapper*'s class and of the classes it inherits from."""
    return [watch for base in mapper.iterate_to_root() for watch in _watches.get(base.class_, ())]


def _do_orm_execute(state: ORMExecuteState) -> Any:
    """Run a bulk INSERT/UPDATE/DELETE on a watched model so that each row it changes becomes
    an event of the current transaction; other statements run as usual (None)."""
    mapper = state.bind_mapper
    if mapper is None or not (state.is_insert or state.is_update or state.is_delete):
        return None
    watches = _watches_of(mapper)
    if not watches:
        return None

    def capture(row: Any) -> list[Record | None]:
        records: list[Record | None] = []
        for watch in watches:
            try:
                records.append(watch.serializer(row))
            except Exception:  # noqa: BLE001 - see _note
                log.exception("could not serialise a %s row for its record event", mapper.class_.__name__)
                records.append(None)
        return records

    result, changes = run_with_changes(state, capture)
    session = state.session
    session_log = _log(session)
    transaction = session.get_nested_transaction() or session.get_transaction()
    assert transaction is not None  # the statement ran in it
    if not isinstance(changes, list):  # BULK: not followed row by row
        for watch in watches:
            session_log.pending.append((transaction, watch, gap_event(watch.serializer.collection)))
        return result
    for change in changes:
        for index, watch in enumerate(watches):
            record = change.row[index]
            previous = change.previous[index] if change.previous is not None else None
            if record is None or (change.action == UPDATE and record == previous):
                continue
            record_event = RecordEvent(
                watch.serializer.collection.name, change.action, record, previous if watch.with_previous else None
            )
            session_log.pending.append((transaction, watch, record_event))
    return result


def _listen_sessions() -> None:
    event.listen(Session, "do_orm_execute", _do_orm_execute)
    event.listen(Session, "after_flush_postexec", _after_flush_postexec)
    event.listen(Session, "after_soft_rollback", _after_soft_rollback)
    event.listen(Session, "after_commit", _after_commit)
    event.listen(Session, "after_transaction_end", _after_transaction_end)
