"""Record events from a process without a broker (a worker, a script), through an Emitter::

    emitter = Emitter("redis://127.0.0.1:6379/0")          # the web app's RTBROKER_BACKPLANE
    emit_changes(emitter, Post, collection="posts")

Committed changes are published as row events; every web process on the backplane that watches
the same collection evaluates its rules for its own clients. Use the same ``serialize`` as the
web app. Update events carry the previous record, for web apps that use transitions.
"""

from __future__ import annotations

import logging

from ..emitter import Emitter
from .collection import Collection, collection_name
from ..errors import BackplaneUnavailable, MessageTooLarge
from .event import RecordEvent
from .serialize import RecordSerializer, Serializer
from .watcher import ModelWatch, add_watch

log = logging.getLogger("flask_rtbroker.records")


def emit_changes(
    emitter: Emitter,
    model: type,
    *,
    collection: str | None = None,
    collection_id: str | None = None,
    serialize: Serializer | None = None,
) -> ModelWatch:
    """Publish *model*'s committed changes through *emitter*; ``close()`` the result to stop."""
    name = collection_name(model, collection)
    serializer = RecordSerializer(model, Collection(name, collection_id or name), serialize)

    def sink(events: list[RecordEvent]) -> None:
        for event in events:
            try:
                emitter.publish(event.wire(emitter.max_message_size))
            except (MessageTooLarge, BackplaneUnavailable) as exc:
                log.warning("a %r record event is not published: %s", event.collection, exc)

    return add_watch(ModelWatch(model, serializer, sink, with_previous=True))
