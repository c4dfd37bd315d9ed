"""Security boundaries: revoked identities, apps sharing a Redis server, the backplane as a trust
boundary (what crosses it, forged envelopes, signatures, credentials in logs), identity keys,
the per-address cap under a race, and the todo example's key. Cross-process cases run against
gunicorn workers and a real redis-server."""

from __future__ import annotations

import logging
import stat
import threading
import time
import types
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis
import requests
import simplejson
from flask import Flask, Request

from flask_rtbroker import ApiError, Emitter, Message, RealtimeBroker
from flask_rtbroker.backplane import Envelope, MemoryBackplane
from flask_rtbroker.backplane.base import ROUTE_LENGTH
from flask_rtbroker.backplane.redis import redacted
from flask_rtbroker.backplane.signing import sign
from flask_rtbroker.errors import BackplaneUnavailable, ConfigurationError
from flask_rtbroker.identity import identity_key, may_switch_auth
from flask_rtbroker.testing import SSEClient
from tests.live import HOST, LiveServer, free_port
from tests.redis_server import RedisServer

TOKENS = '{"tokA": "userA", "tokB": "userB"}'
SECRET = "a shared secret of some length"
NAMESPACE = "flask_rtbroker:0"
"""The default channel prefix and database: every channel of the app is ``<NAMESPACE>:<channel>``."""


def inbox_of(client_id: str) -> str:
    """The Redis channel of the process that holds *client_id* (its route starts the id)."""
    return f"{NAMESPACE}:p:{client_id[:ROUTE_LENGTH]}"


def assert_no_event(sse: SSEClient, wait: float = 0.7) -> None:
    with pytest.raises(TimeoutError):
        sse.next_event(timeout=wait)


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def stats(server: LiveServer) -> dict[str, Any]:
    return requests.get(f"{server.url}/stats", timeout=10).json()


def publish(redis_server: RedisServer, channel: str, payload: bytes) -> int:
    connection = redis.Redis(host=HOST, port=redis_server.port)
    try:
        return int(connection.publish(channel, payload))
    finally:
        connection.close()


# -- 1. clear_auth takes back what the old identity was allowed ----------------------------------


def test_clear_auth_drops_the_user_topics_of_the_downgraded_connection_in_every_process(
    make_server, redis_server: RedisServer
) -> None:
    env = {"RTBROKER_BACKPLANE": redis_server.url, "RTBROKER_TEST_TOKENS": TOKENS}
    a, b = make_server("gunicorn-gevent", env=env), make_server("gunicorn-gevent", env=env)
    app = Flask("revoker")
    app.config.update(RTBROKER_BACKPLANE=redis_server.url, RTBROKER_CONCURRENCY="threading")
    revoker = RealtimeBroker(app)
    try:
        with b.stream() as sse:
            assert b.subscribe(sse.client_id, ["user/userA", "news"], headers={"Authorization": "tokA"}).status_code == 204
            assert b.notify("user/userA", "mine") == 1
            assert sse.next_event(timeout=5).json() == "mine"
            with app.app_context():
                assert revoker.clear_auth({"collectionName": "users", "id": "userA"}) == 0  # none held here
            wait_for(lambda: b.notify("user/userA", "probe") == 0)  # b downgraded it: its rule denies now
            assert a.notify("user/userA", "secret") == 0  # published; a holds nobody
            assert a.notify("news", "public") == 0
            event = sse.next_event(timeout=5)
            while event.json() == "probe":  # delivered before b handled the clear-auth
                event = sse.next_event(timeout=5)
            assert (event.name, event.json()) == ("news", "public"), "the private message never arrived"
            assert_no_event(sse)
            assert b.subscribe(sse.client_id, ["user/userA"]).status_code == 204, "accepted, as PocketBase would"
            assert b.notify("user/userA", "secret") == 0, "a guest still reads nothing there"
    finally:
        app.extensions["rtbroker"].close()


def test_clear_auth_rechecks_local_connections_and_keeps_what_guests_may_hold() -> None:
    app = Flask(__name__)
    app.config.update(RTBROKER_CONCURRENCY="threading")
    broker = RealtimeBroker(app)

    @broker.before_subscribe
    def only_own(client: Any, subscriptions: list[str], auth: Any) -> None:
        for key in subscriptions:
            if key.startswith("user/") and (auth is None or key != f"user/{auth['id']}"):
                raise ApiError(403, "not yours")
            if key == "fragile" and auth is None:
                raise RuntimeError("hook cannot decide")

    state = app.extensions["rtbroker"]
    with app.app_context():
        client = state.new_client()
        state.broker.register(client)
        client.set("auth", {"id": "u1"})
        client.subscribe("user/u1", "user/u1?options=%7B%7D", "news", "fragile")
        assert broker.clear_auth({"id": "u1"}) == 1
    assert sorted(client.subscriptions()) == ["news"]
    assert client.get("auth") is None
    state.close()


# -- 2. apps on one Redis server do not meet -------------------------------------------------------


def test_apps_on_different_databases_or_prefixes_of_one_redis_are_isolated(make_server, redis_server: RedisServer) -> None:
    base = f"redis://{HOST}:{redis_server.port}"
    first = make_server("gunicorn-gevent", env={"RTBROKER_BACKPLANE": f"{base}/0"})
    other_db = make_server("gunicorn-gevent", env={"RTBROKER_BACKPLANE": f"{base}/1"})
    other_prefix = make_server("gunicorn-gevent", env={"RTBROKER_BACKPLANE": f"{base}/0", "RTBROKER_CHANNEL_PREFIX": '"shop"'})
    same = make_server("gunicorn-gevent", env={"RTBROKER_BACKPLANE": f"{base}/0"})
    with other_db.stream() as db1, other_prefix.stream() as shop, same.stream() as peer:
        for server, sse in ((other_db, db1), (other_prefix, shop), (same, peer)):
            assert server.subscribe(sse.client_id, ["private"]).status_code == 204
        assert first.notify("private", "for my app") == 0
        assert peer.next_event(timeout=5).json() == "for my app", "the same app's other process gets it"
        assert_no_event(db1)
        assert_no_event(shop)
        counted = requests.get(f"{first.url}/stats?cluster=1", timeout=10).json()["cluster"]
        assert counted == 1, "only the same app's process is counted"
        forwarded = requests.post(f"{first.url}/api/realtime", json={"clientId": db1.client_id, "subscriptions": ["x"]},
                                  timeout=10)
        assert forwarded.status_code == 404, "a POST is never forwarded to another app"


# -- 3. the backplane boundary ---------------------------------------------------------------------


def test_a_forwarded_post_carries_only_the_auth_header(make_server, redis_server: RedisServer) -> None:
    env = {"RTBROKER_BACKPLANE": redis_server.url, "RTBROKER_TEST_TOKENS": TOKENS}
    a, b = make_server("gunicorn-gevent", env=env), make_server("gunicorn-gevent", env=env)
    listener = redis.Redis(host=HOST, port=redis_server.port).pubsub(ignore_subscribe_messages=True)
    listener.psubscribe(f"{NAMESPACE}:*")
    try:
        with a.stream() as sse:
            answer = b.subscribe(sse.client_id, ["x"], headers={
                "Authorization": "tokA", "Cookie": "session=s3cret-cookie", "X-Api-Key": "k3y"})
            assert answer.status_code == 204
            captured = b""
            deadline = time.monotonic() + 5
            while b'"k":"post"' not in captured and time.monotonic() < deadline:
                message = listener.get_message(timeout=0.2)
                if message is not None:
                    captured += message["data"] + b"\n"
        post_line = next(line for line in captured.split(b"\n") if b'"k":"post"' in line)
        assert b"tokA" in post_line, "the auth header the loader reads goes along"
        assert b"s3cret-cookie" not in captured and b"k3y" not in captured
    finally:
        listener.close()


def test_forged_envelopes_are_validated_and_signatures_keep_strangers_out(make_server, redis_server: RedisServer) -> None:
    open_env = {"RTBROKER_BACKPLANE": redis_server.url}
    unsigned = make_server("gunicorn-gevent", env=open_env)
    with unsigned.stream() as sse:
        forged_connect = Envelope("attacker\nFAKE LOG LINE", "send", {"c": sse.client_id, "n": "PB_CONNECT"},
                                  b'{"clientId":"attacker"}').encode()
        assert publish(redis_server, inbox_of(sse.client_id), forged_connect) >= 1
        for keys in ([f"k{i}" for i in range(3002)], ["a\nb"]):
            forged_post = Envelope("attacker", "post", {"rid": "r1", "c": sse.client_id, "h": [], "ip": "127.0.0.1",
                                                        "s": keys}).encode()
            publish(redis_server, inbox_of(sse.client_id), forged_post)
        assert_no_event(sse)
        time.sleep(0.3)
        assert stats(unsigned)["subscriptions"] == 0, "the owner re-validated the forged POST (400)"
    assert "FAKE LOG LINE\n" not in unsigned.log() and "attacker\\nFAKE LOG LINE" in unsigned.log()

    signed_env = {**open_env, "RTBROKER_BACKPLANE_SECRET": simplejson.dumps(SECRET)}
    a, b = make_server("gunicorn-gevent", env=signed_env), make_server("gunicorn-gevent", env=signed_env)
    with a.stream() as sse:
        assert b.subscribe(sse.client_id, ["t"]).status_code == 204, "signed forwarding works"
        forged_notify = Envelope("attacker", "notify", {"t": "t"}, b'"forged"').encode()
        wrong_key = sign(forged_notify, b"not the shared secret at all")
        for payload in (forged_notify, wrong_key):
            publish(redis_server, f"{NAMESPACE}:t:t", payload)
        emitter = Emitter(redis_server.url, secret=SECRET)
        emitter.notify("t", "signed")
        emitter.close()
        event = sse.next_event(timeout=5)
        assert event.json() == "signed"
        assert_no_event(sse)
        wait_for(lambda: stats(a)["backplane_rejected_total"] == 2)


def test_credentials_never_appear_in_urls_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://:s3cretPW@{HOST}:{free_port()}/0"
    assert redacted(url) == f"redis://:***@{HOST}:{url.rsplit(':', 1)[1]}"
    assert redacted(f"rediss://user:pw@{HOST}/2") == f"rediss://user:***@{HOST}/2"
    assert redacted(f"redis://{HOST}:6379/0") == f"redis://{HOST}:6379/0"
    emitter = Emitter(url)
    with caplog.at_level(logging.INFO, "flask_rtbroker"), pytest.raises(BackplaneUnavailable) as refused:
        emitter.notify("t", 1)
    assert "s3cretPW" not in str(refused.value) and "s3cretPW" not in caplog.text
    assert "***" in str(refused.value) and "is down" in caplog.text
    assert "s3cretPW" not in emitter.backplane.url


def test_signed_envelopes_on_one_process_bus() -> None:
    """The signature is end to end: the same secret on both apps, the payload signed on the wire."""
    bus = "signed-bus"
    secret = SECRET.encode()
    apps = []
    for _ in range(2):
        app = Flask(__name__)
        app.config.update(RTBROKER_CONCURRENCY="threading", RTBROKER_BACKPLANE=MemoryBackplane(bus, secret=secret),
                          RTBROKER_BACKPLANE_SECRET=SECRET)
        RealtimeBroker(app)
        apps.append(app)
    try:
        receiver = apps[1].extensions["rtbroker"]
        client = receiver.new_client()
        receiver.broker.register(client)
        client.subscribe("t")
        receiver.cluster.ensure_started()
        with apps[0].app_context():
            apps[0].extensions["rtbroker"].cluster.publish_notify(Message("t", 1), None)
        wait_for(lambda: client.queued)
        assert client.take().endswith(b"data:1\n\n")
        with pytest.raises(ConfigurationError, match="secret"):
            bad = Flask(__name__)
            bad.config.update(RTBROKER_BACKPLANE=MemoryBackplane(bus), RTBROKER_BACKPLANE_SECRET=SECRET)
            RealtimeBroker(bad)
        with pytest.raises(ConfigurationError, match="at least 16 bytes"):
            short = Flask(__name__)
            short.config.update(RTBROKER_BACKPLANE_SECRET="short")
            RealtimeBroker(short)
    finally:
        for app in apps:
            app.extensions["rtbroker"].close()


def test_the_readme_acl_is_all_a_process_needs(redis_server: RedisServer) -> None:
    """The Security model's ACL user: publish, subscribe and ping on the app's channels only."""
    admin = redis.Redis(host=HOST, port=redis_server.port)
    admin.execute_command("ACL", "SETUSER", "rt", "on", ">rtpass123", "resetchannels", "&flask_rtbroker:*", "-@all",
                          "+publish", "+subscribe", "+ping")
    url = f"redis://rt:rtpass123@{HOST}:{redis_server.port}/0"
    app = Flask(__name__)
    app.config.update(RTBROKER_BACKPLANE=url, RTBROKER_CONCURRENCY="threading")
    RealtimeBroker(app)
    state = app.extensions["rtbroker"]
    try:
        client = state.new_client()
        state.broker.register(client)
        client.subscribe("t")
        state.cluster.ensure_started()
        emitter = Emitter(url)
        emitter.notify("t", 1)
        emitter.close()
        wait_for(lambda: client.queued)
        with pytest.raises(redis.exceptions.NoPermissionError):
            redis.Redis.from_url(url).publish("other-app:0", b"x")
    finally:
        state.close()
        admin.close()


# -- 4. identities of two classes with the same name -------------------------------------------


def _user_class(module: str) -> type:
    cls = types.new_class("User", exec_body=lambda ns: ns.update({"__init__": lambda self, id: setattr(self, "id", id)}))
    cls.__module__ = module
    return cls


def test_identity_keys_tell_classes_of_the_same_name_apart() -> None:
    customer, staff = _user_class("shop.models")(7), _user_class("backoffice.models")(7)
    assert identity_key(customer) != identity_key(staff)
    assert not may_switch_auth(customer, staff)
    assert may_switch_auth(customer, _user_class("shop.models")(7))


def test_a_connection_cannot_switch_between_same_named_classes() -> None:
    shop_user, staff_user = _user_class("shop.models"), _user_class("backoffice.models")
    app = Flask(__name__)
    app.config.update(RTBROKER_CONCURRENCY="threading")
    broker = RealtimeBroker(app)

    @broker.auth_loader
    def load(request: Request) -> Any:
        return {"customer": shop_user(7), "staff": staff_user(7)}.get(request.headers.get("Authorization", ""))

    state = app.extensions["rtbroker"]
    client = state.new_client()
    client.set("ip", "127.0.0.1")
    state.broker.register(client)
    http = app.test_client()
    body = {"clientId": client.id, "subscriptions": ["x"]}
    assert http.post("/api/realtime", json=body, headers={"Authorization": "customer"}).status_code == 204
    assert http.post("/api/realtime", json=body, headers={"Authorization": "staff"}).status_code == 403
    state.close()


# -- 5. smaller ones -------------------------------------------------------------------------------


@pytest.mark.parametrize("round_", range(3))
def test_the_per_address_cap_holds_under_simultaneous_connects_on_gthread(make_server, round_: int) -> None:
    server = make_server("gunicorn-gthread", env={"RTBROKER_MAX_CLIENTS_PER_IP": "5"})
    barrier = threading.Barrier(50)
    statuses: list[int] = []
    streams: list[SSEClient] = []
    lock = threading.Lock()

    def connect() -> None:
        barrier.wait(10)
        stream = SSEClient.connect(HOST, server.port, timeout=10, read_connect=False)
        with lock:
            statuses.append(stream.status)
            streams.append(stream)

    threads = [threading.Thread(target=connect) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert sorted(statuses) == [200] * 5 + [429] * 45
    finally:
        for stream in streams:
            stream.close()


def test_the_todo_example_never_signs_with_a_published_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from examples.todo import app as todo

    monkeypatch.delenv("TODO_SECRET_KEY", raising=False)
    monkeypatch.setattr(todo, "SECRET_FILE", tmp_path / "todo.secret")
    first, second = todo.secret_key(), todo.secret_key()
    assert first == second and len(first) >= 32, "one generated key, shared by the host's processes"
    assert stat.S_IMODE((tmp_path / "todo.secret").stat().st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [tmp_path / "todo.secret"]
    monkeypatch.setenv("TODO_SECRET_KEY", "configured")
    assert todo.secret_key() == "configured"
