"""Subscription options parsing and notify-topic matching of subscription keys."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from flask_rtbroker.protocol.options import SubscriptionOptions, base_topic, matches_prefix, parse_options, snakecase


def sdk_key(topic: str, options: str) -> str:
    """Build a key the way the JS SDK does (encodeURIComponent of the JSON)."""
    return topic + ("&" if "?" in topic else "?") + "options=" + quote(options, safe="-_.!~*'()")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("X-Token", "x_token"), ("x_token", "x_token"), ("XToken", "xtoken"), ("xToken", "x_token"),
     ("Content-Type", "content_type"), ("a--b__c", "a_b_c"), ("", "")],
)
def test_snakecase_like_pocketbase(name: str, expected: str) -> None:
    assert snakecase(name) == expected


def test_options_parsed_stringified_and_headers_normalised() -> None:
    key = sdk_key("posts/*", '{"query":{"fields":"id,title","n":1,"f":1.5,"b":true,"z":null,"o":{}},'
                             '"headers":{"X-Token":"abc","X-Num":2}}')
    assert parse_options(key) == SubscriptionOptions(
        query={"fields": "id,title", "n": "1", "f": "1.5", "b": "true", "z": "", "o": ""},
        headers={"x_token": "abc", "x_num": "2"},
    )


@pytest.mark.parametrize(
    "key", ["topic", "topic?options=notjson", "topic?options=%5B1%5D", "topic?foo=bar", "topic?options="]
)
def test_malformed_or_absent_options_mean_none(key: str) -> None:
    assert parse_options(key) == SubscriptionOptions()


@pytest.mark.parametrize(
    ("key", "base"),
    [
        ("t", None),
        ("t?", None),
        ("t?x=1", None),
        (sdk_key("t", '{"query":{"a":1}}'), "t"),
        (sdk_key("t?x=1", '{"query":{"a":1}}'), "t?x=1"),
        ("t&options=1", None),
    ],
)
def test_base_topic(key: str, base: str | None) -> None:
    assert base_topic(key) == base


def test_prefix_match_uses_question_mark_as_end_delimiter() -> None:
    assert matches_prefix("posts/*", "posts/*?")
    assert matches_prefix("posts/*?options=x", "posts/*?")
    assert not matches_prefix("posts/*x", "posts/*?")
    assert matches_prefix("posts2/*", "posts")


def test_the_options_query_is_found_as_urlsplit_finds_it() -> None:
    """Parsing reads the query without urlsplit (whose cache of recent URLs would keep copies
    of keys) and must find the same query for any key."""
    import random
    from urllib.parse import urlsplit

    from flask_rtbroker.protocol.options import _query_of

    chars = "ab?#&=/:%\t\n\r x"
    rng = random.Random(21)
    for _ in range(20_000):
        key = "".join(rng.choice(chars) for _ in range(rng.randint(0, 12)))
        assert _query_of(key) == urlsplit(key).query, repr(key)
