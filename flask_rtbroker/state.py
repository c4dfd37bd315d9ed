"""BrokerState: everything one Flask app's broker owns, kept in ``app.extensions["rtbroker"]``."""

from __future__ import annotations

import threading

from .broker import Broker
from .client import DefaultClient
from .concurrency import Runtime, select_runtime
from .config import Settings


class BrokerState:
    """The settings, the client registry and the (lazily chosen) concurrency runtime of one app.

    The runtime is chosen on first use rather than in ``init_app``, because gunicorn's gevent
    worker monkey-patches after a ``--preload``\\ ed app was imported.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker = Broker()
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

    def close(self) -> None:
        """Unregister every client (their streams end) and release the runtime's pool."""
        for client_id in list(self.broker.clients()):
            self.broker.unregister(client_id)
        if self._runtime is not None:
            self._runtime.close()
