"""DefaultClient: ids, subscriptions, store, discard and the bounded queue (PocketBase's client tests in spirit)."""

from __future__ import annotations

import re

from flask_rtbroker import DefaultClient, Message
from flask_rtbroker.client import DisconnectReason, new_client_id


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


def test_send_queues_and_drain_empties_in_order() -> None:
    client = DefaultClient()
    messages = [Message("t", i) for i in range(5)]
    for message in messages:
        client.send(message)
    assert client.queued == 5
    assert client.drain() == messages
    assert client.drain() == []


def test_discard_is_idempotent_stops_sends_and_keeps_what_was_queued() -> None:
    client = DefaultClient()
    queued = Message("t", 1)
    client.send(queued)
    client.discard("first")
    client.discard("second")
    assert client.is_discarded and client.discard_reason == "first"
    client.send(Message("t", 2))
    assert client.drain() == [queued]  # written before the stream ends


def test_full_queue_discards_the_slow_client_without_blocking() -> None:
    client = DefaultClient(queue_size=3)
    for i in range(10):
        client.send(Message("t", i))
    assert client.discard_reason == DisconnectReason.SLOW
    assert client.drain() == []
    assert client.dropped == 4  # three queued and the one that overflowed


def test_byte_bound_discards_the_slow_client() -> None:
    client = DefaultClient(max_queue_bytes=100)
    client.send(Message("t", "x" * 40))
    assert client.queued == 1
    client.send(Message("t", "y" * 40))
    assert client.discard_reason == DisconnectReason.SLOW and client.dropped == 2


def test_drained_bytes_free_room_in_the_byte_bound() -> None:
    client = DefaultClient(max_queue_bytes=100)
    for _ in range(10):
        client.send(Message("t", "x" * 40))
        assert len(client.drain()) == 1
    assert not client.is_discarded


def test_wait_returns_after_send_or_timeout() -> None:
    client = DefaultClient()
    client.wait(0.01)
    client.send(Message("t", 1))
    client.wait(5)  # returns at once: something is queued
    assert client.queued == 1


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
