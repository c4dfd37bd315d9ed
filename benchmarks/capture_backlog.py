"""Database capture after a big write: how long the next change takes to reach a subscriber.

A throwaway PostgreSQL (tests/postgres_server.py), a table of ``--rows`` posts captured with
``capture="database"`` by an in-process app on threads; another connection updates every row in
one statement, then inserts one row. Measured: the UPDATE's time with the trigger, and from the
INSERT's commit to the subscriber's receipt of its ``create`` or of a ``gap`` (the listener
skipped the backlog). ``--backlog`` overrides the listener's threshold (a huge value decodes
every change: the batch decoding's throughput).

    .venv/bin/python -m benchmarks.capture_backlog [--rows 20000] [--backlog N]
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


def measure(rows: int) -> dict[str, Any]:
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
    args = parser.parse_args()
    change_listener.BACKLOG = args.backlog
    print({"backlog": args.backlog, **measure(args.rows)})


if __name__ == "__main__":
    main()
