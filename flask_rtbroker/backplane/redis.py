"""Redis pub/sub backplane: one subscriber connection per process, never one per client.

Needs the ``redis`` package: ``pip install 'flask-rtbroker[redis]'``. Works under gevent
(monkey-patched sockets) and threads. Delivery is at-most-once: payloads published while a
process is disconnected from Redis are not replayed to it.
"""

from __future__ import annotations

from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigurationError
from .base import READY, Backplane

DEFAULT_CHANNEL_PREFIX = "flask_rtbroker"


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


class RedisBackplane(Backplane):
    """Publishes to and listens on one Redis pub/sub channel, ``<channel_prefix>:<database>``.

    Redis pub/sub ignores database numbers (a channel is server-wide), so the number from the
    URL goes into the channel name: apps on ``/0`` and ``/1`` of one server never meet.
    """

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

    def publish(self, payload: bytes) -> None:
        self._redis.publish(self.channel, payload)

    def listen(self) -> Iterator[bytes]:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.channel)
            yield READY
            while not self.closed:
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message":
                    yield message["data"]
        finally:
            pubsub.close()
