"""PostgreSQL LISTEN/NOTIFY backplane, for deployments with PostgreSQL and no Redis.

Needs psycopg 3.2.4 or later: ``pip install 'flask-rtbroker[postgresql]'``. Each process holds
at most two connections: one that LISTENs (not opened by write-only publishers such as an
Emitter) and one that publishes. It needs a session of its own (a direct connection or
session pooling; PgBouncer's transaction pooling cannot LISTEN) and works under gevent and
threads. Delivery is at-most-once: payloads published while a process is disconnected are not
replayed to it.

A payload travels base64-encoded in the NOTIFY payload (``b:<base64>``). One whose encoding is
over PostgreSQL's limit (:data:`MAX_NOTIFY_PAYLOAD`) is stored in the table :data:`TABLE`
(created on first use) after a random token of :data:`TOKEN_BYTES` bytes, and notified by key
and token (``k:<id>:<token in hex>``); receivers read the row and use it only when its token
matches, so a NOTIFY naming a row (ids are sequential) without knowing its token replays
nothing. Publishers delete rows older than the backplane's *retention*, so the table stays small.

NOTIFY has no access control: any role that can connect to the database can notify the
channel. Every NOTIFY is parsed on its own, within length caps (:func:`parse_notify`); one
that is not a payload, names no stored row or fails to be read is dropped and counted
(:attr:`~.base.Backplane.rejected`, logged at most once per 1000), and the listener goes on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

from ..runtime.concurrency import gevent_is_active, wait_readable
from ..errors import BackplaneUnavailable, ConfigurationError, MissingDependency
from .base import READY, Backplane

if TYPE_CHECKING:
    import psycopg

    from ..runtime.concurrency import Runtime

log = logging.getLogger("flask_rtbroker.backplane")

DEFAULT_CHANNEL_PREFIX = "flask_rtbroker"
MIN_PSYCOPG = (3, 2, 4)
"""``notifies(timeout=...)`` and notifies kept while other queries run on the connection."""
MAX_CHANNEL_BYTES = 63
"""A NOTIFY channel is an identifier: at most NAMEDATALEN - 1 bytes."""
MAX_NOTIFY_PAYLOAD = 7999
"""The longest NOTIFY payload PostgreSQL takes (it refuses 8000 bytes and more)."""
TABLE = "flask_rtbroker_backplane"
"""Where payloads over :data:`MAX_NOTIFY_PAYLOAD` wait for their receivers."""
TOKEN_BYTES = 16
"""Random bytes in front of a stored payload, named by its NOTIFY: the row is used only with them."""
POLL_INTERVAL = 0.5
"""Longest wait for notifications before the listener checks whether it was closed."""
CONNECT_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "15",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "application_name": "flask_rtbroker",
}
"""libpq parameters used unless the URL sets them: keepalives notice a dead server within ~30 s."""

CREATE_TABLE = f"""CREATE UNLOGGED TABLE IF NOT EXISTS {TABLE} (
    id bigserial PRIMARY KEY,
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)"""
_NOTIFY = "SELECT pg_notify(%s, %s)"
_STORE_AND_NOTIFY = (
    f"WITH stored AS (INSERT INTO {TABLE} (payload) VALUES (%s) RETURNING id) "
    "SELECT pg_notify(%s, 'k:' || id || ':' || %s) FROM stored"
)
_FETCH = f"SELECT payload FROM {TABLE} WHERE id = %s"
_EXISTS = "SELECT to_regclass(%s)"
_DELETE_EXPIRED = f"DELETE FROM {TABLE} WHERE created_at < now() - %s * interval '1 second'"
_INLINE, _STORED = "b", "k"
_STORED_KEY = re.compile(r"%s:([0-9]{1,19}):([0-9a-f]{%d})" % (_STORED, 2 * TOKEN_BYTES))
_BASE64 = re.compile(r"%s:([A-Za-z0-9+/]*={0,2})" % _INLINE)


class StoredKey(NamedTuple):
    """What a NOTIFY names of a payload stored in :data:`TABLE`: its row id and token."""

    id: int
    token: bytes


def parse_notify(text: str) -> bytes | StoredKey | None:
    """The payload an inline NOTIFY carries, the key of a stored one, or None when *text* is
    neither; linear in ``len(text)``, which PostgreSQL keeps under :data:`MAX_NOTIFY_PAYLOAD`
    and this checks again."""
    if len(text) > MAX_NOTIFY_PAYLOAD:
        return None
    inline = _BASE64.fullmatch(text)
    if inline is not None:
        try:
            return base64.b64decode(inline.group(1), validate=True)
        except binascii.Error:  # a length that is not a multiple of four
            return None
    stored = _STORED_KEY.fullmatch(text)
    if stored is not None and int(stored.group(1)) < 2**63:
        return StoredKey(int(stored.group(1)), bytes.fromhex(stored.group(2)))
    return None


def next_notifies(connection: Any, runtime: "Runtime", timeout: float) -> list[Any]:
    """The notifications *connection* (psycopg, LISTENing) has received, waiting at most
    *timeout* seconds for the first: on the gevent hub (a socket watch) or, with threads, in a
    selector. Never psycopg's own blocking wait, which blocks the hub when psycopg was imported
    before gevent's monkey-patching."""
    notifies = list(connection.notifies(timeout=0))  # those already read, then the socket's
    if notifies:
        return notifies
    wait_readable(runtime, connection.fileno(), timeout)
    return list(connection.notifies(timeout=0))


def _import_psycopg() -> Any:
    """The psycopg module, or MissingDependency naming the extra when it is absent or too old."""
    try:
        import psycopg
    except ImportError:
        raise MissingDependency(
            "RTBROKER_BACKPLANE is a postgresql:// URL but psycopg is not installed; "
            "install the extra: pip install 'flask-rtbroker[postgresql]'"
        ) from None
    version = tuple(int(part) for part in re.findall(r"\d+", psycopg.__version__)[:3])
    if version < MIN_PSYCOPG:
        raise MissingDependency(
            f"the postgresql backplane needs psycopg>={'.'.join(map(str, MIN_PSYCOPG))}, not "
            f"{psycopg.__version__}: pip install 'flask-rtbroker[postgresql]'"
        )
    return psycopg


def channel_name(prefix: str) -> str:
    """The NOTIFY channel of *prefix*: itself when it fits in an identifier, else its first
    bytes and a hash of all of it, so every process derives the same name."""
    if not prefix or "\x00" in prefix:
        raise ConfigurationError(f"a PostgreSQL channel prefix must be non-empty and without NUL, not {prefix!r}")
    raw = prefix.encode("utf-8")
    if len(raw) <= MAX_CHANNEL_BYTES:
        return prefix
    digest = hashlib.sha256(raw).hexdigest()[:16]
    head = raw[: MAX_CHANNEL_BYTES - len(digest) - 1].decode("utf-8", "ignore")
    return f"{head}_{digest}"


def redacted_url(url: str) -> str:
    """*url* without its password (``postgresql://user:***@host``, ``?password=***``), even when
    it is malformed; libpq's user info ends at the first ``@`` or ``/``."""
    url = re.sub(r"^([^:/?#]+://[^@/:]*):[^@/]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


class PostgresBackplane(Backplane):
    """Publishes with ``pg_notify`` and listens with ``LISTEN`` on one channel of one database.

    NOTIFY channels belong to a database, so the channel is the channel prefix itself (see
    :func:`channel_name`): apps on different databases never meet, apps sharing one need
    distinct prefixes. Payloads over the NOTIFY limit wait in :data:`TABLE` for *retention*
    seconds: a publisher deletes older rows at most every ``retention / 4`` seconds.
    """

    def __init__(
        self, url: str, *, channel_prefix: str = DEFAULT_CHANNEL_PREFIX, retention: float = 60.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if not retention > 0:
            raise ConfigurationError(f"retention must be a positive number of seconds, not {retention!r}")
        self._psycopg = _import_psycopg()
        self.url = redacted_url(url)
        self.channel = channel_name(channel_prefix)
        self.retention = retention
        try:
            params = self._psycopg.conninfo.conninfo_to_dict(url)
        except self._psycopg.ProgrammingError as exc:
            message = str(exc).strip().replace(url, self.url)
            raise ConfigurationError(
                f"RTBROKER_BACKPLANE {self.url} is not a valid PostgreSQL URL: {message}"
            ) from None
        self._conninfo = self._psycopg.conninfo.make_conninfo(
            url, **{key: value for key, value in CONNECT_DEFAULTS.items() if key not in params}
        )
        self._listen_sql = self._psycopg.sql.SQL("LISTEN {}").format(self._psycopg.sql.Identifier(self.channel))
        self._publisher: psycopg.Connection[Any] | None = None
        self._listener_connection: psycopg.Connection[Any] | None = None
        """The listener's connection while it is up; publishing shares it."""
        self._publisher_pid = 0
        self._table_ready = False
        self._cleaned_at = float("-inf")
        waiting = self._psycopg.waiting
        if gevent_is_active() and waiting.wait is getattr(waiting, "wait_c", None):
            log.warning(
                "psycopg was imported before gevent monkey-patching: its queries block the gevent hub "
                "(patch first, e.g. gunicorn -k gevent does); the backplane's listener waits cooperatively"
            )

    def _make_locks(self) -> None:
        super()._make_locks()
        self._lock = threading.Lock()

    def _connect(self) -> "psycopg.Connection[Any]":
        """A new autocommit connection: each NOTIFY is sent as its statement ends."""
        return self._psycopg.connect(self._conninfo, autocommit=True)  # type: ignore[no-any-return]

    def publish(self, payload: bytes) -> None:
        """NOTIFY *payload*, inline or through :data:`TABLE`, under a lock, so a publisher's
        payloads keep their order. Once this process listens it publishes on the listening
        connection (one connection per process); before that, and in write-only publishers, on
        a connection of its own. A failure drops that connection (the next publish reconnects)."""
        text = f"{_INLINE}:{base64.b64encode(payload).decode('ascii')}"
        with self._lock:
            if self._publisher is not None and self._publisher_pid != os.getpid():
                self._publisher = None  # the parent's: dropped, not closed (psycopg leaves it to the parent)
            connection = self._listener_connection
            if connection is None:
                if self._publisher is None:
                    self._publisher, self._publisher_pid, self._table_ready = self._connect(), os.getpid(), False
                connection = self._publisher
            try:
                if len(text) <= MAX_NOTIFY_PAYLOAD:
                    connection.execute(_NOTIFY, (self.channel, text))
                else:
                    self._store_and_notify(connection, payload)
            except Exception:
                if connection is self._publisher:
                    self._publisher = None
                connection.close()  # the listener's too: it reconnects
                raise

    def _store_and_notify(self, connection: "psycopg.Connection[Any]", payload: bytes) -> None:
        """Store *payload* in :data:`TABLE`, notify its key, now and then delete expired rows."""
        if not self._table_ready:
            self._create_table(connection)
            self._table_ready = True
        token = secrets.token_bytes(TOKEN_BYTES)
        connection.execute(_STORE_AND_NOTIFY, (token + payload, self.channel, token.hex()))
        now = time.monotonic()
        if now - self._cleaned_at >= self.retention / 4:
            connection.execute(_DELETE_EXPIRED, (self.retention,))
            self._cleaned_at = now

    def _create_table(self, connection: "psycopg.Connection[Any]") -> None:
        """Create :data:`TABLE` unless it exists (PostgreSQL checks the privilege to create it
        even then); say how to create it when this user may not."""
        if connection.execute(_EXISTS, (TABLE,)).fetchone() != (None,):
            return
        errors = self._psycopg.errors
        try:
            connection.execute(CREATE_TABLE)
        except (errors.UniqueViolation, errors.DuplicateTable):
            pass  # another process created it at the same moment
        except errors.InsufficientPrivilege as exc:
            raise BackplaneUnavailable(
                f"payloads over {MAX_NOTIFY_PAYLOAD} bytes go through the table {TABLE}, which this "
                f"database user may not create ({exc}); create it once: {CREATE_TABLE}"
            ) from exc

    def listen(self) -> Iterator[bytes]:
        """LISTEN on a new connection, which publishing then shares (its own connection is
        closed); yield READY, then each payload, until closed."""
        assert self._runtime is not None, "start() sets the runtime"
        connection = self._connect()
        try:
            connection.execute(self._listen_sql)
            with self._lock:
                self._listener_connection = connection
                own, self._publisher = self._publisher, None
            if own is not None and self._publisher_pid == os.getpid():
                own.close()
            yield READY
            while not self.closed:
                for notify in next_notifies(connection, self._runtime, POLL_INTERVAL):
                    payload = self._received(connection, notify.payload)
                    if payload is not None:
                        yield payload
        finally:
            with self._lock:
                self._listener_connection = None
            connection.close()

    def _received(self, connection: "psycopg.Connection[Any]", text: str) -> bytes | None:
        """The payload a NOTIFY carries, inline or by key and token; None (and counted) when it
        has none. A read of the table that fails (the table missing, a privilege taken away)
        drops this NOTIFY only."""
        parsed = parse_notify(text)
        if parsed is None:
            self._reject(f"a NOTIFY on {self.channel!r} that is not a backplane payload: {text[:80]!r}")
            return None
        if isinstance(parsed, bytes):
            return parsed
        try:
            row = connection.execute(_FETCH, (parsed.id,)).fetchone()
        except (self._psycopg.DataError, self._psycopg.ProgrammingError) as exc:
            self._reject(f"payload {parsed.id} of {TABLE} could not be read: {exc}")
            return None
        if row is None:
            self._reject(f"payload {parsed.id} of {TABLE} was deleted before it was read (retention {self.retention}s)")
            return None
        stored = bytes(row[0])
        if not hmac.compare_digest(stored[:TOKEN_BYTES], parsed.token):
            self._reject(f"a NOTIFY naming payload {parsed.id} of {TABLE} with a token that is not its own")
            return None
        return stored[TOKEN_BYTES:]

    def close(self) -> None:
        """Stop the listener (within :data:`POLL_INTERVAL`) and close the publishing connection."""
        super().close()
        with self._lock:
            connection, self._publisher = self._publisher, None
        if connection is not None and self._publisher_pid == os.getpid():
            connection.close()
