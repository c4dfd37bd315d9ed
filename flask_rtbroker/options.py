"""Subscription strings: their ``?options=`` part and how notify topics match them.

The SDK appends per-subscription request options to a topic as
``<topic>?options=<percent-encoded JSON {"query": {...}, "headers": {...}}>`` (``&options=``
when the topic already has a query string). The whole string stays the subscription's key.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qs, urlsplit

from . import encoding

OPTIONS_PARAM = "options"
_OPTIONS_MARKERS = ("?" + OPTIONS_PARAM + "=", "&" + OPTIONS_PARAM + "=")
_SNAKECASE_SPLIT = re.compile(r"[\W_]+", re.ASCII)


@dataclass(frozen=True)
class SubscriptionOptions:
    """The request options carried by one subscription: string query values and headers.

    Header names are snake_case (``X-Token`` becomes ``x_token``), as PocketBase's rules see them.
    Read-only: subscriptions without options share one empty instance.
    """

    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


NO_OPTIONS = SubscriptionOptions(MappingProxyType({}), MappingProxyType({}))
"""The options of every subscription that carries none (most of them)."""


def snakecase(name: str) -> str:
    """Convert *name* to snake_case the way PocketBase's inflector does (``X-Token`` -> ``x_token``)."""
    words = []
    for word in _SNAKECASE_SPLIT.split(name):
        if not word:
            continue
        chars = []
        for i, char in enumerate(word):
            if char.isupper() and i > 0 and not word[i - 1].isupper():
                chars.append("_")
            chars.append(char)
        words.append("".join(chars))
    return "_".join(words).lower()


def _stringify(value: Any) -> str:
    """Convert a JSON value to a string the way Go's cast.ToString does for JSON input."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return ""


def parse_options(subscription: str) -> SubscriptionOptions:
    """Parse the ``options`` query parameter of *subscription*; malformed options mean none."""
    if OPTIONS_PARAM + "=" not in subscription:
        return NO_OPTIONS
    try:
        raw_values = parse_qs(urlsplit(subscription).query).get(OPTIONS_PARAM)
        raw = encoding.loads_untrusted(raw_values[0]) if raw_values else None
    except ValueError:
        return NO_OPTIONS
    if not isinstance(raw, dict):
        return NO_OPTIONS
    query = raw.get("query")
    headers = raw.get("headers")
    return SubscriptionOptions(
        query={str(k): _stringify(v) for k, v in query.items()} if isinstance(query, dict) else {},
        headers=(
            {snakecase(str(k)): _stringify(v) for k, v in headers.items()}
            if isinstance(headers, dict)
            else {}
        ),
    )


def base_topic(subscription: str) -> str | None:
    """Return the topic *subscription* was made from by appending ``options``, or None.

    ``"t?options=..."`` -> ``"t"``; ``"t?x=1&options=..."`` -> ``"t?x=1"``; ``"t"``, ``"t?"`` and
    ``"t?x=1"`` -> None (they match only themselves).
    """
    question = subscription.find(_OPTIONS_MARKERS[0])
    if question >= 0:
        return subscription[:question]
    ampersand = subscription.find(_OPTIONS_MARKERS[1])
    if ampersand >= 0 and "?" in subscription[:ampersand]:
        return subscription[:ampersand]
    return None


SUBSCRIPTION_OVERHEAD = 64
"""Bytes counted per subscription key on top of its UTF-8 length (dict and index entries)."""


def subscription_cost(subscriptions: Iterable[str]) -> int:
    """The bytes *subscriptions* count against the subscription budgets."""
    return sum(len(encoding.utf8(sub)) + SUBSCRIPTION_OVERHEAD for sub in subscriptions)


def matches_prefix(subscription: str, prefix: str) -> bool:
    """PocketBase's prefix rule: ``subscription + "?"`` starts with *prefix*."""
    return (subscription + "?").startswith(prefix)
