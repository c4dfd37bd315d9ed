"""The LISTEN connection of one process to one database, shared by every capture on it.

Each process holds one (:class:`ChangeListener`, on a thread or greenlet, waiting on the gevent
hub or a selector: never blocking the hub). NOTIFY has no access control, so a notification is
only a reference (:func:`parse_reference`, length-capped) that the listener resolves itself:

- It drains what has arrived as one batch and reads the referenced changes with one SELECT per
  schema; the captures decode their rows in slices of :data:`DELIVER_SLICE` (one SELECT each),
  yielding between slices. A reference to no stored change above
  the highest expired key is forged: dropped and counted (:attr:`ChangeListener.forged`), with a
  rate-limited warning. A change already delivered is a replay (:attr:`ChangeListener.replayed`);
  one older than :data:`REPLAY_WINDOW` (or than the last skip) is not delivered either, nor is
  an expired one: both give a ``gap``, never silence.
- More than :data:`BACKLOG` notifications at once: it skips every notification already there,
  counts them (:attr:`ChangeListener.skipped`) and sends a ``gap`` instead.
- After the connection is lost (a PostgreSQL restart) it reconnects with backoff, LISTENs again
  and sends a ``gap``.

A ``gap`` goes to every subscriber of the captured collections
(``{"action": "gap", "record": {"collectionId", "collectionName"}}``: changes may have been
missed, refetch), at most once per :data:`GAP_INTERVAL`: one noted meanwhile waits its turn.
Every process gets the notifications itself, so nothing goes on the backplane.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import Engine, text

from ..protocol import encoding
from ..backplane.postgres import next_notifies
from .capture import CHANGE_TABLE, CHANNEL, EXPIRY_TABLE, Change, qualified

if TYPE_CHECKING:
    from ..runtime.concurrency import Runtime

log = logging.getLogger("flask_rtbroker.records")

REFERENCE_MAX = 256
"""Characters of a notification payload; a longer one is not a reference of ours."""
BACKLOG = 2000
"""Notifications pending at once past which the listener skips them and sends a ``gap``."""
DELIVER_SLICE = 200
"""Changes handed to the captures at once (each decodes a slice with one SELECT per table); the
listener yields to other greenlets between slices."""
SKIP_TIME = 1.0
"""Seconds a skip ahead may spend discarding notifications before it decodes again."""
REPLAY_WINDOW = 60.0
"""Seconds after its commit a change may be delivered; the keys delivered meanwhile are kept."""
SEEN_LIMIT = 200_000
"""Keys of delivered changes kept at most (past it, the oldest go and the window shrinks)."""
GAP_INTERVAL = 1.0
"""Seconds between two ``gap`` events of one listener."""
WARN_INTERVAL = 10.0
"""Seconds between two warnings of one kind about dropped notifications."""
RECONNECT_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)
POLL = 1.0
"""Seconds the listener waits for notifications before it checks whether it is still needed."""


@dataclass(frozen=True)
class Reference:
    """A notification of a capture trigger: the schema and key of a stored change."""

    schema: str
    change: int


def parse_reference(payload: str) -> Reference | None:
    """The :class:`Reference` in *payload*, or None when it is anything else."""
    if len(payload) > REFERENCE_MAX:
        return None
    try:
        data = encoding.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict) or set(data) != {"schema", "change"}:
        return None
    schema, change = data["schema"], data["change"]
    if not isinstance(schema, str) or type(change) is not int or not 0 < change < 2**63:
        return None
    return Reference(schema, change)


class ThrottledWarning:
    """A warning logged at most once per *interval*, with how often it happened meanwhile."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last = -interval
        self._held = 0

    def warn(self, count: int, message: str, *args: Any) -> None:
        """Log ``message % args`` for *count* more occurrences, unless it was logged less than
        the interval ago (then they are added to the next one)."""
        self._held += count
        now = time.monotonic()
        if now - self._last >= self.interval:
            log.warning(message + " (%d times since the last such warning)", *args, self._held)
            self._last, self._held = now, 0


class ReplayWindow:
    """Which stored changes may still be delivered, by key and commit time (the database's clock)."""

    def __init__(self, window: float = REPLAY_WINDOW, limit: int = SEEN_LIMIT) -> None:
        self.window = window
        self.limit = limit
        self._seen: dict[int, float] = {}
        self._floor = 0.0

    def admit(self, key: int, created: float, now: float) -> str:
        """``"new"`` (and remembered), ``"replayed"`` (delivered before) or ``"stale"`` (committed
        before the window, or not after the floor)."""
        if key in self._seen:
            return "replayed"
        if created <= self._floor or created < now - self.window:
            return "stale"
        self._seen[key] = created
        horizon = now - self.window
        while len(self._seen) > self.limit or next(iter(self._seen.values())) < horizon:
            oldest = next(iter(self._seen))
            self._floor = max(self._floor, min(self._seen.pop(oldest), now))
        return "new"

    def raise_floor(self, now: float) -> None:
        """Admit nothing committed before *now* (after a skip or a reconnection: a ``gap`` covers it)."""
        self._floor = max(self._floor, now)


class ChangeListener:
    """The LISTEN connection of one process to one database, shared by every capture on it."""

    def __init__(self, engine: Engine, runtime: "Runtime", key: str) -> None:
        self.engine = engine
        self.runtime = runtime
        self.key = key
        self._started = False
        self._handlers: dict[tuple[str, str], list[tuple[weakref.ref[Any], str]]] = {}
        self._lock = threading.Lock()
        self._window = ReplayWindow()
        self._forged_warning = ThrottledWarning(WARN_INTERVAL)
        self._read_warning = ThrottledWarning(WARN_INTERVAL)
        self._gap_pending = False
        self._last_gap = -GAP_INTERVAL
        self.connected = False
        self.reconnections = 0
        """How many times the connection was lost and made again."""
        self.gaps = 0
        """``gap`` events sent (each to every subscriber of the captured collections)."""
        self.forged = 0
        """Notifications dropped: no reference, or one to no stored change."""
        self.replayed = 0
        """References to a change already delivered, dropped."""
        self.skipped = 0
        """Notifications skipped past the backlog (a ``gap`` each time)."""

    def add(self, owner: Any, table: tuple[str, str], changes_method: str, gap_method: str) -> None:
        """Send batches of changes of *table* to ``owner.<changes_method>(changes)`` and gaps to
        ``owner.<gap_method>()`` (once per owner, however many tables it captures), while *owner* lives."""
        with self._lock:
            self._handlers.setdefault(table, []).append((weakref.ref(owner), changes_method))
            gaps = self._handlers.setdefault(("", ""), [])
            if not any(ref() is owner for ref, _ in gaps):
                gaps.append((weakref.ref(owner), gap_method))

    def _live(self, key: tuple[str, str]) -> list[tuple[Any, str]]:
        with self._lock:
            handlers = [(ref(), name) for ref, name in self._handlers.get(key, ())]
            self._handlers[key] = [entry for entry, (owner, _) in zip(self._handlers.get(key, ()), handlers) if owner is not None]
        return [(owner, name) for owner, name in handlers if owner is not None]

    def _schemas(self) -> set[str]:
        with self._lock:
            return {schema for schema, table in self._handlers if table}

    def start(self) -> None:
        """Start listening (on a thread or greenlet), once."""
        with self._lock:
            started, self._started = self._started, True
        if not started:
            self.runtime.spawn(self.run)

    @property
    def needed(self) -> bool:
        """True while any capture on it lives."""
        return bool(self._live(("", "")))

    def _connect(self) -> Any:
        raw = self.engine.raw_connection()
        connection: Any = raw.driver_connection
        raw.detach()  # ours for good: it LISTENs, the pool must not hand it out
        connection.autocommit = True
        connection.execute(f"LISTEN {CHANNEL}")
        return connection

    def run(self) -> None:
        """Listen until no capture needs it; reconnect after a lost connection, then report a gap."""
        failures = 0
        while self.needed:
            try:
                connection = self._connect()
            except Exception as exc:  # noqa: BLE001 - any connection failure: retry with backoff
                delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                failures += 1
                log.warning("database capture cannot LISTEN (%s); retrying in %.1f s", exc, delay)
                self.runtime.sleep(delay)
                continue
            self.connected = True
            try:
                if failures or self.reconnections:
                    self._window.raise_floor(self._database_time())
                    self._note_gap()
                failures = 0
                self._receive(connection)
            except Exception as exc:  # noqa: BLE001 - a lost connection: reconnect and tell subscribers
                log.warning("database capture lost its connection (%s); reconnecting", exc)
                self.reconnections += 1
                failures = 1
            finally:
                self.connected = False
                try:
                    connection.close()
                except Exception:  # noqa: BLE001 - it is gone either way
                    pass
        _forget(self)

    def _receive(self, connection: Any) -> None:
        while self.needed:
            self._send_pending_gap()
            payloads = [notify.payload for notify in next_notifies(connection, self.runtime, POLL)]
            while payloads and len(payloads) <= BACKLOG:
                more = [notify.payload for notify in connection.notifies(timeout=0)]
                if not more:
                    break
                payloads += more
            if len(payloads) > BACKLOG:
                self._skip_ahead(connection, len(payloads))
            elif payloads:
                self._dispatch(payloads)

    def _skip_ahead(self, connection: Any, count: int) -> None:
        deadline = time.monotonic() + SKIP_TIME
        while time.monotonic() < deadline:
            self.runtime.sleep(0)
            more = sum(1 for _ in connection.notifies(timeout=0))
            if not more:
                break
            count += more
        self.skipped += count
        log.warning("database capture skipped %d notifications (more than %d pending); sending a gap", count, BACKLOG)
        self._window.raise_floor(self._database_time())
        self._note_gap()

    def _database_time(self) -> float:
        with self.engine.connect() as connection:
            return float(connection.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one())

    def _dispatch(self, payloads: list[str]) -> None:
        """Resolve a batch of notifications and hand its changes, in order, to their captures."""
        schemas = self._schemas()
        references = [parse_reference(payload) for payload in payloads]
        known = [reference for reference in references if reference is not None and reference.schema in schemas]
        forged = len(payloads) - len(known)
        stored: dict[str, tuple[dict[int, tuple[Any, float]], int, float]] = {}
        for schema in dict.fromkeys(reference.schema for reference in known):
            try:
                stored[schema] = self._read(schema, {r.change for r in known if r.schema == schema})
            except Exception as exc:  # noqa: BLE001 - e.g. no SELECT on the change table: say so, tell subscribers
                self._read_warning.warn(1, "database capture cannot read %s.%s (%s); sending a gap",
                                        schema, CHANGE_TABLE, exc)
                self._note_gap()
        known = [reference for reference in known if reference.schema in stored]
        changes: list[Change] = []
        for reference in known:
            rows, expired_through, now = stored[reference.schema]
            found = rows.get(reference.change)
            if found is None:
                if reference.change > expired_through:
                    forged += 1
                else:
                    self._note_gap()  # expired before this process read it
                continue
            verdict = self._window.admit(reference.change, found[1], now)
            if verdict == "replayed":
                self.replayed += 1
            elif verdict == "stale":
                self._note_gap()
            else:
                change = _change(reference.schema, found[0])
                if change is None:
                    forged += 1
                else:
                    changes.append(change)
        if forged:
            self.forged += forged
            self._forged_warning.warn(forged, "database capture dropped notifications on %s that reference no "
                                      "stored change (forged, or sent by an outdated trigger: run "
                                      "`flask rtbroker install-triggers`)", CHANNEL)
        self._deliver(changes)

    def _read(self, schema: str, keys: set[int]) -> tuple[dict[int, tuple[Any, float]], int, float]:
        """The stored changes of *keys* (payload, commit time), the highest expired key, the time."""
        query = text(f"SELECT e.through, extract(epoch FROM clock_timestamp()), c.id, c.payload, extract(epoch FROM c.created) "
                     f"FROM {qualified(schema, EXPIRY_TABLE)} e LEFT JOIN {qualified(schema, CHANGE_TABLE)} c "
                     "ON c.id = ANY(CAST(:keys AS bigint[]))")
        with self.engine.connect() as connection:
            result = connection.execute(query, {"keys": sorted(keys)}).all()
        rows = {int(key): (payload, float(created)) for _, _, key, payload, created in result if key is not None}
        through, now = (int(result[0][0]), float(result[0][1])) if result else (0, 0.0)
        return rows, through, now

    def _deliver(self, changes: list[Change]) -> None:
        for start in range(0, len(changes), DELIVER_SLICE):
            if start:
                self.runtime.sleep(0)  # let the other greenlets run between slices
            self._deliver_slice(changes[start:start + DELIVER_SLICE])

    def _deliver_slice(self, changes: list[Change]) -> None:
        batches: dict[int, tuple[Callable[[list[Change]], None], list[Change]]] = {}
        for change in changes:
            for owner, name in self._live((change.schema, change.table)):
                batches.setdefault(id(owner), (getattr(owner, name), []))[1].append(change)
        for receive, batch in batches.values():
            try:
                receive(batch)
            except Exception:  # noqa: BLE001 - one app's failure stays with it, as a gap
                log.exception("could not broadcast %d captured changes; sending a gap", len(batch))
                self._note_gap()

    def _note_gap(self) -> None:
        self._gap_pending = True
        self._send_pending_gap()

    def _send_pending_gap(self) -> None:
        if not self._gap_pending or time.monotonic() - self._last_gap < GAP_INTERVAL:
            return
        self._gap_pending, self._last_gap = False, time.monotonic()
        self.gaps += 1
        for owner, name in self._live(("", "")):
            try:
                getattr(owner, name)()
            except Exception:  # noqa: BLE001 - see _deliver
                log.exception("could not send a gap event")


def _change(schema: str, payload: Any) -> Change | None:
    """The :class:`Change` a trigger stored, or None when the row is not one (or not of *schema*)."""
    try:
        data = payload if isinstance(payload, dict) else encoding.loads(payload)
        change = Change(data["schema"], data["table"], data["action"], data["row"], data.get("old"))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return change if change.schema == schema and change.action in ("insert", "update", "delete") else None


_listeners: dict[str, ChangeListener] = {}
_listeners_lock = threading.Lock()


def listener_for(engine: Engine, runtime: "Runtime") -> ChangeListener:
    """This process's listener for *engine*'s database and connect options; :meth:`ChangeListener.add`
    a capture, then :meth:`ChangeListener.start` it."""
    key = engine.url.render_as_string(hide_password=False) + repr(sorted(engine.dialect.create_connect_args(engine.url)[1].items()))
    with _listeners_lock:
        listener = _listeners.get(key)
        if listener is None:
            listener = _listeners[key] = ChangeListener(engine, runtime, key)
    return listener


def wait_listening(listener: ChangeListener, timeout: float) -> bool:
    """Wait until *listener* has LISTENed (changes committed after that reach it)."""
    deadline = time.monotonic() + timeout
    while not listener.connected and time.monotonic() < deadline:
        listener.runtime.sleep(0.01)
    return listener.connected


def _forget(listener: ChangeListener) -> None:
    with _listeners_lock:
        if _listeners.get(listener.key) is listener:
            del _listeners[listener.key]
