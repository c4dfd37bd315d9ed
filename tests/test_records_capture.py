"""Database capture on the real PostgreSQL the fixtures start: every committed change to a
watched table, whoever makes it (psql, another connection, the ORM), becomes a record event."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from typing import Any, Callable, Iterator

import pytest
from flask import Flask
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from flask_rtbroker import DefaultClient, RealtimeBroker
from flask_rtbroker.stats import prometheus_text
from flask_rtbroker.records.capture import CHANGE_TABLE, CHANNEL, EXPIRY_TABLE
from flask_rtbroker.records.change_listener import ChangeListener, _listeners

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


def psql(url: str, schema: str, sql: str, user: str | None = None, fails: bool = False) -> str:
    """Run *sql* with the psql client, as another program would (its own connection), as
    *user* (the URL's by default); return its error output, which must be empty unless *fails*."""
    parsed = make_url(url)
    env = {**os.environ, "PGOPTIONS": f"-csearch_path={schema}"}
    command = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(parsed.host), "-p", str(parsed.port),
               "-U", user or str(parsed.username), "-d", str(parsed.database), "-c", sql]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode != 0) == fails, done.stderr
    return done.stderr


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


@pytest.fixture
def other_role(pg: tuple[Engine, str, str]) -> Iterator[str]:
    """A login role of its own that may use the schema and nothing in it (grants are the test's)."""
    engine, schema, url = pg
    role = "rt_other_" + secrets.token_hex(4)
    with engine.begin() as connection:
        connection.execute(text(f"CREATE ROLE {role} LOGIN"))
        connection.execute(text(f"GRANT USAGE ON SCHEMA {schema} TO {role}"))
    yield role
    with engine.begin() as connection:
        connection.execute(text(f"DROP OWNED BY {role}"))
        connection.execute(text(f"DROP ROLE {role}"))


def listener_of(engine: Engine) -> ChangeListener:
    return next(listener for listener in list(_listeners.values()) if listener.engine is engine)


def wait_until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert condition()


def test_a_role_without_privileges_forges_no_event_and_the_listener_survives_every_payload(
    pg: tuple[Engine, str, str], app_broker: tuple[Flask, RealtimeBroker], other_role: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine, schema, url = pg
    app, broker = app_broker
    client = connect(broker, app, "posts/*", "posts/1")
    listener = listener_of(engine)
    psql(url, schema, "INSERT INTO posts (id, title, views, owner, body) VALUES (1, 'real', 0, '', '')")
    assert [data["action"] for _, data in wait_for(client, 2)] == ["create", "create"]
    with engine.connect() as connection:
        real = connection.execute(text(f"SELECT max(id) FROM {CHANGE_TABLE}")).scalar_one()
    # the stranger may not read the posts, nor the stored changes, nor write them
    assert "permission denied" in psql(url, schema, "SELECT * FROM posts", user=other_role, fails=True)
    assert "permission denied" in psql(url, schema, f"SELECT * FROM {CHANGE_TABLE}", user=other_role, fails=True)
    assert "permission denied" in psql(url, schema, f"INSERT INTO {CHANGE_TABLE} (payload) VALUES ('{{}}')",
                                       user=other_role, fails=True)
    # nor attach the trigger function (it runs as its owner) to a table of its own
    psql(url, schema, f"GRANT CREATE ON SCHEMA {schema} TO {other_role}")
    assert "permission denied for function" in psql(
        url, schema, "CREATE TABLE mine (id int); CREATE TRIGGER t AFTER INSERT ON mine FOR EACH ROW "
                     "EXECUTE FUNCTION flask_rtbroker_notify()", user=other_role, fails=True)
    row = f'"row": {{"id": 2, "title": "forged", "views": 0, "owner": "", "body": "", "status": "draft", "author_id": null}}'
    forged = [
        f'{{"schema": "{schema}", "table": "posts", "action": "insert", {row}, "old": null}}',  # the old inline form
        f'{{"schema": "{schema}", "change": {real + 1000}}}',  # a key no change has
        f'{{"schema": "{schema}", "change": "{real}"}}', f'{{"schema": "other", "change": {real}}}',
        f'{{"schema": "{schema}", "change": {real}, "x": 1}}', f'{{"schema": "{schema}", "change": -1}}',
        '{"schema": "' + schema + '", "change": 1' + "0" * 5000 + '}', "not json", "[]", "",
    ]
    notifies = "; ".join(f"NOTIFY {CHANNEL}, '{payload}'" for payload in forged)
    replay = f"NOTIFY {CHANNEL}, '{{\"schema\": \"{schema}\", \"change\": {real}}}'"  # a real change, again
    flood = (f"DO $$ BEGIN FOR i IN 1..1500 LOOP PERFORM pg_notify('{CHANNEL}', "
             f"format('{{\"schema\": \"{schema}\", \"change\": %s}}', {real} + 10000 + i)); END LOOP; END $$")
    caplog.clear()
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", record_statement := lambda *args: statements.append(args[2]))
    for sql in (notifies, replay, flood):
        psql(url, schema, sql, user=other_role)
    wait_until(lambda: listener.forged == len(forged) + 1500 and listener.replayed == 1)
    event.remove(engine, "before_cursor_execute", record_statement)
    assert len(statements) <= 100  # one SELECT per drained batch (3 here), not one per reference
    assert quiet(client) == []  # 0 of them delivered, and no gap either
    assert listener.skipped == 0 and listener.gaps == 0
    figures = broker.stats()
    assert {name: figures[name] for name in figures if name.startswith("capture_")} == {
        "capture_forged_total": len(forged) + 1500, "capture_replayed_total": 1,
        "capture_skipped_total": 0, "capture_gaps_total": 0}
    assert f"rtbroker_capture_forged_total {len(forged) + 1500}\n" in prometheus_text(figures)
    assert len([r for r in caplog.records if "forged" in r.getMessage()]) <= 2  # rate-limited
    psql(url, schema, "UPDATE posts SET title = 'still here' WHERE id = 1")
    assert [data["record"]["title"] for _, data in wait_for(client, 2)] == ["still here", "still here"]


def test_a_role_allowed_only_to_update_writes_a_10_kb_row_and_it_is_seen(
    pg: tuple[Engine, str, str], app_broker: tuple[Flask, RealtimeBroker], other_role: str
) -> None:
    engine, schema, url = pg
    app, broker = app_broker
    client = connect(broker, app, "posts/*")
    psql(url, schema, "INSERT INTO posts (id, title, views, owner, body) VALUES (1, 'a', 0, '', '')")
    wait_for(client, 1)
    psql(url, schema, f"GRANT SELECT, UPDATE ON posts TO {other_role}")
    psql(url, schema, "UPDATE posts SET body = repeat('x', 10000) WHERE id = 1", user=other_role)
    [(_, data)] = wait_for(client, 1)
    assert data["action"] == "update" and data["record"]["body"] == "x" * 10_000


def test_changes_are_stamped_at_commit_and_expire_by_the_trigger_and_an_expired_one_is_a_gap(
    pg: tuple[Engine, str, str], app_broker: tuple[Flask, RealtimeBroker], other_role: str
) -> None:
    engine, schema, url = pg
    app, broker = app_broker
    client = connect(broker, app, "posts/*")
    started = time.time()
    psql(url, schema, "BEGIN; INSERT INTO posts (id, title, views, owner, body) VALUES (1, 'slow', 0, '', ''); "
                      "SELECT pg_sleep(1); COMMIT")
    wait_for(client, 1)
    with engine.begin() as connection:
        created = connection.execute(text(f"SELECT extract(epoch FROM created) FROM {CHANGE_TABLE}")).scalar_one()
        assert float(created) >= started + 1  # at commit, not at the insert
        # an hour later, the change with key 1000 makes the trigger delete what is older than ten minutes
        connection.execute(text(f"UPDATE {CHANGE_TABLE} SET created = created - interval '1 hour'"))
        connection.execute(text(f"SELECT setval(pg_get_serial_sequence('{CHANGE_TABLE}', 'id'), 999)"))
    psql(url, schema, "UPDATE posts SET title = 'k1000' WHERE id = 1")
    assert [data["record"]["title"] for _, data in wait_for(client, 1)] == ["k1000"]
    with engine.connect() as connection:
        assert connection.execute(text(f"SELECT array_agg(id) FROM {CHANGE_TABLE}")).scalar_one() == [1000]
        assert connection.execute(text(f"SELECT through FROM {EXPIRY_TABLE}")).scalar_one() == 1
    # a reference to the expired change (as from a listener that had not read it yet): a gap, not silence
    psql(url, schema, f"NOTIFY {CHANNEL}, '{{\"schema\": \"{schema}\", \"change\": 1}}'", user=other_role)
    assert wait_for(client, 1) == [
        ("posts/*", {"action": "gap", "record": {"collectionId": "posts", "collectionName": "posts"}})]


def test_after_a_20000_row_update_from_psql_the_next_insert_arrives_within_2_s_or_a_gap_does(
    pg: tuple[Engine, str, str]
) -> None:
    engine, schema, url = pg
    psql(url, schema, "INSERT INTO posts (id, title, views, owner, body) "
                      "SELECT i, 't' || i, 0, '', '' FROM generate_series(1, 20000) AS i")
    app, broker = captured_app(engine)
    try:
        client = connect(broker, app, "posts/*")
        listener = listener_of(engine)
        psql(url, schema, "UPDATE posts SET views = views + 1")
        psql(url, schema, "INSERT INTO posts (id, title, views, owner, body) VALUES (20001, 'next', 0, '', '')")
        committed = time.monotonic()
        events: list[dict[str, Any]] = []
        while time.monotonic() - committed < 2.0 and not any(
                data["action"] == "gap" or data["record"].get("id") == "20001" for data in events):
            events += [data for _, data in received(client)]
            time.sleep(0.005)
        elapsed = time.monotonic() - committed
        actions = [data["action"] for data in events]
        assert "gap" in actions or actions[-1:] == ["create"], (elapsed, len(events))
        assert elapsed < 2.0
        assert set(actions) <= {"update", "gap", "create"}
        assert listener.skipped or actions.count("update") == 20_000
    finally:
        close_app(app)


def test_a_1500_row_update_is_delivered_in_order_decoded_in_batches(pg: tuple[Engine, str, str]) -> None:
    engine, schema, url = pg
    psql(url, schema, "INSERT INTO posts (id, title, views, owner, body) "
                      "SELECT i, 't' || i, 0, '', '' FROM generate_series(1, 1500) AS i")
    app, broker = captured_app(engine)
    statements: list[str] = []
    try:
        client = connect(broker, app, "posts/*")
        event.listen(engine, "before_cursor_execute", record_statement := lambda *args: statements.append(args[2]))
        psql(url, schema, "UPDATE posts SET views = 7")
        events = wait_for(client, 1500, timeout=15)
        assert [(data["action"], data["record"]["id"], data["record"]["views"]) for _, data in events] == [
            ("update", str(i), 7) for i in range(1, 1501)]
        assert listener_of(engine).skipped == 0
        assert len(statements) <= 150, len(statements)  # one per change before; now one per drained batch and one per 200 changes
        event.remove(engine, "before_cursor_execute", record_statement)
    finally:
        close_app(app)


OLD_INSTALLATION = """
CREATE TABLE flask_rtbroker_changes (id bigserial PRIMARY KEY, payload jsonb NOT NULL,
  created timestamptz NOT NULL DEFAULT now());
CREATE FUNCTION flask_rtbroker_notify() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
  PERFORM pg_notify('flask_rtbroker_records', jsonb_build_object('schema', TG_TABLE_SCHEMA,
    'table', TG_TABLE_NAME, 'action', lower(TG_OP), 'row', to_jsonb(NEW), 'old', NULL)::text);
  RETURN NULL;
END
$body$;
CREATE TRIGGER flask_rtbroker_notify_posts AFTER INSERT OR UPDATE OR DELETE ON posts
  FOR EACH ROW EXECUTE FUNCTION flask_rtbroker_notify();
INSERT INTO flask_rtbroker_changes (payload) VALUES ('{"spilled": "before the upgrade"}');
"""
"""What 0.2 installed (its trigger sent the rows themselves), with one spilled change left."""


def test_an_installation_of_0_2_is_upgraded_by_installing_again(
    pg: tuple[Engine, str, str], caplog: pytest.LogCaptureFixture
) -> None:
    engine, schema, url = pg
    psql(url, schema, OLD_INSTALLATION)
    app, broker = make_app()
    try:
        with app.app_context():
            broker.watch(Post, capture="database", engine=engine)
        assert any("has an outdated capture trigger" in record.getMessage() for record in caplog.records)
        client = connect(broker, app, "posts/*")
        psql(url, schema, "INSERT INTO posts (id, title, views, owner, body) VALUES (1, 'old trigger', 0, '', '')")
        listener = listener_of(engine)
        wait_until(lambda: listener.forged == 1)  # its unauthenticated rows are dropped
        assert app.test_cli_runner().invoke(args=["rtbroker", "install-triggers"]).exit_code == 0
        psql(url, schema, "UPDATE posts SET title = 'new trigger' WHERE id = 1")
        assert [data["record"]["title"] for _, data in wait_for(client, 1)] == ["new trigger"]
        assert trigger_count(engine) == 1
        with engine.connect() as connection:
            assert connection.execute(text(f"SELECT count(*) FROM {CHANGE_TABLE}")).scalar_one() == 2
            assert connection.execute(text(
                f"SELECT has_table_privilege('public', '{CHANGE_TABLE}', 'INSERT')")).scalar_one() is False
    finally:
        close_app(app)


def test_one_row_changed_several_times_in_one_transaction_is_each_of_its_values_in_order(
    pg: tuple[Engine, str, str], app_broker: tuple[Flask, RealtimeBroker]
) -> None:
    engine, schema, url = pg
    app, broker = app_broker
    client = connect(broker, app, "posts/*")
    psql(url, schema, "BEGIN; INSERT INTO posts (id, title, views, owner, body) VALUES (5, 'a', 0, '', ''); "
                      "UPDATE posts SET title = 'b' WHERE id = 5; UPDATE posts SET title = 'c' WHERE id = 5; "
                      "DELETE FROM posts WHERE id = 5; COMMIT")
    assert [(data["action"], data["record"]["title"]) for _, data in wait_for(client, 4)] == [
        ("create", "a"), ("update", "b"), ("update", "c"), ("delete", "c")]  # one batch, one SELECT per run of distinct keys
