"""BrokerState: everything one Flask app's broker owns, kept in ``app.extensions["rtbroker"]``."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

from .backplane import from_url
from .broker import Broker
from .client import DefaultClient
from .cluster import Cluster
from .concurrency import Runtime, select_runtime
from .config import Settings
from .message import Message

if TYPE_CHECKING:
    from flask import Flask, Request


class Hooks(Protocol):
    """The decision callbacks an app registered (the RealtimeBroker's decorators)."""

    auth_loader_hook: Optional[Callable[["Request"], Any]]
    before_connect_hook: Optional[Callable[[DefaultClient, "Request"], None]]
    before_subscribe_hook: Optional[Callable[[DefaultClient, list[str], Any], None]]
    before_send_hook: Optional[Callable[[DefaultClient, Message], Optional[Message]]]


class BrokerState:
    """The settings, hooks, client registry, cluster link and (lazily chosen) runtime of one app.

    The runtime is chosen on first use rather than in ``init_app``, because gunicorn's gevent
    worker monkey-patches after a ``--preload``\\ ed app was imported.
    """

    def __init__(self, app: "Flask", settings: Settings, hooks: Hooks) -> None:
        self.settings = settings
        self.hooks = hooks
        self.broker = Broker()
        self.cluster = Cluster(self, from_url(app.config["RTBROKER_BACKPLANE"]), app)
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()

    @property
    def runtime(self) -> Runtime:
        """The gevent or threading runtime, chosen on first access."""
        if self._runtime is None:
            with self._lock:
                if self._runtime is None:
                    self._runtime = select_runtime(self.settings.concurrency, self.settings.pool_size)
        return self._runtime

    def new_client(self) -> DefaultClient:
        """Create an unregistered client with this app's queue bound and runtime waker."""
        return DefaultClient(queue_size=self.settings.client_queue_size, waker=self.runtime.waker())

    def lifetime_for_new_stream(self) -> float:
        """Seconds a stream opened now may live."""
        return self.settings.max_lifetime

    def send_local(self, client: DefaultClient, message: Message) -> None:
        """Deliver *message* to one local client through the ``before_send`` hook."""
        hook = self.hooks.before_send_hook
        delivered = hook(client, message) if hook is not None else message
        if delivered is not None:
            client.send(delivered)

    def close(self) -> None:
        """Unregister every client (their streams end), stop the backplane, release the pool."""
        for client_id in list(self.broker.clients()):
            self.broker.unregister(client_id)
        self.cluster.backplane.close()
        if self._runtime is not None:
            self._runtime.close()
