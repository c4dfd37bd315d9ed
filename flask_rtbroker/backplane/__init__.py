"""Backplanes carry notifies, direct sends and forwarded POSTs between processes and hosts.

:func:`from_url` turns ``RTBROKER_BACKPLANE`` into a backplane: ``memory://`` (the default,
this process only), ``memory://NAME`` (a bus shared inside one process, for tests),
``redis://host:port/db``, ``rediss://...`` (TLS), ``unix:///path/to/redis.sock?db=0`` (a Redis
socket), ``redis+cluster://host:port[,host:port...]`` (a Redis 7+ Cluster's sharded pub/sub; also
``rediss+cluster://``) or ``postgresql://user:password@host:port/db`` (also ``postgres://``:
PostgreSQL's LISTEN/NOTIFY). A :class:`Backplane` instance is used as is.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigurationError
from .base import DEFAULT_MAX_AGE, READY, STATE_DOWN, STATE_UP, Backplane
from .envelope import Envelope
from .memory import MemoryBackplane

__all__ = ["READY", "STATE_DOWN", "STATE_UP", "Backplane", "Envelope", "MemoryBackplane", "from_url"]


def from_url(
    value: Any,
    *,
    write_only: bool = False,
    channel_prefix: str | None = None,
    secret: bytes | None = None,
    max_age: float = DEFAULT_MAX_AGE,
    accept_unstamped: bool = False,
) -> Backplane:
    """Return the backplane named by *value* (a URL or a Backplane instance).

    *channel_prefix* namespaces a Redis channel (see :class:`~.redis.RedisBackplane` and
    :class:`~.redis_cluster.RedisClusterBackplane`) or names
    the PostgreSQL NOTIFY channel (see :class:`~.postgres.PostgresBackplane`); *secret* signs and
    checks every envelope (see :mod:`.signing`); *max_age* and *accept_unstamped* are the replay
checks' (see :mod:`.freshness`). An instance keeps its own settings,
    so a *secret* must match the one it was built with.
    """
    if isinstance(value, Backplane):
        if secret is not None and value.secret != secret:
            raise ConfigurationError("RTBROKER_BACKPLANE is a Backplane instance: pass it secret= itself")
        return value
    if not isinstance(value, str):
        raise ConfigurationError(f"RTBROKER_BACKPLANE must be a URL or a Backplane, not {value!r}")
    common: dict[str, Any] = {
        "write_only": write_only, "secret": secret, "max_age": max_age, "accept_unstamped": accept_unstamped,
    }
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise ConfigurationError(
            f"RTBROKER_BACKPLANE {value!r} is not a URL "
            "(memory://, redis://, rediss://, unix://, redis+cluster://, rediss+cluster://, postgresql://, postgres://)"
        )
    if scheme == "memory":
        return MemoryBackplane(rest or None, **common)
    if scheme in ("redis", "rediss", "unix"):
        from .redis import DEFAULT_CHANNEL_PREFIX, RedisBackplane

        return RedisBackplane(
            value, **common, channel_prefix=channel_prefix or DEFAULT_CHANNEL_PREFIX
        )
    if scheme in ("redis+cluster", "rediss+cluster"):
        from .redis_cluster import DEFAULT_CHANNEL_PREFIX as CLUSTER_CHANNEL_PREFIX, RedisClusterBackplane

        return RedisClusterBackplane(
            value, **common, channel_prefix=channel_prefix or CLUSTER_CHANNEL_PREFIX
        )
    if scheme in ("postgresql", "postgres"):
        from .postgres import DEFAULT_CHANNEL_PREFIX as PG_CHANNEL_PREFIX, PostgresBackplane

        return PostgresBackplane(
            value, **common, channel_prefix=channel_prefix or PG_CHANNEL_PREFIX
        )
    raise ConfigurationError(
        f"RTBROKER_BACKPLANE scheme {scheme!r} is not supported; use memory://, redis://, rediss://, unix://, "
        "redis+cluster://, rediss+cluster://, postgresql:// or postgres://"
    )
