"""Database capture on PostgreSQL: every committed change to a table, whoever makes it.

``broker.watch(Model, capture="database")`` listens instead of watching the session:

- A row trigger (:func:`trigger_sql`, installed by ``flask rtbroker install-triggers``) stores
  each insert, update and delete in :data:`CHANGE_TABLE` (the schema, table, action, the row,
  for a delete as it was, and for an update the row before it) and notifies its key on
  :data:`CHANNEL`. NOTIFY has no access control: any role that can connect may send on any
  channel, or LISTEN to it. So a notification carries only a reference; the listener reads the
  change itself from a table only the trigger function's owner writes (the function is
  ``SECURITY DEFINER`` with a fixed ``search_path``; the table is revoked from PUBLIC), and drops
  a reference to no row (:mod:`.change_listener`). Writers need no privilege on that table.
- The trigger is deferred to commit, so a stored change is stamped with the commit's
  ``clock_timestamp()``; changes older than :data:`CHANGE_KEEP` are deleted by the trigger
  itself, now and then, which records the highest key it deleted, so a listener tells an
  expired change (a ``gap``) from a forged key (dropped).
- Each process turns the rows into the model's ORM objects in batches
  (:meth:`CapturedTable.serialize_rows`: one ``jsonb_populate_recordset`` of the table's own
  row type per batch of distinct keys, so values have the column types) and serialises them with the watch's
  serializer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from ..protocol import encoding
from ..errors import WatchError

log = logging.getLogger("flask_rtbroker.records")
T = TypeVar("T")

CHANNEL = "flask_rtbroker_records"
"""The NOTIFY channel of every captured table of a database: payloads are references only."""
FUNCTION = "flask_rtbroker_notify"
CHANGE_TABLE = "flask_rtbroker_changes"
"""Where every captured change waits for the listeners (per schema); only its owner writes it."""
EXPIRY_TABLE = "flask_rtbroker_expired"
"""One row per schema: the highest key of :data:`CHANGE_TABLE` deleted as expired."""
CHANGE_KEEP = 600
"""Seconds a stored change is kept after its commit, for slow listeners."""
CLEANUP_EVERY = 1000
"""The trigger deletes expired changes when a change's key is a multiple of this."""
CLEANUP_LOCK = 0x72746273
"""The advisory lock one cleaning transaction holds (the others skip their turn)."""


_SEPARATOR = ";\n\n"
"""Between the statements of the generated SQL (function bodies hold none)."""


def quote(name: str) -> str:
    """*name* as a quoted SQL identifier."""
    if not name or "\x00" in name:
        raise WatchError(f"not a usable SQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    """``"schema"."name"``."""
    return f"{quote(schema)}.{quote(name)}"


def table_of(model: type) -> tuple[str | None, str]:
    """The ``(schema or None, table name)`` of a mapped *model*."""
    table = getattr(model, "__table__", None)
    if table is None:
        raise WatchError(f"{model.__name__} is not a mapped table; capture='database' needs one")
    return table.schema, table.name


def _trigger_name(table: str) -> str:
    return quote(f"{FUNCTION}_{table}"[:63])


def trigger_sql(tables: Iterable["CapturedTable"]) -> str:
    """The SQL that installs, idempotently, a row trigger on each of *tables* and (in each of
    their schemas) the capture function and change tables; it upgrades an older installation."""
    tables = list(tables)
    statements: list[str] = []
    for schema in dict.fromkeys(table.schema for table in tables):
        statements += _function_sql(schema)
    for table in tables:
        statements += [
            f"DROP TRIGGER IF EXISTS {_trigger_name(table.table)} ON {qualified(table.schema, table.table)}",
            f"CREATE CONSTRAINT TRIGGER {_trigger_name(table.table)} AFTER INSERT OR UPDATE OR DELETE ON "
            f"{qualified(table.schema, table.table)} DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
            f"EXECUTE FUNCTION {qualified(table.schema, FUNCTION)}()",
        ]
    return _SEPARATOR.join(statements) + ";\n"


def _function_sql(schema: str) -> list[str]:
    function = qualified(schema, FUNCTION)
    changes = qualified(schema, CHANGE_TABLE)
    expired = qualified(schema, EXPIRY_TABLE)
    return [
        f"CREATE TABLE IF NOT EXISTS {changes} (id bigserial PRIMARY KEY, payload jsonb NOT NULL, "
        "created timestamptz NOT NULL DEFAULT clock_timestamp())",
        f"ALTER TABLE {changes} ALTER COLUMN created SET DEFAULT clock_timestamp()",
        f"CREATE INDEX IF NOT EXISTS {quote(CHANGE_TABLE + '_created')} ON {changes} (created)",
        f"CREATE TABLE IF NOT EXISTS {expired} (one boolean PRIMARY KEY DEFAULT true CHECK (one), "
        "through bigint NOT NULL DEFAULT 0)",
        f"INSERT INTO {expired} DEFAULT VALUES ON CONFLICT DO NOTHING",
        f"REVOKE ALL ON {changes}, {expired} FROM PUBLIC",
        f"""CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
DECLARE
  change bigint;
BEGIN
  IF TG_OP = 'UPDATE' AND NEW IS NOT DISTINCT FROM OLD THEN
    RETURN NULL;
  END IF;
  INSERT INTO {changes} (payload, created) VALUES (jsonb_build_object(
    'schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME, 'action', lower(TG_OP),
    'row', CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END,
    'old', CASE WHEN TG_OP = 'UPDATE' THEN to_jsonb(OLD) END), clock_timestamp()) RETURNING id INTO change;
  PERFORM pg_notify('{CHANNEL}', jsonb_build_object('schema', TG_TABLE_SCHEMA, 'change', change)::text);
  IF mod(change, {CLEANUP_EVERY}) = 0 AND pg_try_advisory_xact_lock({CLEANUP_LOCK}) THEN
    WITH gone AS (DELETE FROM {changes} WHERE created < clock_timestamp() - interval '{CHANGE_KEEP} seconds' RETURNING id)
    UPDATE {expired} SET through = greatest(through, (SELECT max(id) FROM gone));
  END IF;
  RETURN NULL;
END
$body$""",
        f"REVOKE ALL ON FUNCTION {function}() FROM PUBLIC",  # it runs as its owner: no one else attaches it
    ]


def remove_sql(tables: Iterable["CapturedTable"]) -> str:
    """The SQL that drops the row triggers of *tables* (the function and change tables stay)."""
    statements = [f"DROP TRIGGER IF EXISTS {_trigger_name(t.table)} ON {qualified(t.schema, t.table)}" for t in tables]
    return _SEPARATOR.join(statements) + ";\n"


def trigger_state(table: "CapturedTable") -> str:
    """``"installed"``, ``"missing"`` or ``"outdated"`` (a trigger of an earlier version, whose
    notifications the listener ignores: run the install again)."""
    query = text("SELECT t.tgdeferrable AND p.prosecdef FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
                 "WHERE t.tgname = :name AND t.tgrelid = CAST(:table AS regclass)")
    with table.engine.connect() as connection:
        current = connection.execute(query, {"name": f"{FUNCTION}_{table.table}"[:63],
                                             "table": qualified(table.schema, table.table)}).scalar_one_or_none()
    return "missing" if current is None else "installed" if current else "outdated"


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
    """One committed change as a trigger stored it: JSON rows of the table."""

    schema: str
    table: str
    action: str
    row: dict[str, Any]
    old: dict[str, Any] | None


class CapturedTable:
    """One watched model captured from the database: turns its rows into ORM objects."""

    def __init__(self, model: type, engine: Engine) -> None:
        if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
            raise WatchError(f"capture='database' needs PostgreSQL with the psycopg (3) driver (postgresql+psycopg://); "
                             f"{model.__name__}'s engine is {engine.dialect.name}+{engine.dialect.driver}")
        self.model = model
        self.engine = engine
        schema, self.table = table_of(model)
        self.schema = schema or current_schema(engine)
        self._key_columns = [column.name for column in getattr(model, "__table__").primary_key.columns]
        self._statement = text(f"SELECT * FROM jsonb_populate_recordset(NULL::{qualified(self.schema, self.table)}, "
                               "CAST(:rows AS jsonb))")

    def serialize_rows(self, session: Session, rows: list[dict[str, Any]],
                       serializer: Callable[[Any], T]) -> list[T | None]:
        """*rows* (JSON of the table) as the model's ORM objects, typed by the table's row type,
        through *serializer*, in order; ``None`` where the serializer failed (logged by the
        caller's logger). One SELECT per run of rows with distinct primary keys (the session
        holds one object per key); the objects leave *session* afterwards."""
        results: list[T | None] = []
        for run in self._distinct_key_runs(rows):
            loaded = session.scalars(select(self.model).from_statement(
                self._statement.bindparams(rows=encoding.dumps(run).decode()))).all()
            if len(loaded) != len(run):
                raise WatchError(f"{self.schema}.{self.table}: {len(run)} rows decoded as {len(loaded)}")
            try:
                results += [_serialized(serializer, instance) for instance in loaded]
            finally:
                session.expunge_all()  # the same key may come again with other values (the old row)
        return results

    def _distinct_key_runs(self, rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        run: list[dict[str, Any]] = []
        keys: set[bytes] = set()
        for row in rows:
            key = encoding.dumps([row.get(name) for name in self._key_columns])
            if key in keys:
                yield run
                run, keys = [], set()
            run.append(row)
            keys.add(key)
        if run:
            yield run


def _serialized(serializer: Callable[[Any], T], instance: Any) -> T | None:
    try:
        return serializer(instance)
    except Exception:  # noqa: BLE001 - one row's failure stays with it
        log.exception("could not serialise a captured %s", type(instance).__name__)
        return None
