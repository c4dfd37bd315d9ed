"""Database capture on the real PostgreSQL the fixtures start: every committed change to a
watched table, whoever makes it (psql, another connection, the ORM), becomes a record event."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any, Callable, Iterator

import pytest
from flask import Flask
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from flask_rtbroker import DefaultClient, RealtimeBroker
from flask_rtbroker.records.capture import CHANGE_TABLE, CHANNEL

from tests.postgres_server import PostgresServer
from flask_rtbroker.records import install_triggers
from tests.records_support import Author, Base, Post, close_app, connect, drop_schema, make_app, postgres_engine, received, record

WAIT = 5.0
"""Seconds a change may take from its commit to the client's queue (it takes milliseconds)."""


@pytest.fixture
def pg(postgres_url: str) -> Iterator[tuple[Engine, str, str]]:
    """A schema of its own with the tables: (engine, schema, server URL)."""
    engine, schema = postgres_engine(postgres_url)
    Base.metadata.create_all(engine)
    yield engine, schema, postgres_url
    engine.dispose()
    drop_schema(postgres_url, schema)


def captured_app(engine: Engine, **options: Any) -> tuple[Flask, RealtimeBroker]:
    """An app watching Post with capture="database", its triggers installed by the CLI."""
    app, broker = make_app()
    with app.app_context():
        broker.watch(Post, capture="database", engine=engine, **options)
    result = app.test_cli_runner().invoke(args=["rtbroker", "install-triggers"])
    assert result.exit_code == 0, result.output
    return app, broker


@pytest.fixture
def app_broker(pg: tuple[Engine, str, str]) -> Iterator[tuple[Flask, RealtimeBroker]]:
    app, broker = captured_app(pg[0])
    yield app, broker
    close_app(app)


def psql(url: str, schema: str, sql: str) -> None:
    """Run *sql* with the psql client, as another program would (its own connection)."""
    parsed = make_url(url)
    env = {**os.environ, "PGOPTIONS": f"-csearch_path={schema}"}
    command = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(parsed.host), "-p", str(parsed.port),
               "-U", str(parsed.username), "-d", str(parsed.database), "-c", sql]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def wait_for(client: DefaultClient, count: int, timeout: float = WAIT) -> list[tuple[str, Any]]:
    """Everything *client* receives until it has *count* messages (fails after *timeout*)."""
    events: list[tuple[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(events) < count and time.monotonic() < deadline:
        events += received(client)
        time.sleep(0.01)
    assert len(events) >= count, f"only {len(events)} of {count} messages within {timeout} s: {events}"
    return events


def quiet(client: DefaultClient, seconds: float = 0.3) -> list[tuple[str, Any]]:
    time.sleep(seconds)
    return received(client)


def test_writes_from_psql_are_events_with_the_column_types_of_the_session_path(
    pg: tuple[Engine, str, str], app_broker: tuple[Flask, RealtimeBroker]
) -> None:
    engine, schema, url = pg
    app, broker = app_broker
    client = connect(broker, app, "posts/*")
    psql(url, schema, "INSERT INTO posts (id, title, views, owner, body) VALUES (7, 'from psql', 3, '', '')")
    psql(url, schema, "UPDATE posts SET title = 'changed' WHERE id = 7")
    psql(url, schema, "UPDATE posts SET title = 'changed' WHERE id = 7")  # no change: no event
    psql(url, schema, "DELETE FROM posts WHERE id = 7")
    assert wait_for(client, 3) == [
        ("posts/*", {"action": "create", "record": record(7, title="from psql", views=3)}),
        ("posts/*", {"action": "update", "record": record(7, title="changed", views=3)}),
        ("posts/*", {"action": "delete", "record": record(7, title="changed", views=3)}),  # as it was
    ]
    assert quiet(client) == []


def test_a_rolled_back_write_is_no_event_and_the_session_path_does_not_fire_twice(
    pg: tuple[Engine, str, str], app_broker: tuple[Flask, RealtimeBroker]
) -> None:
    engine, schema, url = pg
    app, broker = app_broker
    client = connect(broker, app, "posts/*")
    psql(url, schema, "BEGIN; INSERT INTO posts (id, title, views, owner, body) VALUES (1, 'no', 0, '', ''); ROLLBACK")
    with Session(engine) as session:
        session.add(Post(id=2, title="orm"))
        session.commit()
    assert [data["record"]["title"] for _, data in wait_for(client, 1)] == ["orm"]
    assert quiet(client) == []


def test_commit_order_across_connections_and_a_row_over_the_notify_limit(
    pg: tuple[Engine, str, str], app_broker: tuple[Flask, RealtimeBroker]
) -> None:
    engine, schema, url = pg
    app, broker = app_broker
    client = connect(broker, app, "posts/*")
    other = create_engine(engine.url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        with engine.connect() as first, other.connect() as second:
            for i in range(20):
                connection = first if i % 2 else second
                connection.execute(text("INSERT INTO posts (id, title, views, owner, body) VALUES (:i, :t, 0, '', '')"),
                                   {"i": i + 1, "t": f"t{i + 1}"})
                connection.commit()
        big = "x" * 20_000  # over PostgreSQL's 8,000-byte NOTIFY payload
        psql(url, schema, f"INSERT INTO posts (id, title, views, owner, body) VALUES (99, 'big', 0, '', '{big}')")
        events = wait_for(client, 21)
        assert [data["record"]["title"] for _, data in events[:20]] == [f"t{i}" for i in range(1, 21)]
        assert events[20][1]["record"]["body"] == big
        with engine.connect() as connection:
            assert connection.execute(text(f"SELECT count(*) FROM {CHANGE_TABLE}")).scalar_one() == 21  # every change
    finally:
        other.dispose()


def test_transitions_get_the_previous_row_from_the_trigger(pg: tuple[Engine, str, str]) -> None:
    engine, schema, url = pg
    app, broker = captured_app(engine, list_rule=lambda post, auth, options: post["status"] == "published",
                               transitions=True)
    try:
        client = connect(broker, app, "posts/*")
        psql(url, schema, "INSERT INTO posts (id, title, views, owner, body) VALUES (1, 'a', 0, '', '')")
        psql(url, schema, "UPDATE posts SET status = 'published' WHERE id = 1")
        psql(url, schema, "UPDATE posts SET status = 'draft', title = 'b' WHERE id = 1")
        assert [(data["action"], data["record"]["title"]) for _, data in wait_for(client, 2)] == [
            ("create", "a"), ("delete", "a"),  # hidden: the record as the subscriber last saw it
        ]
    finally:
        close_app(app)


def trigger_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text(
            "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'flask_rtbroker_notify%' "
            "AND tgrelid = CAST('posts' AS regclass)")).scalar_one()


def test_triggers_install_idempotently_print_as_sql_and_remove(
    pg: tuple[Engine, str, str], app_broker: tuple[Flask, RealtimeBroker]
) -> None:
    engine, schema, url = pg
    app, broker = app_broker
    runner = app.test_cli_runner()
    assert runner.invoke(args=["rtbroker", "install-triggers"]).exit_code == 0  # a second time
    assert trigger_count(engine) == 1
    sql = runner.invoke(args=["rtbroker", "triggers-sql"]).output
    assert f'CREATE CONSTRAINT TRIGGER "flask_rtbroker_notify_posts" AFTER INSERT OR UPDATE OR DELETE ON "{schema}"."posts"' in sql
    assert f"pg_notify('{CHANNEL}'" in sql
    client = connect(broker, app, "posts/*")
    assert runner.invoke(args=["rtbroker", "remove-triggers"]).exit_code == 0
    assert trigger_count(engine) == 0
    psql(url, schema, "INSERT INTO posts (id, title, views, owner, body) VALUES (1, 'unseen', 0, '', '')")
    assert quiet(client) == []
    assert "DROP TRIGGER" in runner.invoke(args=["rtbroker", "triggers-sql", "--remove"]).output


def test_install_triggers_without_a_captured_model_says_so() -> None:
    app, broker = make_app()
    try:
        result = app.test_cli_runner().invoke(args=["rtbroker", "install-triggers"])
        assert result.exit_code != 0 and 'capture="database"' in result.output
    finally:
        close_app(app)


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.stop()


def test_after_a_postgresql_restart_subscribers_get_a_gap_then_changes_again(own_server: PostgresServer) -> None:
    engine = create_engine(own_server.url, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    app, broker = make_app()
    with app.app_context():  # two captured tables: still one gap per subscription
        broker.watch(Post, capture="database", engine=engine)
        broker.watch(Author, capture="database", engine=engine)
    install_triggers(engine, Post, Author)
    try:
        client = connect(broker, app, "posts/*", "posts/1")
        own_server.restart(down_for=0.5)
        gaps = wait_for(client, 2, timeout=15)
        assert sorted(gaps, key=lambda event: event[0]) == [
            ("posts/*", {"action": "gap", "record": {"collectionId": "posts", "collectionName": "posts"}}),
            ("posts/1", {"action": "gap", "record": {"collectionId": "posts", "collectionName": "posts"}}),
        ]
        assert quiet(client) == []
        with Session(engine) as session:
            session.add(Post(id=1, title="after"))
            session.commit()
        assert [data["action"] for _, data in wait_for(client, 2)] == ["create", "create"]
    finally:
        close_app(app)
        engine.dispose()
