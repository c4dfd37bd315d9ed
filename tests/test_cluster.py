"""flask_rtbroker.cluster in process: apps on one ``memory://NAME`` bus stand for the processes of a
deployment sharing a Redis. Notify, direct send, forwarded POSTs, counts and clear_auth cross
between them; malformed, unsigned or forged envelopes are dropped and counted, state intact."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

import pytest
from flask import Flask, current_app

from flask_rtbroker import ApiError, DefaultClient, Message, MessageTooLarge, RealtimeBroker, signals, wire
from flask_rtbroker.backplane import Envelope, MemoryBackplane
from flask_rtbroker.backplane.envelope import Stamp
from flask_rtbroker.backplane.base import ALL, ROUTE_LENGTH, SWEEP_INTERVAL, inbox
from flask_rtbroker.backplane.signing import sign
from flask_rtbroker.client import AUTH_KEY, IP_KEY
from flask_rtbroker.runtime.concurrency import ThreadingRuntime
from flask_rtbroker.errors import EnvelopeError, InvalidArgument
from flask_rtbroker.state import BrokerState
from flask_rtbroker.testing import Event, parse_events

SECRET = "cluster-test-secret-0123456789"
TEST_CLIENT_IP = "127.0.0.1"
"""The REMOTE_ADDR of Flask's test client: a forwarded POST carries it to the owner's IP check."""


@dataclass
class Node:
    """One "process": a Flask app with its own RealtimeBroker on the shared bus."""

    app: Flask
    broker: RealtimeBroker

    @property
    def state(self) -> BrokerState:
        return self.app.extensions["rtbroker"]

    def connect(self, *subscriptions: str, auth: Any = None) -> DefaultClient:
        """Register an in-process client (as a stream would, from the test client's address)."""
        with self.app.app_context():
            client = self.broker.state().new_client()
            self.broker.subscriptions_broker.register(client)
        client.set(IP_KEY, TEST_CLIENT_IP)
        if auth is not None:
            client.set(AUTH_KEY, auth)
        client.subscribe(*subscriptions)
        return client

    def notify(self, topic: str, data: Any, **kwargs: Any) -> int:
        with self.app.app_context():
            return self.broker.notify(topic, data, **kwargs)

    def rejected(self) -> int:
        return self.state.stats()["backplane_rejected_total"]

    def replayed(self) -> int:
        return self.state.stats()["backplane_replayed_total"]


MakeCluster = Callable[..., list[Node]]


@pytest.fixture
def bus_url() -> str:
    return "memory://cluster-" + secrets.token_hex(4)


@pytest.fixture
def make_cluster(bus_url: str) -> Iterator[MakeCluster]:
    """Factory: ``make_cluster(count, **config)`` starts *count* nodes on one fresh bus, all listening."""
    nodes: list[Node] = []

    def make(count: int = 2, **config: Any) -> list[Node]:
        made = []
        for _ in range(count):
            app = Flask(__name__)
            app.config.update({"RTBROKER_BACKPLANE": bus_url, "RTBROKER_CONCURRENCY": "threading",
                               "RTBROKER_GRACEFUL_SHUTDOWN": False, "RTBROKER_FORWARD_TIMEOUT": 1.0, **config})
            node = Node(app, RealtimeBroker(app))
            nodes.append(node)
            made.append(node)
        for node in made:
            node.state.cluster.ensure_started()
        wait_until(lambda: all(node.state.cluster.backplane.state == "up" for node in made))
        return made

    yield make
    for node in nodes:
        node.state.close()


def now_ms() -> int:
    return int(time.time() * 1000)


def wait_until(condition: Callable[[], Any], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def collect(client: DefaultClient, count: int, timeout: float = 3.0) -> list[Event]:
    """Wait for *count* events queued on *client* (across the bus they arrive asynchronously)."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(events) < count:
        events += parse_events(client.take())
        assert time.monotonic() < deadline, f"got {len(events)} of {count} events in time: {events}"
        if len(events) < count:
            time.sleep(0.005)
    return events


def barrier(sender: Node, receiver: DefaultClient, topic: str = "barrier") -> list[Event]:
    """Notify *topic* from *sender* and wait for it on *receiver* (subscribed to *topic*); return
    what *receiver* got before it. One publisher's envelopes arrive in order, so anything
    published earlier has been handled once the barrier arrives."""
    sender.notify(topic, "done")
    events = collect(receiver, 1)
    while events[-1].name != topic:
        events += collect(receiver, 1)
    return events[:-1]


def names_and_data(events: list[Event]) -> list[tuple[str, Any]]:
    return [(event.name, event.json()) for event in events]


class Intruder:
    """Someone who can publish raw payloads on the bus but does not run a broker."""

    def __init__(self, bus_url: str) -> None:
        self.backplane = MemoryBackplane(bus_url.removeprefix("memory://"))

    def publish(self, payload: bytes, channel: str = ALL) -> None:
        """Publish *payload* on *channel* (by default the one every process listens on)."""
        self.backplane.publish_to(channel, payload)

    def envelope(self, kind: str, fields: dict[str, Any], body: bytes = b"", stamp: Stamp | None = None) -> bytes:
        return Envelope("intruder", kind, fields, body, stamp).encode()


@dataclass(frozen=True)
class Ping:
    """An extension's own kind of envelope (a WireItem)."""

    KIND: ClassVar[str] = "x-ping"
    n: int
    body: bytes = field(default=b"pong")

    def fields(self) -> dict[str, Any]:
        return {"n": self.n}


# -- a private bus ---------------------------------------------------------------------------------


def test_a_private_memory_bus_has_no_peers_and_the_cluster_does_nothing_remote() -> None:
    app = Flask(__name__)
    app.config.update(RTBROKER_CONCURRENCY="threading", RTBROKER_GRACEFUL_SHUTDOWN=False)
    broker = RealtimeBroker(app)
    node = Node(app, broker)
    try:
        node.connect("t")
        cluster = node.state.cluster
        assert cluster.active is False
        assert cluster.publish(Ping(1)) is False
        assert cluster.forward_post("someone", ["t"], [], TEST_CLIENT_IP, 5.0) is None
        started = time.monotonic()
        assert cluster.count_clients(5.0) == 1
        assert time.monotonic() - started < 1.0, "no peers: nothing to wait for"
    finally:
        node.state.close()


# -- notify ----------------------------------------------------------------------------------------


def test_a_notify_reaches_subscribers_in_the_other_process_once_per_matching_key(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    options_key = "t?options=%7B%7D"
    here = a.connect("t", "barrier")
    there = b.connect("t", options_key)
    assert a.notify("t", {"n": 1}) == 1, "the count is of this process's deliveries"
    assert names_and_data(collect(there, 2)) == [("t", {"n": 1}), (options_key, {"n": 1})]
    assert names_and_data(barrier(b, here)) == [("t", {"n": 1})], "no second copy from the own echo"


def test_a_remote_notify_is_counted_in_the_receiving_process_stats(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    there = [b.connect("t"), b.connect("t")]
    a.notify("t", 1)
    for client in there:
        collect(client, 1)
    stats = b.state.stats()
    assert (stats["notifies_total"], stats["deliveries_total"]) == (1, 2)
    assert a.state.stats()["deliveries_total"] == 0


def test_a_notify_to_client_ids_reaches_only_those_clients_in_every_process(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    chosen_here, other_here = a.connect("t"), a.connect("t", "barrier")
    chosen_there, other_there = b.connect("t"), b.connect("t", "barrier")
    assert a.notify("t", "only you", to=[chosen_here.id, chosen_there.id]) == 1
    assert names_and_data(collect(chosen_there, 1)) == [("t", "only you")]
    assert names_and_data(parse_events(chosen_here.take())) == [("t", "only you")]
    assert barrier(a, other_there) == [] and other_here.take().count(b"event:t\n") == 0


def test_a_notify_with_a_predicate_stays_in_its_own_process(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    here = a.connect("t")
    there = b.connect("t", "barrier")
    assert a.notify("t", "local", to=lambda client: True) == 1
    assert names_and_data(parse_events(here.take())) == [("t", "local")]
    assert barrier(a, there) == [], "a predicate cannot be evaluated elsewhere, so nothing was published"


def test_a_notify_published_by_one_process_is_handled_in_order_by_the_others(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    there = b.connect("t")
    for n in range(50):
        a.notify("t", n)
    assert [event.json() for event in collect(there, 50)] == list(range(50))


# -- direct send -----------------------------------------------------------------------------------


def test_a_send_to_a_client_of_the_other_process_is_delivered_there(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    there = b.connect()  # a direct send needs no subscription
    with a.app.app_context():
        assert a.broker.send(there.id, "direct", {"x": 1}) is False, "not queued here: it went to the bus"
    assert names_and_data(collect(there, 1)) == [("direct", {"x": 1})]
    assert b.state.stats()["deliveries_total"] == 1


def test_a_send_from_another_process_goes_through_the_receiving_process_before_send(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    there = b.connect()
    seen: list[tuple[str, str]] = []

    @b.broker.before_send
    def rename_or_skip(client: DefaultClient, message: Message) -> Message | None:
        seen.append((client.id, message.name))
        if message.name == "secret":
            return None
        return message.renamed("renamed-" + message.name)

    with a.app.app_context():
        a.broker.send(there.id, "secret", 1)
        a.broker.send(there.id, "hello", 2)
    assert names_and_data(collect(there, 1)) == [("renamed-hello", 2)]
    assert seen == [(there.id, "secret"), (there.id, "hello")]
    assert a.state.stats()["deliveries_total"] == 0 and b.state.stats()["deliveries_total"] == 1


def test_a_send_to_an_id_nobody_holds_is_published_and_lost_quietly(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    bystander = b.connect("barrier")
    with a.app.app_context():
        assert a.broker.send("no-such-client", "direct", 1) is False
    assert barrier(a, bystander) == []
    assert b.rejected() == 0


def test_a_pb_connect_send_from_another_process_is_dropped(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    there = b.connect("barrier")
    with a.app.app_context():
        assert a.state.cluster.publish(wire.Send(there.id, "PB_CONNECT", b'{"clientId":"fake"}')) is True
    assert barrier(a, there) == [], "only a stream itself sends PB_CONNECT"
    assert b.rejected() == 1, "counted (and its log throttled) like any envelope no broker publishes"


def test_a_failing_before_send_for_a_send_from_another_process_is_logged_as_such(
    make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = make_cluster()
    there = b.connect("barrier")

    @b.broker.before_send
    def broken(client: DefaultClient, message: Message) -> Message | None:
        if message.name == "direct":
            raise RuntimeError("hook bug")
        return message

    with caplog.at_level(logging.ERROR, "flask_rtbroker.cluster"), a.app.app_context():
        a.broker.send(there.id, "direct", 1)
        assert barrier(a, there) == []
    assert [record.getMessage() for record in caplog.records if record.name == "flask_rtbroker.cluster"] == [
        "before_send failed for a send from another process"]
    assert b.rejected() == 0, "a hook bug is not a rejected payload"


def test_before_send_runs_in_the_app_context_for_notifies_and_sends_from_another_process(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    there = b.connect("t")
    seen: list[tuple[str, Flask]] = []

    @b.broker.before_send
    def record_app(client: DefaultClient, message: Message) -> Message:
        seen.append((message.name, current_app._get_current_object()))  # type: ignore[attr-defined]
        return message

    a.notify("t", 1)
    with a.app.app_context():
        a.broker.send(there.id, "direct", 2)
    assert names_and_data(collect(there, 2)) == [("t", 1), ("direct", 2)]
    assert seen == [("t", b.app), ("direct", b.app)], "the receiving app's context, not the sender's"


# -- forwarded subscription POSTs -------------------------------------------------------------------


def test_a_post_for_a_client_of_the_other_process_is_forwarded_and_applied_there(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    there = b.connect()
    response = a.app.test_client().post("/api/realtime", json={"clientId": there.id, "subscriptions": ["x", "y"]})
    assert response.status_code == 204 and response.data == b""
    assert sorted(there.subscriptions()) == ["x", "y"]
    a.notify("x", "subscribed through a")
    assert names_and_data(collect(there, 1)) == [("x", "subscribed through a")]


def test_a_forwarded_post_gets_the_owner_process_rejection_as_is(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    there = b.connect("kept")

    @b.broker.before_subscribe
    def refuse_private(client: DefaultClient, subscriptions: list[str], auth: Any) -> None:
        if "private" in subscriptions:
            raise ApiError(403, "Not for you.", {"topic": "private"})

    response = a.app.test_client().post("/api/realtime", json={"clientId": there.id, "subscriptions": ["private"]})
    assert response.status_code == 403
    assert response.json == {"data": {"topic": "private"}, "message": "Not for you.", "status": 403}
    assert list(there.subscriptions()) == ["kept"], "a rejected POST changes nothing"


def test_a_forwarded_post_from_another_address_fails_the_owner_ip_check(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    there = b.connect("kept")
    there.set(IP_KEY, "10.0.0.9")  # its stream was opened from elsewhere
    response = a.app.test_client().post("/api/realtime", json={"clientId": there.id, "subscriptions": ["x"]})
    assert response.status_code == 400
    assert response.json == {"data": {}, "message": "Invalid realtime client.", "status": 400}
    assert list(there.subscriptions()) == ["kept"]


def post_timed(node: Node, client_id: str) -> tuple[Any, float]:
    started = time.monotonic()
    response = node.app.test_client().post("/api/realtime", json={"clientId": client_id, "subscriptions": ["x"]})
    return response, time.monotonic() - started


MISSING_CLIENT = {"data": {}, "message": "Missing or invalid client id.", "status": 404}


@pytest.mark.parametrize("client_id", ["nobody", "x" * 40, "A" * ROUTE_LENGTH + "b" * 32])
def test_a_post_for_a_route_nobody_listens_on_is_404_at_once_asking_no_process(
    make_cluster: MakeCluster, client_id: str
) -> None:
    a, b = make_cluster(RTBROKER_FORWARD_TIMEOUT=2.0)
    before = b.state.cluster.backplane.received
    response, elapsed = post_timed(a, client_id)
    assert (response.status_code, response.json) == (404, MISSING_CLIENT)
    assert elapsed < 0.5, f"{elapsed:.3f} s: it waited for the forward timeout"
    assert b.state.cluster.backplane.received == before  # nothing reached the other process


def test_a_forged_id_with_another_process_route_is_404_from_that_process_alone(make_cluster: MakeCluster) -> None:
    a, b, c = make_cluster(3, RTBROKER_FORWARD_TIMEOUT=2.0)
    before = c.state.cluster.backplane.received
    response, elapsed = post_timed(a, b.state.cluster.route + "f" * 32)
    assert (response.status_code, response.json) == (404, MISSING_CLIENT)
    assert elapsed < 0.5, f"{elapsed:.3f} s: the owner did not answer"
    assert c.state.cluster.backplane.received == before  # only the route's owner was asked


def test_an_unknown_id_with_this_process_route_is_404_without_publishing(make_cluster: MakeCluster) -> None:
    a, b = make_cluster(RTBROKER_FORWARD_TIMEOUT=2.0)
    before = b.state.cluster.backplane.received
    response, elapsed = post_timed(a, a.state.cluster.route + "g" * 32)
    assert (response.status_code, response.json, b.state.cluster.backplane.received) == (404, MISSING_CLIENT, before)
    assert elapsed < 0.5


def test_client_ids_start_with_their_process_route_and_stay_40_random_characters(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    ids = [a.connect().id for _ in range(200)]
    assert all(len(i) == 40 and i.isalnum() and i.isascii() for i in ids)
    assert {i[:ROUTE_LENGTH] for i in ids} == {a.state.cluster.route} != {b.state.cluster.route}
    assert len({i[ROUTE_LENGTH:] for i in ids}) == 200


# -- counting --------------------------------------------------------------------------------------


def test_count_clients_adds_up_every_process(make_cluster: MakeCluster) -> None:
    a, b, c = make_cluster(3)
    a.connect()
    gone = b.connect()
    b.connect()
    with a.app.app_context():
        assert a.broker.total_clients() == 1
        assert a.broker.count_clients(timeout=0.15) == 3
    with c.app.app_context():
        assert c.broker.count_clients(timeout=0.15) == 3, "a process without clients still counts the others"
    with b.app.app_context():
        b.broker.unregister(gone.id)
    with a.app.app_context():
        assert a.broker.count_clients(timeout=0.15) == 2


def test_count_clients_misses_a_process_that_stopped_listening(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    b.connect()
    b.connect()
    with a.app.app_context():
        assert a.broker.count_clients(timeout=0.15) == 2
    b.state.cluster.backplane.close()  # its listener stops before reading anything published later
    with a.app.app_context():
        assert a.broker.count_clients(timeout=0.15) == 0


def test_count_replies_addressed_to_another_process_are_not_counted(make_cluster: MakeCluster, bus_url: str) -> None:
    (a,) = make_cluster(1)
    a.connect()
    listener = MemoryBackplane(bus_url.removeprefix("memory://"))
    runtime = ThreadingRuntime(2)

    def answer_twice(envelope: Envelope) -> None:
        if envelope.kind == "count":
            rid = envelope.fields["rid"]
            listener.send(listener.envelope("count-reply", {"rid": rid, "to": "someone-else", "n": 100}))
            listener.send(listener.envelope("count-reply", {"rid": rid, "to": envelope.origin, "n": 5}))

    listener.start(runtime, answer_twice, lambda state, error: None)
    try:
        wait_until(lambda: listener.state == "up")
        with a.app.app_context():
            assert a.broker.count_clients(timeout=0.15) == 1 + 5
    finally:
        listener.close()
        runtime.close()


# -- clear_auth ------------------------------------------------------------------------------------


def test_clear_auth_with_disconnect_revokes_the_user_connections_in_other_processes(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    alice_here = a.connect("t", auth={"collectionName": "users", "id": "alice"})
    alice_there = b.connect("t", auth={"collectionName": "users", "id": "alice"})
    bob_there = b.connect("t", auth={"collectionName": "users", "id": "bob"})
    with a.app.app_context():
        assert a.broker.clear_auth({"collectionName": "users", "id": "alice"}, disconnect=True) == 1
    assert alice_here.discard_reason == "revoked"
    wait_until(lambda: alice_there.is_discarded)
    assert alice_there.discard_reason == "revoked"
    assert not bob_there.is_discarded and bob_there.get(AUTH_KEY) == {"collectionName": "users", "id": "bob"}


def test_clear_auth_from_another_process_rechecks_subscriptions_with_the_owner_hook(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    checked_in: list[Flask] = []

    @b.broker.before_subscribe
    def users_only_for_private(client: DefaultClient, subscriptions: list[str], auth: Any) -> None:
        checked_in.append(current_app._get_current_object())  # type: ignore[attr-defined]
        if auth is None and any(key.startswith("private/") for key in subscriptions):
            raise ApiError(403, "Sign in first.")

    alice_there = b.connect("public", "private/alice", auth={"id": "alice"})
    with a.app.app_context():
        assert a.broker.clear_auth({"id": "alice"}) == 0, "no such connection in this process"
    wait_until(lambda: alice_there.get(AUTH_KEY) is None and "private/alice" not in alice_there.subscriptions())
    assert list(alice_there.subscriptions()) == ["public"] and not alice_there.is_discarded
    assert checked_in and set(checked_in) == {b.app}, "the re-check runs in the owner app's context"


def test_an_identity_without_a_json_token_is_cleared_in_this_process_only(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    user = ("not", "json", object())  # identity_key is the value itself: not JSON-encodable
    here = a.connect("t", auth=user)
    there = b.connect("t", "barrier", auth=user)
    with a.app.app_context():
        assert a.broker.clear_auth(user) == 1
    assert here.get(AUTH_KEY) is None
    barrier(a, there)
    assert there.get(AUTH_KEY) is user


# -- envelopes that do not belong ------------------------------------------------------------------


def test_malformed_envelopes_are_rejected_and_counted_and_change_nothing(make_cluster: MakeCluster, bus_url: str) -> None:
    a, b = make_cluster()
    alice = b.connect("t", "barrier", auth={"id": "alice"})
    intruder = Intruder(bus_url)
    for payload in [
        b"not an envelope",
        b'{"v":2,"o":"x","k":"notify","t":"t"}\n1',  # another version
        intruder.envelope("notify", {"t": 5}, b"1"),  # topic of the wrong type
        intruder.envelope("notify", {"t": "t", "to": alice.id}, b"1"),  # "to" not a list
        intruder.envelope("send", {"n": "direct"}, b"1"),  # no client id
        intruder.envelope("clear-auth", {"a": '[null,"alice"]', "d": "yes"}),  # "d" not a bool
        intruder.envelope("count", {"rid": 7}),
        intruder.envelope("post", {"rid": "r", "c": alice.id, "h": [["Authorization"]], "ip": TEST_CLIENT_IP}, b"{}"),
    ]:
        intruder.publish(payload)
    wait_until(lambda: b.rejected() == 8)
    assert barrier(a, alice) == []
    assert alice.get(AUTH_KEY) == {"id": "alice"} and sorted(alice.subscriptions()) == ["barrier", "t"]
    assert not alice.is_discarded and b.state.stats()["deliveries_total"] == 1  # the barrier
    assert a.rejected() == 8, "every listener drops them"


def test_a_topic_or_event_name_with_a_line_break_is_rejected_and_counted_without_a_traceback(
    make_cluster: MakeCluster, bus_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = make_cluster()
    alice = b.connect("t", "barrier")
    intruder = Intruder(bus_url)
    payloads = [
        intruder.envelope("notify", {"t": "t\nevent:evil"}, b"1"),
        intruder.envelope("notify", {"t": "t\r"}, b"1"),
        intruder.envelope("send", {"c": alice.id, "n": "a\nb"}, b"1"),
        intruder.envelope("send", {"c": "nobody-here", "n": "a\rb"}, b"1"),  # refused wherever it lands
    ]
    with caplog.at_level(logging.WARNING):
        for payload in payloads:
            intruder.publish(payload)
        wait_until(lambda: b.rejected() == 4 and a.rejected() == 4)
        assert barrier(a, alice) == []
    assert not alice.is_discarded and sorted(alice.subscriptions()) == ["barrier", "t"]
    assert b.state.stats()["deliveries_total"] == 1  # the barrier
    assert not [record for record in caplog.records if record.exc_info], "no traceback"
    dropped = [record.getMessage() for record in caplog.records if "dropping backplane payloads" in record.getMessage()]
    assert len(dropped) == 2 and all("line break" in text for text in dropped), "throttled: the first one per listener"
    a.notify("t", "still fine")
    assert names_and_data(collect(alice, 1)) == [("t", "still fine")]


def test_an_unknown_envelope_kind_is_ignored_not_counted(make_cluster: MakeCluster, bus_url: str) -> None:
    a, b = make_cluster()
    bystander = b.connect("barrier")
    intruder = Intruder(bus_url)
    intruder.publish(intruder.envelope("from-a-newer-version", {"anything": [1]}, b"?"))
    assert barrier(a, bystander) == []
    assert b.rejected() == 0


def test_with_a_secret_unsigned_and_forged_payloads_are_rejected_and_counted(make_cluster: MakeCluster, bus_url: str) -> None:
    a, b = make_cluster(RTBROKER_BACKPLANE_SECRET=SECRET)
    there = b.connect("t", "barrier", auth={"id": "alice"})
    intruder = Intruder(bus_url)
    notify = intruder.envelope("notify", {"t": "t"}, b'"forged"')
    clear = intruder.envelope("clear-auth", {"a": '[null,"alice"]', "d": True})
    for payload in [
        notify,  # unsigned
        clear,  # unsigned: would disconnect alice
        sign(notify, b"not-the-secret-at-all"),  # signed with another secret
        sign(notify, SECRET.encode())[:-1] + b"!",  # tampered after signing
        sign(b"garbage", SECRET.encode()),  # properly signed, not an envelope
    ]:
        intruder.publish(payload)
    wait_until(lambda: b.rejected() == 5)
    assert barrier(a, there) == [], "nothing reached the subscriber"
    assert not there.is_discarded and there.get(AUTH_KEY) == {"id": "alice"}
    assert a.rejected() == 5 and b.state.stats()["notifies_total"] == 1  # the barrier only
    a.notify("t", "signed")
    assert names_and_data(collect(there, 1)) == [("t", "signed")], "the listener survived them"


def test_with_a_secret_a_correctly_signed_envelope_from_outside_is_accepted(make_cluster: MakeCluster, bus_url: str) -> None:
    (b,) = make_cluster(1, RTBROKER_BACKPLANE_SECRET=SECRET)
    there = b.connect("t")
    intruder = Intruder(bus_url)
    stamp = Stamp(ALL, 1, now_ms())
    intruder.publish(sign(intruder.envelope("notify", {"t": "t"}, b'"from a job"', stamp), SECRET.encode()))
    assert names_and_data(collect(there, 1)) == [("t", "from a job")]
    assert b.rejected() == 0 and b.replayed() == 0


def test_with_a_secret_stale_future_unstamped_repeated_or_misdirected_envelopes_are_dropped_and_counted(
    make_cluster: MakeCluster, bus_url: str
) -> None:
    (b,) = make_cluster(1, RTBROKER_BACKPLANE_SECRET=SECRET, RTBROKER_BACKPLANE_MAX_AGE=5)
    there = b.connect("t")
    intruder = Intruder(bus_url)

    def signed(stamp: Stamp | None, data: bytes = b'"x"') -> bytes:
        return sign(intruder.envelope("notify", {"t": "t"}, data, stamp), SECRET.encode())

    fresh = signed(Stamp(ALL, 7, now_ms()), b'"once"')
    for payload in [
        signed(Stamp(ALL, 1, now_ms() - 6_000)),  # sent 6 s ago: stale
        signed(Stamp(ALL, 2, now_ms() + 6_000)),  # 6 s in the future
        signed(None),  # no stamp: a version before stamps, or forged before them
        signed(Stamp("t:elsewhere", 3, now_ms())),  # signed for a channel this process does not listen on
        fresh, fresh, fresh,  # the first one only
        signed(Stamp(ALL, 7, now_ms()), b'"same sequence"'),
    ]:
        intruder.publish(payload)
    wait_until(lambda: b.replayed() == 7)
    assert names_and_data(collect(there, 1)) == [("t", "once")]
    assert there.take() == b"" and b.rejected() == 0


def test_accept_unstamped_lets_a_previous_version_through_during_an_upgrade(make_cluster: MakeCluster, bus_url: str) -> None:
    (b,) = make_cluster(1, RTBROKER_BACKPLANE_SECRET=SECRET, RTBROKER_BACKPLANE_ACCEPT_UNSTAMPED=True)
    there = b.connect("t")
    intruder = Intruder(bus_url)
    intruder.publish(sign(intruder.envelope("notify", {"t": "t"}, b'"from 0.2"'), SECRET.encode()))
    assert names_and_data(collect(there, 1)) == [("t", "from 0.2")]
    stale = Stamp(ALL, 1, now_ms() - 60_000)
    intruder.publish(sign(intruder.envelope("notify", {"t": "t"}, b'"old"', stale), SECRET.encode()))
    wait_until(lambda: b.replayed() == 1)  # a stamped envelope is still checked


def test_a_forwarded_post_published_again_is_not_answered_again(make_cluster: MakeCluster, bus_url: str) -> None:
    a, b = make_cluster(RTBROKER_BACKPLANE_SECRET=SECRET)
    there = b.connect()
    captured: list[bytes] = []
    sender = a.state.cluster.backplane
    publish_to, b_inbox = sender.publish_to, inbox(b.state.cluster.route)

    def recording(channel: str, payload: bytes) -> int:  # the POSTs a listener on b's inbox sees
        if channel == b_inbox and b'"k":"post"' in payload:
            captured.append(payload)
        return publish_to(channel, payload)

    sender.publish_to = recording  # type: ignore[method-assign]
    assert a.app.test_client().post("/api/realtime", json={"clientId": there.id, "subscriptions": ["x"]}).status_code == 204
    assert a.app.test_client().post("/api/realtime", json={"clientId": there.id, "subscriptions": []}).status_code == 204
    assert len(captured) == 2 and list(there.subscriptions()) == []
    intruder = Intruder(bus_url)
    for _ in range(3):
        intruder.publish(captured[0], b_inbox)
    wait_until(lambda: b.replayed() == 3)
    assert list(there.subscriptions()) == [], "still unsubscribed"


def test_a_forwarded_post_older_than_the_forward_timeout_is_not_answered(make_cluster: MakeCluster, bus_url: str) -> None:
    (b,) = make_cluster(1, RTBROKER_BACKPLANE_SECRET=SECRET)  # RTBROKER_FORWARD_TIMEOUT=1.0
    there = b.connect("kept")
    intruder = Intruder(bus_url)
    fields = {"rid": "r", "c": there.id, "h": [], "ip": TEST_CLIENT_IP, "s": ["x"]}
    for sequence, sent_ago in [(1, 2_500), (2, 0)]:  # beyond the timeout and its clock allowance; fresh
        stamp = Stamp(inbox(b.state.cluster.route), sequence, now_ms() - sent_ago)
        intruder.publish(sign(intruder.envelope("post", fields, b"", stamp), SECRET.encode()), stamp.channel)
    wait_until(lambda: list(there.subscriptions()) == ["x"])
    assert b.replayed() == 1, "the old one was dropped, the fresh one answered"


# -- size limits -----------------------------------------------------------------------------------


def test_a_message_over_the_size_limit_is_refused_before_anything_is_published(make_cluster: MakeCluster) -> None:
    a, b = make_cluster(RTBROKER_MAX_MESSAGE_SIZE=100)
    here = a.connect("t")
    there = b.connect("t", "barrier")
    with a.app.app_context():
        with pytest.raises(MessageTooLarge, match=r"'t' is 202 bytes encoded, over RTBROKER_MAX_MESSAGE_SIZE \(100 bytes\)"):
            a.broker.notify("t", "x" * 200)
        with pytest.raises(MessageTooLarge, match="RTBROKER_MAX_MESSAGE_SIZE"):
            a.broker.send(there.id, "direct", "x" * 200)
    assert here.take() == b""
    assert barrier(a, there) == []


def test_a_message_at_the_size_limit_crosses_the_bus(make_cluster: MakeCluster) -> None:
    a, b = make_cluster(RTBROKER_MAX_MESSAGE_SIZE=100)
    there = b.connect("t")
    data = "x" * 98  # 100 bytes encoded, with its quotes
    a.notify("t", data)
    assert [event.json() for event in collect(there, 1)] == [data]


def test_a_remote_message_over_the_receiving_process_own_limit_is_rejected_not_its_clients(
    make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    (a,) = make_cluster(1)  # the default limit (4 MiB)
    (b,) = make_cluster(1, RTBROKER_MAX_MESSAGE_SIZE=1000, RTBROKER_CLIENT_QUEUE_BYTES=1000)
    there = b.connect("t", "barrier")
    with caplog.at_level(logging.WARNING):
        assert a.notify("t", "x" * 5000) == 0
        with a.app.app_context():
            assert a.broker.send(there.id, "direct", "x" * 5000) is False
        wait_until(lambda: b.rejected() == 2)
        assert barrier(a, there) == []
    assert not there.is_discarded, "not discarded as a slow consumer"
    assert b.state.stats()["deliveries_total"] == 1  # the barrier
    assert a.rejected() == 0
    assert any("over RTBROKER_MAX_MESSAGE_SIZE (1000 bytes) of this process" in record.getMessage() for record in caplog.records)
    assert not [record for record in caplog.records if record.exc_info]
    a.notify("t", "x" * 500)  # under the receiver's limit: delivered
    assert [event.json() for event in collect(there, 1)] == ["x" * 500]


# -- extension kinds and the listener ---------------------------------------------------------------


def test_an_extension_kind_reaches_the_handler_of_every_other_process(make_cluster: MakeCluster) -> None:
    a, b, c = make_cluster(3)
    got: dict[str, list[Envelope]] = {"a": [], "b": [], "c": []}
    for name, node in zip("abc", (a, b, c)):
        node.state.cluster.add_handler(Ping.KIND, got[name].append)
    assert a.state.cluster.publish(Ping(3)) is True
    wait_until(lambda: got["b"] and got["c"])
    for envelope in got["b"] + got["c"]:
        assert (envelope.origin, envelope.kind, envelope.fields, envelope.body) == (
            a.state.cluster.backplane.origin, "x-ping", {"n": 3}, b"pong")
    time.sleep(0.05)
    assert got["a"] == [], "a process does not hear its own envelopes"


@pytest.mark.parametrize("kind", sorted(wire.BUILT_IN_KINDS))
def test_a_built_in_kind_cannot_be_taken_over(make_cluster: MakeCluster, kind: str) -> None:
    (a,) = make_cluster(1)
    with pytest.raises(InvalidArgument, match="is built in"):
        a.state.cluster.add_handler(kind, lambda envelope: None)


def test_a_failing_extension_handler_does_not_stop_the_listener(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    there = b.connect("t")

    def broken(envelope: Envelope) -> None:
        raise RuntimeError("handler bug")

    b.state.cluster.add_handler(Ping.KIND, broken)
    a.state.cluster.publish(Ping(1))
    a.notify("t", "still listening")
    assert names_and_data(collect(there, 1)) == [("t", "still listening")]
    assert b.rejected() == 0, "a bug is logged, not counted as a rejected payload"


def test_an_extension_handler_refusing_its_fields_counts_a_rejection(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()

    def strict(envelope: Envelope) -> None:
        raise EnvelopeError("field 'n' must be even")

    b.state.cluster.add_handler(Ping.KIND, strict)
    a.state.cluster.publish(Ping(1))
    wait_until(lambda: b.rejected() == 1)


def test_starting_the_cluster_reports_the_backplane_up_for_its_app(bus_url: str) -> None:
    app = Flask(__name__)
    app.config.update(RTBROKER_BACKPLANE=bus_url, RTBROKER_CONCURRENCY="threading", RTBROKER_GRACEFUL_SHUTDOWN=False)
    RealtimeBroker(app)
    states: list[tuple[str, Any]] = []

    def on_state(sender: Flask, state: str, error: BaseException | None) -> None:
        states.append((state, error))

    signals.backplane_state_changed.connect(on_state, sender=app)
    try:
        cluster = app.extensions["rtbroker"].cluster
        cluster.ensure_started()
        cluster.ensure_started()  # idempotent
        wait_until(lambda: states)
        assert states == [("up", None)]
    finally:
        signals.backplane_state_changed.disconnect(on_state, sender=app)
        app.extensions["rtbroker"].close()


# -- routing: a message reaches only the processes that need it ------------------------------------


def received(*nodes: Node) -> list[int]:
    """How many payloads each node's listener has taken off the bus so far."""
    return [node.state.cluster.backplane.received for node in nodes]


def test_a_topic_notify_reaches_only_processes_with_a_subscriber_of_the_topic(make_cluster: MakeCluster) -> None:
    a, b, c = make_cluster(3)
    there = b.connect("user/bob", "user/bob?options=%7B%7D")
    before = received(b, c)
    assert a.notify("user/bob", "hi") == 0
    assert names_and_data(collect(there, 2)) == [("user/bob", "hi"), ("user/bob?options=%7B%7D", "hi")]
    assert received(b, c) == [before[0] + 1, before[1]]  # c has no subscriber of user/bob: not a copy


def test_a_notify_to_ids_goes_to_each_owning_process_once(make_cluster: MakeCluster) -> None:
    a, b, c, d = make_cluster(4)
    on_b = [b.connect("direct"), b.connect("direct")]
    on_c = c.connect("direct")
    d.connect("direct")  # subscribed, but not addressed: its process gets no copy
    before = received(b, c, d)
    a.notify("direct", 1, to=[client.id for client in on_b] + [on_c.id])
    assert [len(collect(client, 1)) for client in [*on_b, on_c]] == [1, 1, 1]
    assert received(b, c, d) == [before[0] + 1, before[1] + 1, before[2]]


def test_a_send_and_a_forwarded_post_reach_the_owner_alone(make_cluster: MakeCluster) -> None:
    a, b, c = make_cluster(3)
    target = b.connect()
    # A connection's first POST asks every process for its session (docs/sessions.rst): made first.
    assert a.app.test_client().post("/api/realtime", json={"clientId": target.id, "subscriptions": []}).status_code == 204
    before = received(c)
    with a.app.app_context():
        assert a.broker.send(target.id, "ping", 1) is False  # not local: published to b's inbox
    assert names_and_data(collect(target, 1)) == [("ping", 1)]
    response = a.app.test_client().post("/api/realtime", json={"clientId": target.id, "subscriptions": ["x"]})
    assert response.status_code == 204 and target.has_subscription("x")
    assert received(c) == before


def test_a_sweep_keeps_channels_a_post_asked_for_lately(make_cluster: MakeCluster) -> None:
    (a,) = make_cluster(1)
    backplane = a.state.cluster.backplane
    assert backplane.want(["t:soon"], timeout=1)  # a POST's listen_for, before its client holds the key
    backplane.sweep(now=time.monotonic() + 1)
    assert backplane.listening_to("t:soon")
    backplane.sweep(now=time.monotonic() + 2 * SWEEP_INTERVAL + 2)
    assert not backplane.listening_to("t:soon")


def test_a_204_means_the_process_already_listens_on_the_keys_channels(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    client = a.connect()
    backplane = a.state.cluster.backplane
    assert not backplane.listening_to("t:fresh")
    response = a.app.test_client().post("/api/realtime", json={"clientId": client.id,
                                                                "subscriptions": ["fresh?options=%7B%7D"]})
    assert response.status_code == 204
    assert backplane.listening_to("t:fresh")
    assert b.notify("fresh", "first") == 0
    assert names_and_data(collect(client, 1)) == [("fresh?options=%7B%7D", "first")]


def test_a_sweep_lets_go_of_the_channels_of_departed_subscribers(make_cluster: MakeCluster) -> None:
    a, b = make_cluster()
    stays, leaves = b.connect("kept"), b.connect("gone")
    backplane = b.state.cluster.backplane
    assert backplane.listening_to("t:kept") and backplane.listening_to("t:gone")
    with b.app.app_context():
        b.broker.unregister(leaves.id)
    backplane.sweep(now=time.monotonic() + SWEEP_INTERVAL + 1)  # as if no POST asked for them lately
    assert backplane.listening_to("t:kept") and not backplane.listening_to("t:gone")
    before = received(b)
    a.notify("gone", 1)
    a.notify("kept", 2)
    assert names_and_data(collect(stays, 1)) == [("kept", 2)]
    assert received(b) == [before[0] + 1]
