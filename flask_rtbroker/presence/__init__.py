"""Presence: who is subscribed to a topic, across every process and host (``broker.presence``).

:mod:`.tracker` counts connections as members and emits ``join``/``leave``/``sync`` on
``@presence/<topic>``; :mod:`.member` says who a member is and what it shows; :mod:`.store`
is the interface and the one-process store, :mod:`.redis_store` the shared one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..backplane import MemoryBackplane
from ..errors import ConfigurationError
from .member import GUEST_SESSION_KEY, InfoFunction, default_info
from .store import MemoryPresenceStore, PresenceStore
from .tracker import Presence, PresenceRule

if TYPE_CHECKING:
    from flask import Flask

    from ..state import BrokerState

__all__ = ["GUEST_SESSION_KEY", "InfoFunction", "Presence", "PresenceRule", "default_info", "enabled_presence",
           "presence_of"]


REDIS_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def store_factory(app: "Flask", state: "BrokerState") -> Callable[[str], PresenceStore]:
    """How each process makes its store: in memory on the memory backplane, on the Redis server
    (or Redis Cluster) of a Redis backplane; other backplanes have none (ConfigurationError)."""
    backplane = state.cluster.backplane
    if isinstance(backplane, MemoryBackplane):
        memory = MemoryPresenceStore()
        return lambda process: memory
    value = app.config.get("RTBROKER_BACKPLANE")
    url = value if isinstance(value, str) else ""
    scheme = url.partition("://")[0]
    if scheme not in REDIS_SCHEMES + CLUSTER_SCHEMES:
        raise ConfigurationError(
            f"presence needs the memory or a Redis backplane (redis://, rediss://, unix://, redis+cluster://), "
            f"not {backplane.url!r}"
        )
    try:
        import redis
    except ImportError:
        raise ConfigurationError("presence on a Redis backplane needs the redis package (the redis extra)") from None
    from .redis_store import RedisPresenceStore

    settings = state.settings

    def make(process: str) -> PresenceStore:
        if scheme in CLUSTER_SCHEMES:
            client = cluster_client(redis, url)
        else:
            client = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0, socket_keepalive=True)
        return RedisPresenceStore(client, settings.channel_prefix, process, settings.presence_ttl)

    return make


def cluster_client(redis: Any, url: str) -> Any:
    """A redis-py ``RedisCluster`` for a ``redis+cluster://host:port[,host:port...]`` URL."""
    from ..backplane.redis_cluster import parse_url

    seeds, kwargs = parse_url(url, redis)
    for name in ("protocol", "health_check_interval", "retry", "connection_class"):
        kwargs.pop(name, None)
    nodes = [redis.cluster.ClusterNode(*seed.rsplit(":", 1)) for seed in seeds]
    return redis.cluster.RedisCluster(startup_nodes=nodes, **{**kwargs, "socket_timeout": 2.0})


def presence_of(app: "Flask", state: "BrokerState") -> Presence:
    """The app's :class:`Presence`, made and hooked into *state* on first use."""
    if state.presence is None:
        state.presence = Presence(app, state, store_factory(app, state))
    presence = state.presence
    assert isinstance(presence, Presence)
    return presence


def enabled_presence(state: "BrokerState", topic: str) -> Presence | None:
    """The app's :class:`Presence` when a pattern covers *topic*, else None (nothing is made)."""
    presence = state.presence
    if isinstance(presence, Presence) and presence.rule_for(topic) is not None:
        return presence
    return None
