"""RealtimeBroker: the Flask extension object (``RealtimeBroker(app)`` or ``init_app(app)``)."""

from __future__ import annotations

import weakref
from functools import partial
from typing import Any, Callable, Collection, Mapping, Optional, TypeVar

from flask import Flask, Request, current_app, has_app_context

from . import signals

from .protocol import encoding
from .broker import Broker
from .client import DefaultClient
from .config import DEFAULTS, Settings
from .errors import AlreadyInitializedError, ClientNotFound, InvalidArgument, NotInitializedError, NotSerializable
from .fanout import BeforeSend, Recipient
from .identity import identity_key, identity_token
from .protocol.message import PB_CONNECT, Message, check_size
from .cli import create_cli
from .oauth2_redirect import register_redirect
from .presence import InfoFunction, enabled_presence, presence_of
from .state import EXTENSION_KEY, BrokerState
from .topic_rules import TopicCheck, TopicRule
from .testing.app_client import RealtimeTestClient
from .metrics import metrics_response
from .views import create_blueprint


AuthLoader = Callable[[Request], Any]
BeforeConnect = Callable[[DefaultClient, Request], None]
BeforeSubscribe = Callable[[DefaultClient, list[str], Any], None]
F = TypeVar("F", bound=Callable[..., Any])

Target = Optional[Callable[[DefaultClient], bool] | str | Collection[str]]


def _recipient(to: Target) -> tuple[Recipient | None, list[str] | None]:
    """Return the local recipient predicate for *to*, and its id list when it is one."""
    if to is None or callable(to):
        return to, None
    ids = [to] if isinstance(to, str) else list(to)
    id_set = frozenset(ids)
    return (lambda client: client.id in id_set), ids


class RealtimeBroker:
    """PocketBase-compatible realtime subscriptions for Flask apps.

    ::

        broker = RealtimeBroker(app)          # or RealtimeBroker(); broker.init_app(app)
        broker.notify("example", {"test": 123})

    One instance may serve several apps; each app gets its own client registry, kept in
    ``app.extensions["rtbroker"]``. Methods act on the current app, or, outside an app
    context, on the only app the instance was registered on.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self.auth_loader_hook: AuthLoader | None = None
        self.before_connect_hook: BeforeConnect | None = None
        self.before_subscribe_hook: BeforeSubscribe | None = None
        self.before_send_hook: BeforeSend | None = None
        self.topic_rules: list[TopicRule] = []
        """The registered :meth:`topic_rule` checks, in order (shared by every app of this instance)."""
        self._states: "weakref.WeakKeyDictionary[Flask, BrokerState]" = weakref.WeakKeyDictionary()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the realtime endpoint and a broker on *app*; read its ``RTBROKER_*`` config."""
        if EXTENSION_KEY in app.extensions:
            raise AlreadyInitializedError(
                "A RealtimeBroker is already registered on this app; create one per app or "
                "call init_app only once."
            )
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        state = BrokerState(app, Settings.from_config(app.config), self)
        app.extensions[EXTENSION_KEY] = state
        if state.settings.graceful_shutdown:
            state.install_shutdown_handlers()
        self._states[app] = state
        app.register_blueprint(create_blueprint(state), url_prefix=state.settings.url_prefix)
        register_redirect(app, state)
        if state.settings.metrics_path is not None:
            app.add_url_rule(state.settings.metrics_path, "rtbroker_metrics", partial(metrics_response, state))
        app.cli.add_command(create_cli(self))

    # -- decision hooks ------------------------------------------------------------------------

    def auth_loader(self, func: AuthLoader) -> AuthLoader:
        """Decorate ``func(request) -> identity | None`` that reads the POST's auth.

        The identity is stored on the client under ``AUTH_KEY``; None means guest. Raise nothing
        for a bad token: like PocketBase, an invalid token is a guest.
        """
        self.auth_loader_hook = func
        return func

    def before_connect(self, func: F) -> F:
        """Decorate ``func(client, request)``, run before a stream opens; raise ApiError to refuse."""
        self.before_connect_hook = func
        return func

    def before_subscribe(self, func: F) -> F:
        """Decorate ``func(client, subscriptions, auth)``, run before a POST is applied.

        Raise :class:`ApiError` (e.g. 403) to reject the whole POST; nothing changes then.
        """
        self.before_subscribe_hook = func
        return func

    def before_send(self, func: F) -> F:
        """Decorate ``func(client, message) -> Message | None``, run per delivery.

        Return the message (or another one) to deliver it, None to skip this client. It runs on
        the fan-out hot path: keep it cheap.
        """
        self.before_send_hook = func
        return func

    def topic_rule(self, pattern: str, check: TopicCheck | None = None) -> Any:
        """Register ``check(client, topic, auth) -> bool``: who may read the topics *pattern*
        covers (a topic, or a prefix ending in ``*``: ``"user/*"``). Also a decorator:
        ``@broker.topic_rule("user/*")``.

        Checked when something is delivered, on every path (local and remote notifies, record
        events, direct sends whose name is the topic), never when subscribing: a subscription
        to a topic the client may not read is accepted and receives nothing (or, with
        ``RTBROKER_TOPIC_DENIED_EVENT``, one ``{"denied": topic}`` event on that key). A topic
        must pass every rule covering it; a check that raises denies. The answer is computed
        once per identity and topic and kept per connection until its auth changes (a
        subscription POST, :meth:`clear_auth`, :meth:`refresh_auth`), so it should depend on
        *auth* and *topic* only; call :meth:`refresh_auth` when what it reads changes.
        """
        if check is None:
            return lambda func: self.topic_rule(pattern, func)
        self.topic_rules.append(TopicRule(pattern, check))
        for state in list(self._states.values()):
            state.topic_rules.reset()
        return check

    def presence(self, topic: str, info: InfoFunction | None = None) -> list[dict[str, Any]] | None:
        """Enable presence on the topics a pattern covers, or read who is in a room.

        ``broker.presence("room/*", info=fn)`` enables it, when the app is set up (a prefix
        ending in ``*``, or, with *info*, any pattern: ``broker.presence("lobby",
        info=default_info)``): a client subscribed to a covered topic is a member, shown to
        clients subscribed to ``@presence/<topic>`` (they get a ``sync``, then ``join`` and
        ``leave`` events; the topic rules of *topic* decide who may watch). ``info(client,
        auth)`` returns the public fields a member shows (default: the identity's ``id`` and
        ``collectionName``; a guest shows none). Returns None.

        ``broker.presence("room/1")`` (a topic, no *info*) returns its members in every
        process, ``{"key", "info", "connections"}`` each, at most
        ``RTBROKER_PRESENCE_SYNC_LIMIT`` of them ([] where presence is not enabled). See
        :doc:`presence`.
        """
        app, state = self._app_and_state()
        if info is None and topic[-1:] != "*":
            reader = enabled_presence(state, topic)
            return reader.members_of(topic)[0] if reader is not None else []
        presence_of(app, state).enable(topic, info)
        return None

    def presence_count(self, topic: str) -> dict[str, int]:
        """``{"clients": connections, "users": members}`` on *topic*, in every process (members
        within their grace period count; 0 and 0 where presence is not enabled)."""
        presence = enabled_presence(self.state(), topic)
        return presence.count(topic) if presence is not None else {"clients": 0, "users": 0}

    # -- state lookup --------------------------------------------------------------------------

    def _app_and_state(self) -> tuple[Flask, BrokerState]:
        if has_app_context():
            app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
            state: BrokerState | None = app.extensions.get(EXTENSION_KEY)
            if state is None or self._states.get(app) is not state:
                raise NotInitializedError(
                    "RealtimeBroker is not registered on this app; call init_app(app)."
                )
            return app, state
        items: list[tuple[Flask, BrokerState]] = list(self._states.items())
        if len(items) == 1:
            return items[0]
        if not items:
            raise NotInitializedError("RealtimeBroker is not registered on any app; call init_app(app).")
        raise NotInitializedError(
            "RealtimeBroker is registered on several apps; call it inside an app context "
            "(with app.app_context(): ...)."
        )

    def state(self) -> BrokerState:
        """The current app's :class:`BrokerState` (settings, registry, runtime)."""
        return self._app_and_state()[1]

    @property
    def subscriptions_broker(self) -> Broker:
        """The current app's client registry (PocketBase's ``app.SubscriptionsBroker()``)."""
        return self.state().broker

    # -- sending -------------------------------------------------------------------------------

    def _message(self, state: BrokerState, name: str, data: Any) -> Message:
        message = Message(name, data)
        check_size(name, message.payload, state.settings.max_message_size)
        return message

    def notify(self, topic: str, data: Any, *, to: Target = None) -> int:
        """Send *data* to every client subscribed to *topic*; return the deliveries queued here.

        A client receives it once per matching subscription key: ``topic`` itself and ``topic``
        with the SDK's ``?options=...`` appended, the event named after that key. The message is
        published to the other processes first, so they deliver while this one does.

        *to* narrows the recipients: a client id or a collection of ids (in every process), or a
        predicate ``(client) -> bool`` (evaluated on this process's clients only).
        Raises ValueError for a topic with a line break, MessageTooLarge past the size limit.
        A ``before_send`` hook that raises skips that one delivery; once every other delivery,
        the publish and the ``message_notified`` signal are done, the first such error is
        re-raised (Go's errgroup).
        """
        app, state = self._app_and_state()
        message = self._message(state, topic, data)
        recipient, to_ids = _recipient(to)
        if to is None or to_ids is not None:
            state.cluster.publish_notify(message, to_ids)
        delivery = state.deliver(topic, message, recipient)
        signals.message_notified.send(app, message=message, topic=topic, delivered=delivery.queued)
        if delivery.first_error is not None:
            raise delivery.first_error
        return delivery.queued

    def send(self, client_id: str, name: str, data: Any) -> bool:
        """Send one event named *name* to the client *client_id*, subscribed or not.

        Returns True when it was queued here, False when ``before_send`` skipped it, the client
        was discarded meanwhile, or it went to another process (reached through the backplane).
        Raises :class:`ClientNotFound` when there is no backplane and no such local client,
        ValueError for the name ``PB_CONNECT`` (the SDK would take it for a new connection), and
        whatever ``before_send`` raised for it.
        """
        if name == PB_CONNECT:
            raise InvalidArgument(f"{PB_CONNECT} is the stream's own first event; send it under another name")
        state = self.state()
        message = self._message(state, name, data)
        client = state.broker.clients().get(client_id)
        if client is not None:
            return state.send_local(client, message)
        if state.sessions.hold_targeted(client_id, message):
            return True  # its stream ended: kept for the connection that claims it explicitly
        if state.cluster.active:
            state.cluster.publish_send(client_id, message)
            return False
        raise ClientNotFound(client_id)

    def watch(self, model: type, **options: Any) -> Any:
        """Broadcast a SQLAlchemy *model*'s committed creates/updates/deletes as record events
        and return the collection.

        ``broker.watch(Post, collection="posts", list_rule=..., view_rule=...)`` makes
        ``pb.collection("posts").subscribe("*", cb)`` work. Needs the ``sqlalchemy`` extra. The
        options, all keywords:

        - *collection*: the name in topics and records (default: the table name); *collection_id*
          another name it answers to, shown as ``collectionId`` (default: the name).
        - *list_rule* / *view_rule*: ``(record, auth, options) -> bool`` for ``<collection>/*`` and
          ``<collection>/<id>``; None is public (like an empty PocketBase rule).
        - *serialize*: ``row -> dict`` with an ``id``; default: the columns, see
          :mod:`flask_rtbroker.records.serialize`.
        - *transitions*: an update that makes a record visible to a subscription arrives as
          ``create``, one that hides it as ``delete`` (with the record as it was).
        - *capture*: ``"session"`` (default) sees what SQLAlchemy sessions commit, bulk statements
          included; ``"database"`` (PostgreSQL) sees every committed change to the table, whoever
          makes it, through triggers (:mod:`flask_rtbroker.records.capture`; install them with
          ``flask rtbroker install-triggers``) and not the session path, so nothing arrives twice.
          *engine* is the database to listen to (default: Flask-SQLAlchemy's engine of the model).

        Call it while setting the app up (it adds a subscription validator that rejects unusable
        ``filter``/``fields`` options with a 400). With ``capture="database"`` it waits (up to
        ``records.registry.LISTEN_WAIT``, 5 seconds) until it listens, so changes committed after
        it returns are seen.
        """
        from .records import watch

        app, state = self._app_and_state()
        return watch(app, state, model, **options)

    def stats(self) -> dict[str, Any]:
        """This process's figures: clients, subscriptions, topics, connects, notifies,
        deliveries, messages dropped by slow-consumer discards, the queue high-water mark and
        disconnects by reason. ``RTBROKER_METRICS_PATH`` serves them to Prometheus;
        ``flask rtbroker stats`` prints them."""
        return self.state().stats()

    def clear_auth(self, identity: Any, *, disconnect: bool = False) -> int:
        """Drop a user's auth from every connection, in every process; return the local count.

        What PocketBase does when a user's password changes or the record is deleted: the
        connections stay open as guests (the next subscription POST may carry any identity; the
        topic rules decide again at the next delivery, ``before_subscribe`` at once), or,
        with ``disconnect=True``, their streams end (reason ``revoked``) and the SDK reconnects.
        Identities match as in the auth-change rule (``id``, plus collection or class).
        """
        state = self.state()
        token = identity_token(identity)
        cleared = state.clear_auth(token, identity_key(identity), disconnect)
        if token is not None:
            state.cluster.publish_clear_auth(token, disconnect)
        return cleared

    def refresh_auth(self, identity: Any) -> int:
        """Give every connection of *identity*'s user, in every process, *identity* as its auth
        and let the topic rules (and ``before_subscribe``) decide again; return the local count.

        PocketBase does this when an auth record changes: call it after a change the rules read
        (roles, memberships, a ban). Only connections already signed in as that user (same
        ``id`` plus collection or class) change. Other processes get *identity* as JSON; one
        that cannot be encoded (or is over ``RTBROKER_MAX_MESSAGE_SIZE``) leaves them the auth
        they hold, and only their rule decisions are renewed.
        """
        if identity is None:
            raise InvalidArgument("refresh_auth takes a signed-in identity; clear_auth makes connections guests")
        state = self.state()
        token = identity_token(identity)
        refreshed = state.refresh_auth(identity, token, identity_key(identity))
        if token is not None:
            try:
                body = encoding.dumps(identity)
            except NotSerializable:
                body = b""
            state.cluster.publish_refresh_auth(token, body if len(body) <= state.settings.max_message_size else b"")
        return refreshed

    def shutdown(self) -> None:
        """End every open stream of this process cleanly and refuse new ones with 503 (the SDK
        reconnects elsewhere). Called on SIGTERM/SIGINT/SIGQUIT in gunicorn workers."""
        self.state().shutdown()

    def count_clients(self, timeout: float = 0.5) -> int:
        """Count the connected clients of every process on the backplane.

        Waits *timeout* seconds for the other processes to answer; a process that does not
        answer in time is not counted. Without a shared backplane this is :meth:`total_clients`.
        """
        return self.state().cluster.count_clients(timeout)

    def test_client(self, app: Flask | None = None, *, headers: Mapping[str, str] | None = None) -> RealtimeTestClient:
        """Open a realtime connection to *app* (default: the current or only app) in process,
        for the app's tests: no server, no socket. It subscribes through the real POST view and
        collects the events; see :class:`~flask_rtbroker.testing.app_client.RealtimeTestClient`.

        Raises :class:`~flask_rtbroker.testing.app_client.StreamRefused` when the GET is refused
        (e.g. by ``before_connect``), with the response.
        """
        if app is None:
            app = self._app_and_state()[0]
        elif self._states.get(app) is None:
            raise NotInitializedError("RealtimeBroker is not registered on this app; call init_app(app).")
        return RealtimeTestClient(app, headers)

    # -- PocketBase Broker vocabulary, for the current app -------------------------------------

    def clients(self) -> dict[str, DefaultClient]:
        """A copy of the connected clients of this process, keyed by id."""
        return self.subscriptions_broker.clients()

    def chunked_clients(self, chunk_size: int) -> list[list[DefaultClient]]:
        """The connected clients split into lists of at most *chunk_size*."""
        return self.subscriptions_broker.chunked_clients(chunk_size)

    def total_clients(self) -> int:
        """How many clients are connected to this process."""
        return self.subscriptions_broker.total_clients()

    def get_client(self, client_id: str) -> DefaultClient:
        """The client with *client_id*; raises :class:`ClientNotFound`."""
        return self.subscriptions_broker.get_client(client_id)

    def unregister(self, client_id: str) -> None:
        """Disconnect the client *client_id* (its stream ends); unknown ids are ignored."""
        self.subscriptions_broker.unregister(client_id)
