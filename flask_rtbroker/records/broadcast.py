"""Broadcasting one RecordEvent to this process's subscribers, PocketBase's way.

For every topic of the record (``C/<id>`` with the view rule, ``C/*`` and ``C`` with the list
rule) every subscription key of every subscriber gets one message, named after the key, with
``{"record": ..., "action": ...}``, if the rule and the key's ``filter`` let it see the record;
``fields`` picks what the record shows.

Unlike PocketBase, work per event is bounded by what can differ rather than by subscriptions:
a rule runs once per auth identity and values of the options it reads
(:mod:`~flask_rtbroker.records.rule_reads`), a ``filter`` once per identity and distinct filter,
and each message is encoded once per distinct ``fields``. Rules should therefore depend on the
identity (see :func:`flask_rtbroker.identity.identity_key`), the record and the options only.
Past ``RTBROKER_MAX_EVALUATIONS`` rule and filter calls in one event, the remaining subscriptions
are denied that event (logged): an attacker's option sets cannot make an event cost more.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Hashable, Mapping, Optional

from ..client import AUTH_KEY, DefaultClient
from ..errors import MessageTooLarge
from ..fanout import Delivery
from ..identity import hashable_identity
from ..protocol.message import Message
from .collection import Collection, Record
from .event import CREATE, DELETE, GAP, UPDATE, RecordEvent
from .excerpt import PlainTexts
from .rule_reads import RuleResults
from .subscription import RecordOptions, record_options
from .validation import RECORD_OPTIONS_KEY

if TYPE_CHECKING:
    from ..state import BrokerState

log = logging.getLogger("flask_rtbroker.records")

_NONE_COMPILED: Mapping[str, RecordOptions] = {}
_CURRENT = False
_PREVIOUS = True


class _EventView:
    """One event seen by the subscribers of one process, with its per-event caches."""

    def __init__(self, collection: Collection, event: RecordEvent, max_evaluations: int) -> None:
        self.collection = collection
        self.event = event
        self.transitions = collection.transitions and event.action == UPDATE and event.previous is not None
        self._rules: dict[tuple[str, bool, Hashable], RuleResults] = {}
        self._filters: dict[tuple[bool, int], bool] = {}
        self._messages: dict[tuple[int, str, bool], Message] = {}
        self._texts = PlainTexts()  # every excerpt of this event reads each value once
        self.evaluations_left = max_evaluations
        """Rule and filter calls this event may still make; at 0 the rest is denied."""
        self.over_budget = 0
        """Subscription checks denied because the budget was spent."""

    def _record(self, which: bool) -> Record:
        return self.event.previous if which is _PREVIOUS else self.event.record  # type: ignore[return-value]

    def _spend(self) -> bool:
        if self.evaluations_left <= 0:
            self.over_budget += 1
            return False
        self.evaluations_left -= 1
        return True

    def _may_see(self, kind: str, which: bool, auth: Any, options: RecordOptions) -> bool:
        if options.filter_error is not None:
            return False
        rule = self.collection.rule(kind)
        if rule is not None and not self._rule_allows(rule, kind, which, auth, options):
            return False
        return options.filter is None or self._filter_matches(which, options)

    def _rule_allows(self, rule: Any, kind: str, which: bool, auth: Any, options: RecordOptions) -> bool:
        key = (kind, which, hashable_identity(auth))
        results = self._rules.get(key)
        if results is None:
            results = self._rules[key] = RuleResults()
        allowed = results.lookup(options.options)
        if allowed is not None:
            return allowed
        if not self._spend():
            return False
        try:
            return results.call(rule, self._record(which), auth, options.options)
        except Exception:  # noqa: BLE001 - a failing rule denies, like a failing PocketBase rule
            log.exception("the %s rule of %r raised; denying", kind, self.collection.name)
            return False

    def _filter_matches(self, which: bool, options: RecordOptions) -> bool:
        # A client filter cannot read the auth (``@request.`` is refused, as in PocketBase), so a
        # filter runs once per event; compiled options are interned, and alive all event.
        key = (which, id(options))
        matched = self._filters.get(key)
        if matched is None:
            if not self._spend():
                return False
            matched = self._filters[key] = options.filter.matches(self._record(which), self.collection.schema)  # type: ignore[union-attr]
        return matched

    def _action(self, kind: str, auth: Any, options: RecordOptions) -> tuple[str, bool] | None:
        """The action and record (current or previous) this subscription gets, or None."""
        now = self._may_see(kind, _CURRENT, auth, options)
        if not self.transitions:
            return (self.event.action, _CURRENT) if now else None
        before = self._may_see(kind, _PREVIOUS, auth, options)
        if now:
            return (UPDATE if before else CREATE), _CURRENT
        return (DELETE, _PREVIOUS) if before else None

    def message(self, key: str, topic: str, kind: str, auth: Any, compiled: Mapping[str, RecordOptions]) -> Message | None:
        """The message for subscription *key* (of *topic*) held by a client with *auth*, or None.

        *compiled* holds the client's options compiled at POST time; others are compiled here.
        """
        suffix = key[len(topic):]
        options = compiled.get(suffix) or record_options(suffix)
        decision = self._action(kind, auth, options)
        if decision is None:
            return None
        action, which = decision
        message_key = (id(options.fields), action, which)  # fields pickers live with their options
        cached = self._messages.get(message_key)
        if cached is not None:
            return cached  # delivered under the key's name by the fan-out
        record = self._record(which)
        if options.fields is not None:
            record = options.fields.pick(record, self._texts)
        message = self._messages[message_key] = Message(key, {"record": record, "action": action})
        return message


class _ClientMessages(dict[str, Optional[Message]]):
    """The message under each key of one topic for clients with *auth* and *compiled* options,
    built on first use."""

    def __init__(self, view: _EventView, topic: str, kind: str, auth: Any, compiled: Mapping[str, RecordOptions], limit: int) -> None:
        super().__init__()
        self.view, self.topic, self.kind, self.limit = view, topic, kind, limit
        self.auth, self.compiled = auth, compiled

    def __missing__(self, key: str) -> Message | None:
        message = self.view.message(key, self.topic, self.kind, self.auth, self.compiled)
        if message is not None and len(message.payload) > self.limit:
            raise MessageTooLarge(f"its message is {len(message.payload)} bytes, over RTBROKER_MAX_MESSAGE_SIZE ({self.limit})")
        self[key] = message
        return message


class _TopicMessages:
    """Per client, its messages of one topic: clients without compiled options share one
    mapping per auth identity (what a rule may depend on), so each is built once per event."""

    def __init__(self, view: _EventView, topic: str, kind: str, limit: int) -> None:
        self.view, self.topic, self.kind, self.limit = view, topic, kind, limit
        self._by_identity: dict[Hashable, _ClientMessages] = {}

    def __call__(self, client: DefaultClient) -> _ClientMessages:
        auth = client.get(AUTH_KEY)
        compiled = client.get(RECORD_OPTIONS_KEY, _NONE_COMPILED)
        if compiled is not _NONE_COMPILED:
            return _ClientMessages(self.view, self.topic, self.kind, auth, compiled, self.limit)
        identity = hashable_identity(auth)
        shared = self._by_identity.get(identity)
        if shared is None:
            shared = self._by_identity[identity] = _ClientMessages(self.view, self.topic, self.kind, auth, compiled, self.limit)
        return shared


def broadcast(state: "BrokerState", collection: Collection, event: RecordEvent) -> int:
    """Queue *event* for every local subscription allowed to see it; return how many were queued.

    Delivered by the broker's one delivery routine, so what goes wrong for one subscription
    stays with it: a message that cannot be built (a rule, filter or field picker that raises),
    is over ``RTBROKER_MAX_MESSAGE_SIZE``, or that ``before_send`` fails on is skipped, and the
    failures are logged once per event. A :data:`~.event.GAP` goes to every subscription of the
    collection, as it is: it shows no record.
    """
    if event.action == GAP:
        return _broadcast_gap(state, collection, event)
    view = _EventView(collection, event, state.settings.max_evaluations)
    limit = state.settings.max_message_size
    total = Delivery()
    for topic, kind in collection.topics(event.record_id):
        total.add(state.deliver(topic, _TopicMessages(view, topic, kind, limit), concurrent=False))
    if view.over_budget:
        log.warning(
            "a %r record event spent RTBROKER_MAX_EVALUATIONS (%d rule and filter calls): %d subscription check(s) "
            "denied", collection.name, state.settings.max_evaluations, view.over_budget,
        )
    if total.first_error is not None:
        log.warning(
            "a %r record event skipped %d subscription(s); first reason: %s", collection.name, total.failed,
            f"{type(total.first_error).__name__}: {total.first_error}"[:200], exc_info=total.first_error,
        )
    return total.queued


def _broadcast_gap(state: "BrokerState", collection: Collection, event: RecordEvent) -> int:
    """Queue the gap *event* for every local subscription of *collection*'s topics."""
    data = {"action": event.action, "record": event.record}
    queued = 0
    for topic in state.broker.topics():
        if "?" not in topic and collection.owns_topic(topic):  # a key's options follow its topic
            queued += state.deliver(topic, Message(topic, data)).queued
    return queued
