"""Broker: registry semantics (PocketBase's broker tests in spirit) and the topic index."""

from __future__ import annotations

import pytest

from flask_rtbroker import Broker, ClientNotFound, DefaultClient


def registered(broker: Broker, *subscriptions: str) -> DefaultClient:
    client = DefaultClient()
    client.subscribe(*subscriptions)
    broker.register(client)
    return client


def test_register_get_unregister() -> None:
    broker = Broker()
    client = registered(broker)
    assert broker.get_client(client.id) is client
    assert broker.total_clients() == 1
    broker.unregister(client.id)
    assert client.is_discarded
    assert broker.total_clients() == 0
    with pytest.raises(ClientNotFound, match=client.id):
        broker.get_client(client.id)
    broker.unregister(client.id)  # unknown ids are ignored


def test_clients_is_a_copy() -> None:
    broker = Broker()
    client = registered(broker)
    clients = broker.clients()
    clients.clear()
    assert broker.clients() == {client.id: client}


@pytest.mark.parametrize(("total", "size", "expected"), [(0, 3, []), (5, 2, [2, 2, 1]), (6, 3, [3, 3]), (2, 10, [2])])
def test_chunked_clients(total: int, size: int, expected: list[int]) -> None:
    broker = Broker()
    clients = [registered(broker) for _ in range(total)]
    chunks = broker.chunked_clients(size)
    assert [len(c) for c in chunks] == expected
    assert [c for chunk in chunks for c in chunk] == clients


def test_chunk_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Broker().chunked_clients(0)


def test_subscribers_follow_subscription_changes() -> None:
    broker = Broker()
    early = registered(broker, "t")  # subscribed before registration
    late = registered(broker)
    late.subscribe("t?options=%7B%7D", "t/x")
    assert dict(broker.subscribers("t")) == {early: ("t",), late: ("t?options=%7B%7D",)}
    assert dict(broker.subscribers("t?options=%7B%7D")) == {late: ("t?options=%7B%7D",)}
    late.unsubscribe("t?options=%7B%7D")
    assert dict(broker.subscribers("t")) == {early: ("t",)}
    broker.unregister(early.id)
    assert broker.subscribers("t") == {}
    assert dict(broker.subscribers("t/x")) == {late: ("t/x",)}
    broker.unregister(late.id)
    assert broker.total_topics() == 0


def test_keys_that_must_not_match_a_topic() -> None:
    broker = Broker()
    registered(broker, "t/x", "T", "t ", "t?", "t?foo=bar", "xt")
    assert broker.subscribers("t") == {}
