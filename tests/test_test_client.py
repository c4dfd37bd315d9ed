"""broker.test_client(): an app's realtime behaviour tested in process, with no server.

Auth, rejected subscriptions, who receives a notify and record events after a commit, on the
project's own examples (the notify app's per-topic rules, the todo app's per-user records), plus
the client's own contract: refusal, timeouts, the end of the stream, disconnect and gevent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask, Request

import examples.notify_app as notify_example
from flask_rtbroker import ApiError, DefaultClient, DisconnectReason, RealtimeBroker, client_disconnected
from flask_rtbroker.testing.app_client import RealtimeEvent, RealtimeTestClient, StreamRefused
from flask_rtbroker.testing import ReadTimeout, StreamEnded

ROOT = Path(__file__).resolve().parent.parent
QUIET = 0.2
"""Seconds a client waits to show that an event did *not* come."""


def assert_nothing_received(*clients: RealtimeTestClient) -> None:
    for rt in clients:
        with pytest.raises(ReadTimeout):
            rt.next_event(timeout=QUIET)


# -- the notify example: auth and per-topic rules --------------------------------------------------


@pytest.fixture
def notify_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    monkeypatch.setattr(notify_example, "TOKENS", {"alice-token": "alice", "bob-token": "bob"})
    app = notify_example.create_app()
    yield app
    app.extensions["rtbroker"].close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_guest_may_subscribe_to_a_private_topic_and_receives_nothing_on_it(notify_app: Flask) -> None:
    app = notify_app
    http = app.test_client()
    with RealtimeTestClient(app) as guest:
        assert guest.subscribe("news", "private/plans").status_code == 204, "topic rules never refuse a POST"
        assert set(guest.client.subscriptions()) == {"news", "private/plans"}
        assert http.post("/notify", json={"topic": "private/plans", "data": "secret"}).json == {"delivered": 0}
        assert http.post("/notify", json={"topic": "news", "data": "hello"}).json == {"delivered": 1}
        assert guest.next_event().data == "hello"
        assert_nothing_received(guest)


def test_auth_comes_from_the_subscription_post_and_may_not_change_user(notify_app: Flask) -> None:
    app = notify_app
    with RealtimeTestClient(app) as rt:
        assert rt.subscribe("user/alice", "private/plans", headers=bearer("alice-token")).status_code == 204
        assert rt.client.get("auth") == {"collectionName": "users", "id": "alice", "staff": False}
        switched = rt.subscribe("user/bob", headers=bearer("bob-token"))
        assert switched.status_code == 403
        assert switched.json["message"] == "The current and the previous request authorization don't match."
        assert rt.subscriptions == ["user/alice", "private/plans"]


def test_auth_is_sticky_like_the_sdks_auth_store_so_unsubscribe_is_not_refused(notify_app: Flask) -> None:
    with RealtimeTestClient(notify_app) as rt:
        rt.auth = "Bearer alice-token"
        assert rt.subscribe("user/alice", "private/plans").status_code == 204
        assert rt.client.get("auth") == {"collectionName": "users", "id": "alice", "staff": False}
        assert rt.unsubscribe("private/plans").status_code == 204  # sent with the same token
        assert rt.subscriptions == ["user/alice"]
        rt.auth = None
        assert rt.auth is None and "Authorization" not in rt.headers
        signed_out = rt.unsubscribe()
        assert signed_out.status_code == 403  # PocketBase's rule: the auth may not change
        assert signed_out.json["message"] == "The current and the previous request authorization don't match."
    with RealtimeTestClient(notify_app, headers=bearer("bob-token")) as bob:  # the constructor's
        assert bob.auth == "Bearer bob-token"
        assert bob.subscribe("user/bob").status_code == 204
        assert bob.unsubscribe().status_code == 204 and bob.subscriptions == []
        once = bob.subscribe("user/alice", headers=bearer("alice-token"))  # per call: added for that call
        assert once.status_code == 403 and bob.auth == "Bearer bob-token"


def test_a_notify_from_a_request_reaches_exactly_its_subscribers(notify_app: Flask) -> None:
    app = notify_app
    http = app.test_client()
    with RealtimeTestClient(app) as alice, RealtimeTestClient(app) as bob, RealtimeTestClient(app) as guest:
        assert alice.subscribe("news", "user/alice", headers=bearer("alice-token")).status_code == 204
        assert bob.subscribe("user/bob", headers=bearer("bob-token")).status_code == 204
        assert guest.subscribe("news").status_code == 204

        assert http.post("/notify", json={"topic": "user/alice", "data": {"n": 1}}).json == {"delivered": 1}
        assert alice.next_event() == RealtimeEvent("user/alice", alice.client_id, {"n": 1})
        assert_nothing_received(bob, guest)

        assert http.post("/notify", json={"topic": "news", "data": "hello"}).json == {"delivered": 2}
        assert [rt.next_event().data for rt in (alice, guest)] == ["hello", "hello"]
        assert_nothing_received(bob)


# -- the todo example: record events after a commit ----------------------------------------------------


@pytest.fixture
def todo_app(tmp_path: Path) -> Iterator[Flask]:
    pytest.importorskip("flask_sqlalchemy", reason="the test extras install Flask-SQLAlchemy")
    from examples.todo.app import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'todo.db'}"})
    yield app
    app.extensions["rtbroker"].close()
    with app.app_context():
        app.extensions["sqlalchemy"].engines[None].dispose()


def test_record_events_after_a_commit_follow_each_users_visibility(todo_app: Flask) -> None:
    app = todo_app
    http = app.test_client()
    tokens = {name: http.post("/api/login", json={"name": name}).json["token"] for name in ("alice", "bob")}
    with RealtimeTestClient(app) as alice, RealtimeTestClient(app) as bob:
        for name, rt in (("alice", alice), ("bob", bob)):
            assert rt.subscribe("todos/*", headers={"Authorization": tokens[name]}).status_code == 204

        created = http.post("/api/todos", json={"title": "milk"}, headers={"Authorization": tokens["alice"]}).json
        event = alice.next_event()
        assert (event.name, event.data["action"], event.data["record"]["id"]) == ("todos/*", "create", created["id"])
        assert_nothing_received(bob)  # a private todo: bob may not see it

        shared = http.patch(f"/api/todos/{created['id']}", json={"shared": True}, headers={"Authorization": tokens["alice"]})
        assert shared.status_code == 200
        assert alice.next_event().data["action"] == "update"
        appeared = bob.next_event().data  # a transition: it became visible to bob
        assert (appeared["action"], appeared["record"]["title"]) == ("create", "milk")


# -- the client's own contract ---------------------------------------------------------------------


@pytest.fixture
def app_broker() -> Iterator[tuple[Flask, RealtimeBroker]]:
    app = Flask(__name__)
    broker = RealtimeBroker(app)
    yield app, broker
    app.extensions["rtbroker"].close()


def test_notify_in_test_code_and_several_events_in_order(app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    with broker.test_client() as rt:
        assert rt.connected and broker.get_client(rt.client_id) is rt.client
        assert rt.connect_event == RealtimeEvent("PB_CONNECT", rt.client_id, {"clientId": rt.client_id})
        rt.subscribe("a", "b")
        for i in range(3):
            broker.notify("a", i)
        broker.notify("b", [1, 2])
        received = [rt.next_event() for _ in range(4)]
        assert [(e.name, e.data) for e in received] == [("a", 0), ("a", 1), ("a", 2), ("b", [1, 2])]
        assert rt.get_received() == []
        assert rt.unsubscribe("a").status_code == 204 and rt.subscriptions == ["b"]
        broker.notify("a", "gone")
        assert_nothing_received(rt)


def test_get_received_returns_what_the_server_queued_by_the_time_of_the_call(
    app_broker: tuple[Flask, RealtimeBroker],
) -> None:
    app, broker = app_broker
    with broker.test_client() as rt, broker.test_client() as other:
        rt.subscribe("a")
        other.subscribe("a")
        for round_ in range(20):  # no sleep, no wait: each call sees the notify made just before it
            assert broker.notify("a", round_) == 2
            assert [(e.name, e.data) for e in rt.get_received()] == [("a", round_)]
        assert rt.get_received() == []
        for i in range(5):
            broker.notify("a", i)
        assert [e.data for e in rt.get_received()] == [0, 1, 2, 3, 4]
        assert [e.data for e in other.get_received()][-5:] == [0, 1, 2, 3, 4]
        broker.notify("a", "later")
        assert rt.next_event().data == "later"  # next_event still waits for what is to come
    assert rt.get_received() == []  # closed: nothing is queued, nothing waited for


def test_before_connect_refusal_raises_with_the_response(app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker

    @broker.before_connect
    def only_with_ticket(client: DefaultClient, request: Request) -> None:
        if request.headers.get("X-Ticket") != "ok":
            raise ApiError(403, "No ticket.")

    with pytest.raises(StreamRefused) as refused:
        broker.test_client(app)
    assert refused.value.response.status_code == 403
    assert refused.value.response.json == {"data": {}, "message": "No ticket.", "status": 403}
    assert broker.total_clients() == 0
    with broker.test_client(app, headers={"X-Ticket": "ok"}) as rt:
        assert broker.total_clients() == 1 and rt.connected


def test_disconnect_ends_the_stream_unregisters_and_signals_closed(app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    reasons: list[tuple[str, Any]] = []

    def on_disconnect(sender: Flask, client: DefaultClient, reason: DisconnectReason) -> None:
        reasons.append((client.id, reason))

    client_disconnected.connect(on_disconnect, app)
    try:
        rt = broker.test_client(app)
        rt.disconnect()
        assert reasons == [(rt.client_id, DisconnectReason.CLOSED)]
        assert not rt.connected and broker.total_clients() == 0
        rt.disconnect()  # idempotent
        assert len(reasons) == 1
        with pytest.raises(StreamEnded):
            rt.next_event(timeout=QUIET)
    finally:
        client_disconnected.disconnect(on_disconnect, app)


def test_events_written_before_the_server_ends_the_stream_are_still_read(app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    rt = broker.test_client(app)
    rt.subscribe("t")
    broker.notify("t", "last words")
    broker.unregister(rt.client_id)
    assert rt.next_event().data == "last words"
    with pytest.raises(StreamEnded):
        rt.next_event(timeout=2)
    assert not rt.connected
    rt.disconnect()


def test_next_event_times_out_promptly(app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    with RealtimeTestClient(app) as rt:
        started = time.monotonic()
        with pytest.raises(ReadTimeout):
            rt.next_event(timeout=0.1)
        assert time.monotonic() - started < 1.0


def test_each_app_of_a_shared_broker_gets_its_own_clients() -> None:
    broker = RealtimeBroker()
    first, second = Flask("first"), Flask("second")
    broker.init_app(first)
    broker.init_app(second)
    try:
        with broker.test_client(first) as one, broker.test_client(second) as two:
            one.subscribe("t")
            two.subscribe("t")
            with first.app_context():
                broker.notify("t", "first only")
            assert one.next_event().data == "first only"
            assert_nothing_received(two)
    finally:
        for app in (first, second):
            app.extensions["rtbroker"].close()


GEVENT_SCENARIO = textwrap.dedent(
    """
    from gevent import monkey; monkey.patch_all()
    import json
    from flask import Flask
    from flask_rtbroker import RealtimeBroker
    app = Flask(__name__)
    broker = RealtimeBroker(app)
    with broker.test_client() as a, broker.test_client() as b:
        a.subscribe("t"); b.subscribe("t")
        broker.notify("t", {"n": 1})
        got = [a.next_event().data, b.next_event().data]
    print(json.dumps({"runtime": type(app.extensions["rtbroker"].runtime).__name__, "got": got,
                      "clients": broker.total_clients()}))
    """
)


def test_works_under_gevent_monkey_patching() -> None:
    done = subprocess.run([sys.executable, "-c", GEVENT_SCENARIO], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"runtime": "GeventRuntime", "got": [{"n": 1}, {"n": 1}], "clients": 0}
