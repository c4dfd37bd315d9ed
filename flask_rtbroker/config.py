"""Every ``RTBROKER_*`` setting with its default, and :class:`Settings`, their checked form.

``init_app`` copies missing keys into ``app.config`` (``setdefault``), then reads them once into
a frozen :class:`Settings`. :func:`load_env` fills ``app.config`` from environment variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Mapping, MutableMapping

from . import encoding
from .errors import ConfigurationError

DEFAULTS: dict[str, Any] = {
    # Where the blueprint answers: GET = SSE stream, POST = set subscriptions.
    "RTBROKER_URL_PREFIX": "/api/realtime",
    # Seconds without a delivered message before a stream is closed (PocketBase: 300).
    "RTBROKER_IDLE_TIMEOUT": 300.0,
    # Seconds after which a stream is closed however busy it is (PocketBase: 1800).
    "RTBROKER_MAX_LIFETIME": 1800.0,
    # Seconds between ":" comment lines on a silent stream, 0 = never. Keeps proxies with a
    # 60 s read timeout (nginx's default) from cutting quiet streams; does not reset the idle timer.
    "RTBROKER_HEARTBEAT": 25.0,
    # Recipients per fan-out chunk; chunks run concurrently on the pool.
    "RTBROKER_CHUNK_SIZE": 300,
    # Greenlets / threads available to run fan-out chunks.
    "RTBROKER_POOL_SIZE": 16,
    # Messages a client may have queued; one more discards it as a slow consumer.
    "RTBROKER_CLIENT_QUEUE_SIZE": 1000,
    # "auto" (gevent when monkey-patched or inside a greenlet, else threads), "gevent", "threading".
    "RTBROKER_CONCURRENCY": "auto",
    # Threaded servers: seconds between checks of a silent stream's socket for a disconnect.
    "RTBROKER_DISCONNECT_POLL": 0.5,
    # Request headers holding the real client IP behind a trusted proxy, e.g. ["X-Real-IP"].
    # Empty = use the socket peer address (X-Forwarded-For is never trusted by default).
    "RTBROKER_TRUSTED_PROXY_HEADERS": [],
    # With X-Forwarded-For: take the leftmost (original client) address instead of the rightmost.
    "RTBROKER_USE_LEFTMOST_IP": False,
    # CORS: "*" (PocketBase's default), a list of allowed origins, or None to send no CORS headers.
    "RTBROKER_CORS_ORIGINS": "*",
    # Largest accepted subscription POST body in bytes (larger: 413).
    "RTBROKER_MAX_BODY_SIZE": 32 * 1024 * 1024,
    # Largest encoded message data in bytes accepted by notify/send (larger: MessageTooLarge).
    "RTBROKER_MAX_MESSAGE_SIZE": 4 * 1024 * 1024,
    # Where processes meet: "memory://" (this process only), "redis://host:port/db", "rediss://...",
    # or a Backplane instance.
    "RTBROKER_BACKPLANE": "memory://",
    # Seconds a POST for a client held by another process waits for that process's answer (then 404).
    "RTBROKER_FORWARD_TIMEOUT": 2.0,
}


@dataclass(frozen=True)
class Settings:
    """The checked values of the ``RTBROKER_*`` keys of one app."""

    url_prefix: str
    idle_timeout: float
    max_lifetime: float
    heartbeat: float
    chunk_size: int
    pool_size: int
    client_queue_size: int
    concurrency: str
    disconnect_poll: float
    trusted_proxy_headers: tuple[str, ...]
    use_leftmost_ip: bool
    cors_origins: str | tuple[str, ...] | None
    max_body_size: int
    max_message_size: int
    forward_timeout: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Settings":
        """Read and check every key; raise :class:`ConfigurationError` naming a bad one."""
        values: dict[str, Any] = {}
        for f in fields(cls):  # RTBROKER_BACKPLANE is read by the backplane factory
            key = "RTBROKER_" + f.name.upper()
            values[f.name] = _coerce(key, config.get(key, DEFAULTS[key]))
        return cls(**values)


def _positive_number(key: str, value: Any, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{key} must be a number of seconds, not {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigurationError(f"{key} must be {'>= 0' if allow_zero else '> 0'}, not {value!r}")
    return float(value)


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{key} must be a whole number >= 1, not {value!r}")
    return value


def _coerce(key: str, value: Any) -> Any:
    if key == "RTBROKER_URL_PREFIX":
        if not isinstance(value, str) or not value.startswith("/"):
            raise ConfigurationError(f"{key} must be a path starting with '/', not {value!r}")
        return value.rstrip("/") or "/"
    if key in ("RTBROKER_IDLE_TIMEOUT", "RTBROKER_MAX_LIFETIME", "RTBROKER_DISCONNECT_POLL", "RTBROKER_FORWARD_TIMEOUT"):
        return _positive_number(key, value)
    if key == "RTBROKER_HEARTBEAT":
        return _positive_number(key, value or 0, allow_zero=True)
    if key in (
        "RTBROKER_CHUNK_SIZE",
        "RTBROKER_POOL_SIZE",
        "RTBROKER_CLIENT_QUEUE_SIZE",
        "RTBROKER_MAX_BODY_SIZE",
        "RTBROKER_MAX_MESSAGE_SIZE",
    ):
        return _positive_int(key, value)
    if key == "RTBROKER_CONCURRENCY":
        if value not in ("auto", "gevent", "threading"):
            raise ConfigurationError(f"{key} must be 'auto', 'gevent' or 'threading', not {value!r}")
        return value
    if key == "RTBROKER_TRUSTED_PROXY_HEADERS":
        if isinstance(value, str) or not all(isinstance(h, str) for h in value):
            raise ConfigurationError(f"{key} must be a list of header names, not {value!r}")
        return tuple(value)
    if key == "RTBROKER_USE_LEFTMOST_IP":
        return bool(value)
    if key == "RTBROKER_CORS_ORIGINS":
        if value is None or value == "*":
            return value
        if isinstance(value, str) or not all(isinstance(o, str) for o in value):
            raise ConfigurationError(f"{key} must be '*', None or a list of origins, not {value!r}")
        return tuple(value)
    raise ConfigurationError(f"unknown setting {key}")


def load_env(config: MutableMapping[str, Any], environ: Mapping[str, str] | None = None) -> None:
    """Copy ``RTBROKER_*`` environment variables into *config*.

    Values are parsed as JSON when they parse (``3``, ``["X-Real-IP"]``, ``null``) and kept as
    strings otherwise (``/realtime``, ``gevent``).
    """
    for key, raw in (os.environ if environ is None else environ).items():
        if not key.startswith("RTBROKER_"):
            continue
        try:
            config[key] = encoding.loads(raw)
        except ValueError:
            config[key] = raw
