"""Presence on the memory backplane, in process: members are users, sync/join/leave on
``@presence/<topic>``, the grace period, topic rules, the sync cap, budgets and signals."""

from __future__ import annotations

import time

import pytest
from flask import Flask

from flask_rtbroker import RealtimeBroker, signals
from flask_rtbroker.errors import ConfigurationError, InvalidArgument
from flask_rtbroker.presence import GUEST_SESSION_KEY

USERS = {"tok-ann": {"id": "ann", "collectionName": "users", "email": "ann@example.com"},
         "tok-bob": {"id": "bob", "collectionName": "users", "email": "bob@example.com"}}


OPENED: list[Flask] = []


@pytest.fixture(autouse=True)
def close_apps():
    """Close every app a test made: its presence keeper and sweeper end with it."""
    yield
    while OPENED:
        OPENED.pop().extensions["rtbroker"].close()


def make_app(**config: object) -> tuple[Flask, RealtimeBroker]:
    app = Flask(__name__)
    OPENED.append(app)
    app.config.update({"SECRET_KEY": "test", "RTBROKER_PRESENCE_GRACE": 0.3, **config})
    broker = RealtimeBroker(app)
    broker.auth_loader(lambda request: USERS.get(request.headers.get("Authorization", "")))
    broker.presence("room/*")
    return app, broker


def presence_events(client, timeout: float = 2.0) -> list[dict]:
    return [event.data for event in client.get_received(timeout) if event.name.startswith("@presence/")]


def wait_for(predicate, timeout: float = 3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def test_sync_join_leave_and_users_not_connections():
    app, broker = make_app()
    watcher = broker.test_client(app)
    tab1 = broker.test_client(app, headers={"Authorization": "tok-ann"})
    tab1.subscribe("room/1")
    assert watcher.subscribe("@presence/room/1").status_code == 204
    [sync] = presence_events(watcher)
    assert sync["action"] == "sync" and sync["count"] == 1
    [ann] = sync["members"]
    assert ann["info"] == {"id": "ann", "collectionName": "users"} and ann["connections"] == 1
    assert "email" not in str(sync) and "tok-ann" not in str(sync)  # never the token nor other fields

    tab2 = broker.test_client(app, headers={"Authorization": "tok-ann"})
    tab2.subscribe("room/1?options=%7B%7D")  # the same topic with the SDK's options
    guest = broker.test_client(app)
    guest.subscribe("room/1")
    events = presence_events(watcher)
    assert [e["action"] for e in events] == ["join"]  # ann's second tab is no new member
    assert events[0]["member"]["info"] == {}  # a guest shows its key only
    with app.app_context():
        assert broker.presence_count("room/1") == {"clients": 3, "users": 2}
        members = broker.presence("room/1")
    assert sorted(m["connections"] for m in members) == [1, 2]

    tab1.disconnect()
    time.sleep(0.5)
    assert presence_events(watcher, 0.5) == []  # ann still has a tab
    tab2.disconnect()
    time.sleep(0.6)
    left = presence_events(watcher)
    assert left == [{"action": "leave", "member": {"key": ann["key"], "info": ann["info"]}}]
    with app.app_context():
        assert broker.presence_count("room/1") == {"clients": 1, "users": 1}
    for client in (watcher, guest):
        client.disconnect()


def test_reconnect_within_grace_is_no_leave():
    app, broker = make_app(RTBROKER_PRESENCE_GRACE=1.0)
    watcher = broker.test_client(app)
    watcher.subscribe("@presence/room/2")
    presence_events(watcher)
    old = broker.test_client(app, headers={"Authorization": "tok-bob"})
    old.subscribe("room/2")
    [join] = presence_events(watcher)
    old.disconnect()
    new = broker.test_client(app, headers={"Authorization": "tok-bob"})
    new.subscribe("room/2")
    time.sleep(1.3)
    assert presence_events(watcher, 0.3) == []  # neither a leave nor a second join
    new.disconnect()
    time.sleep(1.3)
    assert presence_events(watcher) == [{"action": "leave", "member": join["member"]}]
    watcher.disconnect()


def test_a_guest_is_its_stored_session_not_its_connection():
    app, broker = make_app(RTBROKER_PRESENCE_GRACE=1.0)
    watcher = broker.test_client(app)
    watcher.subscribe("@presence/room/g")
    presence_events(watcher)
    old = broker.test_client(app)
    old.subscribe("room/g")
    [join] = presence_events(watcher)
    session = old.client.get(GUEST_SESSION_KEY)
    assert isinstance(session, str) and session not in str(join)  # only its HMAC is shown
    old.disconnect()
    resumed = broker.test_client(app)
    resumed.client.set(GUEST_SESSION_KEY, session)  # what a resumed session carries over
    resumed.subscribe("room/g")
    other = broker.test_client(app)
    other.subscribe("room/g")
    time.sleep(1.3)
    events = presence_events(watcher)
    assert [e["action"] for e in events] == ["join"] and events[0]["member"]["key"] != join["member"]["key"]
    for c in (watcher, resumed, other):
        c.disconnect()


def test_auth_change_moves_the_member_and_unsubscribing_leaves():
    app, broker = make_app(RTBROKER_PRESENCE_GRACE=0)
    watcher = broker.test_client(app)
    watcher.subscribe("@presence/room/3")
    presence_events(watcher)
    client = broker.test_client(app)
    client.subscribe("room/3")
    [guest_join] = presence_events(watcher)
    client.auth = "tok-ann"
    client.subscribe("room/3")  # same keys, now signed in: the guest leaves, ann joins
    events = presence_events(watcher)
    assert [(e["action"], e["member"]["info"]) for e in events] == [
        ("leave", {}), ("join", {"id": "ann", "collectionName": "users"})]
    assert events[0]["member"]["key"] == guest_join["member"]["key"]
    with app.app_context():
        assert broker.clear_auth(USERS["tok-ann"]) == 1  # a guest again: ann leaves, a guest joins
    events = presence_events(watcher)
    assert [(e["action"], e["member"]["info"]) for e in events] == [
        ("leave", {"id": "ann", "collectionName": "users"}), ("join", {})]
    assert events[1]["member"]["key"] == guest_join["member"]["key"]  # the same guest session
    client.unsubscribe("room/3")
    assert [e["action"] for e in presence_events(watcher)] == ["leave"]
    for c in (watcher, client):
        c.disconnect()


def test_topic_rules_guard_presence_keys_and_info_function():
    app = Flask(__name__)
    OPENED.append(app)
    app.config.update(RTBROKER_PRESENCE_GRACE=0)
    broker = RealtimeBroker(app)
    broker.auth_loader(lambda request: USERS.get(request.headers.get("Authorization", "")))
    broker.presence("team/*", info=lambda client, auth: {"name": auth["id"].upper()} if auth else {"name": "guest"})
    broker.topic_rule("team/*", lambda client, topic, auth: auth is not None)
    outsider = broker.test_client(app)
    outsider.subscribe("@presence/team/x")
    insider = broker.test_client(app, headers={"Authorization": "tok-bob"})
    insider.subscribe("@presence/team/x", "team/x")
    events = presence_events(insider)
    assert [e["action"] for e in events] == ["sync", "join"] or [e["action"] for e in events] == ["join", "sync"]
    assert {"name": "BOB"} in [e.get("member", {}).get("info") for e in events]
    assert presence_events(outsider, 0.5) == []  # no sync, no join: it may not read team/x
    for c in (outsider, insider):
        c.disconnect()


def test_sync_is_capped_with_a_count():
    app, broker = make_app(RTBROKER_PRESENCE_SYNC_LIMIT=3)
    members = [broker.test_client(app) for _ in range(5)]
    for client in members:
        client.subscribe("room/big")
    watcher = broker.test_client(app)
    watcher.subscribe("@presence/room/big")
    [sync] = presence_events(watcher)
    assert len(sync["members"]) == 3 and sync["count"] == 5
    for client in (*members, watcher):
        client.disconnect()


def test_sync_fits_in_a_message_however_large_the_members_info():
    app = Flask(__name__)
    OPENED.append(app)
    app.config.update(RTBROKER_MAX_MESSAGE_SIZE=8192, RTBROKER_CLIENT_QUEUE_BYTES=8192)
    broker = RealtimeBroker(app)
    broker.presence("hall/*", info=lambda client, auth: {"bio": "x" * 1000})
    members = [broker.test_client(app) for _ in range(8)]
    for client in members:
        client.subscribe("hall/1")
    watcher = broker.test_client(app)
    watcher.subscribe("@presence/hall/1")
    [sync] = presence_events(watcher)
    assert sync["count"] == 8 and 1 <= len(sync["members"]) <= 4  # ~1 kB each, half of 8 kB at most
    assert not watcher.client.is_discarded
    for client in (*members, watcher):
        client.disconnect()


def test_presence_keys_count_against_the_subscription_budget():
    app, broker = make_app(RTBROKER_MAX_SUBSCRIPTION_BYTES=200)
    client = broker.test_client(app)
    response = client.subscribe(*[f"@presence/room/{i}" for i in range(20)])
    assert response.status_code == 400
    assert "subscriptions" in response.get_json()["data"]
    client.disconnect()


def test_signals_fire_once_per_join_and_leave():
    app, broker = make_app(RTBROKER_PRESENCE_GRACE=0)
    seen: list[tuple[str, str, dict]] = []
    signals.presence_joined.connect(lambda sender, **kw: seen.append(("join", kw["topic"], kw["member"])), app, weak=False)
    signals.presence_left.connect(lambda sender, **kw: seen.append(("leave", kw["topic"], kw["member"])), app, weak=False)
    a = broker.test_client(app, headers={"Authorization": "tok-ann"})
    b = broker.test_client(app, headers={"Authorization": "tok-ann"})
    a.subscribe("room/s")
    b.subscribe("room/s")
    a.disconnect()
    b.disconnect()
    assert wait_for(lambda: len(seen) == 2)
    assert [(action, topic) for action, topic, _ in seen] == [("join", "room/s"), ("leave", "room/s")]


def test_bad_patterns_and_backplanes_are_refused():
    app, broker = make_app()
    with app.app_context(), pytest.raises(InvalidArgument):
        broker.presence("a*b", info=lambda c, a: {})
    with app.app_context(), pytest.raises(InvalidArgument):
        broker.presence("@presence/*")
    with app.app_context():
        assert broker.presence("lobby") == []  # reading a topic without presence enables nothing
        assert broker.presence_count("lobby") == {"clients": 0, "users": 0}
        assert [rule.pattern for rule in app.extensions["rtbroker"].presence.rules] == ["room/*"]
    pg = Flask(__name__)
    pg.config.update(RTBROKER_BACKPLANE="postgresql://127.0.0.1:1/x", RTBROKER_ALLOW_LOCAL_BACKPLANE=True)
    pg_broker = RealtimeBroker(pg)
    with pg.app_context():
        assert pg_broker.presence_count("room/1") == {"clients": 0, "users": 0}  # reading enables nothing
        with pytest.raises(ConfigurationError):
            pg_broker.presence("room/*")


def test_what_the_store_failed_to_take_is_written_when_it_answers_again():
    app, broker = make_app(RTBROKER_PRESENCE_GRACE=0, RTBROKER_PRESENCE_TTL=0.3)
    watcher = broker.test_client(app)
    watcher.subscribe("@presence/room/f")
    presence_events(watcher)
    presence = app.extensions["rtbroker"].presence
    store = presence.store
    failing = {"add": 1, "remove": 1}

    def flaky(name):
        real = getattr(store, name)

        def call(*args):
            if failing[name]:
                failing[name] -= 1
                raise ConnectionError("the store is down")
            return real(*args)
        return call

    store.add, store.remove = flaky("add"), flaky("remove")
    ann = broker.test_client(app, headers={"Authorization": "tok-ann"})
    assert ann.subscribe("room/f").status_code == 204  # counted later: the store failed
    bob = broker.test_client(app, headers={"Authorization": "tok-bob"})
    bob.subscribe("room/f")
    time.sleep(0.5)
    actions = [(e["action"], e["member"]["info"]["id"]) for e in presence_events(watcher)]
    assert sorted(actions) == [("join", "ann"), ("join", "bob")]
    bob.disconnect()  # the store fails to uncount him, then does it
    gone = broker.test_client(app)  # a guest counted, then gone: its count is never taken back twice
    gone.subscribe("room/f")
    gone.disconnect()
    time.sleep(0.5)
    actions = [(e["action"], e["member"]["info"].get("id", "guest")) for e in presence_events(watcher)]
    assert sorted(actions) == [("join", "guest"), ("leave", "bob"), ("leave", "guest")]
    with app.app_context():
        assert broker.presence_count("room/f") == {"clients": 1, "users": 1}
    for client in (watcher, ann):
        client.disconnect()


FORKED_PRESENCE_LOCKS = """\
import os
from flask import Flask
from flask_rtbroker import RealtimeBroker
app = Flask(__name__)
app.config.update(RTBROKER_GRACEFUL_SHUTDOWN=False)
broker = RealtimeBroker(app)
broker.presence("room/*")  # made before gevent patches, as in gunicorn's master with --preload
pid = os.fork()
if pid == 0:
    from gevent import monkey
    monkey.patch_all()  # what gunicorn's gevent worker does after the fork
    import threading
    tracker = app.extensions["rtbroker"].presence
    lock = tracker._client_lock(object())
    print(type(lock) is type(threading.RLock()) and type(tracker._lock) is type(lock), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_a_forked_worker_serializes_presence_changes_with_its_own_locks():
    """With ``--preload`` the tracker's locks were OS RLocks made before the worker's monkey
    patching: greenlets of one thread re-entered them, so a POST and the end of its stream could
    interleave their store writes. The forked worker makes gevent's locks on first use."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", FORKED_PRESENCE_LOCKS], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "True", result.stdout + result.stderr[-3000:]
