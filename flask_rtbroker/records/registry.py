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

from .. import signals
from ..backplane import Envelope
from ..errors import MessageTooLarge, WatchError
from .broadcast import broadcast
from .collection import Collection, Rule, collection_name
from .event import KIND_RECORD, RecordEvent, RecordWire
from .serialize import RecordSerializer, Serializer
from .validation import RecordOptionsCheck, keep_compiled_options
from .watcher import ModelWatch, add_watch, remove_watch

if TYPE_CHECKING:
    from ..state import BrokerState

log = logging.getLogger("flask_rtbroker.records")

EXTENSION_KEY = "rtbroker.records"


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
        state.cluster.add_handler(KIND_RECORD, _while_alive(self.receive))
        owns_topic = weakref.WeakMethod(self.owns_topic)  # the state must not keep us alive
        state.subscription_validators.append(RecordOptionsCheck(lambda topic: bool((owns_topic() or _no_topic)(topic))))
        signals.client_subscribed.connect(_keep_compiled_options, sender=app)

    @classmethod
    def of(cls, app: Flask, state: "BrokerState") -> "AppRecords":
        """The app's instance, created (and hooked into the app) on first use."""
        records = app.extensions.get(EXTENSION_KEY)
        if records is None:
            records = app.extensions[EXTENSION_KEY] = cls(app, state)
        return records

    def add(self, model: type, collection: Collection, serialize: Serializer | None) -> ModelWatch:
        """Watch *model* as *collection*."""
        if collection.name in self.collections:
            raise WatchError(f"collection {collection.name!r} is already watched on this app")
        serializer = RecordSerializer(model, collection, serialize)
        self.collections[collection.name] = collection
        watch = add_watch(ModelWatch(model, serializer, _while_alive(self.deliver), with_previous=collection.transitions))
        weakref.finalize(self, remove_watch, watch)  # the app is gone: stop watching for it
        return watch

    def _broadcast(self, events: list[RecordEvent]) -> None:
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

    def owns_topic(self, topic: str) -> bool:
        """True when *topic* is one of a watched collection's."""
        return any(collection.owns_topic(topic) for collection in self.collections.values())


def _no_topic(topic: str) -> bool:
    return False


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
) -> Collection:
    """Broadcast *model*'s committed creates, updates and deletes as record events of *collection*.

    - *collection*: the name in topics and records (default: the table name); *collection_id*
      another name it answers to, shown as ``collectionId`` (default: the name).
    - *list_rule* / *view_rule*: ``(record, auth, options) -> bool`` for ``<collection>/*`` and
      ``<collection>/<id>``; None is public (like an empty PocketBase rule).
    - *serialize*: ``row -> dict`` with an ``id``; default: the columns, see
      :mod:`flask_rtbroker.records.serialize`.
    - *transitions*: an update that makes a record visible to a subscription arrives as
      ``create``, one that hides it as ``delete`` (with the record as it was).

    Call it while setting the app up (it adds a subscription validator that rejects unusable
    ``filter``/``fields`` options with a 400).
    """
    name = collection_name(model, collection)
    watched = Collection(name, collection_id or name, list_rule, view_rule, transitions)
    AppRecords.of(app, state).add(model, watched, serialize)
    return watched
