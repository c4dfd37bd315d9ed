"""The official JS SDK (Node) against the todo example: record events, options, a 400, several processes.

tests/js/records_todos.mjs signs in as alice and subscribes with
``pb.collection("todos").subscribe("*", cb)`` (alice and a guest) and
``pb.collection("todos").subscribe(id, cb, {filter, fields})``; this side changes todos as bob
over HTTP (and, with Redis, from another process and a worker script) and checks what arrived.
On PostgreSQL (``capture="database"``), tests/js/records_todos_psql.mjs gets what psql writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from tests.jsrun import JS_DIR, run_node
from tests.live import ROOT, LiveServer
from tests.records_support import drop_schema, postgres_engine
from tests.test_records_capture import psql

TODO_TARGET = "examples.todo.app:app"
SDK_DIST = JS_DIR / "node_modules" / "pocketbase" / "dist"


def todo_env(tmp_path: Path, database_url: str | None = None, **extra: str) -> dict[str, str]:
    """The todo example's settings for a test: *database_url* (default: its own SQLite file),
    tests/js's SDK."""
    from examples.todo.models import db

    if database_url is None:
        database_url = f"sqlite:///{tmp_path / 'todo.sqlite3'}"
        engine = create_engine(database_url)
        db.metadata.create_all(engine)  # before any server starts: no two processes race to create it
        engine.dispose()
    return {"TODO_DATABASE_URL": database_url, "TODO_POCKETBASE_DIST": str(SDK_DIST), **extra}


class TodoPostgres:
    """A schema of its own on the test PostgreSQL for the todo example, and psql on it."""

    def __init__(self, server_url: str) -> None:
        engine, self.schema = postgres_engine(server_url)
        engine.dispose()
        self.server_url = server_url
        in_schema = make_url(server_url).update_query_dict({"options": f"-csearch_path={self.schema}"})
        self.url = in_schema.render_as_string(hide_password=False)
        """``TODO_DATABASE_URL``: the example creates its tables and capture trigger in the schema."""

    def psql(self, sql: str) -> None:
        """Run *sql* with the psql client in the schema (another program's connection)."""
        psql(self.server_url, self.schema, sql)

    def drop(self) -> None:
        drop_schema(self.server_url, self.schema)


@pytest.fixture
def todo_postgres(postgres_url: str) -> Iterator[TodoPostgres]:
    """A todo schema on the test PostgreSQL, dropped after the test (request it before the servers
    on it, so that they stop first)."""
    database = TodoPostgres(postgres_url)
    yield database
    database.drop()


class TodoUser:
    """Someone using the todo example's JSON API."""

    def __init__(self, base_url: str, name: str) -> None:
        self.base_url = base_url
        login = requests.post(f"{base_url}/api/login", json={"name": name}, timeout=10)
        login.raise_for_status()
        self.headers = {"Authorization": login.json()["token"]}
        self.id = login.json()["record"]["id"]

    def call(self, method: str, path: str, **body: Any) -> Any:
        response = requests.request(method, f"{self.base_url}{path}", json=body or None, headers=self.headers, timeout=10)
        response.raise_for_status()
        return response.json() if response.content else None

    def add(self, title: str, shared: bool = False) -> dict[str, Any]:
        return self.call("POST", "/api/todos", title=title, shared=shared)

    def change(self, todo_id: str, **fields: Any) -> dict[str, Any]:
        return self.call("PATCH", f"/api/todos/{todo_id}", **fields)

    def delete(self, todo_id: str) -> None:
        self.call("DELETE", f"/api/todos/{todo_id}")


def bob_changes(server: LiveServer) -> list[dict[str, Any]]:
    """Bob's changes; return the events everyone (alice and a guest) should get from them."""
    bob = TodoUser(server.url, "bob")
    shared = bob.add("shared by bob", shared=True)
    bob.change(shared["id"], done=True)
    bob.delete(shared["id"])
    bob.add("bob's private")
    brief = bob.add("briefly shared", shared=True)
    bob.change(brief["id"], shared=False)  # with transitions: a delete for everyone else
    return [
        {"action": "create", "id": shared["id"], "title": "shared by bob", "shared": True},
        {"action": "update", "id": shared["id"], "title": "shared by bob", "shared": True},
        {"action": "delete", "id": shared["id"], "title": "shared by bob", "shared": True},
        {"action": "create", "id": brief["id"], "title": "briefly shared", "shared": True},
        {"action": "delete", "id": brief["id"], "title": "briefly shared", "shared": True},
    ]


def check_result(result: dict[str, Any], everyone: list[dict[str, Any]]) -> None:
    mine = result["mine"]
    assert result["guest"] == everyone
    assert result["alice"] == everyone + [
        {"action": "create", "id": mine, "title": "alice's secret", "shared": False},
        {"action": "update", "id": mine, "title": "still secret", "shared": False},
        {"action": "update", "id": mine, "title": "still secret", "shared": False},
    ]
    # the example uses transitions: the update that brings the todo into the filter is a create
    assert result["filtered"] == [{"action": "create", "record": {"done": True, "id": mine, "title": "still secret"}}]
    assert any(key.startswith(f"todos/{mine}?options=") for keys in result["keys"] for key in keys)
    rejected = result["rejected"]
    assert rejected["ok"] is False and rejected["error"]["status"] == 400, rejected
    assert rejected["error"]["response"]["data"] == {"subscriptions": {"0": {
        "code": "validation_invalid_filter",
        "message": "Unsupported filter: the any-of operators (?=, ?~, ...) are not supported (position 6).",
    }}}


def test_sdk_subscriptions_to_a_collection(make_server: Callable[..., LiveServer], tmp_path: Path) -> None:
    server = make_server("gunicorn-gevent", target=TODO_TARGET, env=todo_env(tmp_path))
    everyone: list[dict[str, Any]] = []

    def subscribed(message: dict[str, Any]) -> dict[str, Any]:
        everyone.extend(bob_changes(server))
        return {"events": len(everyone)}

    result = run_node("records_todos.mjs", server.url, steps={"subscribed": subscribed}, timeout=60, context=server.log)
    check_result(result, everyone)


def test_sdk_with_changes_from_another_process_and_a_worker(
    make_server: Callable[..., LiveServer], redis_server: Any, tmp_path: Path
) -> None:
    """The SDK on one process; bob on another; a worker script without a broker; one Redis."""
    env = todo_env(tmp_path, RTBROKER_BACKPLANE=redis_server.url)
    page_server = make_server("gunicorn-gevent", target=TODO_TARGET, env=env)
    other = make_server("gunicorn-gthread", target=TODO_TARGET, env=env)
    everyone: list[dict[str, Any]] = []

    def subscribed(message: dict[str, Any]) -> dict[str, Any]:
        everyone.extend(bob_changes(other))
        worker = subprocess.run(
            [sys.executable, "-m", "examples.todo.worker", "add", "from the worker", "--owner", "bob", "--shared"],
            cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=30,
        )
        assert worker.returncode == 0, worker.stderr
        added = requests.get(f"{other.url}/api/todos", timeout=10).json()[-1]
        assert added["title"] == "from the worker"
        everyone.append({"action": "create", "id": added["id"], "title": "from the worker", "shared": True})
        return {"events": len(everyone)}

    result = run_node(
        "records_todos.mjs", page_server.url, steps={"subscribed": subscribed}, timeout=60,
        context=lambda: page_server.log() + "\n" + other.log(),
    )
    check_result(result, everyone)


PSQL_CREATED = "2026-01-02 03:04:05.678"
"""When the todos written with psql were created."""


def insert_todo(todo_id: str, title: str, owner: str, *, shared: bool = False) -> str:
    """The SQL inserting a todo as a program without the ORM would (every column given)."""
    quoted = title.replace("'", "''")
    return (f"INSERT INTO todos (id, title, done, shared, owner, created) "
            f"VALUES ('{todo_id}', '{quoted}', false, {str(shared).lower()}, '{owner}', '{PSQL_CREATED}')")


def todo_row(todo_id: str, title: str, owner: str, *, done: bool = False, shared: bool = False) -> dict[str, Any]:
    """A todo's record as the example serialises it, created at :data:`PSQL_CREATED`."""
    return {"collectionId": "todos", "collectionName": "todos", "created": PSQL_CREATED + "Z", "done": done,
            "id": todo_id, "owner": owner, "shared": shared, "title": title}


def test_sdk_gets_what_psql_writes_on_postgresql(
    todo_postgres: TodoPostgres, make_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """capture="database": psql's inserts, updates (a transition among them) and deletes reach
    the SDK's subscribers who may see them, with the records the session path would send."""
    server = make_server("gunicorn-gevent", target=TODO_TARGET, env=todo_env(tmp_path, todo_postgres.url))
    bob = "bob000000000001"
    expected: dict[str, list[dict[str, Any]]] = {}

    def subscribed(message: dict[str, Any]) -> dict[str, Any]:
        alice = message["alice"]
        todo_postgres.psql(f"INSERT INTO users (id, name) VALUES ('{bob}', 'bob')")
        todo_postgres.psql(insert_todo("bobshared000001", "shared by bob", bob, shared=True))
        todo_postgres.psql(insert_todo("bobprivate00001", "bob private", bob))
        todo_postgres.psql(insert_todo("aliceprivate001", "alice private", alice))
        todo_postgres.psql("UPDATE todos SET done = true WHERE id = 'bobshared000001'")
        todo_postgres.psql("UPDATE todos SET shared = false WHERE id = 'bobshared000001'")  # hidden: a delete
        todo_postgres.psql("DELETE FROM todos WHERE id IN ('aliceprivate001', 'bobprivate00001')")
        shared = todo_row("bobshared000001", "shared by bob", bob, shared=True)
        done = {**shared, "done": True}
        mine = todo_row("aliceprivate001", "alice private", alice)
        everyone = [{"action": "create", "record": shared}, {"action": "update", "record": done},
                    {"action": "delete", "record": done}]  # the record as the subscriber last saw it
        expected["guest"] = everyone
        expected["alice"] = everyone[:1] + [{"action": "create", "record": mine}] + everyone[1:] + [
            {"action": "delete", "record": mine}]
        return {name: len(events) for name, events in expected.items()}

    result = run_node("records_todos_psql.mjs", server.url, steps={"subscribed": subscribed}, timeout=30,
                      context=server.log)
    assert result["guest"] == expected["guest"]
    assert result["alice"] == expected["alice"]
