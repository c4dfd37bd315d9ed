"""Topic rules in process: who may read a topic is decided at delivery, on every path (local and
remote notify, targeted notify, direct send, record-style per-client messages), once per
identity, kept per connection until its auth changes, and never by refusing a subscription."""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest
from flask import Flask

from flask_rtbroker import DefaultClient, InvalidArgument, RealtimeBroker, wire
from flask_rtbroker.client import AUTH_KEY
from flask_rtbroker.state import BrokerState
from tests.records_support import received
from tests.test_cluster import Intruder, MakeCluster, barrier, bus_url, make_cluster, wait_until  # noqa: F401

ALICE = {"collectionName": "users", "id": "alice"}
BOB = {"collectionName": "users", "id": "bob"}


def own_topic(client: DefaultClient, topic: str, auth: Any) -> bool:
    return auth is not None and topic == f"user/{auth['id']}"


@pytest.fixture
def app() -> Iterator[Flask]:
    app = Flask(__name__)
    app.config.update(RTBROKER_CONCURRENCY="threading", RTBROKER_GRACEFUL_SHUTDOWN=False)
    RealtimeBroker(app)
    yield app
    app.extensions["rtbroker"].close()


def broker_of(app: Flask) -> RealtimeBroker:
    return app.extensions["rtbroker"].hooks  # type: ignore[no-any-return]


def connect(app: Flask, *subscriptions: str, auth: Any = None) -> DefaultClient:
    state: BrokerState = app.extensions["rtbroker"]
    client = state.new_client()
    state.broker.register(client)
    if auth is not None:
        client.set(AUTH_KEY, auth)
    client.subscribe(*subscriptions)
    return client


def test_a_rule_filters_notifies_targeted_notifies_and_sends(app: Flask) -> None:
    broker = broker_of(app)
    calls: list[tuple[str, Any]] = []

    @broker.topic_rule("user/*")
    def counted(client: DefaultClient, topic: str, auth: Any) -> bool:
        calls.append((topic, auth and auth["id"]))
        return own_topic(client, topic, auth)

    alice = connect(app, "user/alice", "user/alice?options=%7B%7D", auth=ALICE)
    bob = connect(app, "user/alice", auth=BOB)
    guest = connect(app, "user/alice", "news")
    with app.app_context():
        assert broker.notify("user/alice", 1) == 2  # both of alice's keys, nobody else
        assert broker.notify("user/alice", 2, to=[bob.id, alice.id]) == 2
        assert broker.notify("news", 3) == 1  # no rule covers it
        assert broker.send(bob.id, "user/alice", 4) is False
        assert broker.send(alice.id, "user/alice", 5) is True
        assert broker.send(guest.id, "hello", 6) is True
    assert received(alice) == [("user/alice", 1), ("user/alice?options=%7B%7D", 1), ("user/alice", 2),
                               ("user/alice?options=%7B%7D", 2), ("user/alice", 5)]
    assert received(bob) == []
    assert received(guest) == [("news", 3), ("hello", 6)]
    assert sorted(calls, key=str) == [("user/alice", "alice"), ("user/alice", "bob"), ("user/alice", None)], (
        "decided once per identity, then kept per connection"
    )


def test_one_evaluation_per_identity_and_a_kept_answer_for_later_broadcasts(app: Flask) -> None:
    broker = broker_of(app)
    calls: list[Any] = []
    broker.topic_rule("news", lambda client, topic, auth: calls.append(auth and auth["id"]) or True)
    clients = [connect(app, "news", auth=ALICE if i % 3 == 0 else BOB if i % 3 == 1 else None) for i in range(300)]
    with app.app_context():
        assert broker.notify("news", "a") == 300
        assert sorted(calls, key=str) == sorted(["alice", "bob", None], key=str)
        assert broker.notify("news", "b") == 300
        assert len(calls) == 3, "a second broadcast asks no rule"
        late = connect(app, "news", auth=ALICE)
        assert broker.notify("news", "c") == 301
        assert len(calls) == 4, "only the new subscriber is decided"
    state: BrokerState = app.extensions["rtbroker"]
    assert state.topic_rules.kept() == 301
    for client in [*clients, late]:
        state.disconnected(client, "closed")
    assert state.topic_rules.kept() == 0, "a disconnect drops the connection's decisions"


def test_a_rule_that_raises_denies_and_every_covering_rule_must_allow(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    broker = broker_of(app)

    @broker.topic_rule("room/*")
    def signed_in(client: DefaultClient, topic: str, auth: Any) -> bool:
        return auth is not None

    @broker.topic_rule("room/staff")
    def broken(client: DefaultClient, topic: str, auth: Any) -> bool:
        raise RuntimeError("cannot decide")

    alice = connect(app, "room/1", "room/staff", auth=ALICE)
    guest = connect(app, "room/1")
    with app.app_context():
        assert broker.notify("room/1", "one") == 1
        assert broker.notify("room/staff", "staff") == 0
    assert received(alice) == [("room/1", "one")] and received(guest) == []
    assert "the topic rule 'room/staff' raised" in caplog.text


@pytest.mark.parametrize("pattern", ["", "a*b", "*x", 3])
def test_bad_patterns_are_refused(app: Flask, pattern: Any) -> None:
    with pytest.raises(InvalidArgument):
        broker_of(app).topic_rule(pattern, own_topic)


def collect_for(rt: Any, seconds: float) -> list[Any]:
    time.sleep(seconds)
    return rt.get_received()  # type: ignore[no-any-return]


def test_subscription_posts_are_accepted_and_the_denied_event_is_opt_in() -> None:
    for denied_event in (False, True):
        app = Flask(__name__)
        app.config.update(RTBROKER_CONCURRENCY="threading", RTBROKER_TOPIC_DENIED_EVENT=denied_event)
        broker = RealtimeBroker(app)
        tokens = {"alice-token": ALICE}
        broker.auth_loader(lambda request: tokens.get(request.headers.get("Authorization", "")))
        broker.topic_rule("user/*", own_topic)
        try:
            with broker.test_client() as rt:
                assert rt.subscribe("news", "user/bob").status_code == 204
                assert rt.subscribe("news", "user/bob", "user/alice").status_code == 204, "the SDK re-sends every key"
                assert rt.subscribe("news", "user/bob", "user/alice", "x").status_code == 204
                with app.app_context():
                    broker.notify("user/bob", "secret")
                    broker.notify("news", "public")
                events = [(event.name, event.data) for event in collect_for(rt, 0.3)]
                denied = [("user/bob", {"denied": "user/bob"}), ("user/alice", {"denied": "user/alice"})]
                assert events == (denied if denied_event else []) + [("news", "public")], "one denied event per key"
                assert rt.subscribe("user/alice", headers={"Authorization": "alice-token"}).status_code == 204
                with app.app_context():
                    broker.notify("user/alice", "mine")
                assert [(e.name, e.data) for e in collect_for(rt, 0.3)] == [("user/alice", "mine")]
        finally:
            app.extensions["rtbroker"].close()


def test_clear_auth_and_refresh_auth_decide_again(app: Flask) -> None:
    broker = broker_of(app)
    broker.topic_rule("user/*", own_topic)
    broker.topic_rule("staff/*", lambda client, topic, auth: bool(auth and auth.get("staff")))
    alice = connect(app, "user/alice", "staff/news", auth=ALICE)
    with app.app_context():
        assert broker.notify("staff/news", 1) == 0
        assert broker.refresh_auth({**ALICE, "staff": True}) == 1
        assert broker.notify("staff/news", 2) == 1
        assert broker.refresh_auth({**BOB, "staff": True}) == 0, "only that user's connections"
        assert broker.notify("user/alice", 3) == 1
        assert broker.clear_auth(ALICE) == 1
        assert broker.notify("user/alice", 4) == 0
        assert broker.notify("staff/news", 5) == 0
        with pytest.raises(InvalidArgument):
            broker.refresh_auth(None)
    assert received(alice) == [("staff/news", 2), ("user/alice", 3)]
    assert alice.get(AUTH_KEY) is None


def test_remote_notifies_and_refresh_auth_cross_processes(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    b.broker.topic_rule("user/*", own_topic)
    b.broker.topic_rule("staff/*", lambda client, topic, auth: bool(auth and auth.get("staff")))
    alice = b.connect("user/alice", "staff/news", "barrier", auth=ALICE)
    bob = b.connect("user/alice", "barrier", auth=BOB)
    assert a.notify("user/alice", "private") == 0 and a.notify("staff/news", "before") == 0
    assert [(e.name, e.json()) for e in barrier(a, alice)] == [("user/alice", "private")]
    assert received(bob) == [("barrier", "done")], "the same delivery as alice's barrier"
    with a.app.app_context():
        assert a.broker.refresh_auth({**ALICE, "staff": True}) == 0  # none held here
    assert barrier(a, alice) == []  # the refresh was handled: it was published before
    assert alice.get(AUTH_KEY) == {**ALICE, "staff": True}
    a.notify("staff/news", "after")
    assert [(e.name, e.json()) for e in barrier(a, alice)] == [("staff/news", "after")]


def test_a_forged_refresh_auth_cannot_make_a_connection_another_user(make_cluster: MakeCluster, bus_url: str) -> None:
    a, b = make_cluster()
    alice = b.connect("barrier", auth=ALICE)
    intruder = Intruder(bus_url)
    token = '["users","alice"]'
    rejected = b.rejected()
    kind = wire.RefreshAuth.KIND
    intruder.publish(intruder.envelope(kind, {"a": token}, b'{"collectionName":"users","id":"bob"}'))
    intruder.publish(intruder.envelope(kind, {"a": token}, b"{not json"))
    wait_until(lambda: b.rejected() == rejected + 2)
    assert alice.get(AUTH_KEY) == ALICE
    intruder.publish(intruder.envelope(kind, {"a": token}, b'{"collectionName":"users","id":"alice","x":1}'))
    wait_until(lambda: alice.get(AUTH_KEY) == {**ALICE, "x": 1})


def test_decisions_for_clients_that_left_a_topic_are_pruned_at_its_next_delivery(app: Flask) -> None:
    broker = broker_of(app)
    broker.topic_rule("room/*", lambda client, topic, auth: auth is not None)
    members = [connect(app, "room/1", auth={"id": f"u{i}"}) for i in range(100)]
    guests = [connect(app, "room/1") for _ in range(10)]
    state: BrokerState = app.extensions["rtbroker"]
    with app.app_context():
        assert broker.notify("room/1", "all") == 100
        assert state.topic_rules.kept() == 110
        for client in members[10:]:
            client.unsubscribe("room/1")  # still connected: only the next delivery can tell
        assert broker.notify("room/1", "few") == 10
    assert state.topic_rules.kept() == 20, "the 90 who left are forgotten, the 10 members and 10 guests kept"
    assert [received(client)[-1] for client in members[:10]] == [("room/1", "few")] * 10
    assert all(received(guest) == [] for guest in guests)


def test_record_events_pass_the_topic_rules_on_top_of_the_collection_rules() -> None:
    from sqlalchemy.orm import Session

    from tests import records_support

    app, broker = records_support.make_app()
    broker.topic_rule("posts/*", lambda client, topic, auth: auth is not None)
    try:
        with app.app_context():
            broker.watch(records_support.Post)
        member = records_support.connect(broker, app, "posts/*", "posts", auth=ALICE)
        guest = records_support.connect(broker, app, "posts/*", "posts")
        for engine in records_support.database("sqlite"):
            with Session(engine) as session:
                session.add(records_support.Post(title="members only"))
                session.commit()
        created = {"record": records_support.record(1, title="members only"), "action": "create"}
        assert records_support.received(member) == [("posts/*", created), ("posts", created)]
        assert records_support.received(guest) == [("posts", created)], "'posts' is no topic of the rule"
    finally:
        records_support.close_app(app)
