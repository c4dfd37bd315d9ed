"""notify, send and the hooks, in process: fan-out semantics on both runtimes."""

from __future__ import annotations

import time
from typing import Callable, Iterator

import pytest
from flask import Flask

from flask_rtbroker import ClientNotFound, DefaultClient, Message, MessageTooLarge, RealtimeBroker, message_notified
from flask_rtbroker.testing import parse_events


@pytest.fixture(params=["threading", "gevent"])
def broker(request: pytest.FixtureRequest) -> Iterator[RealtimeBroker]:
    app = Flask(__name__)
    app.config.update(RTBROKER_CONCURRENCY=request.param, RTBROKER_CHUNK_SIZE=3, RTBROKER_MAX_MESSAGE_SIZE=1000)
    broker = RealtimeBroker(app)
    with app.app_context():
        yield broker
        broker.state().close()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def connect(broker: RealtimeBroker, *subscriptions: str) -> DefaultClient:
    client = broker.state().new_client()
    broker.subscriptions_broker.register(client)
    client.subscribe(*subscriptions)
    return client


def received(client: DefaultClient) -> list[tuple[str, bytes]]:
    return [(event.name, event.data.encode()) for event in parse_events(client.take())]


def test_delivered_once_per_matching_key_named_after_it(broker: RealtimeBroker) -> None:
    options_key = "t?options=%7B%22query%22%3A%7B%22a%22%3A1%7D%7D"
    both = connect(broker, "t", options_key)
    plain = connect(broker, "t")
    others = connect(broker, "t/x", "T", "t ", "t?", "tt")
    assert broker.notify("t", {"n": 1}) == 3
    assert received(both) == [("t", b'{"n":1}'), (options_key, b'{"n":1}')]
    assert received(plain) == [("t", b'{"n":1}')]
    assert received(others) == []


def test_a_full_key_matches_only_itself(broker: RealtimeBroker) -> None:
    key = "t?options=%7B%7D"
    holder = connect(broker, "t", key)
    assert broker.notify(key, 1) == 1
    assert received(holder) == [(key, b"1")]


def test_fan_out_over_many_chunks_reaches_everyone_in_order(broker: RealtimeBroker) -> None:
    clients = [connect(broker, "all") for _ in range(20)]
    for i in range(5):
        assert broker.notify("all", i) == 20
    for client in clients:
        assert [payload for _, payload in received(client)] == [b"0", b"1", b"2", b"3", b"4"]


def test_targeted_sends(broker: RealtimeBroker) -> None:
    alice_tab, alice_phone, bob = (connect(broker, "chat") for _ in range(3))
    alice_tab.set("auth", {"id": "alice"})
    alice_phone.set("auth", {"id": "alice"})
    bob.set("auth", {"id": "bob"})
    assert broker.notify("chat", "hi alice", to=lambda c: (c.get("auth") or {}).get("id") == "alice") == 2
    assert broker.notify("chat", "hi bob", to=bob.id) == 1
    assert broker.notify("chat", "tab", to=[alice_tab.id, "unknown"]) == 1
    assert received(alice_tab) == [("chat", b'"hi alice"'), ("chat", b'"tab"')]
    assert received(alice_phone) == [("chat", b'"hi alice"')]
    assert received(bob) == [("chat", b'"hi bob"')]


def test_send_to_one_client_regardless_of_subscriptions(broker: RealtimeBroker) -> None:
    client = connect(broker)
    broker.send(client.id, "direct", {"x": 1})
    assert received(client) == [("direct", b'{"x":1}')]
    with pytest.raises(ClientNotFound):
        broker.send("nope", "direct", 1)


def test_before_send_can_alter_or_skip_a_delivery(broker: RealtimeBroker) -> None:
    keep, skip = connect(broker, "t"), connect(broker, "t")

    @broker.before_send
    def personalise(client: DefaultClient, message: Message) -> Message | None:
        if client is skip:
            return None
        return Message(message.name, {"for": client.id[:4], "was": message.data})

    assert broker.notify("t", 1) == 1
    assert received(keep) == [("t", b'{"for":"%s","was":1}' % keep.id[:4].encode())]
    assert received(skip) == []


def test_first_chunk_error_is_reraised_after_all_chunks_ran(broker: RealtimeBroker) -> None:
    clients = [connect(broker, "t") for _ in range(9)]
    bad = clients[4]

    @broker.before_send
    def explode(client: DefaultClient, message: Message) -> Message:
        if client is bad:
            raise RuntimeError("hook failed")
        return message

    with pytest.raises(RuntimeError, match="hook failed"):
        broker.notify("t", 1)
    assert [len(parse_events(c.take())) for c in clients] == [1, 1, 1, 1, 0, 1, 1, 1, 1]  # only the failing one missed it


def test_message_size_limit_and_bad_topic(broker: RealtimeBroker) -> None:
    client = connect(broker, "t")
    with pytest.raises(MessageTooLarge, match="RTBROKER_MAX_MESSAGE_SIZE"):
        broker.notify("t", "x" * 2000)
    with pytest.raises(ValueError, match="line break"):
        broker.notify("t\n", 1)
    assert received(client) == []


def test_no_subscribers_is_zero_and_signal_reports_it(broker: RealtimeBroker) -> None:
    seen: list[tuple[str, int]] = []

    def record(sender: Flask, message: Message, topic: str, delivered: int) -> None:
        seen.append((topic, delivered))

    with message_notified.connected_to(record):
        connect(broker, "t")
        assert broker.notify("nobody", 1) == 0
        assert broker.notify("t", 1) == 1
    assert seen == [("nobody", 0), ("t", 1)]


def test_discarded_clients_get_nothing(broker: RealtimeBroker) -> None:
    client = connect(broker, "t")
    broker.unregister(client.id)
    assert broker.notify("t", 1) == 0


def test_clear_auth_downgrades_or_disconnects_every_connection_of_a_user(broker: RealtimeBroker) -> None:
    alice_tab, alice_phone, bob, guest = (connect(broker, "t") for _ in range(4))
    for client, user in ((alice_tab, "alice"), (alice_phone, "alice"), (bob, "bob")):
        client.set("auth", {"collectionName": "users", "id": user})
    assert broker.clear_auth({"collectionName": "users", "id": "alice", "name": "renamed"}) == 2
    assert alice_tab.get("auth") is None and alice_phone.get("auth") is None
    assert bob.get("auth") == {"collectionName": "users", "id": "bob"}
    assert not alice_tab.is_discarded
    assert broker.clear_auth({"collectionName": "users", "id": "bob"}, disconnect=True) == 1
    assert bob.discard_reason == "revoked" and not guest.is_discarded


def test_clear_auth_reaches_other_processes_on_a_shared_bus() -> None:
    apps = []
    for _ in range(2):
        app = Flask(__name__)
        app.config.update(RTBROKER_BACKPLANE="memory://clear-auth-test", RTBROKER_CONCURRENCY="threading")
        apps.append((app, RealtimeBroker(app)))
    (app_a, broker_a), (app_b, broker_b) = apps
    states = [app.extensions["rtbroker"] for app, _ in apps]
    for state in states:
        state.cluster.ensure_started()
    wait_until(lambda: all(state.cluster.backplane.state == "up" for state in states))
    with app_b.app_context():
        remote = connect(broker_b, "t")
        remote.set("auth", {"id": "alice"})
    with app_a.app_context():
        assert broker_a.clear_auth({"id": "alice"}) == 0  # none in this process
    wait_until(lambda: remote.get("auth") is None)
    for state in states:
        state.close()


def test_before_send_runs_in_the_app_context_in_every_chunk(broker: RealtimeBroker) -> None:
    from flask import current_app

    clients = [connect(broker, "t") for _ in range(10)]  # four chunks of at most 3
    seen: list[str] = []

    @broker.before_send
    def tag(client: DefaultClient, message: Message) -> Message:
        seen.append(current_app.name)
        return message

    assert broker.notify("t", 1) == 10
    assert seen == [current_app.name] * 10
    assert all(len(received(client)) == 1 for client in clients)
