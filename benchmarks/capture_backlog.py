"""Database capture after a big write: how long the next change takes to reach a subscriber.

A throwaway PostgreSQL (tests/postgres_server.py), a table of ``--rows`` posts captured with
``capture="database"`` by an in-process app on threads; another connection updates every row in
one statement, then inserts one row. Measured: the UPDATE's time with the trigger, and from the
INSERT's commit to the subscriber's receipt of its ``create`` or of a ``gap`` (the listener
skipped the backlog). ``--backlog`` overrides the listener's threshold (a huge value decodes
every change: the batch decoding's throughput). ``--old-trigger`` times the UPDATE with the
trigger of 0.2 instead (it sent each row in its notification), without a listener.

    .venv/bin/python -m benchmarks.capture_backlog [--rows 20000] [--backlog N] [--old-trigger]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import psycopg
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from flask_rtbroker.records import change_listener
from tests.postgres_server import PostgresServer
from tests.records_support import Base, Post, close_app, connect, make_app, received

TIMEOUT = 300.0
OLD_TRIGGER = """
CREATE FUNCTION flask_rtbroker_notify() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
  IF TG_OP = 'UPDATE' AND NEW IS NOT DISTINCT FROM OLD THEN
    RETURN NULL;
  END IF;
  PERFORM pg_notify('flask_rtbroker_records', jsonb_build_object(
    'schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME, 'action', lower(TG_OP),
    'row', CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END,
    'old', CASE WHEN TG_OP = 'UPDATE' THEN to_jsonb(OLD) END)::text);
  RETURN NULL;
END
$body$;
CREATE TRIGGER flask_rtbroker_notify_posts AFTER INSERT OR UPDATE OR DELETE ON posts
  FOR EACH ROW EXECUTE FUNCTION flask_rtbroker_notify()
"""
"""The trigger of 0.2 for rows under its 7,900-byte spill limit (as here): the row in the NOTIFY."""


def old_trigger_update(writer: psycopg.Connection[Any]) -> float:
    """Seconds of the UPDATE with the 0.2 trigger."""
    writer.execute(OLD_TRIGGER)
    started = time.perf_counter()
    writer.execute("UPDATE posts SET views = views + 1")
    return time.perf_counter() - started


def measure(rows: int, old_trigger: bool = False) -> dict[str, Any]:
    """One run on a fresh server: the UPDATE's seconds, then the next change's delivery."""
    server = PostgresServer().start()
    engine = create_engine(server.url)
    try:
        Base.metadata.create_all(engine)
        url = make_url(server.url)
        dsn = f"host={url.host} port={url.port} user={url.username} dbname={url.database}"
        with psycopg.connect(dsn, autocommit=True) as writer:
            writer.execute("INSERT INTO posts (id, title, views, owner, body) "
                           "SELECT i, 't' || i, 0, '', '' FROM generate_series(1, %s) AS i", (rows,))
            if old_trigger:
                return {"rows": rows, "trigger": "0.2", "update_s": round(old_trigger_update(writer), 3)}
            app, broker = make_app()
            with app.app_context():
                broker.watch(Post, capture="database", engine=engine)
            assert app.test_cli_runner().invoke(args=["rtbroker", "install-triggers"]).exit_code == 0
            try:
                client = connect(broker, app, "posts/*")
                started = time.perf_counter()
                writer.execute("UPDATE posts SET views = views + 1")
                update = time.perf_counter() - started
                writer.execute("INSERT INTO posts (id, title, views, owner, body) VALUES (%s, 'next', 0, '', '')",
                               (rows + 1,))
                committed = time.perf_counter()
                updates = gaps = 0
                outcome = "timeout"
                while time.perf_counter() - committed < TIMEOUT:
                    for _, data in received(client):
                        if data["action"] == "gap":
                            gaps += 1
                            outcome = "gap"
                        elif data["action"] == "update":
                            updates += 1
                        elif data["record"]["id"] == str(rows + 1):
                            outcome = "create"
                    if outcome != "timeout":
                        break
                    time.sleep(0.002)
                waited = time.perf_counter() - committed
            finally:
                close_app(app)
        return {"rows": rows, "update_s": round(update, 3), "next_change": outcome,
                "after_commit_s": round(waited, 3), "updates_delivered": updates, "gaps": gaps}
    finally:
        engine.dispose()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows the UPDATE changes")
    parser.add_argument("--backlog", type=int, default=change_listener.BACKLOG,
                        help="notifications pending at once past which the listener skips ahead")
    parser.add_argument("--old-trigger", action="store_true", help="time the UPDATE with the trigger of 0.2")
    args = parser.parse_args()
    change_listener.BACKLOG = args.backlog
    print({"backlog": args.backlog, **measure(args.rows, args.old_trigger)})


if __name__ == "__main__":
    main()
