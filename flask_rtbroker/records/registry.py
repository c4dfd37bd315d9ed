"""The watched collections of one app, and how their events reach its clients and other processes.

After a commit, the events of a watched model are broadcast to this process's subscribers (in an
app context of their app, so rules may use Flask-SQLAlchemy's ``db.session``), then published
on the backplane as row events; every other process evaluates the rules for its own clients.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any, Callable

from flask import Flask
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from .. import signals
from ..backplane import Envelope
from ..errors import MessageTooLarge, WatchError
from .broadcast import broadcast
from .capture import CapturedTable, Change, remove_sql, trigger_sql, trigger_state
from .change_listener import ChangeListener, listener_for, wait_listening
from .collection import Collection, Rule, collection_name
from .delivery_queue import DeliveryQueue
from .event import CREATE, DELETE, GAP, KIND_RECORD, UPDATE, RecordEvent, RecordWire, collection_channel, gap_event
from .serialize import RecordSerializer, Serializer, column_schema
from .validation import RecordOptionsCheck, keep_compiled_options
from .watcher import ModelWatch, add_watch, remove_watch

if TYPE_CHECKING:
    from ..state import BrokerState

log = logging.getLogger("flask_rtbroker.records")

RECORDS_EXTENSION_KEY = "rtbroker.records"
"""Where an app's record watching (:class:`AppRecords`) is kept, beside ``state.EXTENSION_KEY``."""
CAPTURES = ("session", "database")
_ACTIONS = {"insert": CREATE, "update": UPDATE, "delete": DELETE}
LISTEN_WAIT = 5.0
"""Seconds ``watch(..., capture="database")`` waits for its LISTEN before it returns."""


def _while_alive(method: Callable[[Any], None]) -> Callable[[Any], None]:
    """Call the bound *method* while its object exists, without keeping the object alive."""
    weak = weakref.WeakMethod(method)

    def call(argument: Any) -> None:
        alive = weak()
        if alive is not None:
            alive(argument)

    return call


class AppRecords:
    """Record events of one app: its collections, broadcast and backplane link."""

    def __init__(self, app: Flask, state: "BrokerState") -> None:
        self._app_ref = weakref.ref(app)
        self.state = state
        self.collections: dict[str, Collection] = {}
        self.captured: dict[tuple[str, str], tuple[CapturedTable, Collection, RecordSerializer]] = {}
        """Collections captured from the database, by ``(schema, table)``."""
        self.listeners: list[ChangeListener] = []
        """The LISTEN connections of the captured collections (one per database)."""
        state.cluster.add_handler(KIND_RECORD, _while_alive(self.receive))
        channels = weakref.WeakMethod(self.channels_of)
        state.cluster.add_interest(lambda topic: (channels() or _no_channels)(topic))
        owns_topic = weakref.WeakMethod(self.owns_topic)  # the state must not keep us alive
        state.subscription_validators.append(RecordOptionsCheck(lambda topic: bool((owns_topic() or _no_topic)(topic))))
        signals.client_subscribed.connect(_keep_compiled_options, sender=app)
        self.delivery = DeliveryQueue(lambda: state.runtime, _while_alive(self._broadcast_now))
        """Where broadcasts go: inline when small, else on the process's queue, in order."""
        weakref.finalize(self, self.delivery.close)

    @classmethod
    def of(cls, app: Flask, state: "BrokerState") -> "AppRecords":
        """The app's instance, created (and hooked into the app) on first use."""
        records = app.extensions.get(RECORDS_EXTENSION_KEY)
        if records is None:
            records = app.extensions[RECORDS_EXTENSION_KEY] = cls(app, state)
        return records

    def add(self, model: type, collection: Collection, serialize: Serializer | None) -> ModelWatch:
        """Watch *model*'s session changes as *collection*."""
        serializer = self._serializer(model, collection, serialize)
        watch = add_watch(ModelWatch(model, serializer, _while_alive(self.deliver), with_previous=collection.transitions))
        weakref.finalize(self, remove_watch, watch)  # the app is gone: stop watching for it
        return watch

    def capture(self, model: type, collection: Collection, serialize: Serializer | None, engine: Engine) -> CapturedTable:
        """Capture *model*'s table from the database (PostgreSQL triggers) as *collection*."""
        captured = CapturedTable(model, engine)
        serializer = self._serializer(model, collection, serialize)
        self.captured[(captured.schema, captured.table)] = (captured, collection, serializer)
        state = trigger_state(captured)
        if state != "installed":
            log.warning("%s.%s has %s capture trigger: run `flask rtbroker install-triggers` (or apply "
                        "`flask rtbroker triggers-sql` in a migration)", captured.schema, captured.table,
                        "no" if state == "missing" else "an outdated")
        listener = listener_for(engine, self.state.runtime)
        listener.add(self, (captured.schema, captured.table), "receive_changes", "report_gap")
        if listener not in self.listeners:
            if not self.listeners:
                figures = weakref.WeakMethod(self.capture_stats)
                self.state.stats_sources.append(lambda: (figures() or _no_figures)())
            self.listeners.append(listener)
        listener.start()
        if not wait_listening(listener, LISTEN_WAIT):
            log.warning("database capture is not listening yet; it keeps trying")
        return captured

    def capture_stats(self) -> dict[str, int]:
        """The counters of the capture listeners, for ``stats()``."""
        return {f"capture_{name}_total": sum(getattr(listener, name) for listener in self.listeners)
                for name in ("forged", "replayed", "skipped", "gaps")}

    def _serializer(self, model: type, collection: Collection, serialize: Serializer | None) -> RecordSerializer:
        if collection.name in self.collections:
            raise WatchError(f"collection {collection.name!r} is already watched on this app")
        self.collections[collection.name] = collection
        return RecordSerializer(model, collection, serialize)

    def _broadcast(self, events: list[RecordEvent]) -> None:
        subscribers = 0
        for event in events:
            collection = self.collections.get(event.collection)
            if collection is not None:
                subscribers += self._reach(collection, event)
        self.delivery.deliver(events, subscribers)

    def _reach(self, collection: Collection, event: RecordEvent) -> int:
        """The local subscriptions *event* goes to: a gap's are every one of the collection."""
        broker = self.state.broker
        if event.action == GAP:
            topics = [topic for topic in broker.topics() if "?" not in topic and collection.owns_topic(topic)]
        else:
            topics = [topic for topic, _ in collection.topics(event.record_id)]
        return sum(broker.count_subscribers(topic) for topic in topics)

    def _broadcast_now(self, events: list[RecordEvent]) -> None:
        app = self._app_ref()
        if app is None:
            return
        with app.app_context():
            for event in events:
                collection = self.collections.get(event.collection)
                if collection is not None:
                    broadcast(self.state, collection, event)

    def deliver(self, events: list[RecordEvent]) -> None:
        """Publish committed *events* to the other processes, then broadcast them here.

        Publishing first means other processes deliver while this one does, and get the event
        whatever happens to the local broadcast. An event too large for the backplane is logged.
        """
        limit = self.state.settings.max_message_size
        for event in events:
            try:
                self.state.cluster.publish(event.wire(limit))
            except MessageTooLarge as exc:
                log.warning("a record event is not published: %s", exc)
        self._broadcast(events)

    def receive(self, envelope: Envelope) -> None:
        """Broadcast a row event published by another process."""
        try:
            event = RecordWire.parse(envelope)
        except ValueError:
            log.warning("dropping a malformed record event from %r", envelope.origin)
            return
        self._broadcast([event])

    def receive_changes(self, changes: list[Change]) -> None:
        """Broadcast, in order, committed changes that capture triggers reported (every process
        gets them from PostgreSQL, so nothing is published); each table's rows are decoded
        together (:meth:`CapturedTable.serialize_rows`)."""
        app = self._app_ref()
        if app is None:
            return
        records: list[Any] = [None] * len(changes)
        previous: list[Any] = [None] * len(changes)
        by_table: dict[tuple[str, str], list[int]] = {}
        for index, change in enumerate(changes):
            by_table.setdefault((change.schema, change.table), []).append(index)
        with app.app_context():
            for key, indexes in by_table.items():
                entry = self.captured.get(key)
                if entry is None:
                    continue
                captured, collection, serializer = entry
                with Session(captured.engine) as session:
                    for index, record in zip(indexes, captured.serialize_rows(session, [changes[i].row for i in indexes], serializer)):
                        records[index] = record
                    if collection.transitions:
                        updated = [i for i in indexes if changes[i].old is not None]
                        olds = captured.serialize_rows(session, [changes[i].old or {} for i in updated], serializer)
                        for index, record in zip(updated, olds):
                            previous[index] = record
        self._broadcast([RecordEvent(self.captured[(change.schema, change.table)][1].name, _ACTIONS[change.action],
                                     record, old)
                         for change, record, old in zip(changes, records, previous) if record is not None])

    def report_gap(self) -> None:
        """Tell every local subscriber of a captured collection that changes may have been
        missed: one ``gap`` message per subscription, as a bulk statement's (see :func:`broadcast`)."""
        app = self._app_ref()
        if app is None:
            return
        with app.app_context():
            for _, collection, _ in self.captured.values():
                broadcast(self.state, collection, gap_event(collection))

    def trigger_sql(self, *, remove: bool = False) -> list[tuple[Engine, str]]:
        """For each database with captured tables: the SQL installing (or removing) their triggers."""
        by_engine: dict[Engine, list[CapturedTable]] = {}
        for captured, _, _ in self.captured.values():
            by_engine.setdefault(captured.engine, []).append(captured)
        return [(engine, (remove_sql if remove else trigger_sql)(tables)) for engine, tables in by_engine.items()]

    def channels_of(self, topic: str) -> list[str]:
        """The backplane channels a subscriber of *topic* needs: its collection's, if watched
        from the session (captured collections come from PostgreSQL, not the backplane)."""
        captured = {collection.name for _, collection, _ in self.captured.values()}
        return [collection_channel(c.name) for c in self.collections.values()
                if c.name not in captured and c.owns_topic(topic)]

    def owns_topic(self, topic: str) -> bool:
        """True when *topic* is one of a watched collection's."""
        return any(collection.owns_topic(topic) for collection in self.collections.values())


def _no_topic(topic: str) -> bool:
    return False


def _no_channels(topic: str) -> list[str]:
    return []


def _no_figures() -> dict[str, int]:
    return {}


def _keep_compiled_options(app: Flask, client: Any, subscriptions: list[str]) -> None:
    keep_compiled_options(client)


def watch(
    app: Flask,
    state: "BrokerState",
    model: type,
    *,
    collection: str | None = None,
    collection_id: str | None = None,
    list_rule: Rule | None = None,
    view_rule: Rule | None = None,
    serialize: Serializer | None = None,
    transitions: bool = False,
    capture: str = "session",
    engine: Engine | None = None,
) -> Collection:
    """What :meth:`RealtimeBroker.watch() <flask_rtbroker.RealtimeBroker.watch>` does for *app*
    (its options are described there): register *model* as *collection*; return the collection."""
    if capture not in CAPTURES:
        raise WatchError(f"capture must be one of {', '.join(CAPTURES)}, not {capture!r}")
    name = collection_name(model, collection)
    schema = column_schema(model) if serialize is None else None
    watched = Collection(name, collection_id or name, list_rule, view_rule, transitions, schema)
    records = AppRecords.of(app, state)
    if capture == "database":
        records.capture(model, watched, serialize, engine or _flask_sqlalchemy_engine(app, model))
    else:
        records.add(model, watched, serialize)
    return watched


def _flask_sqlalchemy_engine(app: Flask, model: type) -> Engine:
    """The engine Flask-SQLAlchemy gives *model*'s bind; WatchError without Flask-SQLAlchemy."""
    extension = app.extensions.get("sqlalchemy")
    if extension is None:
        raise WatchError(f"watch({model.__name__}, capture='database') needs engine= (or Flask-SQLAlchemy)")
    bind_key = getattr(model, "metadata").info.get("bind_key")
    with app.app_context():
        return extension.engines[bind_key]  # type: ignore[no-any-return]
