"""Redis pub/sub backplane: one subscriber connection per process, never one per client.

Needs the ``redis`` package: ``pip install 'flask-rtbroker[redis]'``. Works under gevent
(monkey-patched sockets) and threads. Delivery is at-most-once: payloads published while a
process is disconnected from Redis are not replayed to it.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

from ..runtime.concurrency import wait_readable
from ..errors import ConfigurationError
from .base import ALL, READY, Backplane, inbox
from .pipelined import PipelinedPublisher

IDLE_WAIT = 1.0
"""Seconds the listener waits for the socket before it checks for a sweep (and health); a busy
listener checks before each reply it reads."""

DEFAULT_CHANNEL_PREFIX = "flask_rtbroker"

PUBLISH_TIMEOUT = 10.0
"""Seconds a publish waits for the pipeline it is in (the socket's own timeout is 5)."""


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:
        raise ConfigurationError(
            "RTBROKER_BACKPLANE is a redis:// URL but the redis package is not installed; "
            "install the extra: pip install 'flask-rtbroker[redis]'"
        ) from None
    return redis


def redacted(url: str) -> str:
    """*url* without its password (``redis://user:***@host``), for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def _round_trip(connection: Any, commands: list[tuple[str, str, bytes]]) -> list[int]:
    """Send *commands* (PUBLISHes) on a redis-py connection in one write; read every reply."""
    connection.send_packed_command(connection.pack_commands(commands))
    return [int(connection.read_response()) for _ in commands]


class RedisBackplane(Backplane):
    """Redis pub/sub with a channel per route, topic and collection: ``<prefix>:<database>:<channel>``.

    Redis pub/sub ignores database numbers (a channel is server-wide), so the number from the
    URL goes into the channel names: apps on ``/0`` and ``/1`` of one server never meet. One
    subscriber connection per process; requests add channels on it directly (under a lock the
    listener also takes to read), and the listener waits for the socket outside the lock.
    Publishes made while another is under way go together in the next pipeline.
    """

    routes = True

    def __init__(self, url: str, *, channel_prefix: str = DEFAULT_CHANNEL_PREFIX, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        redis = _import_redis()
        self.url = redacted(url)
        self._redis = redis.Redis.from_url(
            url,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            socket_keepalive=True,
            health_check_interval=15,
        )
        self.channel = f"{channel_prefix}:{self._redis.connection_pool.connection_kwargs.get('db', 0)}"
        """The namespace of this app's channels on the Redis server."""
        self._pubsub: Any = None
        self._publishing: tuple[int, Any] | None = None
        """(pid, connection): the publishing connection of this process, made on first use."""
        self._connection_lost_error: type[Exception] = redis.ConnectionError

    def _make_locks(self) -> None:
        super()._make_locks()
        self._pubsub_lock = threading.Lock()
        self._publisher = PipelinedPublisher(self._publish_batch, self._event, PUBLISH_TIMEOUT)

    def physical(self, channel: str) -> str:
        """The Redis channel of the logical *channel*."""
        return f"{self.channel}:{channel}"

    def publish_to(self, channel: str, payload: bytes) -> int:
        return self._publisher.publish(self.physical(channel), payload)

    def _publish_batch(self, batch: Sequence[tuple[str, bytes]]) -> list[int]:
        """PUBLISH every pair in one round trip on this process's own connection (the publisher
        sends one batch at a time), without the pool's per-command checks. A failure drops the
        connection; a lost connection (Redis restarted, an idle connection closed) is tried once
        more on a new one, any other failure (a timeout included) goes to the batch's callers."""
        commands = [("PUBLISH", channel, payload) for channel, payload in batch]
        connection = self._publishing_connection()
        try:
            try:
                return _round_trip(connection, commands)
            except self._connection_lost_error:
                connection.disconnect()
                return _round_trip(connection, commands)  # sending connects again
        except BaseException:
            connection.disconnect()
            raise

    def _publishing_connection(self) -> Any:
        pid = os.getpid()
        if self._publishing is None or self._publishing[0] != pid:  # none yet, or the parent's before a fork
            pool = self._redis.connection_pool
            self._publishing = (pid, pool.connection_class(**pool.connection_kwargs))
        return self._publishing[1]

    def close(self) -> None:
        super().close()
        publishing, self._publishing = self._publishing, None
        if publishing is not None and publishing[0] == os.getpid():
            publishing[1].disconnect()

    def subscribe_now(self, channels: list[str]) -> None:
        with self._pubsub_lock:
            if self._pubsub is None:
                raise ConnectionError("the backplane listener is not connected")
            self._pubsub.subscribe(*map(self.physical, channels))

    def unsubscribe_now(self, channels: list[str]) -> None:
        with self._pubsub_lock:
            if self._pubsub is not None:
                self._pubsub.unsubscribe(*map(self.physical, channels))

    def listen(self) -> Iterator[bytes]:
        assert self._runtime is not None, "start() sets the runtime"
        pubsub = self._redis.pubsub()
        namespace = len(self.channel) + 1
        permanent = {ALL, inbox(self.route)}
        ready = False
        try:
            with self._pubsub_lock:
                pubsub.subscribe(*map(self.physical, sorted(self.channels())))
                self._pubsub = pubsub
            while not self.closed:
                self.sweep()  # due on a timer, or promptly past MAX_UNSWEPT_CHANNELS: busy or idle
                with self._pubsub_lock:
                    message = pubsub.get_message(timeout=0.0)
                if message is None:
                    wait_readable(self._runtime, pubsub.connection._sock.fileno(), IDLE_WAIT)
                    continue
                kind = message.get("type")
                if kind == "message":
                    yield message["data"]
                elif kind == "subscribe":
                    self.confirmed(message["channel"].decode("utf-8", "replace")[namespace:])
                    if not ready and all(self.listening_to(channel) for channel in permanent):
                        ready = True
                        yield READY
        finally:
            with self._pubsub_lock:
                self._pubsub = None
            pubsub.close()
