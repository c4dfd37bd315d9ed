"""Cluster: what one app's broker does with its backplane.

- Every process has a route (the start of its origin and of its clients' ids), so a message
  for one client goes to the inbox of the process that holds it: forwarded POSTs and their
  replies, ``send``, ``notify(to=ids)`` (one envelope per owning process) and count replies.
  A POST for an id with this process's route, or with a route nobody listens on, answers 404
  at once; the owner answers 404 itself for an id it does not hold.
- ``notify`` goes to its topic's channel, record events to their collection's: only processes
  with a subscriber listen there. A subscription POST answers 204 only once this process
  listens on the channels of its keys (``listen_for``), so nothing published after the 204 is
  missed; channels no local client needs are let go in batches (``Backplane.sweep``).
- ``notify`` is published first, then delivered locally, so other processes deliver meanwhile.
- ``count_clients``, ``clear_auth`` and ``refresh_auth`` go to every process.
- A backend that cannot route (PostgreSQL, custom ones) carries everything to every process;
  the receivers keep only what is theirs, as before.
- What other processes send is checked against this process's own rules before it reaches a
  client: an event name or topic with a line break, a send named ``PB_CONNECT`` and message
  data over this process's ``RTBROKER_MAX_MESSAGE_SIZE`` are rejected like malformed envelopes
  (counted in ``backplane_rejected_total``, logged at most once per 1000), changing nothing.
- Remote deliveries run in the app context, so ``before_send`` may use ``current_app``.
- A forwarded POST is answered only while the process that forwarded it still waits: one
  stamped more than ``RTBROKER_FORWARD_TIMEOUT`` (plus :data:`CLOCK_ALLOWANCE`) ago is dropped
  and counted in ``backplane_replayed_total`` (the backplane drops any envelope seen before).
"""

from __future__ import annotations

import logging
import secrets
import time
import weakref
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterable, Protocol, Sequence

from . import signals, wire

from .protocol import encoding
from .backplane import Backplane, Envelope
from .backplane.base import STATE_UP, route_of
from .backplane.envelope import Stamp
from .wire import WireItem
from .errors import InvalidArgument, InvalidJSON, MessageTooLarge
from .identity import identity_token
from .protocol.message import PB_CONNECT, Message, check_event_name, check_size

if TYPE_CHECKING:
    from flask import Flask

    from .broker import Broker
    from .client import DefaultClient
    from .runtime.concurrency import Runtime
    from .config import Settings
    from .fanout import Delivery, Messages, Recipient
    from .sessions import Sessions

log = logging.getLogger("flask_rtbroker.cluster")

STARTUP_GRACE = 1.0
"""Seconds after a process starts listening during which requests wait for the subscription."""
SUBSCRIBE_WAIT = 2.0
"""Seconds a subscription POST waits for this process to listen on its keys' channels."""
CLOCK_ALLOWANCE = 1.0
"""Seconds by which the clocks of two hosts may differ before forwarded POSTs look too old."""

ForwardedPost = Callable[[wire.Post], tuple[int, bytes]]
Interest = Callable[[str], Iterable[str]]
"""Maps a subscribed topic to the extra channels it needs (e.g. its collection's)."""


class _Pending:
    """A request waiting for replies from other processes."""

    __slots__ = ("waker", "replies")

    def __init__(self, waker: Any) -> None:
        self.waker = waker
        self.replies: list[Any] = []


class Node(Protocol):
    """What a :class:`Cluster` uses of its app's process-local broker
    (:class:`~flask_rtbroker.state.BrokerState`, which passes itself in)."""

    broker: "Broker"
    sessions: "Sessions"
    settings: "Settings"

    @property
    def runtime(self) -> "Runtime": ...

    def deliver(
        self, topic: str, messages: "Messages", recipient: "Recipient | None" = None, *, concurrent: bool = True
    ) -> "Delivery": ...

    def send_local(self, client: "DefaultClient", message: Message, *, judged: bool = True) -> bool: ...

    def clear_auth(self, token: str | None, key: Any, disconnect: bool) -> int: ...

    def refresh_auth(self, identity: Any, token: str | None, key: Any) -> int: ...


class Cluster:
    """Connects one app's :class:`Node` (its ``BrokerState``) to its backplane."""

    def __init__(self, state: Node, backplane: Backplane, app: "Flask") -> None:
        self.state = state
        self.backplane = backplane
        self._app_ref = weakref.ref(app)
        self._pending: dict[str, _Pending] = {}
        self._extension_handlers: dict[str, Callable[[Envelope], None]] = {}
        self._interests: list[Interest] = []
        self.answer_post: ForwardedPost | None = None
        needed = weakref.WeakMethod(self.needed_channels)  # the backplane must not keep us alive
        backplane.keep_channels = lambda: (needed() or _nothing)()

    @property
    def route(self) -> str:
        """This process's route: the start of its clients' ids."""
        return self.backplane.route

    @property
    def active(self) -> bool:
        """True when other processes may be listening."""
        return self.backplane.has_peers

    def ensure_started(self) -> None:
        """Start the backplane's listener in this process (lazily; again after a fork).

        In the process's first second, also wait for the listener to be subscribed, so that
        neither a forwarded POST for a stream opened here nor the reply to one sent from here
        is published before this process listens.
        """
        if self.active:
            self.backplane.start(self.state.runtime, self._on_envelope, self._on_state)
            self.backplane.wait_ready(STARTUP_GRACE)

    def _on_state(self, state: str, error: BaseException | None) -> None:
        app = self._app_ref()
        if app is not None:
            signals.backplane_state_changed.send(app, state=state, error=error)

    # -- extension point -----------------------------------------------------------------------

    def add_handler(self, kind: str, handler: Callable[[Envelope], None]) -> None:
        """Let an extension (e.g. record events) handle envelopes of its own *kind*.

        The built-in kinds cannot be taken over. *handler* runs on the listener; it should not block.
        """
        if kind in wire.BUILT_IN_KINDS:
            raise InvalidArgument(f"envelope kind {kind!r} is built in")
        self._extension_handlers[kind] = handler

    def add_interest(self, interest: Interest) -> None:
        """Let an extension name the extra channels a subscribed topic needs (records: the
        topic's collection), so this process listens on them while it has such a subscriber."""
        self._interests.append(interest)

    def publish(self, item: WireItem) -> bool:
        """Publish *item* (an extension's kind, or a built-in one); False when there are no peers or it failed."""
        if not self.active:
            return False
        self.ensure_started()
        return wire.publish(self.backplane, item) is not None

    # -- channels ------------------------------------------------------------------------------

    def channels_for(self, topics: Iterable[str]) -> set[str]:
        """The channels a process with subscribers of *topics* (keys) listens on."""
        channels = set()
        for topic in topics:
            channels.add(wire.topic_channel(topic))
            base = topic.partition("?")[0]
            for interest in self._interests:
                channels.update(interest(base))
        return channels

    def needed_channels(self) -> set[str]:
        """The channels this process's clients need now (what a sweep keeps)."""
        return self.channels_for(self.state.broker.topics())

    def listen_soon(self, topics: Iterable[str]) -> None:
        """Start listening on the channels of *topics* without waiting: for subscriptions made
        in code (``client.subscribe``); a POST waits with :meth:`listen_for` instead."""
        if self.active and self.backplane.routes:
            self.backplane.want(self.channels_for(topics), 0.0)

    def listen_for(self, keys: Iterable[str]) -> None:
        """Listen on the channels of *keys* before a POST holding them answers 204, waiting at
        most :data:`SUBSCRIBE_WAIT` seconds (not at all while the backplane is down: local
        delivery goes on, and the listener subscribes them when it reconnects)."""
        if self.active and self.backplane.routes:
            self.ensure_started()
            listening = self.backplane.want(self.channels_for(keys), SUBSCRIBE_WAIT)
            if not listening and self.backplane.state == STATE_UP:  # when down, that was logged once
                log.warning("a subscription answers before this process listens on all its channels")

    # -- outgoing ------------------------------------------------------------------------------

    def publish_notify(self, message: Message, to_ids: list[str] | None) -> None:
        """Publish a notify for the other processes: on its topic's channel, or, for *to_ids*,
        one envelope per process holding some of them (ids of this process stay here)."""
        remote = None if to_ids is None else [i for i in to_ids if route_of(i) != self.route]
        if to_ids is None and self.active:  # a broadcast: its id is the same in every process
            self.ensure_started()
            origin = self.backplane.origin

            def stamped(stamp: Stamp) -> None:
                message.origin_id = (origin, stamp.sequence)

            wire.publish(self.backplane, wire.Notify(message.name, message.payload), stamped)
            return
        for item in wire.notifies(message.name, message.payload, remote, by_route=self.backplane.routes):
            self.publish(item)

    def publish_send(self, client_id: str, message: Message) -> None:
        """Publish a direct send to the inbox of the process that holds *client_id*."""
        self.publish(wire.Send(client_id, message.name, message.payload))

    def publish_clear_auth(self, token: str, disconnect: bool) -> None:
        """Ask the other processes to downgrade or disconnect an identity's clients."""
        self.publish(wire.ClearAuth(token, disconnect))

    def publish_refresh_auth(self, token: str, identity: bytes) -> None:
        """Ask the other processes to give an identity's clients *identity* (JSON; empty: keep
        theirs) and decide their topic rules again."""
        self.publish(wire.RefreshAuth(token, identity))

    def _request(self, request: wire.Post | wire.Count, timeout: float, expected: int | None) -> list[Any]:
        """Publish *request* and collect the replies addressed to this process within *timeout*."""
        self.ensure_started()
        pending = self._pending[request.request_id] = _Pending(self.state.runtime.waker())
        try:
            if not wire.publish(self.backplane, request):  # failed (None) or nobody listens (0)
                return []
            pending.waker.wait(timeout)
            return list(pending.replies) if expected is None else pending.replies[:expected]
        finally:
            del self._pending[request.request_id]

    def forward_post(self, client_id: str, subscriptions: Sequence[str], headers: Sequence[tuple[str, str]],
                     remote_addr: str, timeout: float) -> tuple[int, bytes] | None:
        """Ask the process holding *client_id* to set its *subscriptions* (decoded and validated
        here); return its (status, body) or None (404) when no process has the id's route: at
        once for this process's route or, on a routing backend, one nobody listens on."""
        if not self.active or route_of(client_id) == self.route:
            return None
        request = wire.Post(secrets.token_hex(8), client_id, tuple(headers), remote_addr, tuple(subscriptions))
        replies = self._request(request, timeout, 1)
        if not replies:
            return None
        return replies[0].status, replies[0].body

    def count_clients(self, timeout: float) -> int:
        """This process's clients plus those every other process reports within *timeout*."""
        local = self.state.broker.total_clients()
        if not self.active:
            return local
        replies = self._request(wire.Count(secrets.token_hex(8)), timeout, None)
        return local + sum(reply.clients for reply in replies)

    # -- incoming ------------------------------------------------------------------------------

    def _on_envelope(self, envelope: Envelope) -> None:
        item = wire.parse(envelope)
        if item is None:
            extension_handler = self._extension_handlers.get(envelope.kind)
            if extension_handler is not None:
                extension_handler(envelope)
            return
        if isinstance(item, wire.Notify):
            self._deliver_notify(item, envelope)
        elif isinstance(item, wire.Send):
            self._deliver_send(item, envelope.origin)
        elif isinstance(item, wire.Post):
            self._run_post(item, envelope)
        elif isinstance(item, wire.Count):
            wire.publish(self.backplane, wire.CountReply(item.request_id, envelope.origin, self.state.broker.total_clients()))
        elif isinstance(item, wire.ClearAuth):
            self._clear_auth(item)
        elif isinstance(item, wire.RefreshAuth):
            self._refresh_auth(item)
        else:
            self._collect_reply(item)

    def _app_context(self) -> ContextManager[Any]:
        """The app's context, for hooks run on the listener (nothing when the app is gone)."""
        app = self._app_ref()
        return nullcontext() if app is None else app.app_context()

    def _remote_message(self, kind: str, name: str, body: bytes) -> Message:
        """The message of a notify or send from another process, checked as this process checks
        its own; :class:`~flask_rtbroker.wire.WireError` (counted as rejected) when it fails."""
        try:
            check_event_name(name)
        except InvalidArgument:
            raise wire.WireError(f"a {kind} named {name[:80]!r} contains a line break") from None
        try:
            check_size(name[:80], body, self.state.settings.max_message_size)
        except MessageTooLarge as exc:
            raise wire.WireError(f"a {kind} from another process: {exc} of this process (is it the same everywhere?)") from None
        return Message.raw(name, body)

    def _deliver_notify(self, notify: wire.Notify, envelope: Envelope) -> None:
        message = self._remote_message("notify", notify.topic, notify.body)
        if notify.to is None and envelope.stamp is not None:
            message.origin_id = (envelope.origin, envelope.stamp.sequence)
        ids = None if notify.to is None else frozenset(notify.to)
        with self._app_context():  # once per envelope: before_send may use current_app
            delivery = self.state.deliver(
                notify.topic, message, None if ids is None else (lambda client: client.id in ids)
            )
        if delivery.first_error is not None:
            log.error("%d deliveries of a notify from another process failed", delivery.failed,
                      exc_info=delivery.first_error)

    def _deliver_send(self, send: wire.Send, origin: str) -> None:
        if send.name == PB_CONNECT:
            raise wire.WireError(f"a send named {PB_CONNECT} (from {origin[:80]!r}): only a stream sends it")
        message = self._remote_message("send", send.name, send.body)
        client = self.state.broker.clients().get(send.client_id)
        if client is None:
            self.state.sessions.hold_targeted(send.client_id, message)
            return
        with self._app_context():
            try:
                self.state.send_local(client, message)
            except Exception:  # noqa: BLE001 - the hook's failure stays with this one delivery
                log.exception("before_send failed for a send from another process")

    def _run_post(self, post: wire.Post, envelope: Envelope) -> None:
        """Answer a forwarded POST for an id with this process's route (404 when no such client),
        while its sender still waits for the answer."""
        if route_of(post.client_id) != self.route or self.answer_post is None:
            return
        if envelope.stamp is not None:
            age = time.time() - envelope.stamp.sent_at / 1000
            if age > self.state.settings.forward_timeout + CLOCK_ALLOWANCE:
                self.backplane.count_replay(f"a forwarded POST sent {age:.1f}s ago, no longer awaited")
                return
        origin = envelope.origin
        answer = self.answer_post

        def run() -> None:
            status, body = answer(post)
            wire.publish(self.backplane, wire.PostReply(post.request_id, origin, status, body))

        self.state.runtime.spawn(run)

    def _clear_auth(self, clear: wire.ClearAuth) -> None:
        with self._app_context():  # the before_subscribe re-check runs the app's hook
            self.state.clear_auth(clear.token, None, clear.disconnect)

    def _refresh_auth(self, refresh: wire.RefreshAuth) -> None:
        """Refresh the identity's local clients; the identity must be the token's (a peer may
        update a user's connections, not make them another user's)."""
        identity = None
        if refresh.body:
            try:
                check_size("refresh-auth", refresh.body, self.state.settings.max_message_size)
                identity = encoding.loads_untrusted(refresh.body)
            except (MessageTooLarge, InvalidJSON) as exc:
                raise wire.WireError(f"a refresh-auth identity: {exc}") from None
            if identity_token(identity) != refresh.token:
                raise wire.WireError("a refresh-auth whose identity is not its token's")
        with self._app_context():  # the before_subscribe re-check and the topic rules run app code
            self.state.refresh_auth(identity, refresh.token, None)

    def _collect_reply(self, reply: wire.PostReply | wire.CountReply) -> None:
        if reply.to != self.backplane.origin:
            return
        pending = self._pending.get(reply.request_id)
        if pending is not None:
            pending.replies.append(reply)
            if isinstance(reply, wire.PostReply):
                pending.waker.set()


def _nothing() -> set[str]:
    return set()
