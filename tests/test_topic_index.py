"""TopicIndex on its own: indexing keys under their topics, lookups, cleanup and byte accounting."""

from __future__ import annotations

import random
import sys
import threading

import pytest

from flask_rtbroker import DefaultClient
from flask_rtbroker.protocol.options import subscription_cost
from flask_rtbroker.topic_index import TopicIndex

EMPTY_OPTIONS = "%7B%7D"  # {}
QUERY_OPTIONS = "%7B%22query%22%3A%7B%22a%22%3A1%7D%7D"  # {"query":{"a":1}}
HEADER_OPTIONS = "%7B%22headers%22%3A%7B%22X-Token%22%3A%22x%22%7D%7D"  # {"headers":{"X-Token":"x"}}

KEY_BASES: dict[str, str | None] = {
    "t": None,
    "t?options=" + EMPTY_OPTIONS: "t",
    "t?options=" + QUERY_OPTIONS: "t",
    "t?x=1": None,
    "t?x=1&options=" + EMPTY_OPTIONS: "t?x=1",
    "t?": None,
    "t&options=" + EMPTY_OPTIONS: None,  # "&options=" without a query string: only itself
    "T": None,
    "coll/*": None,
    "coll/*?options=" + QUERY_OPTIONS: "coll/*",
    "coll/abc": None,
    "coll/abc?options=" + HEADER_OPTIONS: "coll/abc",
    "é/ünï": None,
    "é/ünï?options=" + EMPTY_OPTIONS: "é/ünï",
}
"""Subscription keys and, written out by hand, the topic each was made from (None: only itself)."""
PROBES = ("", "t?options", "t?x=1&", "coll", "coll/", "coll/*?", "coll/ab", "abc", "é")
"""Topics no key of :data:`KEY_BASES` matches."""


def topics_of(key: str) -> set[str]:
    base = KEY_BASES[key]
    return {key} if base is None else {key, base}


def test_an_empty_index_has_no_topics_subscribers_or_bytes() -> None:
    index = TopicIndex()
    assert index.subscribers("t") == {}
    assert index.total_topics() == 0
    assert index.subscription_bytes == 0


def test_a_plain_key_is_found_under_itself_only() -> None:
    index, client = TopicIndex(), DefaultClient()
    index.add(client, ["t"])
    assert index.subscribers("t") == {client: ("t",)}
    assert index.subscribers("t?options=" + EMPTY_OPTIONS) == {}
    assert index.subscribers("T") == {} and index.subscribers("t/") == {}
    assert index.total_topics() == 1


@pytest.mark.parametrize("key", sorted(KEY_BASES))
def test_each_key_form_is_found_under_itself_and_its_base_topic_only(key: str) -> None:
    index, client = TopicIndex(), DefaultClient()
    index.add(client, [key])
    expected = topics_of(key)
    for topic in set(KEY_BASES) | {b for b in KEY_BASES.values() if b is not None} | set(PROBES):
        assert index.subscribers(topic) == ({client: (key,)} if topic in expected else {}), topic
    assert index.total_topics() == len(expected)


def test_options_keys_share_their_base_topic_with_the_plain_key() -> None:
    index = TopicIndex()
    plain, with_query, both = DefaultClient(), DefaultClient(), DefaultClient()
    query_key, empty_key = "t?options=" + QUERY_OPTIONS, "t?options=" + EMPTY_OPTIONS
    index.add(plain, ["t"])
    index.add(with_query, [query_key])
    index.add(both, ["t", empty_key])
    assert index.subscribers("t") == {plain: ("t",), with_query: (query_key,), both: ("t", empty_key)}
    assert index.subscribers(query_key) == {with_query: (query_key,)}
    assert index.subscribers(empty_key) == {both: (empty_key,)}
    assert index.total_topics() == 3


def test_collection_wildcard_and_record_keys_are_distinct_topics() -> None:
    index = TopicIndex()
    wildcard, record, record_with_options = DefaultClient(), DefaultClient(), DefaultClient()
    options_key = "coll/abc?options=" + HEADER_OPTIONS
    index.add(wildcard, ["coll/*"])
    index.add(record, ["coll/abc"])
    index.add(record_with_options, [options_key])
    assert index.subscribers("coll/*") == {wildcard: ("coll/*",)}  # no wildcard expansion here
    assert index.subscribers("coll/abc") == {record: ("coll/abc",), record_with_options: (options_key,)}
    assert index.subscribers("coll/other") == {}
    assert index.subscribers("coll") == {}


def test_a_clients_matching_keys_come_in_the_order_they_were_added() -> None:
    index, client = TopicIndex(), DefaultClient()
    second, third = "t?options=" + QUERY_OPTIONS, "t?options=" + EMPTY_OPTIONS
    index.add(client, [second, "t"])
    index.add(client, [third])
    assert index.subscribers("t") == {client: (second, "t", third)}
    assert list(index.subscribers("t")[client]) == [second, "t", third]


def test_removing_one_key_keeps_the_clients_other_keys_for_the_same_topic() -> None:
    index, client = TopicIndex(), DefaultClient()
    options_key = "t?options=" + EMPTY_OPTIONS
    index.add(client, ["t", options_key])
    index.remove(client, ["t"])
    assert index.subscribers("t") == {client: (options_key,)}
    assert index.subscribers(options_key) == {client: (options_key,)}
    index.add(client, ["t"])
    index.remove(client, [options_key])
    assert index.subscribers("t") == {client: ("t",)}
    assert index.subscribers(options_key) == {}
    assert index.total_topics() == 1


def test_removing_one_client_leaves_the_others_subscribed() -> None:
    index, gone, stays = TopicIndex(), DefaultClient(), DefaultClient()
    index.add(gone, ["t", "u"])
    index.add(stays, ["t"])
    index.remove(gone, ["t", "u"])
    assert index.subscribers("t") == {stays: ("t",)}
    assert index.subscribers("u") == {}
    assert index.total_topics() == 1


def test_removing_every_key_leaves_no_empty_entries() -> None:
    index = TopicIndex()
    clients = [DefaultClient() for _ in range(5)]
    for client in clients:
        index.add(client, sorted(KEY_BASES))
    assert index.total_topics() == len(set().union(*(topics_of(k) for k in KEY_BASES)))
    for client in clients:
        index.remove(client, sorted(KEY_BASES))
    assert index.total_topics() == 0
    assert index.subscription_bytes == 0
    assert all(index.subscribers(topic) == {} for topic in KEY_BASES)


def test_removing_a_key_of_another_client_does_not_touch_the_holders() -> None:
    index, holder, stranger = TopicIndex(), DefaultClient(), DefaultClient()
    options_key = "t?options=" + EMPTY_OPTIONS
    index.add(holder, [options_key])
    index.remove(stranger, [options_key])  # stranger never held it: its entries only, i.e. none
    assert index.subscribers("t") == {holder: (options_key,)}
    assert index.subscribers(options_key) == {holder: (options_key,)}
    assert index.total_topics() == 2


def test_resubscribing_after_a_full_removal_indexes_the_key_once_again() -> None:
    index, client = TopicIndex(), DefaultClient()
    options_key = "t?options=" + EMPTY_OPTIONS
    for _ in range(3):
        index.add(client, ["t", options_key])
        assert index.subscribers("t") == {client: ("t", options_key)}
        index.remove(client, ["t", options_key])
        assert index.total_topics() == 0
    assert index.subscription_bytes == 0


def test_subscribers_returns_a_snapshot_detached_from_the_index() -> None:
    index, first, later = TopicIndex(), DefaultClient(), DefaultClient()
    index.add(first, ["t"])
    snapshot = index.subscribers("t")
    index.add(later, ["t"])
    index.remove(first, ["t"])
    assert snapshot == {first: ("t",)}  # what matched when it was taken
    snapshot.clear()
    snapshot[first] = ("forged",)
    assert index.subscribers("t") == {later: ("t",)}


def test_subscription_bytes_follows_what_is_added_and_removed() -> None:
    index, a, b = TopicIndex(), DefaultClient(), DefaultClient()
    a_keys, b_keys = ["t", "é/ünï?options=" + EMPTY_OPTIONS], ["coll/*"]
    index.add(a, a_keys)
    index.add(b, b_keys)
    assert index.subscription_bytes == subscription_cost(a_keys + b_keys)
    assert index.subscription_bytes > len("t" + "é/ünï?options=" + EMPTY_OPTIONS + "coll/*")  # UTF-8 plus overhead
    index.remove(a, a_keys[:1])
    assert index.subscription_bytes == subscription_cost(a_keys[1:] + b_keys)
    index.remove(a, a_keys[1:])
    index.remove(b, b_keys)
    assert index.subscription_bytes == 0


def test_many_clients_on_one_topic() -> None:
    index = TopicIndex()
    clients = [DefaultClient() for _ in range(2000)]
    for i, client in enumerate(clients):
        index.add(client, ["all", f"own/{i}"])
    assert len(index.subscribers("all")) == 2000
    assert index.total_topics() == 2001
    for client in clients[::2]:
        index.remove(client, ["all"])
    assert set(index.subscribers("all")) == set(clients[1::2])
    assert index.subscribers("own/10") == {clients[10]: ("own/10",)}
    for i, client in enumerate(clients):
        index.remove(client, ([] if i % 2 == 0 else ["all"]) + [f"own/{i}"])
    assert index.total_topics() == 0 and index.subscription_bytes == 0


def test_concurrent_adds_and_removes_from_threads_stay_consistent() -> None:
    index = TopicIndex()
    keys = ["t", "t?options=" + EMPTY_OPTIONS, "coll/*"]
    kept = [DefaultClient() for _ in range(8)]
    barrier = threading.Barrier(len(kept))

    def churn(client: DefaultClient) -> None:
        barrier.wait()
        for _ in range(300):
            index.add(client, keys)
            index.remove(client, keys[1:])
            index.remove(client, keys[:1])
        index.add(client, keys[:1])

    threads = [threading.Thread(target=churn, args=(client,)) for client in kept]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, inside add and remove
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    finally:
        sys.setswitchinterval(interval)
    assert index.subscribers("t") == {client: ("t",) for client in kept}
    assert index.total_topics() == 1
    assert index.subscription_bytes == subscription_cost(["t"]) * len(kept)


@pytest.mark.parametrize("seed", range(4))
def test_random_adds_and_removes_match_a_brute_force_oracle(seed: int) -> None:
    rng = random.Random(seed)
    index = TopicIndex()
    clients = [DefaultClient() for _ in range(6)]
    held: dict[DefaultClient, dict[str, None]] = {client: {} for client in clients}  # keys in add order
    every_topic = sorted(set(KEY_BASES) | {b for b in KEY_BASES.values() if b is not None} | set(PROBES))

    def expected(topic: str) -> dict[DefaultClient, tuple[str, ...]]:
        found = {c: tuple(k for k in keys if topic in topics_of(k)) for c, keys in held.items()}
        return {c: keys for c, keys in found.items() if keys}

    for _ in range(200):
        client = rng.choice(clients)
        if rng.random() < 0.55:
            free = [k for k in KEY_BASES if k not in held[client]]
            keys = rng.sample(free, rng.randint(0, min(3, len(free))))
            index.add(client, keys)
            held[client].update(dict.fromkeys(keys))
        else:
            keys = rng.sample(list(held[client]), rng.randint(0, min(3, len(held[client]))))
            index.remove(client, keys)
            for key in keys:
                del held[client][key]
        for topic in every_topic:
            assert index.subscribers(topic) == expected(topic), (seed, topic)
        assert index.total_topics() == sum(1 for topic in every_topic if expected(topic))
        assert index.subscription_bytes == subscription_cost(k for keys in held.values() for k in keys)


def test_removing_keys_a_client_does_not_hold_costs_nothing() -> None:
    index, holder, other = TopicIndex(), DefaultClient(), DefaultClient()
    index.add(holder, ["t"])
    before = index.subscription_bytes
    index.remove(other, ["t", "never"])
    assert index.subscription_bytes == before > 0
    assert set(index.subscribers("t")) == {holder}


def test_clients_holding_one_key_share_one_tuple_that_goes_with_its_topic() -> None:
    index = TopicIndex()
    key = "t?options=" + EMPTY_OPTIONS
    clients = [DefaultClient() for _ in range(3)]
    for client in clients:
        index.add(client, [key])
    for topic in (key, "t"):
        held = list(index.subscribers(topic).values())
        assert held == [(key,)] * 3 and all(keys is held[0] for keys in held)
    index.add(clients[0], ["t"])
    assert index.subscribers("t")[clients[0]] == (key, "t")
    index.remove(clients[0], ["t"])  # topic "t" stays (the options key is indexed there too)
    for client in clients:
        index.remove(client, [key])
    assert index.total_topics() == 0
    assert index._single == {}  # the shared tuples never outlive their topics
