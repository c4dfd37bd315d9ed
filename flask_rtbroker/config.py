"""Every ``RTBROKER_*`` setting with its default, and :class:`Settings`, their checked form.

``init_app`` copies missing keys into ``app.config`` (``setdefault``), then reads them once into
a frozen :class:`Settings`. :func:`load_env` fills ``app.config`` from environment variables.

Each setting accepts only the values its comment in :data:`DEFAULTS` names; anything else (a
wrong type, NaN or infinity for a number of seconds, an empty string or False for a limit, a
flag that is not a bool, 1/0 or one of the recognised words) raises :class:`ConfigurationError`
naming the key.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, MutableMapping

from .protocol import encoding
from .runtime.concurrency import CONCURRENCY_CHOICES
from .errors import ConfigurationError
from .runtime.server_limits import server_connections

log = logging.getLogger("flask_rtbroker")

DEFAULTS: dict[str, Any] = {
    # Where the blueprint answers: GET = SSE stream, POST = set subscriptions.
    "RTBROKER_URL_PREFIX": "/api/realtime",
    # Seconds without a delivered message before a stream is closed (PocketBase: 300). Every
    # number of seconds must be finite: NaN and infinity are refused.
    "RTBROKER_IDLE_TIMEOUT": 300.0,
    # Seconds after which a stream is closed however busy it is (PocketBase: 1800).
    "RTBROKER_MAX_LIFETIME": 1800.0,
    # Each stream's lifetime is shortened by a random fraction up to this, so streams opened
    # together (after a deploy) do not all reconnect together.
    "RTBROKER_LIFETIME_JITTER": 0.1,
    # Seconds between ":" comment lines on a silent stream; 0 or None = never (infinity is
    # refused: use 0). Keeps proxies with a 60 s read timeout (nginx's default) from cutting
    # quiet streams; does not reset the idle timer.
    "RTBROKER_HEARTBEAT": 25.0,
    # Seconds a write to a stream's socket may block (a peer that stopped reading) before the
    # stream is dropped.
    "RTBROKER_SEND_TIMEOUT": 10.0,
    # Recipients per fan-out chunk; chunks run concurrently on the pool.
    "RTBROKER_CHUNK_SIZE": 300,
    # Greenlets / threads available to run fan-out chunks.
    "RTBROKER_POOL_SIZE": 16,
    # Messages a client may have queued; one more discards it as a slow consumer.
    "RTBROKER_CLIENT_QUEUE_SIZE": 1000,
    # Bytes a client may have queued (each delivery framed: its data, id and event lines); more
    # discards it as a slow consumer.
    "RTBROKER_CLIENT_QUEUE_BYTES": 8 * 1024 * 1024,
    # Bytes every client queue of the process may hold together, each queued message's data
    # counted once however many clients and keys it waits for. At the bound the clients with the
    # most bytes queued are discarded as slow consumers, biggest first, until the queues hold at
    # most three quarters of it. At least RTBROKER_CLIENT_QUEUE_BYTES.
    "RTBROKER_QUEUE_MEMORY": 128 * 1024 * 1024,
    # Open streams per process (more: 503): a whole number, 0 or None = no limit (an empty
    # string or False is refused). "auto": 90% of the worker_connections of a gunicorn
    # gevent/eventlet worker (the rest stays free for ordinary requests), else 10000.
    "RTBROKER_MAX_CLIENTS": "auto",
    # Open streams per client IP per process (more: 429): a whole number, 0 or None = no limit
    # (an empty string or False is refused). "auto": a quarter of RTBROKER_MAX_CLIENTS. Behind a
    # proxy set RTBROKER_TRUSTED_PROXY_HEADERS, or every client shares the proxy's address.
    "RTBROKER_MAX_CLIENTS_PER_IP": "auto",
    # Bytes of subscription keys one client may hold (each key's UTF-8 length, ~440-680 bytes of
    # bookkeeping and what its parsed options hold, see docs/limits.rst); a POST over it answers
    # 400 and changes nothing. The SDK's keys are ~20-300 bytes; PocketBase's 1,000 short keys fit.
    "RTBROKER_MAX_SUBSCRIPTION_BYTES": 512 * 1024,
    # Bytes of subscription keys all clients of the process may hold together; past it new
    # streams and POSTs that add subscriptions answer 503, existing subscriptions keep working.
    "RTBROKER_SUBSCRIPTION_MEMORY": 256 * 1024 * 1024,
    # Keys one client may add to its subscriptions (keys it did not hold: each is a backplane
    # channel its process listens on, then sweeps) at once, and again per minute: a bucket of
    # this many that refills evenly over 60 s. A POST adding more than the bucket holds answers
    # 429, one adding more than this at all 400; both change nothing. A whole number, 0 or
    # None = no limit. The SDK adds one key per subscribe() call (all of them on a reconnect,
    # as a new client with a full bucket).
    "RTBROKER_MAX_SUBSCRIPTION_CHANGES": 2000,
    # Distinct subscription options (the SDK's ?options= of a subscribe() call) one client may
    # hold; keys with equal options count once. A POST over it answers 400 and changes nothing.
    "RTBROKER_MAX_OPTION_SETS": 16,
    # Record rule and filter calls one record event may make in one process (a rule runs once per
    # auth identity and values of the options it reads, a filter once per event: a client filter
    # cannot read the auth); past it the event's remaining subscription checks deny, with a warning.
    "RTBROKER_MAX_EVALUATIONS": 20_000,
    # "auto" (gevent when monkey-patched or inside a greenlet, else threads), "gevent", "threading".
    "RTBROKER_CONCURRENCY": "auto",
    # Threaded servers: seconds between checks of a silent stream's socket for a disconnect.
    "RTBROKER_DISCONNECT_POLL": 0.5,
    # Request headers holding the real client IP behind a trusted proxy: a list of strings,
    # e.g. ["X-Real-IP"]. Empty = use the socket peer address (X-Forwarded-For is never trusted
    # by default).
    "RTBROKER_TRUSTED_PROXY_HEADERS": [],
    # With X-Forwarded-For: take the leftmost (original client) address instead of the rightmost.
    # True or False (also 1/0; from the environment true/false, 1/0, yes/no, on/off in any case);
    # anything else, None included, is refused.
    "RTBROKER_USE_LEFTMOST_IP": False,
    # CORS: "*" (PocketBase's default), a list of allowed origins (strings), or None to send no
    # CORS headers.
    "RTBROKER_CORS_ORIGINS": "*",
    # Largest accepted subscription POST body in bytes (larger: 413). PocketBase's own maximum
    # (1000 keys of 2500 characters) needs ~2.6 MB and a larger RTBROKER_MAX_SUBSCRIPTION_BYTES.
    "RTBROKER_MAX_BODY_SIZE": 1024 * 1024,
    # Largest encoded message data in bytes accepted by notify/send and record events (larger:
    # MessageTooLarge, or the record event is dropped and logged); at most RTBROKER_CLIENT_QUEUE_BYTES.
    "RTBROKER_MAX_MESSAGE_SIZE": 4 * 1024 * 1024,
    # Where processes meet: "memory://" (this process only), "redis://host:port/db", "rediss://...",
    # "redis+cluster://host:port,host:port" (Redis Cluster, sharded pub/sub),
    # "postgresql://user:password@host/db" (LISTEN/NOTIFY), or a Backplane instance.
    "RTBROKER_BACKPLANE": "memory://",
    # Let a process-local backplane ("memory://" or a MemoryBackplane) start in a gunicorn server
    # with several workers: True or False, accepted like RTBROKER_USE_LEFTMOST_IP. By default
    # that start fails with ConfigurationError, because each worker would then know only its
    # own streams and a subscription POST that reaches another worker answers 404.
    "RTBROKER_ALLOW_LOCAL_BACKPLANE": False,
    # Namespace of the backplane's channels: on Redis "<prefix>:<database number>:<channel>", so
    # apps on one Redis server stay apart by database; apps sharing a database (or a Redis
    # Cluster, or a PostgreSQL database, whose channel is the prefix itself) need distinct prefixes.
    "RTBROKER_CHANNEL_PREFIX": "flask_rtbroker",
    # A shared secret (str or bytes, at least 16 bytes): every backplane envelope is signed with
    # HMAC-SHA256 and unsigned or forged ones are dropped and counted (stats:
    # backplane_rejected_total). None = envelopes are trusted as they come. From the environment
    # the value is kept as text, digits too (a JSON string is decoded; null means None).
    "RTBROKER_BACKPLANE_SECRET": None,
    # Seconds a backplane envelope stays fresh: one sent longer ago (or stamped as far in the
    # future: the hosts' clocks must agree within it) is dropped, as is any envelope received
    # twice (stats: backplane_replayed_total). A forwarded POST is answered for
    # RTBROKER_FORWARD_TIMEOUT (plus 1 s of clock difference) only.
    "RTBROKER_BACKPLANE_MAX_AGE": 30.0,
    # With a secret, envelopes without a stamp (channel, sequence, time: sent by versions before
    # 0.3) are dropped. True accepts them, for the length of a rolling upgrade from 0.2 only.
    "RTBROKER_BACKPLANE_ACCEPT_UNSTAMPED": False,
    # Seconds a POST for a client held by another process waits for that process's answer (then 404).
    "RTBROKER_FORWARD_TIMEOUT": 2.0,
    # Request headers a POST for a client held by another process carries to it (the ones the
    # auth_loader and before_subscribe read; add "Cookie" for session auth): a list of strings.
    # Nothing else goes: the owner gets the decoded subscriptions, not the body.
    "RTBROKER_FORWARD_HEADERS": ["Authorization"],
    # Seconds a subscriber's session outlives its stream (docs/sessions.rst): after a stream
    # ends by its lifetime, the idle timeout or the peer going away, its client stays subscribed
    # and queueing (a "ghost", within RTBROKER_CLIENT_QUEUE_SIZE/_BYTES) until the next
    # connection's first POST claims it. 0 = off (every stream end loses what follows it).
    "RTBROKER_RESUME_WINDOW": 30.0,
    # Ghosts one process keeps at most (one more drops the oldest, reported "expired"). Each
    # also counts against RTBROKER_SUBSCRIPTION_MEMORY with its keys; per IP at most
    # RTBROKER_MAX_CLIENTS_PER_IP ghosts are kept.
    "RTBROKER_RESUME_MAX_GHOSTS": 10000,
    # Bytes all ghosts of a process may hold queued together; past it the oldest are dropped
    # (checked every tenth of the window, at most every second).
    "RTBROKER_RESUME_MEMORY": 64 * 1024 * 1024,
    # When a topic rule (broker.topic_rule) denies a client a key it subscribed to, queue one
    # event on that key with the data {"denied": "<topic>"}: at the POST that adds the key, or
    # when the connection's auth changes (a POST, clear_auth, refresh_auth) and the key becomes
    # denied. False = the subscription is accepted and simply receives nothing. True or False,
    # accepted like RTBROKER_USE_LEFTMOST_IP.
    "RTBROKER_TOPIC_DENIED_EVENT": False,
    # Presence (broker.presence): seconds a member stays after its last connection ended, so
    # reconnects and lifetime rotations show no leave and join (docs/presence.rst).
    "RTBROKER_PRESENCE_GRACE": 5.0,
    # Presence across processes (Redis): seconds a process's heartbeat lasts; it beats every third
    # of it, and the members of a process that stopped beating (killed) leave within about this.
    "RTBROKER_PRESENCE_TTL": 15.0,
    # Members a presence "sync" event lists at most (with "count", the room's size), their
    # documents within half of RTBROKER_MAX_MESSAGE_SIZE: a whole number.
    "RTBROKER_PRESENCE_SYNC_LIMIT": 1000,
    # End every stream cleanly when a server worker gets SIGTERM/SIGINT/SIGQUIT, so the
    # SDK reconnects to a live worker instead of waiting for the graceful timeout. True or False,
    # accepted like RTBROKER_USE_LEFTMOST_IP.
    "RTBROKER_GRACEFUL_SHUTDOWN": True,
    # Path of an opt-in Prometheus text endpoint (e.g. "/metrics"), None = off. This process's
    # figures; every worker's with prometheus_client and PROMETHEUS_MULTIPROC_DIR (docs/deployment.rst).
    "RTBROKER_METRICS_PATH": None,
    # Under gevent, where the stream's socket is known (gunicorn -k gevent, gevent.pywsgi), write
    # a delivery straight to the socket with one non-blocking send when nothing is queued for the
    # client; False = every delivery goes through the client's queue and its stream. True or
    # False, accepted like RTBROKER_USE_LEFTMOST_IP. Turn it off behind a server that frames the
    # response body other than HTTP/1.1 chunking or HTTP/1.0 (gunicorn's uwsgi protocol).
    "RTBROKER_WRITE_THROUGH": True,
    # Where an OAuth2 provider sends the SDK's sign-in popup back (authWithOAuth2): "auto" = the
    # realtime prefix's sibling "oauth2-redirect" (/api/realtime -> /api/oauth2-redirect, where
    # the SDK points the provider), a path, or None = no redirect endpoint.
    "RTBROKER_OAUTH2_REDIRECT_PATH": "auto",
    # Where the popup goes after a redirect that reached a client subscribed to "@oauth2" with a
    # code (307 for GET, 303 for POST): a URL or path; None = a small built-in page at
    # "<redirect path>/success" saying the window can be closed.
    "RTBROKER_OAUTH2_SUCCESS_URL": None,
    # Where the popup goes after any other redirect (unknown state, provider error, missing
    # code, replay, bad body); None = a built-in page at "<redirect path>/failure".
    "RTBROKER_OAUTH2_FAILURE_URL": None,
}


def _number(key: str, value: Any, *, minimum: float, inclusive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{key} must be a number, not {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int past the float range
        number = math.inf
    if not math.isfinite(number):
        raise ConfigurationError(f"{key} must be a finite number, not {value!r}")
    if number < minimum or (number == minimum and not inclusive):
        raise ConfigurationError(f"{key} must be {'>=' if inclusive else '>'} {minimum:g}, not {value!r}")
    return number


def _seconds(key: str, value: Any) -> float:
    return _number(key, value, minimum=0, inclusive=False)


def _seconds_or_zero(key: str, value: Any) -> float:
    """Seconds, or 0 / None for "never"."""
    return 0.0 if value is None else _number(key, value, minimum=0, inclusive=True)


def _fraction(key: str, value: Any) -> float:
    number = _number(key, value, minimum=0, inclusive=True)
    if number >= 1:
        raise ConfigurationError(f"{key} must be below 1, not {value!r}")
    return number


def _count(key: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{key} must be a whole number >= {minimum}, not {value!r}")
    return value


def _auto_limit(key: str, value: Any) -> int | None:
    """A limit (0 or None: no limit), or None for "auto" (resolved by :func:`resolve_stream_limits`)."""
    if isinstance(value, str) and value == "auto":
        return None
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{key} must be a whole number >= 0 (0 or None = no limit) or 'auto', not {value!r}")
    return value


def _optional_limit(key: str, value: Any) -> int:
    """A limit, 0 or None for none (returned as 0)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{key} must be a whole number >= 0 (0 or None = no limit), not {value!r}")
    return value


def _path(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigurationError(f"{key} must be a path starting with '/', not {value!r}")
    return value.rstrip("/") or "/"


def _optional_path(key: str, value: Any) -> str | None:
    return None if value is None else _path(key, value)


def _oauth2_redirect_path(key: str, value: Any) -> str | None:
    """A path, None (off), or "auto" (kept; resolved against the realtime prefix)."""
    return value if isinstance(value, str) and value == "auto" else _optional_path(key, value)


def _optional_url(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or any(char.isspace() for char in value):
        raise ConfigurationError(f"{key} must be None or a URL or path without whitespace, not {value!r}")
    return value


def _choice(key: str, value: Any) -> str:
    if value not in CONCURRENCY_CHOICES:
        *others, last = map(repr, CONCURRENCY_CHOICES)
        raise ConfigurationError(f"{key} must be {', '.join(others)} or {last}, not {value!r}")
    return value


def _strings(value: Any) -> bool:
    """True for a list or tuple of strings (not a string, a dict, a set or any other iterable)."""
    return isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value)


def _names(key: str, value: Any) -> tuple[str, ...]:
    if not _strings(value):
        raise ConfigurationError(f"{key} must be a list of header names (a list or tuple of strings), not {value!r}")
    return tuple(value)


def _channel_prefix(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value or any(char.isspace() for char in value):
        raise ConfigurationError(f"{key} must be a non-empty string without whitespace, not {value!r}")
    return value


def _secret(key: str, value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, bytes) or len(value) < 16:
        raise ConfigurationError(f"{key} must be None or a str/bytes secret of at least 16 bytes")
    return value


def _origins(key: str, value: Any) -> str | tuple[str, ...] | None:
    if value is None or (isinstance(value, str) and value == "*"):
        return value
    if not _strings(value):
        raise ConfigurationError(
            f"{key} must be '*', None or a list of origins (a list or tuple of strings), not {value!r}")
    return tuple(value)


_FLAG_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}
"""The strings a flag accepts (case-insensitively), as environment variables spell them."""


def _flag(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)  # "1" / "0" from the environment (load_env decodes them as JSON)
    if isinstance(value, str) and value.strip().lower() in _FLAG_WORDS:
        return _FLAG_WORDS[value.strip().lower()]
    raise ConfigurationError(
        f"{key} must be True or False (or 1/0, true/false, yes/no, on/off), not {value!r}")


@dataclass(frozen=True)
class Settings:
    """The checked values of the ``RTBROKER_*`` keys of one app (``RTBROKER_BACKPLANE`` aside)."""

    url_prefix: str
    idle_timeout: float
    max_lifetime: float
    lifetime_jitter: float
    heartbeat: float
    send_timeout: float
    chunk_size: int
    pool_size: int
    client_queue_size: int
    client_queue_bytes: int
    queue_memory: int
    max_clients: int
    max_clients_per_ip: int
    max_subscription_bytes: int
    subscription_memory: int
    max_subscription_changes: int
    max_option_sets: int
    max_evaluations: int
    concurrency: str
    disconnect_poll: float
    trusted_proxy_headers: tuple[str, ...]
    use_leftmost_ip: bool
    cors_origins: str | tuple[str, ...] | None
    max_body_size: int
    max_message_size: int
    channel_prefix: str
    allow_local_backplane: bool
    backplane_secret: bytes | None = field(repr=False)
    backplane_max_age: float
    backplane_accept_unstamped: bool
    forward_timeout: float
    forward_headers: tuple[str, ...]
    resume_window: float
    resume_max_ghosts: int
    resume_memory: int
    topic_denied_event: bool
    presence_grace: float
    presence_ttl: float
    presence_sync_limit: int
    graceful_shutdown: bool
    metrics_path: str | None
    write_through: bool
    oauth2_redirect_path: str | None
    oauth2_success_url: str | None
    oauth2_failure_url: str | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Settings":
        """Read and check every key; raise :class:`ConfigurationError` naming a bad one. An
        ``RTBROKER_*`` key that is not a setting is logged as a warning naming the nearest one."""
        warn_unknown_keys(config)
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = "RTBROKER_" + f.name.upper()
            values[f.name] = _CHECKS[f.name](key, config.get(key, DEFAULTS[key]))
        if values["max_message_size"] > values["client_queue_bytes"]:
            raise ConfigurationError(
                f"RTBROKER_MAX_MESSAGE_SIZE ({values['max_message_size']}) must not exceed "
                f"RTBROKER_CLIENT_QUEUE_BYTES ({values['client_queue_bytes']}): a message that "
                "large would discard every recipient as a slow consumer"
            )
        if values["oauth2_redirect_path"] == "auto":
            values["oauth2_redirect_path"] = values["url_prefix"].rpartition("/")[0] + "/oauth2-redirect"
        if values["queue_memory"] < values["client_queue_bytes"]:
            raise ConfigurationError(
                f"RTBROKER_QUEUE_MEMORY ({values['queue_memory']}) must be at least "
                f"RTBROKER_CLIENT_QUEUE_BYTES ({values['client_queue_bytes']})"
            )
        values["max_clients"], values["max_clients_per_ip"] = resolve_stream_limits(
            values["max_clients"], values["max_clients_per_ip"], server_connections()
        )
        return cls(**values)


def warn_unknown_keys(config: Mapping[str, Any]) -> list[str]:
    """Log a warning for each ``RTBROKER_*`` key of *config* that is no setting (a misspelling
    would otherwise leave the default in force silently), naming the nearest known key; return them."""
    unknown = sorted(key for key in config if isinstance(key, str) and key.startswith("RTBROKER_") and key not in DEFAULTS)
    for key in unknown:
        names = [known.removeprefix("RTBROKER_") for known in DEFAULTS]
        nearest = difflib.get_close_matches(key.removeprefix("RTBROKER_"), names, n=1, cutoff=0.6)
        hint = f"; did you mean RTBROKER_{nearest[0]}?" if nearest else ""
        log.warning("%s is not a flask_rtbroker setting and is ignored%s", key, hint)
    return unknown


FALLBACK_MAX_CLIENTS = 10_000
"""``RTBROKER_MAX_CLIENTS="auto"`` when the server's connection limit cannot be read."""


def resolve_stream_limits(
    max_clients: int | None, max_clients_per_ip: int | None, connections: int | None
) -> tuple[int, int]:
    """Turn "auto" (None) stream limits into numbers; *connections* is the server's limit.

    The process limit leaves a tenth of the server's connections (at least 10) to ordinary
    requests; the per-address limit is a quarter of the process limit.
    """
    if max_clients is None:
        if connections is None:
            max_clients = FALLBACK_MAX_CLIENTS
        else:
            max_clients = max(1, connections - max(10, connections // 10))
    if max_clients_per_ip is None:
        max_clients_per_ip = max(1, max_clients // 4) if max_clients else 0
    return max_clients, max_clients_per_ip


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "url_prefix": _path,
    "idle_timeout": _seconds,
    "max_lifetime": _seconds,
    "lifetime_jitter": _fraction,
    "heartbeat": _seconds_or_zero,
    "send_timeout": _seconds,
    "chunk_size": _count,
    "pool_size": _count,
    "client_queue_size": _count,
    "client_queue_bytes": _count,
    "queue_memory": _count,
    "max_clients": _auto_limit,
    "max_clients_per_ip": _auto_limit,
    "max_subscription_bytes": _count,
    "subscription_memory": _count,
    "max_subscription_changes": _optional_limit,
    "max_option_sets": _count,
    "max_evaluations": _count,
    "concurrency": _choice,
    "disconnect_poll": _seconds,
    "trusted_proxy_headers": _names,
    "use_leftmost_ip": _flag,
    "cors_origins": _origins,
    "max_body_size": _count,
    "max_message_size": _count,
    "channel_prefix": _channel_prefix,
    "allow_local_backplane": _flag,
    "backplane_secret": _secret,
    "backplane_max_age": _seconds,
    "backplane_accept_unstamped": _flag,
    "forward_timeout": _seconds,
    "forward_headers": _names,
    "resume_window": _seconds_or_zero,
    "resume_max_ghosts": _count,
    "resume_memory": _count,
    "topic_denied_event": _flag,
    "presence_grace": _seconds_or_zero,
    "presence_ttl": _seconds,
    "presence_sync_limit": _count,
    "graceful_shutdown": _flag,
    "metrics_path": _optional_path,
    "write_through": _flag,
    "oauth2_redirect_path": _oauth2_redirect_path,
    "oauth2_success_url": _optional_url,
    "oauth2_failure_url": _optional_url,
}


_TEXT_KEYS = frozenset({
    "RTBROKER_URL_PREFIX", "RTBROKER_CONCURRENCY", "RTBROKER_BACKPLANE", "RTBROKER_CHANNEL_PREFIX",
    "RTBROKER_BACKPLANE_SECRET", "RTBROKER_METRICS_PATH", "RTBROKER_OAUTH2_REDIRECT_PATH",
    "RTBROKER_OAUTH2_SUCCESS_URL", "RTBROKER_OAUTH2_FAILURE_URL",
})
"""Settings that take text only (or None): from the environment a value that parses as another
JSON type (a secret or channel prefix of digits, ``true``) stays the text it is."""


def load_env(config: MutableMapping[str, Any], environ: Mapping[str, str] | None = None) -> None:
    """Copy ``RTBROKER_*`` environment variables into *config*.

    Values are parsed as JSON when they parse (``3``, ``["X-Real-IP"]``, ``null``) and kept as
    strings otherwise (``/realtime``, ``gevent``). The settings that take text only keep their
    value as text unless it is a JSON string or ``null``: ``RTBROKER_BACKPLANE_SECRET=1234...``
    is the secret of those digits, not a number.
    """
    for key, raw in (os.environ if environ is None else environ).items():
        if not key.startswith("RTBROKER_"):
            continue
        try:
            value = encoding.loads(raw)
        except ValueError:
            value = raw
        if key in _TEXT_KEYS and value is not None and not isinstance(value, str):
            value = raw
        config[key] = value
