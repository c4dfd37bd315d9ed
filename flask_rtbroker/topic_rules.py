"""Topic rules: who may read a topic, decided when something is delivered, not when subscribing.

``broker.topic_rule("user/*", check)`` registers ``check(client, topic, auth) -> bool``. A
subscription POST is never refused for a topic the client may not read (the official SDK turns
a refused POST into a reconnect loop, and re-sends a refused key with every later subscribe);
the client simply receives nothing on it. Every delivery path asks the rules: local and remote
notifies and record events (:meth:`TopicRules.readable`, from the state's one delivery
routine) and direct sends (:meth:`TopicRules.allows`).

A pattern is a topic, or a prefix ending in ``*`` (``user/*`` covers ``user/bob``). The topic a
rule judges is the delivered topic without the SDK's ``?options=`` part. A topic must pass
every rule that covers it; a rule that raises denies (fail closed). Topics no rule covers cost
nothing. A presence key ``@presence/<topic>`` is judged as *topic* (who may read a room may see
who is in it), its decisions kept apart from the room's.

Like record rules, a rule is evaluated once per auth identity (see
:func:`~flask_rtbroker.identity.identity_key`) per topic among the clients it decides for, so
it should depend on the identity and the topic only. Its answer is then kept per connection
and topic until the connection's auth changes (a subscription POST, ``clear_auth``,
``refresh_auth``): a broadcast to subscribers already decided costs a set comparison.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable

from .client import AUTH_KEY, DefaultClient
from .errors import InvalidArgument
from .identity import hashable_identity
from .protocol.options import base_topic
from .topic_index import Subscribers

log = logging.getLogger("flask_rtbroker.topic_rules")

TopicCheck = Callable[[DefaultClient, str, Any], bool]
"""``check(client, topic, auth) -> bool``: may this client (with *auth*) read *topic*?"""

DENIED_KEY = "denied"
"""The data of the optional denied event is ``{"denied": <topic>}`` (``RTBROKER_TOPIC_DENIED_EVENT``)."""

_PRUNE_SLACK = 16
"""Decisions a topic may keep for clients no longer among its subscribers before a prune."""


PRESENCE_PREFIX = "@presence/"
"""The key prefix of presence events: ``@presence/<topic>`` shows who is subscribed to *topic*."""


def rule_topic(topic: str) -> str:
    """The topic rules judge for a delivery to *topic* (or a key): without the SDK's options."""
    return base_topic(topic) or topic


def judged_topic(topic: str) -> str:
    """The topic whose rules judge *topic* (a :func:`rule_topic`): a presence key's room, else itself."""
    return topic[len(PRESENCE_PREFIX):] if topic.startswith(PRESENCE_PREFIX) else topic


@dataclass(frozen=True)
class TopicRule:
    """A *check* for the topics *pattern* covers: itself, or, ending in ``*``, what starts with
    the rest."""

    pattern: str
    check: TopicCheck

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str) or not self.pattern:
            raise InvalidArgument("a topic rule's pattern must be a non-empty string")
        if "*" in self.pattern[:-1]:
            raise InvalidArgument(f"topic rule pattern {self.pattern[:80]!r}: '*' may only end it (a prefix)")
        if not callable(self.check):
            raise InvalidArgument("a topic rule's check must be callable (client, topic, auth) -> bool")

    def covers(self, topic: str) -> bool:
        """True when this rule judges *topic*."""
        pattern = self.pattern
        return topic.startswith(pattern[:-1]) if pattern[-1] == "*" else topic == pattern


class _Readers:
    """The decisions kept for one topic: per connection, and the set of those denied."""

    __slots__ = ("decided", "denied")

    def __init__(self) -> None:
        self.decided: dict[DefaultClient, bool] = {}
        self.denied: set[DefaultClient] = set()


class TopicRules:
    """One app's view of the registered rules (a list the extension owns and may grow) and the
    decisions kept for this process's connections."""

    def __init__(self, rules: list[TopicRule]) -> None:
        self._rules = rules
        self._readers: dict[str, _Readers] = {}
        self._held: dict[DefaultClient, set[str]] = {}
        """Per connection, the topics holding a decision for it (what :meth:`forget` clears)."""
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        """True when any rule is registered (deliveries then ask :meth:`readable`)."""
        return bool(self._rules)

    def rules_for(self, topic: str) -> list[TopicRule]:
        """The rules covering *topic* (already stripped by :func:`rule_topic`)."""
        return [rule for rule in self._rules if rule.covers(topic)]

    def reset(self) -> None:
        """Forget every decision (the rules changed)."""
        with self._lock:
            self._readers.clear()
            self._held.clear()

    # -- deciding ------------------------------------------------------------------------------

    @staticmethod
    def _decide(rules: list[TopicRule], client: DefaultClient, topic: str, auth: Any) -> bool:
        for rule in rules:
            try:
                if not rule.check(client, topic, auth):
                    return False
            except Exception:  # noqa: BLE001 - fail closed: a rule that cannot decide denies
                log.exception("the topic rule %r raised for %r; denying", rule.pattern, topic[:200])
                return False
        return True

    def _remember(self, topic: str, decisions: Iterable[tuple[DefaultClient, Any, bool]]) -> _Readers:
        """Keep *decisions* made with the auth each client still has."""
        with self._lock:
            readers = self._readers.get(topic)
            if readers is None:
                readers = self._readers[topic] = _Readers()
            for client, auth, allowed in decisions:
                if client.get(AUTH_KEY) is not auth:
                    continue  # its auth changed meanwhile: decided again next time
                readers.decided[client] = allowed
                if not allowed:
                    readers.denied.add(client)
                self._held.setdefault(client, set()).add(topic)
            return readers

    def readable(self, topic: str, subscribers: Subscribers) -> Subscribers:
        """Remove from *subscribers* (a snapshot the caller owns) the clients the rules covering
        *topic* deny, deciding for the ones not decided yet, once per identity."""
        topic = rule_topic(topic)
        judged = judged_topic(topic)
        rules = self.rules_for(judged)
        if not rules:
            return subscribers
        readers = self._readers.get(topic)
        denied_now: list[DefaultClient] = []
        if readers is None or not readers.decided.keys() >= subscribers.keys():
            decided = readers.decided if readers is not None else {}
            by_identity: dict[Hashable, bool] = {}
            decisions = []
            for client in subscribers:
                if client in decided:
                    continue
                auth = client.get(AUTH_KEY)
                identity = hashable_identity(auth)
                allowed = by_identity.get(identity)
                if allowed is None:
                    allowed = by_identity[identity] = self._decide(rules, client, judged, auth)
                decisions.append((client, auth, allowed))
                if not allowed:
                    denied_now.append(client)
            readers = self._remember(topic, decisions)
        if len(readers.decided) > 2 * len(subscribers) + _PRUNE_SLACK:
            self._prune(topic, readers, subscribers)
        if readers.denied:
            denied_now.extend(subscribers.keys() & readers.denied)  # one C pass over the smaller side
        for client in denied_now:
            subscribers.pop(client, None)
        return subscribers

    def _prune(self, topic: str, readers: _Readers, subscribers: Subscribers) -> None:
        """Drop the decisions for clients no longer among *topic*'s subscribers."""
        with self._lock:
            for client in [client for client in readers.decided if client not in subscribers]:
                del readers.decided[client]
                readers.denied.discard(client)
                held = self._held.get(client)
                if held is not None:
                    held.discard(topic)
            if not readers.decided and self._readers.get(topic) is readers:
                del self._readers[topic]

    def allows(self, client: DefaultClient, topic: str, *, keep: bool = True) -> bool:
        """Whether *client* may read *topic* (a key, or a direct send's name): the kept decision,
        or the rules asked now (and kept, unless not *keep*: a send's name need not be)."""
        topic = rule_topic(topic)
        judged = judged_topic(topic)
        rules = self.rules_for(judged)
        if not rules:
            return True
        readers = self._readers.get(topic)
        if readers is not None:
            kept = readers.decided.get(client)
            if kept is not None:
                return kept
        auth = client.get(AUTH_KEY)
        allowed = self._decide(rules, client, judged, auth)
        if keep:
            self._remember(topic, [(client, auth, allowed)])
        return allowed

    def denied_keys(self, client: DefaultClient) -> frozenset[str]:
        """The keys of *client* whose topic has a kept decision that denies it."""
        denied = []
        for key in client.subscriptions():
            readers = self._readers.get(rule_topic(key))
            if readers is not None and readers.decided.get(client) is False:
                denied.append(key)
        return frozenset(denied)

    def forget(self, client: DefaultClient) -> None:
        """Drop every decision kept for *client* (its auth changed, or it disconnected)."""
        with self._lock:
            for topic in self._held.pop(client, ()):
                readers = self._readers.get(topic)
                if readers is None:
                    continue
                readers.decided.pop(client, None)
                readers.denied.discard(client)
                if not readers.decided:
                    del self._readers[topic]

    def kept(self) -> int:
        """How many decisions are kept (for tests and stats)."""
        with self._lock:
            return sum(len(readers.decided) for readers in self._readers.values())
