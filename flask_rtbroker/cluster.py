"""Cluster: what one app's broker does with its backplane.

- ``notify`` is published first, then delivered locally; ``send`` to a client held elsewhere
  is published. Other processes deliver them to their own clients.
- A subscription POST for a client this process does not hold is forwarded; the process that
  holds it runs the POST (IP check, auth rule, hooks) and publishes the response, which the
  forwarding process returns as is. No answer within ``RTBROKER_FORWARD_TIMEOUT``: 404.
- ``count_clients`` asks every process for its count.
"""

from __future__ import annotations

import logging
import secrets
import weakref
from typing import TYPE_CHECKING, Any, Callable

from . import signals
from .backplane import Backplane, Envelope
from .message import PB_CONNECT, Message

if TYPE_CHECKING:
    from flask import Flask

    from .state import BrokerState

log = logging.getLogger("flask_rtbroker.cluster")

KIND_NOTIFY = "notify"
KIND_SEND = "send"
KIND_POST = "post"
KIND_POST_REPLY = "post-reply"
KIND_COUNT = "count"
KIND_COUNT_REPLY = "count-reply"
KIND_CLEAR_AUTH = "clear-auth"

STARTUP_GRACE = 1.0
"""Seconds after a process starts listening during which requests wait for the subscription."""

ForwardedPost = Callable[[Envelope], tuple[int, bytes]]


class _Pending:
    """A request waiting for replies from other processes."""

    __slots__ = ("waker", "replies")

    def __init__(self, waker: Any) -> None:
        self.waker = waker
        self.replies: list[Envelope] = []


class Cluster:
    """Connects one app's :class:`BrokerState` to its backplane."""

    def __init__(self, state: "BrokerState", backplane: Backplane, app: "Flask") -> None:
        self.state = state
        self.backplane = backplane
        self._app_ref = weakref.ref(app)
        self._pending: dict[str, _Pending] = {}
        self._extension_handlers: dict[str, Callable[[Envelope], None]] = {}
        self.answer_post: ForwardedPost | None = None

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
        if kind in self._handlers:
            raise ValueError(f"envelope kind {kind!r} is built in")
        self._extension_handlers[kind] = handler

    def publish(self, kind: str, fields: dict[str, Any], body: bytes) -> bool:
        """Publish an extension's envelope of *kind*; False when there are no peers or it failed."""
        if not self.active:
            return False
        self.ensure_started()
        return self.backplane.send(self.backplane.envelope(kind, fields, body))

    # -- outgoing ------------------------------------------------------------------------------

    def publish_notify(self, message: Message, to_ids: list[str] | None) -> None:
        """Publish a notify for the other processes."""
        if self.active:
            self.ensure_started()
            fields = {"t": message.name} if to_ids is None else {"t": message.name, "to": to_ids}
            self.backplane.send(self.backplane.envelope(KIND_NOTIFY, fields, message.payload))

    def publish_send(self, client_id: str, message: Message) -> None:
        """Publish a direct send for the process that holds *client_id*."""
        if self.active:
            self.ensure_started()
            self.backplane.send(self.backplane.envelope(KIND_SEND, {"c": client_id, "n": message.name}, message.payload))

    def publish_clear_auth(self, token: str, disconnect: bool) -> None:
        """Ask the other processes to downgrade or disconnect an identity's clients."""
        if self.active:
            self.ensure_started()
            self.backplane.send(self.backplane.envelope(KIND_CLEAR_AUTH, {"a": token, "d": disconnect}))

    def _request(self, kind: str, fields: dict[str, Any], body: bytes, timeout: float, expected: int | None) -> list[Envelope]:
        self.ensure_started()
        rid = secrets.token_hex(8)
        pending = self._pending[rid] = _Pending(self.state.runtime.waker())
        try:
            if not self.backplane.send(self.backplane.envelope(kind, {"rid": rid, **fields}, body)):
                return []
            pending.waker.wait(timeout)
            return list(pending.replies) if expected is None else pending.replies[:expected]
        finally:
            del self._pending[rid]

    def forward_post(self, client_id: str, headers: list[tuple[str, str]], body: bytes, remote_addr: str, timeout: float) -> tuple[int, bytes] | None:
        """Ask the process holding *client_id* to run this POST; return its (status, body) or None."""
        if not self.active:
            return None
        replies = self._request(KIND_POST, {"c": client_id, "h": headers, "ip": remote_addr}, body, timeout, 1)
        if not replies:
            return None
        return int(replies[0].fields["s"]), replies[0].body

    def count_clients(self, timeout: float) -> int:
        """This process's clients plus those every other process reports within *timeout*."""
        local = self.state.broker.total_clients()
        if not self.active:
            return local
        replies = self._request(KIND_COUNT, {}, b"", timeout, None)
        return local + sum(int(reply.fields.get("n", 0)) for reply in replies)

    # -- incoming ------------------------------------------------------------------------------

    def _on_envelope(self, envelope: Envelope) -> None:
        handler = self._handlers.get(envelope.kind)
        if handler is not None:
            handler(self, envelope)
            return
        extension_handler = self._extension_handlers.get(envelope.kind)
        if extension_handler is not None:
            extension_handler(envelope)

    def _deliver_notify(self, envelope: Envelope) -> None:
        to = envelope.fields.get("to")
        ids = frozenset(to) if isinstance(to, list) else None
        topic = envelope.fields["t"]
        _, error = self.state.deliver(
            topic, Message.raw(topic, envelope.body), None if ids is None else (lambda client: client.id in ids)
        )
        if error is not None:
            log.error("before_send failed for a notify from another process", exc_info=error)

    def _deliver_send(self, envelope: Envelope) -> None:
        name = envelope.fields.get("n")
        if not isinstance(name, str) or name == PB_CONNECT:
            log.warning("dropping a send named %r from %r: not a name a send may have", name, envelope.origin)
            return
        client = self.state.broker.clients().get(envelope.fields["c"])
        if client is None:
            return
        try:
            self.state.send_local(client, Message.raw(name, envelope.body))
        except Exception:  # noqa: BLE001 - the hook's failure stays with this one delivery
            log.exception("before_send failed for a send from another process")

    def _run_post(self, envelope: Envelope) -> None:
        if envelope.fields.get("c") not in self.state.broker.clients() or self.answer_post is None:
            return
        answer = self.answer_post

        def run() -> None:
            status, body = answer(envelope)
            reply = {"rid": envelope.fields["rid"], "to": envelope.origin, "s": status}
            self.backplane.send(self.backplane.envelope(KIND_POST_REPLY, reply, body))

        self.state.runtime.spawn(run)

    def _clear_auth(self, envelope: Envelope) -> None:
        token = envelope.fields.get("a")
        app = self._app_ref()
        if not isinstance(token, str) or app is None:
            return
        with app.app_context():  # the before_subscribe re-check runs the app's hook
            self.state.clear_auth(token, None, bool(envelope.fields.get("d")))

    def _reply_count(self, envelope: Envelope) -> None:
        reply = {"rid": envelope.fields["rid"], "to": envelope.origin, "n": self.state.broker.total_clients()}
        self.backplane.send(self.backplane.envelope(KIND_COUNT_REPLY, reply))

    def _collect_reply(self, envelope: Envelope) -> None:
        if envelope.fields.get("to") != self.backplane.origin:
            return
        pending = self._pending.get(envelope.fields.get("rid", ""))
        if pending is not None:
            pending.replies.append(envelope)
            if envelope.kind == KIND_POST_REPLY:
                pending.waker.set()

    _handlers: dict[str, Callable[["Cluster", Envelope], None]] = {
        KIND_NOTIFY: _deliver_notify,
        KIND_SEND: _deliver_send,
        KIND_POST: _run_post,
        KIND_POST_REPLY: _collect_reply,
        KIND_COUNT: _reply_count,
        KIND_COUNT_REPLY: _collect_reply,
        KIND_CLEAR_AUTH: _clear_auth,
    }
