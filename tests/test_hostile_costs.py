"""Hostile clients, second round: every budget counts what the server builds, not what was sent.

In process and fast; the black-box figures against gunicorn come from
``benchmarks/hostile_costs.py``.
"""

from __future__ import annotations

import gc
import threading
import tracemalloc
import urllib.parse
from typing import Any, Iterator

import pytest
import simplejson
from flask import Flask
from sqlalchemy.orm import Session

from flask_rtbroker import IP_KEY, DefaultClient, DisconnectReason, Message, RealtimeBroker
from flask_rtbroker.protocol.options import MAX_OPTION_ENTRIES, parse_options, subscription_cost
from flask_rtbroker.queue_memory import MESSAGE_OVERHEAD, QueueMemory
from flask_rtbroker.records.broadcast import _EventView
from flask_rtbroker.records.collection import Collection
from flask_rtbroker.records.delivery_queue import INLINE_SUBSCRIBERS
from flask_rtbroker.records.event import CREATE, RecordEvent
from flask_rtbroker.records.subscription import compile_record_options
from tests.records_support import Post, close_app, connect, make_app, received, sqlite_engine, with_options

MB = 1024 * 1024


def options_key(topic: str, **query: Any) -> str:
    return with_options(topic, **query)


@pytest.fixture
def app_broker() -> Iterator[tuple[Flask, RealtimeBroker]]:
    # No resume window: an ended stream is gone at once, so what it held can be checked as freed
    # (ghosts count in the same budgets: tests/test_sessions.py).
    app, broker = make_app(RTBROKER_RESUME_WINDOW=0)
    yield app, broker
    close_app(app)


def state_of(app: Flask) -> Any:
    return app.extensions["rtbroker"]


def new_client(app: Flask, *subscriptions: str) -> DefaultClient:
    state = state_of(app)
    client = state.new_client()
    client.set(IP_KEY, "127.0.0.1")
    state.broker.register(client)
    client.subscribe(*subscriptions)
    return client


def post(app: Flask, client_id: str, subscriptions: list[str]) -> tuple[int, Any]:
    response = app.test_client().post("/api/realtime", json={"clientId": client_id, "subscriptions": subscriptions})
    return response.status_code, (simplejson.loads(response.data) if response.data else None)


# -- item 1: a payload copy per options suffix ---------------------------------------------------


def test_a_large_notify_to_a_thousand_suffixed_keys_holds_its_data_once(app_broker) -> None:
    """1 MB to one client holding 1,000 ``example?options=<i>`` keys: the data is not copied per
    key (main built 1,000 framed copies, +998 MB); the client is discarded as slow at its bound."""
    app, broker = app_broker
    client = new_client(app, *[f"example?options={i}" for i in range(1000)])
    plain = new_client(app, "example")
    data = "x" * MB
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        with app.app_context():
            broker.notify("example", data)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak < 20 * MB, f"{peak / MB:.1f} MB built for one 1 MB notify"
    assert client.discard_reason == DisconnectReason.SLOW  # 8 MiB queued: a slow consumer
    assert [name for name, _ in received(plain)] == ["example"]


def test_suffixed_queues_cost_about_what_shared_key_queues_cost(app_broker) -> None:
    """200 non-reading clients, each with its own ``example?options=<n>`` key, against the same
    clients on the shared key: what the queues hold is within 2x (main: 53x)."""
    app, broker = app_broker
    state = state_of(app)

    def queued_bytes(keys: list[str]) -> int:
        clients = [new_client(app, key) for key in keys]
        with app.app_context():
            for n in range(50):
                broker.notify("example", {"n": n, "pad": "y" * 10_000})
        total = state.queue_memory.total
        for client in clients:
            state.disconnected(client, DisconnectReason.CLOSED)
        assert state.queue_memory.total == 0, "an ended stream's queue is forgotten"
        return total

    shared = queued_bytes(["example"] * 200)
    suffixed = queued_bytes([f"example?options={n}" for n in range(200)])
    assert shared >= 50 * 10_000
    assert suffixed <= 2 * shared, (suffixed, shared)


def test_the_process_bound_discards_the_biggest_queues_first() -> None:
    app, broker = make_app(RTBROKER_QUEUE_MEMORY=8 * MB, RTBROKER_CLIENT_QUEUE_BYTES=8 * MB,
                           RTBROKER_MAX_MESSAGE_SIZE=MB)
    try:
        state = state_of(app)
        big = [new_client(app, "big") for _ in range(3)]
        small = new_client(app, "small")
        with app.app_context():
            broker.notify("small", "s" * 1000)
            for n in range(12):  # each big client its own data: the process fills before any client
                for client in big:
                    state.send_local(client, Message("big", f"{n}" + "b" * 300_000))
                assert state.queue_memory.total <= 8 * MB
        assert state.queue_memory.discarded >= 1
        assert [client.discard_reason for client in big].count(DisconnectReason.SLOW) == state.queue_memory.discarded
        assert all(client.queued_bytes < 8 * MB for client in big), "no client reached its own bound"
        assert small.discard_reason is None and small.queued == 1, "the small queue was not the one to go"
    finally:
        close_app(app)


# -- item 2: parsed options are counted and capped ------------------------------------------------


def test_equal_options_are_one_parse_shared_by_every_holder() -> None:
    first = parse_options("a?options=" + urllib.parse.quote('{"query":{"k":"v"},"headers":{"X-T":"1"}}'))
    second = parse_options("b?options=" + urllib.parse.quote('{"headers":{"X-T":1},"query":{"k":"v"}}'))
    assert first is second and dict(first.headers) == {"x_t": "1"}
    with pytest.raises(TypeError):
        first.query["k"] = "changed"  # type: ignore[index]  # shared, so read-only


def test_a_key_costs_what_its_parse_holds() -> None:
    light = "t?options=" + urllib.parse.quote('{"query":{"a":"1"}}')
    heavy = "t?options=" + urllib.parse.quote(simplejson.dumps({"headers": {f"h{i}": "v" * 40 for i in range(30)}}))
    assert subscription_cost([heavy]) - subscription_cost([light]) > 30 * (40 + 100)


def test_options_past_their_caps_are_a_400_and_change_nothing(app_broker) -> None:
    app, _ = app_broker
    client = new_client(app, "kept")
    crowded = "t?options=" + urllib.parse.quote(simplejson.dumps({"headers": {f"a{i}": 1 for i in range(MAX_OPTION_ENTRIES + 1)}}))
    status, body = post(app, client.id, ["a", crowded])
    assert status == 400 and body["data"]["subscriptions"]["1"]["code"] == "validation_too_many_options"
    assert body["message"] == "Something went wrong while processing your request."
    many = [options_key(f"t{i}", n=i) for i in range(17)]
    status, body = post(app, client.id, many)
    assert status == 400 and list(body["data"]["subscriptions"]) == ["16"]
    assert body["data"]["subscriptions"]["16"]["code"] == "validation_too_many_option_sets"
    assert list(client.subscriptions()) == ["kept"]
    shared = [options_key(f"t{i}", n=1) for i in range(200)]  # one option set, however many keys
    assert post(app, client.id, many[:16] + shared) == (204, None)


# -- item 3: rule calls bounded by what can differ ------------------------------------------------


def test_rules_run_once_per_value_they_read(app_broker) -> None:
    """10 clients with 16 distinct option sets each on ``posts/*`` (main: a rule call per set):
    a rule that reads no option runs once per event; one that reads ``k`` once per value of it."""
    app, broker = app_broker
    calls = {"plain": 0, "reads_k": 0}

    def plain(record: Any, auth: Any, options: Any) -> bool:
        calls["plain"] += 1
        return True

    def reads_k(record: Any, auth: Any, options: Any) -> bool:
        calls["reads_k"] += 1
        return options.query.get("k") != "hidden"

    with app.app_context():
        broker.watch(Post, list_rule=plain)
    hostile = [connect(broker, app, *[options_key("posts/*", n=f"{c}-{i}") for i in range(16)]) for c in range(10)]
    engine = sqlite_engine()
    Post.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Post(title="one"))
        session.commit()
    assert calls["plain"] == 1
    assert all(len(received(client)) == 16 for client in hostile)

    collection = Collection("posts", "posts", reads_k, None)
    view = _EventView(collection, RecordEvent("posts", CREATE, {"id": "1"}), max_evaluations=100)
    seen = [view.message("posts/*" + suffix, "posts/*", "list", None, {}) for suffix in
            [f"?options={urllib.parse.quote(simplejson.dumps({'query': {'k': k, 'n': n}}))}"
             for k in ("a", "b", "hidden") for n in range(10)]]
    assert calls["reads_k"] == 3, "one call per value of k, whatever n is"
    assert sum(message is not None for message in seen) == 20


def test_an_event_stops_evaluating_past_its_budget(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def reads_n(record: Any, auth: Any, options: Any) -> bool:
        calls.append(options.query["n"])
        return True

    view = _EventView(Collection("posts", "posts", reads_n, None), RecordEvent("posts", CREATE, {"id": "1"}), max_evaluations=5)
    suffixes = ["?options=" + urllib.parse.quote(simplejson.dumps({"query": {"n": n}})) for n in range(8)]
    held = [compile_record_options(suffix) for suffix in suffixes]  # what clients would hold
    allowed = [view.message("posts/*" + s, "posts/*", "list", None, {}) is not None for s in suffixes]
    assert len(calls) == 5 and allowed == [True] * 5 + [False] * 3 and view.over_budget == 3
    assert len(held) == 8


def test_large_record_broadcasts_leave_the_committing_request_in_commit_order(app_broker) -> None:
    """A commit reaching more than INLINE_SUBSCRIBERS subscriptions is broadcast by the process's
    delivery task, not the committing thread; small ones stay inline; the order is the commits'."""
    app, broker = app_broker
    threads: list[str] = []

    def rule(record: Any, auth: Any, options: Any) -> bool:
        threads.append(threading.current_thread().name)
        return True

    with app.app_context():
        broker.watch(Post, list_rule=rule)
    engine = sqlite_engine()
    Post.metadata.create_all(engine)
    few = [connect(broker, app, "posts/*") for _ in range(INLINE_SUBSCRIBERS)]
    with Session(engine) as session:
        session.add(Post(title="small"))
        session.commit()
    assert threads == [threading.current_thread().name], "a small broadcast runs inline"
    many = few + [connect(broker, app, "posts/*", auth={"collectionName": "users", "id": str(i)}) for i in range(200)]
    with Session(engine) as session:
        for n in range(5):
            session.add(Post(title=f"large {n}"))
            session.commit()
    delivery = app.extensions["rtbroker.records"].delivery
    assert delivery.wait_idle(10)
    assert threading.current_thread().name not in threads[1:], "large broadcasts ran off the request"
    titles = [data["record"]["title"] for _, data in received(many[-1])]
    assert titles == [f"large {n}" for n in range(5)]
    assert [data["record"]["title"] for _, data in received(few[0])] == ["small"] + titles


def small_blocks(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes in blocks under 64 KB: what keys allocate, without the one-off growth of a
    process-wide table (the interned strings' dict doubles now and then, whoever interns)."""
    return sum(trace.size for trace in snapshot.traces if trace.size < 64 * 1024)


def test_what_a_client_holds_is_what_its_budget_counts(app_broker) -> None:
    """Main counted 0.13 MB for 2.51 MB held per client (headers with 353 names). By each budget
    route, what the process really allocates for the keys stays within what they count."""
    app, _ = app_broker
    state = state_of(app)
    routes = {
        "long keys": lambda c, i: f"{c}-{i}-".ljust(2480, "x"),
        "option names": lambda c, i: "t{}?options=".format(i) + urllib.parse.quote(simplejson.dumps(
            {"headers": {f"h{j}-{c}-{i}": "v" * 30 for j in range(MAX_OPTION_ENTRIES)}})),
        "option sets": lambda c, i: options_key(f"t{i}", n=f"{c}-{i}", **{f"q{j}": "v" * 20 for j in range(20)}),
        "short keys": lambda c, i: f"k{c}.{i}",
    }
    for route, key in routes.items():
        clients = [new_client(app) for _ in range(20)]
        gc.collect()
        tracemalloc.start()
        try:
            before = small_blocks(tracemalloc.take_snapshot())
            for number, client in enumerate(clients):
                client.subscribe(*[key(number, i) for i in range(16)])
            held = small_blocks(tracemalloc.take_snapshot()) - before
        finally:
            tracemalloc.stop()
        counted = sum(client.subscription_bytes for client in clients)
        assert counted == state.broker.subscription_bytes
        assert held <= 1.1 * counted, f"{route}: {held} bytes held, {counted} counted"
        for client in clients:
            state.disconnected(client, DisconnectReason.CLOSED)


@pytest.mark.parametrize("locked", [True, False])
def test_queued_messages_are_counted_once_and_forgotten_when_taken(locked: bool) -> None:
    clients = [DefaultClient() for _ in range(5)]
    memory = QueueMemory(MB, clients, lambda client: client.discard(DisconnectReason.SLOW), locked=locked)
    for client in clients:
        client.queue_memory = memory
    shared, own = Message("t", "s" * 1000), Message("t", "o" * 1000)
    for client in clients:
        client.send(shared)
        client.send(shared, "t?options=1")
    clients[0].send(own)
    assert memory.total == 2 * (MESSAGE_OVERHEAD + 1002) and shared.holders == 10
    for client in clients[:3]:
        assert client.take().count(b"data:") == (3 if client is clients[0] else 2)
    assert memory.total == MESSAGE_OVERHEAD + 1002 and shared.holders == 4
    clients[3].discard(DisconnectReason.SLOW)
    assert clients[4].clear_queue() == 2
    assert memory.total == 0 and shared.holders == 0
