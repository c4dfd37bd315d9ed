"""Database capture on PostgreSQL: every committed change to a table, whoever makes it.

``broker.watch(Model, capture="database")`` listens instead of watching the session:

- A row trigger (:func:`trigger_sql`, installed by ``flask rtbroker install-triggers``) sends
  each insert, update and delete with ``pg_notify`` on :data:`CHANNEL`: the schema, table,
  action, the row (for a delete: as it was) and, for an update, the row before it. NOTIFY is
  delivered at commit and never on rollback, in commit order. A payload over PostgreSQL's
  8,000-byte limit is stored in the table :data:`SPILL_TABLE` and notified by its key; rows
  there older than :data:`SPILL_KEEP` are deleted by the listeners.
- Each process holds one LISTEN connection per database (:class:`ChangeListener`, on a thread or
  greenlet, waiting on the gevent hub or a selector: never blocking the hub). It turns each row into the model's
  ORM object (``jsonb_populate_record`` of the table's own row type, so values have the
  column types), serialises it with the watch's serializer and broadcasts it to this process's
  clients. Every process gets the notification itself, so nothing goes on the backplane.
- After the connection is lost (a PostgreSQL restart) it reconnects with backoff, LISTENs
  again and sends every subscriber of the captured collections a ``gap`` event
  (``{"action": "gap", "record": {"collectionId", "collectionName"}}``): changes may have been
  missed, refetch.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from .. import encoding
from ..backplane.postgres import next_notifies
from ..errors import WatchError

if TYPE_CHECKING:
    from ..concurrency import Runtime

log = logging.getLogger("flask_rtbroker.records")
T = TypeVar("T")

CHANNEL = "flask_rtbroker_records"
"""The NOTIFY channel of every captured table of a database."""
FUNCTION = "flask_rtbroker_notify"
SPILL_TABLE = "flask_rtbroker_changes"
"""Where a change too large for a NOTIFY payload waits for the listeners (per schema)."""
SPILL_KEEP = 600.0
"""Seconds a spilled change is kept for slow listeners."""
NOTIFY_LIMIT = 7900
"""Bytes of payload sent inline; PostgreSQL refuses NOTIFY payloads of 8,000 bytes or more."""
GAP = "gap"
RECONNECT_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)
POLL = 1.0
"""Seconds the listener waits for notifications before it checks whether it is still needed."""


_SEPARATOR = ";\n\n"
"""Between the statements of the generated SQL (function bodies hold none)."""


def _quote(name: str) -> str:
    if not name or "\x00" in name:
        raise WatchError(f"not a usable SQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def _qualified(schema: str, name: str) -> str:
    return f"{_quote(schema)}.{_quote(name)}"


def table_of(model: type) -> tuple[str | None, str]:
    """The ``(schema or None, table name)`` of a mapped *model*."""
    table = getattr(model, "__table__", None)
    if table is None:
        raise WatchError(f"{model.__name__} is not a mapped table; capture='database' needs one")
    return table.schema, table.name


def _trigger_name(table: str) -> str:
    return _quote(f"{FUNCTION}_{table}"[:63])


def trigger_sql(tables: Iterable["CapturedTable"]) -> str:
    """The SQL that installs, idempotently, a row trigger on each of *tables* and (in each of
    their schemas) the capture function and spill table."""
    tables = list(tables)
    statements: list[str] = []
    for schema in dict.fromkeys(table.schema for table in tables):
        statements += _function_sql(schema)
    for table in tables:
        statements += [
            f"DROP TRIGGER IF EXISTS {_trigger_name(table.table)} ON {_qualified(table.schema, table.table)}",
            f"CREATE TRIGGER {_trigger_name(table.table)} AFTER INSERT OR UPDATE OR DELETE ON "
            f"{_qualified(table.schema, table.table)} FOR EACH ROW EXECUTE FUNCTION {_qualified(table.schema, FUNCTION)}()",
        ]
    return _SEPARATOR.join(statements) + ";\n"


def _function_sql(schema: str) -> list[str]:
    function = _qualified(schema, FUNCTION)
    spill = _qualified(schema, SPILL_TABLE)
    return [
        f"CREATE TABLE IF NOT EXISTS {spill} (id bigserial PRIMARY KEY, payload jsonb NOT NULL, "
        "created timestamptz NOT NULL DEFAULT now())",
        f"""CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $body$
DECLARE
  payload text;
  spilled bigint;
BEGIN
  IF TG_OP = 'UPDATE' AND NEW IS NOT DISTINCT FROM OLD THEN
    RETURN NULL;
  END IF;
  payload := jsonb_build_object(
    'schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME, 'action', lower(TG_OP),
    'row', CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END,
    'old', CASE WHEN TG_OP = 'UPDATE' THEN to_jsonb(OLD) END)::text;
  IF octet_length(payload) > {NOTIFY_LIMIT} THEN
    INSERT INTO {spill} (payload) VALUES (payload::jsonb) RETURNING id INTO spilled;
    payload := jsonb_build_object('schema', TG_TABLE_SCHEMA, 'spilled', spilled)::text;
  END IF;
  PERFORM pg_notify('{CHANNEL}', payload);
  RETURN NULL;
END
$body$""",
    ]


def remove_sql(tables: Iterable["CapturedTable"]) -> str:
    """The SQL that drops the row triggers of *tables* (the function and spill table stay)."""
    statements = [f"DROP TRIGGER IF EXISTS {_trigger_name(t.table)} ON {_qualified(t.schema, t.table)}" for t in tables]
    return _SEPARATOR.join(statements) + ";\n"


def trigger_installed(table: "CapturedTable") -> bool:
    """True when *table* has its capture trigger."""
    query = text("SELECT count(*) FROM pg_trigger WHERE tgname = :name AND tgrelid = CAST(:table AS regclass)")
    with table.engine.connect() as connection:
        found = connection.execute(query, {"name": f"{FUNCTION}_{table.table}"[:63],
                                           "table": _qualified(table.schema, table.table)}).scalar_one()
    return bool(found)


def current_schema(engine: Engine) -> str:
    """The schema unqualified names resolve to on *engine*'s connections."""
    with engine.connect() as connection:
        return str(connection.execute(text("SELECT current_schema()")).scalar_one())


INSTALL_LOCK = 0x72746272
"""The advisory lock that makes concurrent installs (several workers starting) wait their turn."""


def run_sql(engine: Engine, sql: str) -> None:
    """Run the statements of *sql* (from :func:`trigger_sql` or :func:`remove_sql`) in one
    transaction, one process at a time (concurrent DDL on one function would fail)."""
    with engine.begin() as connection:
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": INSTALL_LOCK})
        for statement in sql.rstrip().rstrip(";").split(_SEPARATOR):
            connection.exec_driver_sql(statement)


def install_triggers(engine: Engine, *models: type) -> None:
    """Install (or replace) the capture triggers of *models* on *engine*'s database, e.g. at
    start-up or in a migration step; idempotent and safe when several processes run it at once.
    ``flask rtbroker install-triggers`` does the same for every model watched with
    ``capture="database"``."""
    run_sql(engine, trigger_sql(CapturedTable(model, engine) for model in models))


@dataclass(frozen=True)
class Change:
    """One committed change as a trigger reported it: JSON rows of the table."""

    schema: str
    table: str
    action: str
    row: dict[str, Any]
    old: dict[str, Any] | None


class CapturedTable:
    """One watched model captured from the database: turns its :class:`Change` into ORM objects."""

    def __init__(self, model: type, engine: Engine) -> None:
        if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
            raise WatchError(f"capture='database' needs PostgreSQL with the psycopg (3) driver (postgresql+psycopg://); "
                             f"{model.__name__}'s engine is {engine.dialect.name}+{engine.dialect.driver}")
        self.model = model
        self.engine = engine
        schema, self.table = table_of(model)
        self.schema = schema or current_schema(engine)

    def serialize(self, session: Session, row: dict[str, Any], serializer: Callable[[Any], T]) -> T:
        """*row* (JSON of the table) as the model's ORM object, typed by the table's row type,
        through *serializer*; the object leaves *session* afterwards."""
        statement = text(f"SELECT (jsonb_populate_record(NULL::{_qualified(self.schema, self.table)}, CAST(:row AS jsonb))).*")
        loaded = session.scalars(select(self.model).from_statement(statement.bindparams(row=encoding.dumps(row).decode())))
        instance = loaded.one()
        try:
            return serializer(instance)
        finally:
            session.expunge(instance)  # the same key may come again with other values (the old row)


class ChangeListener:
    """The LISTEN connection of one process to one database, shared by every capture on it."""

    def __init__(self, engine: Engine, runtime: "Runtime", key: str) -> None:
        self.engine = engine
        self.runtime = runtime
        self.key = key
        self._started = False
        self._handlers: dict[tuple[str, str], list[tuple[weakref.ref[Any], str]]] = {}
        self._lock = threading.Lock()
        self._spilled_since_cleanup = 0
        self.connected = False
        self.gaps = 0
        """How many times the connection was lost and made again (a gap event each time)."""

    def add(self, owner: Any, table: tuple[str, str], change_method: str, gap_method: str) -> None:
        """Send changes of *table* to ``owner.<change_method>(change)`` and gaps to
        ``owner.<gap_method>()`` (once per owner, however many tables it captures), while *owner* lives."""
        with self._lock:
            self._handlers.setdefault(table, []).append((weakref.ref(owner), change_method))
            gaps = self._handlers.setdefault(("", ""), [])
            if not any(ref() is owner for ref, _ in gaps):
                gaps.append((weakref.ref(owner), gap_method))

    def _live(self, key: tuple[str, str]) -> list[Callable[..., None]]:
        with self._lock:
            handlers = [(ref(), name) for ref, name in self._handlers.get(key, ())]
            self._handlers[key] = [entry for entry, (owner, _) in zip(self._handlers.get(key, ()), handlers) if owner is not None]
        return [getattr(owner, name) for owner, name in handlers if owner is not None]

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
            if failures or self.gaps:
                self._gap()
            failures = 0
            try:
                self._receive(connection)
            except Exception as exc:  # noqa: BLE001 - a lost connection: reconnect and tell subscribers
                log.warning("database capture lost its connection (%s); reconnecting", exc)
                self.gaps += 1
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
            for notify in next_notifies(connection, self.runtime, POLL):
                self._dispatch(notify.payload)

    def _dispatch(self, payload: str) -> None:
        try:
            data = encoding.loads(payload)
            if "spilled" in data:
                data = self._spilled(str(data["schema"]), int(data["spilled"]))
            change = Change(data["schema"], data["table"], data["action"], data["row"], data.get("old"))
        except Exception:  # noqa: BLE001 - a foreign or broken payload on our channel
            log.warning("dropping an unreadable database change %.200r", payload)
            return
        for handler in self._live((change.schema, change.table)):
            try:
                handler(change)
            except Exception:  # noqa: BLE001 - one collection's failure stays with it
                log.exception("could not broadcast a %s.%s change", change.schema, change.table)

    def _spilled(self, schema: str, key: int) -> Any:
        spill = _qualified(schema, SPILL_TABLE)
        with self.engine.begin() as connection:
            payload = connection.execute(text(f"SELECT payload FROM {spill} WHERE id = :id"), {"id": key}).scalar_one()
            self._spilled_since_cleanup += 1
            if self._spilled_since_cleanup >= 100:
                self._spilled_since_cleanup = 0
                connection.execute(text(f"DELETE FROM {spill} WHERE created < now() - make_interval(secs => :keep)"),
                                   {"keep": SPILL_KEEP})
        return payload if isinstance(payload, dict) else encoding.loads(payload)

    def _gap(self) -> None:
        for handler in self._live(("", "")):
            try:
                handler()
            except Exception:  # noqa: BLE001 - see _dispatch
                log.exception("could not send a gap event")


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
