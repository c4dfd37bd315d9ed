"""A real browser on the todo example: headless Chromium shows rows another user changes, live.

Starts examples/todo under gunicorn + gevent; tests/js/records_browser_todo.mjs opens the page as
alice. Bob (this test, over HTTP) adds a shared and a private todo: only the shared one appears.
Bob unshares it: it disappears (a transition delete). Alice's own form then adds a todo. On
PostgreSQL (``capture="database"``) bob is psql instead, writing to the tables directly.
Chromium missing is a failure, never a skip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import requests

from tests.jsrun import run_node
from tests.live import LiveServer
from tests.test_browser import require_chromium
from tests.test_records_js_sdk import TODO_TARGET, TodoPostgres, TodoUser, insert_todo, todo_env
from tests.test_records_js_sdk import todo_postgres  # noqa: F401 - the fixture

StepHandler = Callable[[dict[str, Any]], dict[str, Any]]


def test_todo_page_follows_changes_made_by_someone_else(make_server: Callable[..., LiveServer], tmp_path: Path) -> None:
    require_chromium()
    server = make_server("gunicorn-gevent", target=TODO_TARGET, env=todo_env(tmp_path))
    screenshot = tmp_path / "todo-page.png"
    bob: dict[str, Any] = {}

    def page_live(message: dict[str, Any]) -> dict[str, Any]:
        user = bob["user"] = TodoUser(server.url, "bob")
        bob["shared"] = user.add("bob's shared todo", shared=True)["id"]
        bob["private"] = user.add("bob's private todo")["id"]
        return {"shared": bob["shared"], "private": bob["private"]}

    def shown(message: dict[str, Any]) -> dict[str, Any]:
        bob["user"].change(bob["shared"], shared=False)
        return {}

    check_page(server, screenshot, page_live, shown)


def test_todo_page_follows_psql_on_postgresql(
    todo_postgres: TodoPostgres, make_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    require_chromium()
    server = make_server("gunicorn-gevent", target=TODO_TARGET, env=todo_env(tmp_path, todo_postgres.url))
    bob = "bob000000000001"

    def page_live(message: dict[str, Any]) -> dict[str, Any]:
        todo_postgres.psql(f"INSERT INTO users (id, name) VALUES ('{bob}', 'bob')")
        todo_postgres.psql(insert_todo("bobshared000001", "bob's shared todo", bob, shared=True))
        todo_postgres.psql(insert_todo("bobprivate00001", "bob's private todo", bob))
        return {"shared": "bobshared000001", "private": "bobprivate00001"}

    def shown(message: dict[str, Any]) -> dict[str, Any]:
        todo_postgres.psql("UPDATE todos SET shared = false WHERE id = 'bobshared000001'")
        return {}

    check_page(server, tmp_path / "todo-page-psql.png", page_live, shown)


def check_page(server: LiveServer, screenshot: Path, page_live: StepHandler, shown: StepHandler) -> None:
    """Run tests/js/records_browser_todo.mjs with bob's two steps; check what alice's page showed."""

    def added(message: dict[str, Any]) -> dict[str, Any]:
        alice = TodoUser(server.url, "alice")
        todos = requests.get(f"{server.url}/api/todos", headers=alice.headers, timeout=10).json()
        return {"titles": [todo["title"] for todo in todos]}

    result = run_node(
        "records_browser_todo.mjs", server.url, str(screenshot),
        steps={"page-live": page_live, "shown": shown, "added": added}, timeout=120, context=server.log,
    )
    print(f"screenshot: {screenshot}; bob's todo shown after {result['appearedMs']} ms, "
          f"removed after {result['removedMs']} ms")
    assert result["user"] == "alice" and not result["loginFormShown"] and result["initial"] == []
    assert result["afterBob"] == ["bob's shared todo"] and result["privateShown"] == 0
    assert result["final"] == ["from alice's page"] == result["serverTitles"]
    assert result["appearedMs"] < 3000 and result["removedMs"] < 3000
    assert result["status"] == "live" and result["problems"] == []
    assert screenshot.is_file() and screenshot.stat().st_size > 1000
