"""The presence of one app: which members each connection makes, their joins, leaves and syncs.

A client is a member of a presence topic when one of its keys is the topic (``room/1``, or
``room/1?options=...``) and a :meth:`Presence.enable` pattern covers it. What it contributes is
kept per connection (here, not in the client's store, which a resumed session may inherit), so
each connection counts once and is taken back when it ends or its keys or auth change.

A member joins when its first connection is counted anywhere; it leaves once no process has
counted a connection of it for the grace period (``RTBROKER_PRESENCE_GRACE``): a reconnect, a
lifetime rotation or a reload within it shows nothing. The events go to the key
``@presence/<topic>`` through the ordinary notify path (the backplane, then the topic rules of
*topic*), exactly once per join or leave in the whole cluster, and as the ``presence_joined``
and ``presence_left`` signals in the process that saw it. A POST that adds such a key gets a
``sync`` first: at most ``RTBROKER_PRESENCE_SYNC_LIMIT`` members, with ``count``.

One keeper per process (a greenlet or thread, until the app is closed or gone) runs the grace
periods due (every 0.25 s at most) and, on a shared store, renews the process's liveness every third of
``RTBROKER_PRESENCE_TTL``, emitting the leaves of processes whose liveness lapsed.
"""

from __future__ import annotations

import heapq
import logging
import os
import secrets
import threading
import time
import weakref
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .. import signals

from ..protocol import encoding
from ..client import DefaultClient
from ..errors import InvalidArgument
from ..protocol.message import Message
from ..protocol.options import base_topic
from ..topic_rules import PRESENCE_PREFIX
from .member import InfoFunction, default_info, member_document, member_identity
from .store import PresenceStore

if TYPE_CHECKING:
    from flask import Flask

    from ..state import BrokerState

log = logging.getLogger("flask_rtbroker.presence")

Membership = tuple[str, tuple[str, ...]]
"""What one connection counts as: ``(member, topics)``."""

CLIENT_LOCKS = 64
"""Lock stripes serializing each connection's presence changes."""
STORE_ERROR_LOG_EVERY = 30.0
"""Seconds between two logged store failures (an outage is logged, not every call it fails)."""
KEEPER_TICK = 0.25
"""Longest wait of the keeper between two looks at the grace periods due."""


@dataclass(frozen=True)
class PresenceRule:
    """Presence for the topics *pattern* covers (a topic, or a prefix ending in ``*``)."""

    pattern: str
    info: InfoFunction

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str) or not self.pattern or "*" in self.pattern[:-1]:
            raise InvalidArgument(f"presence pattern {self.pattern!r}: a topic, or a prefix ending in '*'")
        if self.pattern.startswith(PRESENCE_PREFIX):
            raise InvalidArgument(f"presence pattern {self.pattern[:80]!r}: {PRESENCE_PREFIX} keys carry presence events")
        if not callable(self.info):
            raise InvalidArgument("a presence info function must be callable (client, auth) -> dict")

    def covers(self, topic: str) -> bool:
        """True when *topic* has presence by this rule."""
        pattern = self.pattern
        return topic.startswith(pattern[:-1]) if pattern[-1] == "*" else topic == pattern


def _pairs(membership: Membership | None) -> set[tuple[str, str]]:
    """``{(topic, member)}`` of *membership*."""
    if membership is None:
        return set()
    member, topics = membership
    return {(topic, member) for topic in topics}


def key_topic(key: str) -> str:
    """The topic a subscription key is about: the key without the SDK's options."""
    return base_topic(key) or key


class Presence:
    """One app's presence: rules, this process's contributions, the keeper, events and reads."""

    def __init__(self, app: "Flask", state: "BrokerState", store_factory: Callable[[str], PresenceStore]) -> None:
        self._app_ref = weakref.ref(app)
        self._state = state
        self._store_factory = store_factory
        self.rules: list[PresenceRule] = []
        self._secret = str(app.config.get("SECRET_KEY") or "flask_rtbroker presence").encode()
        self._held: dict[DefaultClient, Membership] = {}
        """Per connection: the member it counts as, and where (a tuple pair: ~150 bytes)."""
        self._due: list[tuple[float, str, str]] = []
        """Grace periods running here: (monotonic deadline, topic, member), a heap."""
        self._make_locks()
        self._store: PresenceStore | None = None
        self._pid: int | None = None
        self._error_logged_at = -STORE_ERROR_LOG_EVERY
        self._unsaved: dict[DefaultClient, set[tuple[str, str]]] = {}
        """Per connection, the (topic, member) counts the store failed to take: written when it
        answers again, never taken back before."""
        self._unremoved: list[tuple[str, str]] = []
        """(topic, member) connections the store failed to uncount: uncounted when it answers again."""

    # -- rules ---------------------------------------------------------------------------------

    def enable(self, pattern: str, info: InfoFunction | None) -> None:
        """Track presence on the topics *pattern* covers; members show ``info(client, auth)``."""
        self.rules.append(PresenceRule(pattern, info or default_info))

    def rule_for(self, topic: str) -> PresenceRule | None:
        """The first rule covering *topic*, or None (no presence there)."""
        for rule in self.rules:
            if rule.covers(topic):
                return rule
        return None

    # -- the process's store and keeper --------------------------------------------------------

    def _make_locks(self) -> None:
        """Make this process's locks: at construction, and again first thing in a process forked
        after it (gunicorn's workers with ``--preload``), whose inherited ones would be OS locks
        made before gevent patched ``threading`` and would not keep greenlets apart."""
        self._lock = threading.RLock()
        self._client_locks = [threading.RLock() for _ in range(CLIENT_LOCKS)]
        self._locks_pid = os.getpid()

    @property
    def store(self) -> PresenceStore:
        """This process's store (made after a fork, with the keeper that runs its timers)."""
        if self._locks_pid != os.getpid():
            self._make_locks()
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._store = self._store_factory(secrets.token_hex(8))
                    if self._pid is not None:  # forked: the parent's connections are not ours
                        self._held.clear()
                        self._due.clear()
                    self._pid = os.getpid()
                    self._state.runtime.spawn(self._keep)
        assert self._store is not None
        return self._store

    def _keep(self) -> None:
        pid, beat_every = os.getpid(), self._state.settings.presence_ttl / 3
        next_beat = time.monotonic() + beat_every
        while not self._state.closed and os.getpid() == pid and self._app_ref() is not None:
            self._state.runtime.sleep(min(KEEPER_TICK, beat_every))
            try:
                self._expire_due()
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + beat_every
                    self._beat()
                    self._retry()
            except Exception:  # noqa: BLE001 - the keeper must outlive a store outage
                self._store_failed("the keeper's store call (grace periods, liveness)")

    def _store_failed(self, what: str) -> None:
        """Log a store failure (with its traceback) at most every :data:`STORE_ERROR_LOG_EVERY` seconds."""
        now = time.monotonic()
        if now - self._error_logged_at >= STORE_ERROR_LOG_EVERY:
            self._error_logged_at = now
            log.exception("presence: %s failed (further failures within %.0f s are not logged)", what,
                          STORE_ERROR_LOG_EVERY)

    def _expire_due(self) -> None:
        now = time.monotonic()
        while self._due and self._due[0][0] <= now:
            with self._lock:
                if not self._due or self._due[0][0] > now:
                    break
                _, topic, member = heapq.heappop(self._due)
            try:
                document = self.store.expire(topic, member)
            except Exception:
                with self._lock:  # tried again a second later
                    heapq.heappush(self._due, (now + 1.0, topic, member))
                raise
            if document is not None:
                self._emit(topic, "leave", document)

    def _beat(self) -> None:
        lapsed, leaves = self.store.beat()
        for topic, document in leaves:
            self._emit(topic, "leave", document)
        if lapsed:  # another process took this one for dead: count our connections again
            log.warning("presence: this process's liveness lapsed; counting its connections again")
            with self._lock:
                held = list(self._held.items())
                self._unsaved.clear()  # all of it is counted again now
                self._unremoved.clear()  # reaped with the rest
            for client, (member, topics) in held:
                for topic in topics:
                    joined = self._add(client, topic, member)
                    if joined is not None:
                        self._emit(topic, "join", joined)

    def _retry(self) -> None:
        """Write what the store failed to take (it answered the beat just now)."""
        with self._lock:
            unremoved, self._unremoved = self._unremoved, []
            unsaved, self._unsaved = self._unsaved, {}
        for topic, member in unremoved:
            self._remove(topic, member)
        for client, pairs in unsaved.items():
            events = []
            with self._client_lock(client):
                for topic, member in sorted(pairs & _pairs(self._held.get(client))):  # what it still holds
                    joined = self._add(client, topic, member)
                    if joined is not None:
                        events.append((topic, "join", joined))
            for event in events:
                self._emit(*event)

    # -- membership ----------------------------------------------------------------------------

    def wanted(self, client: DefaultClient) -> Membership | None:
        """The member *client*'s auth makes it and the topics its keys make it one of, or None."""
        topics = {key_topic(key) for key in client.subscriptions() if not key.startswith(PRESENCE_PREFIX)}
        covered = tuple(sorted(topic for topic in topics if self.rule_for(topic) is not None))
        return (member_identity(client), covered) if covered else None

    def _client_lock(self, client: DefaultClient) -> "threading.RLock":
        """The lock serializing *client*'s presence changes (a stripe of :data:`CLIENT_LOCKS`):
        a POST and the end of its stream never interleave their store writes."""
        if self._locks_pid != os.getpid():
            self._make_locks()
        return self._client_locks[hash(client) % CLIENT_LOCKS]

    def subscriptions_changed(self, client: DefaultClient, added: list[str]) -> None:
        """After a POST (or an auth change): count *client* where its keys now make it a member,
        stop where they no longer do, and sync the presence keys it *added*."""
        if not self.rules:
            return
        events: list[tuple[str, str, bytes]] = []
        with self._client_lock(client):
            if client.is_discarded:  # its stream ended: disconnected() took back (or takes) what it held
                return
            wanted = self.wanted(client)
            with self._lock:
                held = self._held.get(client)
                if wanted is not None:
                    self._held[client] = wanted
                elif held is not None:
                    del self._held[client]
            was, now = _pairs(held), _pairs(wanted)
            for topic, member in was - now:
                self._remove_counted(client, topic, member)
            for topic, member in sorted(now - was):
                document = self._add(client, topic, member)
                if document is not None:
                    events.append((topic, "join", document))
        if not self._state.settings.presence_grace:
            self._expire_due()
        for event in events:
            self._emit(*event)
        for key in added:
            if key.startswith(PRESENCE_PREFIX):
                self._sync(client, key)

    def disconnected(self, client: DefaultClient) -> None:
        """*client*'s stream ended: take back what it counted (its members leave after the grace)."""
        with self._client_lock(client):
            with self._lock:
                held = self._held.pop(client, None)
            for topic, member in _pairs(held):
                self._remove_counted(client, topic, member)
            with self._lock:
                self._unsaved.pop(client, None)
        if self._state.settings.presence_grace == 0:
            self._expire_due()

    def _add(self, client: DefaultClient, topic: str, member: str) -> bytes | None:
        """Count *client* as *member* in *topic*; the member's document when that made it join."""
        rule = self.rule_for(topic)
        if rule is None:
            return None
        document = member_document(client, member, rule.info, self._secret)
        try:
            joined = self.store.add(topic, member, document)
        except Exception:  # noqa: BLE001 - presence is best effort; subscriptions go on
            self._store_failed("counting a connection")
            with self._lock:
                self._unsaved.setdefault(client, set()).add((topic, member))
            return None
        return document if joined else None

    def _remove_counted(self, client: DefaultClient, topic: str, member: str) -> None:
        """Uncount *client* as *member* in *topic*, unless the store never took that count."""
        with self._lock:
            unsaved = self._unsaved.get(client)
            if unsaved is not None and (topic, member) in unsaved:
                unsaved.discard((topic, member))
                return
        self._remove(topic, member)

    def _remove(self, topic: str, member: str) -> None:
        """Uncount one connection of *member*; when none is left, its grace period starts."""
        try:
            left = self.store.remove(topic, member)
        except Exception:  # noqa: BLE001
            self._store_failed("uncounting a connection")
            with self._lock:
                self._unremoved.append((topic, member))
            return
        if left <= 0:
            with self._lock:
                heapq.heappush(self._due, (time.monotonic() + self._state.settings.presence_grace, topic, member))

    # -- events --------------------------------------------------------------------------------

    def _emit(self, topic: str, action: str, document: bytes) -> None:
        """Publish a join or leave to every process's watchers of *topic* and signal it here."""
        state, app = self._state, self._app_ref()
        key = PRESENCE_PREFIX + topic
        member = encoding.loads(document)
        message = Message.raw(key, b'{"action":"%s","member":%s}' % (action.encode(), document))
        state.cluster.publish_notify(message, None)
        with app.app_context() if app is not None else nullcontext():
            delivery = state.deliver(key, message)
            if app is not None:
                signal = signals.presence_joined if action == "join" else signals.presence_left
                signal.send(app, topic=topic, member=member)
        if delivery.first_error is not None:
            log.error("%d deliveries of a presence %s failed", delivery.failed, action, exc_info=delivery.first_error)

    def _sync(self, client: DefaultClient, key: str) -> None:
        topic = key_topic(key)[len(PRESENCE_PREFIX):]
        if self.rule_for(topic) is None:
            return
        try:
            members, total = self.members_of(topic)
        except Exception:  # noqa: BLE001
            self._store_failed("reading the members for a sync")
            return
        self._state.send_local(client, Message(key, {"action": "sync", "members": members, "count": total}))

    # -- reads ---------------------------------------------------------------------------------

    def members_of(self, topic: str, limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """At most *limit* (default ``RTBROKER_PRESENCE_SYNC_LIMIT``) members of *topic*, each
        ``{"key", "info", "connections"}``, and how many there are. The documents listed take
        at most half of ``RTBROKER_MAX_MESSAGE_SIZE`` together, so a sync always fits a message."""
        settings = self._state.settings
        limit = settings.presence_sync_limit if limit is None else limit
        entries, total = self.store.members(topic, limit)
        members = []
        budget = settings.max_message_size // 2
        for document, connections in entries:
            budget -= len(document) + 20
            if budget < 0:
                break
            member = encoding.loads(document)
            member["connections"] = connections
            members.append(member)
        return members, total

    def count(self, topic: str) -> dict[str, int]:
        """``{"clients": connections, "users": members}`` of *topic*, across processes."""
        clients, users = self.store.count(topic)
        return {"clients": clients, "users": users}
