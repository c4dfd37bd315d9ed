"""fan_out on its own, on the real threading and gevent runtimes: messages, chunks, failures, Delivery."""

from __future__ import annotations

import sys
import threading
from contextvars import ContextVar
from functools import partial
from typing import Any, Iterator, Mapping, Sequence

import greenlet
import pytest

from flask_rtbroker import DefaultClient, Message
from flask_rtbroker.client import DisconnectReason
from flask_rtbroker.runtime.concurrency import GeventRuntime, Task, ThreadingRuntime
from flask_rtbroker.fanout import Delivery, fan_out
from flask_rtbroker.testing import parse_events
from flask_rtbroker.topic_index import Subscribers, TopicIndex

POOL_SIZE = 4
OPTIONS_KEY = "t?options=%7B%7D"

_CHUNK: ContextVar[int | None] = ContextVar("chunk", default=None)


def current_chunk() -> int | None:
    """The position of the chunk being run in its fan-out (None outside a tagged runtime)."""
    return _CHUNK.get()


def _tagged(position: int, task: Task) -> Any:
    token = _CHUNK.set(position)
    try:
        return task()
    finally:
        _CHUNK.reset(token)


class _ChunkTagging:
    """A real runtime that also records how many tasks each ``run_all`` got and tags each task
    with its position, so a ``before_send`` hook can tell which chunk a delivery ran in."""

    def __init__(self, pool_size: int) -> None:
        super().__init__(pool_size)  # type: ignore[call-arg]
        self.batches: list[int] = []

    def run_all(self, tasks: Sequence[Task]) -> list[Any]:
        self.batches.append(len(tasks))
        return super().run_all([partial(_tagged, i, task) for i, task in enumerate(tasks)])  # type: ignore[misc]


class TaggingThreadingRuntime(_ChunkTagging, ThreadingRuntime):
    pass


class TaggingGeventRuntime(_ChunkTagging, GeventRuntime):
    pass


TaggingRuntime = TaggingThreadingRuntime | TaggingGeventRuntime


@pytest.fixture(params=["threading", "gevent"])
def runtime(request: pytest.FixtureRequest) -> Iterator[TaggingRuntime]:
    made: TaggingRuntime = (
        TaggingThreadingRuntime(POOL_SIZE) if request.param == "threading" else TaggingGeventRuntime(POOL_SIZE)
    )
    yield made
    made.close()


def received(client: DefaultClient) -> list[tuple[str, Any]]:
    """Take what *client* has queued: ``(event name, decoded data)`` per event, oldest first."""
    events = parse_events(client.take())
    assert all(event.id == client.id for event in events)
    return [(event.name, event.json()) for event in events]


def subscribed(count: int, *keys: str) -> tuple[list[DefaultClient], Subscribers]:
    clients = [DefaultClient() for _ in range(count)]
    return clients, {client: keys for client in clients}


class BrokenWaker:
    """A waker whose ``set`` fails, so the client's ``send`` raises after queueing."""

    def set(self) -> None:
        raise OSError("waker broken")

    def clear(self) -> None:
        pass

    def wait(self, timeout: float | None = None) -> bool:
        return True


# -- Delivery --------------------------------------------------------------------------------------


def test_delivery_add_sums_the_counts_and_keeps_the_earliest_first_error() -> None:
    first, second = ValueError("first"), RuntimeError("second")
    total = Delivery()
    total.add(Delivery(queued=3))
    assert total == Delivery(queued=3, failed=0, first_error=None)
    total.add(Delivery(queued=1, failed=2, first_error=first))
    total.add(Delivery(queued=0, failed=1, first_error=second))
    assert (total.queued, total.failed) == (4, 3)
    assert total.first_error is first


# -- a shared message ------------------------------------------------------------------------------


def test_no_subscribers_deliver_nothing_and_run_no_chunk(runtime: TaggingRuntime) -> None:
    assert fan_out(runtime, {}, Message("t", 1), chunk_size=3) == Delivery()
    assert runtime.batches == []


def test_a_shared_message_reaches_every_subscriber_once_per_key_named_after_the_key(
    runtime: TaggingRuntime,
) -> None:
    both, plain = DefaultClient(), DefaultClient()
    delivery = fan_out(runtime, {both: ("t", OPTIONS_KEY), plain: ("t",)}, Message("t", {"n": 1}), chunk_size=1)
    assert delivery == Delivery(queued=3, failed=0, first_error=None)
    assert received(both) == [("t", {"n": 1}), (OPTIONS_KEY, {"n": 1})]
    assert received(plain) == [("t", {"n": 1})]


def test_a_shared_message_is_renamed_once_per_distinct_key(runtime: TaggingRuntime) -> None:
    message = Message("t", [1, 2])
    clients, subscribers = subscribed(6, "t", OPTIONS_KEY)
    seen: list[tuple[str, Message]] = []

    def record(client: DefaultClient, delivered: Message) -> Message:
        seen.append((delivered.name, delivered))
        return delivered

    assert fan_out(runtime, subscribers, message, chunk_size=2, before_send=record).queued == 12
    by_key = {name: {id(m) for n, m in seen if n == name} for name, _ in seen}
    assert by_key.keys() == {"t", OPTIONS_KEY}
    assert by_key["t"] == {id(message)}  # the key is the message's name: the message itself
    assert len(by_key[OPTIONS_KEY]) == 1  # one renamed copy shared by every client
    renamed = next(m for n, m in seen if n == OPTIONS_KEY)
    assert renamed.payload == message.payload and renamed.data == message.data
    assert all(received(c) == [("t", [1, 2]), (OPTIONS_KEY, [1, 2])] for c in clients)


def test_subscribers_of_a_topic_index_lookup_get_one_event_per_matching_key(runtime: TaggingRuntime) -> None:
    index = TopicIndex()
    both, plain, other = DefaultClient(), DefaultClient(), DefaultClient()
    index.add(both, ["t", OPTIONS_KEY])
    index.add(plain, ["t"])
    index.add(other, ["t/x", "u"])
    assert fan_out(runtime, index.subscribers("t"), Message("t", "hi"), chunk_size=2).queued == 3
    assert received(both) == [("t", "hi"), (OPTIONS_KEY, "hi")]
    assert received(plain) == [("t", "hi")]
    assert received(other) == []


# -- chunks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "chunk_size", "sizes"),
    [(1, 3, [1]), (2, 10, [2]), (6, 3, [3, 3]), (10, 3, [3, 3, 3, 1]), (5, 1, [1] * 5), (13, 2, [2] * 6 + [1])],
)
def test_subscribers_are_split_into_chunks_of_chunk_size_in_order(
    runtime: TaggingRuntime, count: int, chunk_size: int, sizes: list[int]
) -> None:
    clients, subscribers = subscribed(count, "t")
    chunk_of: dict[DefaultClient, int | None] = {}

    def record(client: DefaultClient, message: Message) -> Message:
        chunk_of[client] = current_chunk()
        return message

    delivery = fan_out(runtime, subscribers, Message("t", 0), chunk_size=chunk_size, before_send=record)
    assert delivery.queued == count
    assert runtime.batches == [len(sizes)]  # one task per chunk, all in one run_all
    chunks = [[c for c in clients if chunk_of[c] == position] for position in range(len(sizes))]
    assert [len(chunk) for chunk in chunks] == sizes
    assert [c for chunk in chunks for c in chunk] == clients  # contiguous slices, subscriber order


def test_more_chunks_than_pool_workers_still_reach_everyone_in_order(runtime: TaggingRuntime) -> None:
    clients, subscribers = subscribed(60, "all")
    for i in range(4):
        assert fan_out(runtime, subscribers, Message("all", i), chunk_size=1) == Delivery(queued=60)
    assert runtime.batches == [60] * 4  # 60 chunks on a pool of POOL_SIZE
    assert all(received(c) == [("all", i) for i in range(4)] for c in clients)


def test_chunks_run_concurrently_on_the_pool(runtime: TaggingRuntime) -> None:
    """Chunk 0 waits for chunk 1: run one after the other, chunk 0 would wait in vain."""
    clients, subscribers = subscribed(2, "t")
    gate = runtime.event()
    waited: list[bool] = []

    def hook(client: DefaultClient, message: Message) -> Message:
        if current_chunk() == 0:
            waited.append(gate.wait(timeout=2))
        else:
            gate.set()
        return message

    assert fan_out(runtime, subscribers, Message("t", 1), chunk_size=1, before_send=hook).queued == 2
    assert waited == [True]


def test_a_single_chunk_runs_in_the_callers_thread_and_greenlet(runtime: TaggingRuntime) -> None:
    """``chunk_size=sys.maxsize`` is what ``deliver(concurrent=False)`` passes: no pool involved."""
    clients, subscribers = subscribed(20, "t", OPTIONS_KEY)
    where: set[tuple[int, Any]] = set()

    def hook(client: DefaultClient, message: Message) -> Message:
        where.add((threading.get_ident(), greenlet.getcurrent()))
        return message

    assert fan_out(runtime, subscribers, Message("t", 1), chunk_size=sys.maxsize, before_send=hook).queued == 40
    assert where == {(threading.get_ident(), greenlet.getcurrent())}
    assert runtime.batches == [1]


def test_several_chunks_run_off_the_callers_thread_or_greenlet(runtime: TaggingRuntime) -> None:
    clients, subscribers = subscribed(8, "t")
    where: list[tuple[int, Any]] = []

    def hook(client: DefaultClient, message: Message) -> Message:
        where.append((threading.get_ident(), greenlet.getcurrent()))
        return message

    assert fan_out(runtime, subscribers, Message("t", 1), chunk_size=2, before_send=hook).queued == 8
    caller = (threading.get_ident(), greenlet.getcurrent())
    assert len(where) == 8 and caller not in where
    if isinstance(runtime, TaggingThreadingRuntime):
        assert {ident for ident, _ in where} != {threading.get_ident()}
    else:
        assert {ident for ident, _ in where} == {threading.get_ident()}  # greenlets of this thread


# -- who gets it -----------------------------------------------------------------------------------


def test_recipient_selects_the_subscribers_that_get_it(runtime: TaggingRuntime) -> None:
    clients, subscribers = subscribed(7, "t")
    chosen = set(clients[::3])
    asked: list[DefaultClient] = []

    def recipient(client: DefaultClient) -> bool:
        asked.append(client)
        return client in chosen

    delivery = fan_out(runtime, subscribers, Message("t", 1), chunk_size=2, recipient=recipient)
    assert delivery == Delivery(queued=len(chosen))
    assert sorted(asked, key=clients.index) == clients  # asked once each
    assert [bool(received(c)) for c in clients] == [c in chosen for c in clients]


def test_a_recipient_selecting_nobody_runs_no_chunk(runtime: TaggingRuntime) -> None:
    clients, subscribers = subscribed(5, "t")
    assert fan_out(runtime, subscribers, Message("t", 1), chunk_size=2, recipient=lambda c: False) == Delivery()
    assert runtime.batches == []
    assert all(c.queued == 0 for c in clients)


def test_discarded_clients_are_neither_queued_nor_failed(runtime: TaggingRuntime) -> None:
    clients, subscribers = subscribed(6, "t", OPTIONS_KEY)
    for client in clients[1::2]:
        client.discard()
    delivery = fan_out(runtime, subscribers, Message("t", 1), chunk_size=2)
    assert delivery == Delivery(queued=6, failed=0, first_error=None)
    assert [c.queued for c in clients] == [2, 0, 2, 0, 2, 0]


def test_a_slow_consumer_is_discarded_and_not_counted(runtime: TaggingRuntime) -> None:
    slow, fine = DefaultClient(queue_size=1), DefaultClient(queue_size=1)
    slow.send(Message("earlier", 0))
    delivery = fan_out(runtime, {slow: ("t",), fine: ("t",)}, Message("t", 1), chunk_size=1)
    assert delivery == Delivery(queued=1)
    assert slow.discard_reason == DisconnectReason.SLOW and slow.dropped == 2 and slow.queued == 0
    assert received(fine) == [("t", 1)]


# -- before_send -----------------------------------------------------------------------------------


def test_before_send_sees_the_message_under_the_key_it_is_delivered_as(runtime: TaggingRuntime) -> None:
    client = DefaultClient()
    seen: list[tuple[DefaultClient, str]] = []

    def hook(target: DefaultClient, message: Message) -> Message:
        seen.append((target, message.name))
        return message

    fan_out(runtime, {client: ("t", OPTIONS_KEY)}, Message("t", 1), chunk_size=1, before_send=hook)
    assert seen == [(client, "t"), (client, OPTIONS_KEY)]


def test_before_send_can_replace_or_skip_a_delivery(runtime: TaggingRuntime) -> None:
    replaced, skipped, untouched = DefaultClient(), DefaultClient(), DefaultClient()

    def hook(client: DefaultClient, message: Message) -> Message | None:
        if client is skipped:
            return None
        if client is replaced:
            return Message("private", {"was": message.data})
        return message

    subscribers = {replaced: ("t",), skipped: ("t",), untouched: ("t",)}
    delivery = fan_out(runtime, subscribers, Message("t", 1), chunk_size=1, before_send=hook)
    assert delivery == Delivery(queued=2, failed=0, first_error=None)  # a skip is not a failure
    assert received(replaced) == [("private", {"was": 1})]
    assert received(skipped) == []
    assert received(untouched) == [("t", 1)]


@pytest.mark.parametrize("chunk_size", [1, 2, pytest.param(sys.maxsize, id="one-chunk")])
def test_a_before_send_that_raises_skips_that_delivery_only(runtime: TaggingRuntime, chunk_size: int) -> None:
    clients, subscribers = subscribed(5, "t", OPTIONS_KEY)
    bad = clients[2]
    error = RuntimeError("hook failed")

    def hook(client: DefaultClient, message: Message) -> Message:
        if client is bad and message.name == "t":
            raise error
        return message

    delivery = fan_out(runtime, subscribers, Message("t", 1), chunk_size=chunk_size, before_send=hook)
    assert (delivery.queued, delivery.failed) == (9, 1)
    assert delivery.first_error is error
    assert received(bad) == [(OPTIONS_KEY, 1)]  # its other key still got it
    assert all(received(c) == [("t", 1), (OPTIONS_KEY, 1)] for c in clients if c is not bad)


def test_first_error_is_the_earliest_chunks_even_when_a_later_chunk_fails_first(
    runtime: TaggingRuntime,
) -> None:
    clients, subscribers = subscribed(6, "t")
    errors = {clients[1]: ValueError("chunk 1"), clients[4]: ValueError("chunk 4")}
    later_failed = runtime.event()
    failing_order: list[DefaultClient] = []

    def hook(client: DefaultClient, message: Message) -> Message:
        if client is clients[1]:
            assert later_failed.wait(timeout=2)
        if client in errors:
            failing_order.append(client)
            if client is clients[4]:
                later_failed.set()
            raise errors[client]
        return message

    delivery = fan_out(runtime, subscribers, Message("t", 1), chunk_size=1, before_send=hook)
    assert failing_order == [clients[4], clients[1]]
    assert (delivery.queued, delivery.failed) == (4, 2)
    assert delivery.first_error is errors[clients[1]]


# -- a message per client --------------------------------------------------------------------------


def test_a_per_client_factory_gives_each_client_its_own_message(runtime: TaggingRuntime) -> None:
    clients, subscribers = subscribed(5, "t", OPTIONS_KEY)
    calls: list[DefaultClient] = []

    def messages(client: DefaultClient) -> Mapping[str, Message | None]:
        calls.append(client)
        n = clients.index(client)
        return {key: Message(key, {"for": n, "key": key}) for key in ("t", OPTIONS_KEY)}

    delivery = fan_out(runtime, subscribers, messages, chunk_size=2)
    assert delivery == Delivery(queued=10)
    assert sorted(calls, key=clients.index) == clients  # once per client, not per key
    for n, client in enumerate(clients):
        assert received(client) == [("t", {"for": n, "key": "t"}), (OPTIONS_KEY, {"for": n, "key": OPTIONS_KEY})]


def test_a_per_client_none_skips_that_key_without_failing(runtime: TaggingRuntime) -> None:
    allowed, denied = DefaultClient(), DefaultClient()

    def messages(client: DefaultClient) -> Mapping[str, Message | None]:
        return {"t": Message("t", "ok") if client is allowed else None, OPTIONS_KEY: None}

    delivery = fan_out(runtime, {allowed: ("t", OPTIONS_KEY), denied: ("t",)}, messages, chunk_size=1)
    assert delivery == Delivery(queued=1, failed=0, first_error=None)
    assert received(allowed) == [("t", "ok")]
    assert received(denied) == []


class _LazyMessages(dict[str, "Message | None"]):
    """Messages built on first lookup, as record events build theirs; one key cannot be built."""

    def __init__(self, client: DefaultClient, broken_key: str, error: Exception) -> None:
        super().__init__()
        self.client, self.broken_key, self.error = client, broken_key, error

    def __missing__(self, key: str) -> Message:
        if key == self.broken_key:
            raise self.error
        message = self[key] = Message(key, self.client.id[:4])
        return message


@pytest.mark.parametrize("chunk_size", [1, pytest.param(sys.maxsize, id="one-chunk")])
def test_a_per_client_lookup_that_raises_fails_that_key_only(runtime: TaggingRuntime, chunk_size: int) -> None:
    clients, subscribers = subscribed(4, "t", OPTIONS_KEY)
    error = LookupError("cannot build")
    delivery = fan_out(
        runtime, subscribers, partial(_LazyMessages, broken_key=OPTIONS_KEY, error=error), chunk_size=chunk_size
    )
    assert (delivery.queued, delivery.failed) == (4, 4)
    assert delivery.first_error is error
    assert all(received(c) == [("t", c.id[:4])] for c in clients)


def test_a_per_client_mapping_without_the_key_counts_a_failure(runtime: TaggingRuntime) -> None:
    client = DefaultClient()
    delivery = fan_out(runtime, {client: ("t", "u")}, lambda c: {"u": Message("u", 1)}, chunk_size=1)
    assert (delivery.queued, delivery.failed) == (1, 1)
    assert isinstance(delivery.first_error, KeyError)
    assert received(client) == [("u", 1)]


@pytest.mark.parametrize("chunk_size", [1, pytest.param(sys.maxsize, id="one-chunk")])
def test_a_client_whose_send_raises_does_not_stop_the_others(runtime: TaggingRuntime, chunk_size: int) -> None:
    broken = DefaultClient(waker=BrokenWaker())
    clients = [broken] + [DefaultClient() for _ in range(3)]
    delivery = fan_out(runtime, {c: ("t",) for c in clients}, Message("t", 1), chunk_size=chunk_size)
    assert all(received(c) == [("t", 1)] for c in clients[1:])
    assert delivery.failed == 1 and isinstance(delivery.first_error, OSError)


def test_a_per_client_factory_that_raises_fails_that_clients_keys_only(runtime: TaggingRuntime) -> None:
    clients = [DefaultClient() for _ in range(3)]

    def messages(client: DefaultClient) -> dict[str, Message]:
        if client is clients[0]:
            raise RuntimeError("no messages for you")
        return {"t": Message("t", 2), "u": Message("u", 2)}

    delivery = fan_out(runtime, {c: ("t", "u") for c in clients}, messages, chunk_size=10)
    assert (delivery.queued, delivery.failed) == (4, 2) and isinstance(delivery.first_error, RuntimeError)
    assert all(received(c) == [("t", 2), ("u", 2)] for c in clients[1:])
