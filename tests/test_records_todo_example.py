"""The todo example in process: its API, who sees what, the record events behind the page, and
the ``flask todo`` command's bulk statement (session path on SQLite, capture on PostgreSQL)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from examples.todo.app import create_app
from examples.todo.models import db
from flask_rtbroker import AUTH_KEY
from flask_rtbroker.testing.app_client import RealtimeTestClient

from tests.records_support import received
from tests.test_records_js_sdk import TodoPostgres


@pytest.fixture
def todo_app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app({
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'todo.sqlite3'}",
        "TODO_POCKETBASE_DIST": str(tmp_path / "no-sdk-here"),
        "RTBROKER_CONCURRENCY": "threading",
    })
    yield app
    app.extensions["rtbroker"].close()


def sign_in(client: FlaskClient, name: str) -> tuple[dict[str, str], dict[str, Any]]:
    body = client.post("/api/login", json={"name": name}).get_json()
    return {"Authorization": body["token"]}, body["record"]


def test_api_and_visibility(todo_app: Flask) -> None:
    http = todo_app.test_client()
    alice, alice_record = sign_in(http, "alice")
    bob, _ = sign_in(http, "bob")
    assert sign_in(http, "alice")[1] == alice_record, "signing in again is the same user"
    assert alice_record["collectionName"] == "users" and len(alice_record["id"]) == 15

    secret = http.post("/api/todos", json={"title": "alice's"}, headers=alice).get_json()
    public = http.post("/api/todos", json={"title": "everyone's", "shared": True}, headers=bob).get_json()
    titles = lambda headers: [t["title"] for t in http.get("/api/todos", headers=headers).get_json()]  # noqa: E731
    assert titles(alice) == ["alice's", "everyone's"]
    assert titles(bob) == ["everyone's"]
    assert titles({}) == ["everyone's"]

    assert http.patch(f"/api/todos/{secret['id']}", json={"done": True}, headers=bob).status_code == 404
    assert http.delete(f"/api/todos/{public['id']}", headers=alice).status_code == 404
    assert http.post("/api/todos", json={"title": "x"}).get_json() == {"data": {}, "message": "Sign in first.", "status": 401}
    assert http.post("/api/todos", json={"title": "x"}, headers={"Authorization": "forged"}).status_code == 401
    assert http.post("/api/todos", json={"title": " "}, headers=alice).status_code == 400
    assert http.patch(f"/api/todos/{secret['id']}", json={"done": True, "shared": True}, headers=alice).get_json()["shared"]
    assert titles(bob) == ["alice's", "everyone's"]
    assert http.delete(f"/api/todos/{secret['id']}", headers=alice).status_code == 204
    assert titles(alice) == ["everyone's"]


def test_record_events_follow_visibility(todo_app: Flask) -> None:
    state = todo_app.extensions["rtbroker"]
    http = todo_app.test_client()
    alice, alice_record = sign_in(http, "alice")
    bob, bob_record = sign_in(http, "bob")
    streams = {}
    for name, auth in (("alice", alice_record), ("bob", bob_record), ("guest", None)):
        client = streams[name] = state.new_client()
        state.broker.register(client)
        if auth is not None:
            client.set(AUTH_KEY, auth)
        client.subscribe("todos/*")
    todo = http.post("/api/todos", json={"title": "plan"}, headers=alice).get_json()
    http.patch(f"/api/todos/{todo['id']}", json={"shared": True}, headers=alice)
    http.patch(f"/api/todos/{todo['id']}", json={"done": True}, headers=alice)
    http.patch(f"/api/todos/{todo['id']}", json={"shared": False}, headers=alice)
    http.delete(f"/api/todos/{todo['id']}", headers=alice)
    actions = {name: [data["action"] for _, data in received(client)] for name, client in streams.items()}
    assert actions == {
        "alice": ["create", "update", "update", "update", "delete"],
        "bob": ["create", "update", "delete"],
        "guest": ["create", "update", "delete"],
    }


def test_page_without_the_sdk_says_how_to_install_it(todo_app: Flask) -> None:
    http = todo_app.test_client()
    page = http.get("/")
    assert page.status_code == 503 and b"npm ci --prefix examples/todo" in page.data
    assert http.get("/vendor/pocketbase.es.mjs").status_code == 404


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.live)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The todo example's database: a SQLite file, or a schema on the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'todo.sqlite3'}"
        return
    database = TodoPostgres(request.getfixturevalue("postgres_url"))
    yield database.url
    database.drop()


def test_flask_todo_done_all_reaches_subscribers(database_url: str, tmp_path: Path) -> None:
    """One bulk UPDATE from the command: an event per changed row, for whoever may see it."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "TODO_POCKETBASE_DIST": str(tmp_path),
                      "RTBROKER_CONCURRENCY": "threading"})
    try:
        http = app.test_client()
        alice, _ = sign_in(http, "alice")
        bob, _ = sign_in(http, "bob")
        http.post("/api/todos", json={"title": "open"}, headers=alice)
        shared = http.post("/api/todos", json={"title": "shared", "shared": True}, headers=alice).get_json()
        finished = http.post("/api/todos", json={"title": "finished"}, headers=alice).get_json()
        http.patch(f"/api/todos/{finished['id']}", json={"done": True}, headers=alice)
        bobs = http.post("/api/todos", json={"title": "bob's", "shared": True}, headers=bob).get_json()
        with RealtimeTestClient(app) as alice_rt, RealtimeTestClient(app) as bob_rt:
            assert alice_rt.subscribe("todos/*", headers=alice).status_code == 204
            assert bob_rt.subscribe("todos/*", headers=bob).status_code == 204
            result = app.test_cli_runner().invoke(args=["todo", "done-all", "--user", "alice"])
            assert result.exit_code == 0 and "2 todo(s) of alice marked done" in result.output, result.output
            alice_events = [alice_rt.next_event(timeout=5).data for _ in range(2)]
            assert sorted((e["action"], e["record"]["title"], e["record"]["done"]) for e in alice_events) == [
                ("update", "open", True), ("update", "shared", True)]
            assert bob_rt.next_event(timeout=5).data == {"action": "update", "record": {**shared, "done": True}}
            time.sleep(0.3)  # a capture event for another row would have arrived by now
            assert alice_rt.get_received() == [] and bob_rt.get_received() == []
        assert not next(t for t in http.get("/api/todos", headers=bob).get_json() if t["id"] == bobs["id"])["done"]
    finally:
        app.extensions["rtbroker"].close()
        with app.app_context():
            db.engine.dispose()
