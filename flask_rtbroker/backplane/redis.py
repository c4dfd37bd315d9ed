"""Redis pub/sub backplane: one subscriber connection per process, never one per client.

Needs the ``redis`` package: ``pip install 'flask-rtbroker[redis]'``. Works under gevent
(monkey-patched sockets) and threads. Delivery is at-most-once: payloads published while a
process is disconnected from Redis are not replayed to it.
"""

from __future__ import annotations

from typing import Any, Iterator

from ..errors import ConfigurationError
from .base import READY, Backplane

DEFAULT_CHANNEL = "flask_rtbroker"


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:
        raise ConfigurationError(
            "RTBROKER_BACKPLANE is a redis:// URL but the redis package is not installed; "
            "install the extra: pip install 'flask-rtbroker[redis]'"
        ) from None
    return redis


class RedisBackplane(Backplane):
    """Publishes to and listens on one Redis pub/sub channel."""

    def __init__(self, url: str, channel: str = DEFAULT_CHANNEL, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        redis = _import_redis()
        self.url = url
        self.channel = channel
        self._redis = redis.Redis.from_url(
            url,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            socket_keepalive=True,
            health_check_interval=15,
        )

    def publish(self, payload: bytes) -> None:
        self._redis.publish(self.channel, payload)

    def listen(self) -> Iterator[bytes]:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.channel)
            yield READY
            while not self._closed:
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message":
                    yield message["data"]
        finally:
            pubsub.close()
