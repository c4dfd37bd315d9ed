"""DefaultClient: ids, subscriptions, store, discard and the bounded queue (PocketBase's client tests in spirit)."""

from __future__ import annotations

import re

from flask_rtbroker import DefaultClient, Message
from flask_rtbroker.client import DisconnectReason
from flask_rtbroker.runtime.ids import new_client_id
from flask_rtbroker.testing import parse_events


def test_ids_are_40_random_alphanumerics() -> None:
    ids = {new_client_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[A-Za-z0-9]{40}", i) for i in ids)


def test_subscribe_skips_empty_and_collapses_duplicates() -> None:
    client = DefaultClient()
    client.subscribe("a", "", "b", "a")
    assert set(client.subscriptions()) == {"a", "b"}
    assert client.has_subscription("a") and not client.has_subscription("c")


def test_subscriptions_returns_a_copy() -> None:
    client = DefaultClient()
    client.subscribe("a")
    copy = client.subscriptions()
    copy.clear()
    assert client.has_subscription("a")


def test_subscriptions_filtered_by_prefixes() -> None:
    client = DefaultClient()
    client.subscribe("posts/*", "posts/*?options=%7B%7D", "posts/abc", "users/*", "posts2/*")
    assert set(client.subscriptions("posts/*?")) == {"posts/*", "posts/*?options=%7B%7D"}
    assert set(client.subscriptions("users/", "posts/a")) == {"users/*", "posts/abc"}


def test_unsubscribe_some_or_all() -> None:
    client = DefaultClient()
    client.subscribe("a", "b", "c")
    client.unsubscribe("a", "missing")
    assert set(client.subscriptions()) == {"b", "c"}
    client.unsubscribe()
    assert client.subscriptions() == {}


def test_set_subscriptions_replaces_the_set() -> None:
    client = DefaultClient()
    client.subscribe("a", "b")
    client.set_subscriptions(["b", "c", "", "c"])
    assert set(client.subscriptions()) == {"b", "c"}


def test_store_get_set_unset() -> None:
    client = DefaultClient()
    assert client.get("auth") is None and client.get("auth", 1) == 1
    client.set("auth", {"id": "u1"})
    assert client.get("auth") == {"id": "u1"}
    client.unset("auth")
    client.unset("auth")
    assert client.get("auth") is None


def names_and_data(client: DefaultClient) -> list[tuple[str, str]]:
    """Take what *client* has queued: ``(event name, data)`` per message, oldest first."""
    return [(event.name, event.data) for event in parse_events(client.take())]


def test_send_queues_in_order_and_take_empties() -> None:
    client = DefaultClient()
    for i in range(5):
        client.send(Message("t", i))
    assert client.queued == 5
    assert names_and_data(client) == [("t", str(i)) for i in range(5)]
    assert client.queued == 0 and client.take() == b""


def test_discard_is_idempotent_stops_sends_and_keeps_what_was_queued() -> None:
    client = DefaultClient()
    client.send(Message("t", 1))
    client.discard("first")
    client.discard("second")
    assert client.is_discarded and client.discard_reason == "first"
    client.send(Message("t", 2))
    assert names_and_data(client) == [("t", "1")]  # written before the stream ends


def test_full_queue_discards_the_slow_client_without_blocking() -> None:
    client = DefaultClient(queue_size=3)
    for i in range(10):
        client.send(Message("t", i))
    assert client.discard_reason == DisconnectReason.SLOW
    assert client.take() == b""
    assert client.dropped == 4  # three queued and the one that overflowed


def test_byte_bound_discards_the_slow_client() -> None:
    client = DefaultClient(max_queue_bytes=100)
    client.send(Message("t", "x" * 40))
    assert client.queued == 1
    client.send(Message("t", "y" * 40))
    assert client.discard_reason == DisconnectReason.SLOW and client.dropped == 2


def test_taken_bytes_free_room_in_the_byte_bound() -> None:
    client = DefaultClient(max_queue_bytes=100)
    for _ in range(10):
        client.send(Message("t", "x" * 40))
        assert len(names_and_data(client)) == 1
    assert not client.is_discarded


def test_send_and_discard_wake_the_stream() -> None:
    client = DefaultClient()
    assert not client.waker.is_set()
    client.send(Message("t", 1))
    assert client.waker.is_set()
    client.waker.clear()
    client.discard("bye")
    assert client.waker.is_set()


def test_take_frames_everything_queued_as_one_write() -> None:
    client = DefaultClient("cid")
    assert client.take() == b""
    client.send(Message("a", 1))
    assert client.take() == b"id:cid\nevent:a\ndata:1\n\n"
    client.send(Message("a", 1))
    client.send(Message("b", [2]))
    assert client.take() == b"id:cid\nevent:a\ndata:1\n\nid:cid\nevent:b\ndata:[2]\n\n"
    assert client.queued == 0
    client.send(Message("c", "x" * 100))  # the byte bound counts only what is still queued
    assert client.take().endswith(b'"\n\n')
