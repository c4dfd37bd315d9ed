"""BrokerState: everything one Flask app's broker owns, kept in ``app.extensions["rtbroker"]``."""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional, Protocol

from .backplane import Backplane, MemoryBackplane, from_url
from .broker import Broker
from .client import AUTH_KEY, IP_KEY, DefaultClient, DisconnectReason
from .runtime.ids import new_client_id
from .cluster import Cluster
from .runtime.concurrency import Runtime, select_runtime
from .fanout import Delivery, Messages, Recipient, fan_out
from .config import Settings
from .errors import ApiError, ConfigurationError
from .identity import identity_key, identity_token
from .protocol.message import Message
from .queue_memory import QueueMemory
from .runtime.server_limits import server_workers
from .session_handover import SessionHandover
from .sessions import Sessions
from .runtime.shutdown import chain_shutdown_handlers
from .stats import Counters
from .topic_rules import DENIED_KEY, TopicRule, TopicRules, rule_topic

log = logging.getLogger("flask_rtbroker")

if TYPE_CHECKING:
    from flask import Flask, Request

EXTENSION_KEY = "rtbroker"
"""Where :class:`RealtimeBroker` keeps an app's :class:`BrokerState`: ``app.extensions["rtbroker"]``."""
TOO_MANY_CLIENTS_MESSAGE = "Too many realtime connections; try again later."
TOO_MANY_FROM_IP_MESSAGE = "Too many realtime connections from your address."
SUBSCRIPTION_MEMORY_MESSAGE = "The server holds too many subscriptions; try again later."
SHUTTING_DOWN_MESSAGE = "The server is shutting down; reconnect shortly."


class Hooks(Protocol):
    """The decision callbacks an app registered (the RealtimeBroker's decorators)."""

    auth_loader_hook: Optional[Callable[["Request"], Any]]
    before_connect_hook: Optional[Callable[[DefaultClient, "Request"], None]]
    before_subscribe_hook: Optional[Callable[[DefaultClient, list[str], Any], None]]
    before_send_hook: Optional[Callable[[DefaultClient, Message], Optional[Message]]]
    topic_rules: list[TopicRule]


class PresenceHooks(Protocol):
    """What presence (:mod:`flask_rtbroker.presence`) hears of connections."""

    def subscriptions_changed(self, client: DefaultClient, added: list[str]) -> None: ...

    def disconnected(self, client: DefaultClient) -> None: ...


SubscriptionValidator = Callable[[DefaultClient, list[str]], Mapping[str, Any]]
"""``(client, submitted keys) -> {index: field error}``: rejects a POST with a 400 when not empty."""


def refuse_local_backplane_with_workers(backplane: Backplane, workers: int | None) -> None:
    """Raise :class:`ConfigurationError` when a process-local backplane would serve a server of
    several *workers* (gunicorn's ``-w``): each worker would know only its own streams, and the
    subscription POSTs that reach another worker would answer 404 "Missing or invalid client id."."""
    if isinstance(backplane, MemoryBackplane) and workers is not None and workers > 1:
        raise ConfigurationError(
            f"RTBROKER_BACKPLANE is {backplane.url!r}, which reaches this process only, and gunicorn runs "
            f"{workers} workers: a subscription POST reaching another worker than its stream's would answer "
            "404. Set RTBROKER_BACKPLANE to a shared backplane (redis://..., postgresql://...), run one "
            "worker (-w 1), or set RTBROKER_ALLOW_LOCAL_BACKPLANE=True to start anyway."
        )


class _Queues:
    """Every client whose queue the process's bound counts: the registered ones, then the
    session ghosts (see :mod:`.sessions`)."""

    def __init__(self, broker: Broker, sessions: Sessions) -> None:
        self._broker = broker
        self._sessions = sessions

    def __iter__(self) -> Iterator[DefaultClient]:
        yield from self._broker
        yield from self._sessions.clients()


class BrokerState:
    """The settings, hooks, client registry, cluster link, counters and runtime of one app.

    The runtime is chosen on first use rather than in ``init_app``, because gunicorn's gevent
    worker monkey-patches after a ``--preload``\\ ed app was imported.
    """

    def __init__(self, app: "Flask", settings: Settings, hooks: Hooks) -> None:
        self.settings = settings
        self.hooks = hooks
        self.broker = Broker(on_new_topics=lambda topics: self.cluster.listen_soon(topics))
        backplane = from_url(
            app.config["RTBROKER_BACKPLANE"], channel_prefix=settings.channel_prefix, secret=settings.backplane_secret,
            max_age=settings.backplane_max_age, accept_unstamped=settings.backplane_accept_unstamped,
        )
        if not settings.allow_local_backplane:
            refuse_local_backplane_with_workers(backplane, server_workers())
        self.cluster: Cluster = Cluster(self, backplane, app)
        self.counters = Counters()
        self.topic_rules = TopicRules(hooks.topic_rules)
        """Who may read what, asked on every delivery path (see :mod:`.topic_rules`)."""
        self.subscription_validators: list[SubscriptionValidator] = []
        """Checks a subscription POST passes after PocketBase's own (record options add one)."""
        self.presence: PresenceHooks | None = None
        """Presence, once ``broker.presence`` enabled it: told of subscription changes and disconnects."""
        self.stats_sources: list[Callable[[], dict[str, int]]] = []
        """More figures for :meth:`stats` (database capture adds its counters)."""
        self.sessions = Sessions(self.broker, settings, lambda: self.runtime, self.topic_rules.forget, self.new_client)
        """The ghosts of ended streams, until a new connection claims them (see :mod:`.sessions`)."""
        self.stats_sources.append(self.sessions.stats)
        self.session_handover = SessionHandover(self, self.cluster)
        """Claims of ghosts held by other processes (see :mod:`.session_handover`)."""
        self._clients_per_ip: Counter[str] = Counter()
        self._streams = 0
        self._runtime: Runtime | None = None
        self._queue_memory: QueueMemory[DefaultClient] | None = None
        self._lock = threading.Lock()
        self._shutdown_pid: int | None = None
        self._shutdown_tried_pid: int | None = None
        self.shutting_down = False
        self.handing_over = False
        """Shutting down with a backplane: ended streams stay claimable while the process waits
        (see :meth:`wait_for_claim`)."""
        self._sweeper_pid: int | None = None
        self._closed = False

    @property
    def runtime(self) -> Runtime:
        """The gevent or threading runtime, chosen on first access."""
        if self._runtime is None:
            with self._lock:
                if self._runtime is None:
                    self._runtime = select_runtime(self.settings.concurrency, self.settings.pool_size)
        return self._runtime

    @property
    def queue_memory(self) -> QueueMemory[DefaultClient]:
        """What every client queue of the process holds, bounded by ``RTBROKER_QUEUE_MEMORY``."""
        if self._queue_memory is None:
            self._queue_memory = QueueMemory(
                self.settings.queue_memory,
                _Queues(self.broker, self.sessions),
                lambda client: client.discard(DisconnectReason.SLOW),
                locked=self.runtime.preemptive,
            )
        return self._queue_memory

    # -- streams -------------------------------------------------------------------------------

    def new_client(self) -> DefaultClient:
        """Create an unregistered client with this app's queue bounds and runtime waker; its id
        starts with this process's route, so other processes know where it lives."""
        return DefaultClient(
            new_client_id(self.cluster.route),
            queue_size=self.settings.client_queue_size,
            max_queue_bytes=self.settings.client_queue_bytes,
            waker=self.runtime.waker(),
            queue_memory=self.queue_memory,
        )

    def start_sweeper(self) -> None:
        """Start (once per process) the greenlet that wakes streams at their deadlines."""
        if self._sweeper_pid != os.getpid():
            self._sweeper_pid = os.getpid()
            self.runtime.spawn(self._sweep_deadlines)

    def sweep_interval(self) -> float:
        """How often the sweeper looks: at most 1 s, finer for short timeouts and heartbeats."""
        settings = self.settings
        candidates = [1.0, settings.idle_timeout / 20, settings.max_lifetime / 20]
        if settings.heartbeat:
            candidates.append(settings.heartbeat / 5)
        return max(0.01, min(candidates))

    def _sweep_deadlines(self) -> None:
        interval, pid = self.sweep_interval(), os.getpid()
        while not self._closed and os.getpid() == pid:
            self.runtime.sleep(interval)
            now = time.monotonic()
            for client in self.broker.clients().values():
                if client.deadline <= now:
                    client.wake()

    def admit(self, ip: str) -> None:
        """Reserve a stream slot for *ip*, or raise 503/429 when one more would pass a limit.

        Check and reservation are one step under a lock, so simultaneous connects cannot pass a
        limit together. Every reservation is given back by :meth:`release`.
        """
        settings = self.settings
        if self.shutting_down:
            raise ApiError(503, SHUTTING_DOWN_MESSAGE)
        if self.broker.subscription_bytes >= settings.subscription_memory:
            raise ApiError(503, SUBSCRIPTION_MEMORY_MESSAGE)
        with self._lock:
            if settings.max_clients and self._streams >= settings.max_clients:
                raise ApiError(503, TOO_MANY_CLIENTS_MESSAGE)
            if settings.max_clients_per_ip and self._clients_per_ip[ip] >= settings.max_clients_per_ip:
                raise ApiError(429, TOO_MANY_FROM_IP_MESSAGE)
            self._streams += 1
            self._clients_per_ip[ip] += 1

    def wait_for_claim(self, client: DefaultClient) -> None:
        """While the process shuts down handing over, hold the request of a stream whose client
        became a ghost until another process claims it or its window ends: the server waits for
        open requests (up to its graceful timeout) before the process exits."""
        if not self.handing_over:
            return
        deadline = time.monotonic() + self.settings.resume_window
        while self.sessions.ghost(client.id) is not None and time.monotonic() < deadline:
            self.runtime.sleep(0.05)

    def release(self, ip: str) -> None:
        """Give back a slot reserved by :meth:`admit`."""
        with self._lock:
            self._streams -= 1
            self._clients_per_ip[ip] -= 1
            if self._clients_per_ip[ip] <= 0:
                del self._clients_per_ip[ip]

    def subscription_memory_full(self, adding: int = 0) -> bool:
        """True when *adding* more subscription bytes would pass ``RTBROKER_SUBSCRIPTION_MEMORY``."""
        return self.broker.subscription_bytes + adding > self.settings.subscription_memory

    def connected(self, client: DefaultClient) -> None:
        """Register a stream's client (before its PB_CONNECT is written)."""
        self.broker.register(client)
        self.counters.connects += 1
        if self.settings.graceful_shutdown and self._shutdown_tried_pid != os.getpid():
            self._shutdown_tried_pid = os.getpid()
            self.install_shutdown_handlers()

    def disconnected(self, client: DefaultClient, reason: DisconnectReason) -> None:
        """Keep a stream's client as a session ghost (see :mod:`.sessions`) or discard and
        unregister it; count why it ended (its slot is released apart)."""
        if not self._closed and (self.handing_over or not self.shutting_down) and self.sessions.keep(client, reason):
            pass  # still indexed and queueing, out of the registry
        else:
            client.discard(reason)  # the first reason wins
            self.broker.unregister(client.id)
            client.clear_queue()  # nobody will write it now; the process's count forgets it
        self.topic_rules.forget(client)
        if self.presence is not None:
            self.presence.disconnected(client)
        counters = self.counters
        counters.disconnects[reason] += 1
        counters.dropped += client.dropped
        if client.max_batch > counters.queue_high_water:
            counters.queue_high_water = client.max_batch

    def lifetime_for_new_stream(self) -> float:
        """Seconds a stream opened now may live: the max lifetime less a random jitter."""
        return self.settings.max_lifetime * (1 - random.uniform(0, self.settings.lifetime_jitter))

    def deliver(
        self, topic: str, messages: Messages, recipient: Recipient | None = None, *, concurrent: bool = True
    ) -> Delivery:
        """Deliver to this process's subscribers of *topic* (those *recipient* selects).

        The one local delivery routine (:func:`~flask_rtbroker.fanout.fan_out`): of ``notify``,
        whether it was made here or by another process, and of record events (a message per
        client, ``concurrent=False``: their per-event caches are not shared between threads).
        What fails for one delivery (building its message, the ``before_send`` hook) skips that
        delivery only; every other one and the counters still happen. The caller surfaces the
        first error: ``notify`` re-raises it, deliveries for other processes and record events
        log it. The topic rules covering *topic* leave out who may not read it.
        """
        subscribers = self.broker.subscribers(topic)
        if recipient is not None and isinstance(messages, Message) and len(self.sessions):
            # targeted: what reaches a ghost waits for an explicit claim
            subscribers = self.sessions.divert_targeted(
                {client: keys for client, keys in subscribers.items() if recipient(client)}, messages)
            recipient = None
        if self.topic_rules and subscribers:
            if recipient is not None:  # select first: rules decide only for the recipients
                subscribers = {client: keys for client, keys in subscribers.items() if recipient(client)}
                recipient = None
            subscribers = self.topic_rules.readable(topic, subscribers)
        delivery = fan_out(
            self.runtime,
            subscribers,
            messages,
            chunk_size=self.settings.chunk_size if concurrent else sys.maxsize,
            recipient=recipient,
            before_send=self.hooks.before_send_hook,
        )
        if isinstance(messages, Message):
            self.counters.notifies += 1  # one message for every subscriber: a notify
        self.counters.deliveries += delivery.queued
        return delivery

    def send_local(self, client: DefaultClient, message: Message, *, judged: bool = True) -> bool:
        """Deliver *message* to one local client through the topic rules (its name is the topic;
        ``judged=False`` skips them for protocol events such as ``@oauth2``) and the
        ``before_send`` hook; return whether it was queued. A hook error propagates (nothing
        was queued)."""
        if judged and self.topic_rules and not self.topic_rules.allows(client, message.name, keep=False):
            return False
        hook = self.hooks.before_send_hook
        delivered = hook(client, message) if hook is not None else message
        if delivered is not None and client.send(delivered):
            self.counters.deliveries += 1
            return True
        return False

    # -- whole process -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Clients, subscriptions, topics and the counters of this process."""
        clients = list(self.broker.clients().values())
        figures = self.counters.as_dict()
        figures["queue_high_water"] = max([figures["queue_high_water"], *(c.max_batch for c in clients)])
        return {
            "clients": len(clients),
            "subscriptions": sum(len(c.subscriptions()) for c in clients),
            "topics": self.broker.total_topics(),
            **figures,
            "backplane_received_total": self.cluster.backplane.received,
            "backplane_channels": len(self.cluster.backplane.channels()) if self.cluster.active else 0,
            "backplane_rejected_total": self.cluster.backplane.rejected,
            **{name: value for source in self.stats_sources for name, value in source().items()},
            "backplane_replayed_total": self.cluster.backplane.replayed,
        }

    def _clients_of(self, token: str | None, key: Any) -> Iterator[DefaultClient]:
        """The local clients whose identity matches *token* (see :func:`identity_token`) when
        there is one, else *key*."""
        for client in self.broker:
            auth = client.get(AUTH_KEY)
            if auth is None:
                continue
            if (identity_token(auth) == token) if token is not None else (identity_key(auth) == key):
                yield client

    def clear_auth(self, token: str | None, key: Any, disconnect: bool) -> int:
        """Downgrade to guest (or disconnect) every local client whose identity matches; the
        ``before_subscribe`` hook and the topic rules decide again for it."""
        cleared = 0
        for client in self._clients_of(token, key):
            cleared += 1
            if disconnect:
                client.discard(DisconnectReason.REVOKED)
            else:
                denied_before = self.denied_keys(client)
                client.unset(AUTH_KEY)
                self.recheck_subscriptions(client)
                self.auth_changed(client, denied_before)
                if self.presence is not None:
                    self.presence.subscriptions_changed(client, [])  # now a guest member
        return cleared

    def refresh_auth(self, identity: Any, token: str | None, key: Any) -> int:
        """Give every local client whose identity matches *identity* (None: keep the auth it
        holds) and let the ``before_subscribe`` hook and the topic rules decide again for it."""
        refreshed = 0
        for client in self._clients_of(token, key):
            refreshed += 1
            denied_before = self.denied_keys(client)
            if identity is not None:
                client.set(AUTH_KEY, identity)
            refused = self.recheck_subscriptions(client)
            self.auth_changed(client, denied_before)
            if refused and self.presence is not None:
                self.presence.subscriptions_changed(client, [])  # it left the rooms refused now
        return refreshed

    def denied_keys(self, client: DefaultClient) -> frozenset[str]:
        """The keys of *client* the topic rules are known to deny (only tracked, and needed,
        with ``RTBROKER_TOPIC_DENIED_EVENT``)."""
        if not (self.topic_rules and self.settings.topic_denied_event):
            return frozenset()
        return self.topic_rules.denied_keys(client)

    def auth_changed(self, client: DefaultClient, denied_before: frozenset[str] = frozenset()) -> None:
        """Let the topic rules decide again for *client* at its next delivery; with
        ``RTBROKER_TOPIC_DENIED_EVENT``, decide now and queue one ``{"denied": topic}`` event
        on each key denied now and not in *denied_before*."""
        rules = self.topic_rules
        if not rules:
            return
        rules.forget(client)
        if self.settings.topic_denied_event:
            for key in client.subscriptions():
                if not rules.allows(client, key) and key not in denied_before:  # decided (and kept) for every key
                    client.send(Message(key, {DENIED_KEY: rule_topic(key)}))

    def recheck_subscriptions(self, client: DefaultClient) -> list[str]:
        """Ask ``before_subscribe`` again, key by key, about what *client* holds under its current
        auth; unsubscribe and return the keys it refuses now (a hook that fails refuses).

        A connection downgraded to guest must not keep what was allowed to the user it was.
        """
        hook = self.hooks.before_subscribe_hook
        if hook is None:
            return []
        auth = client.get(AUTH_KEY)
        refused = []
        for key in client.subscriptions():
            try:
                hook(client, [key], auth)
            except ApiError:
                refused.append(key)
            except Exception:  # noqa: BLE001 - fail closed: a hook that cannot decide refuses
                log.exception("before_subscribe failed while re-checking a subscription; dropping it")
                refused.append(key)
        if refused:  # unsubscribe() without keys would drop everything
            client.unsubscribe(*refused)
        return refused

    def shutdown(self) -> None:
        """End every open stream (reason ``shutdown``) and refuse new ones (503).

        With a backplane (and ``RTBROKER_RESUME_WINDOW``), their clients stay subscribed as
        session ghosts that other processes claim (:meth:`wait_for_claim` keeps the process up
        meanwhile). What the streams had queued is written first. New streams are refused because the
        server may still accept connections for a moment, and the SDK reconnects within 200 ms.
        """
        self.shutting_down = True
        if self.cluster.active and self.settings.resume_window:
            self.handing_over = True  # its streams become ghosts the new processes claim
            for client in self.broker:
                client.ending = DisconnectReason.SHUTDOWN
                client.wake()
            return
        self.sessions.drop_all()
        for client in self.broker:
            client.discard(DisconnectReason.SHUTDOWN)

    def install_shutdown_handlers(self) -> None:
        """Chain :meth:`shutdown` to the server's SIGTERM/SIGINT/SIGQUIT handlers, once per process.

        Tried at ``init_app`` (a gunicorn worker imports the app in its main thread, after
        installing its handlers) and again on the first stream (covers ``--preload``, where the
        app was imported by the master; possible only where requests run in the main thread).
        """
        if self._shutdown_pid == os.getpid():
            return
        if chain_shutdown_handlers(self.shutdown, lambda task: self.runtime.spawn(task)):
            self._shutdown_pid = os.getpid()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def close(self) -> None:
        """Unregister every client (their streams end), stop the backplane, release the pool."""
        self._closed = True
        self.sessions.drop_all()
        for client_id in list(self.broker.clients()):
            self.broker.unregister(client_id)
        self.cluster.backplane.close()
        if self._runtime is not None:
            self._runtime.close()
