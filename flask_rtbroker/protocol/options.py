"""Subscription strings: their ``?options=`` part and how notify topics match them.

The SDK appends per-subscription request options to a topic as
``<topic>?options=<percent-encoded JSON {"query": {...}, "headers": {...}}>`` (``&options=``
when the topic already has a query string). The whole string stays the subscription's key.

Parsed options are interned: every key whose query text is the same, and every text that
parses to the same options, share one read-only :class:`SubscriptionOptions` for as long as
some client holds it. What a key counts against the subscription budgets
(:func:`subscription_cost`) includes what its parse holds; a POST may give a key at most
:data:`MAX_OPTION_ENTRIES` query and header names, and a client at most
``RTBROKER_MAX_OPTION_SETS`` distinct option sets (:func:`option_errors`).
"""

from __future__ import annotations

import math
import re
import weakref
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qs

from . import encoding

OPTIONS_PARAM = "options"
OPTION_PARAM_MARK = OPTIONS_PARAM + "="
TOO_MANY_OPTIONS_CODE = "validation_too_many_options"
TOO_MANY_OPTION_SETS_CODE = "validation_too_many_option_sets"
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

    @property
    def entries(self) -> int:
        """How many query and header names it holds."""
        return len(self.query) + len(self.headers)

    @property
    def cost(self) -> int:
        """The bytes its parse holds, as counted against the subscription budgets."""
        return PARSE_OVERHEAD + sum(
            len(k) + len(v) + OPTION_ENTRY_OVERHEAD for m in (self.query, self.headers) for k, v in m.items()
        )

    def __hash__(self) -> int:
        """By content, so equal options find one another in the intern table."""
        return hash((frozenset(self.query.items()), frozenset(self.headers.items())))


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


MAX_OPTION_ENTRIES = 32
"""Query and header names one key's options may hold (a POST with more answers 400)."""
OPTION_ENTRY_OVERHEAD = 160
"""Bytes counted per parsed option besides its name and value: two strings and a dict slot."""
PARSE_OVERHEAD = 600
"""Bytes counted per parse besides its options: its objects, two dicts and its intern entries."""

_by_key: "weakref.WeakValueDictionary[str, SubscriptionOptions]" = weakref.WeakValueDictionary()
"""Parsed options by subscription key (the key's own string, no copy)."""
_canonical: "weakref.WeakKeyDictionary[SubscriptionOptions, weakref.ref[SubscriptionOptions]]" = (
    weakref.WeakKeyDictionary()
)
"""Each distinct option set, found by content (a reference to itself, so nothing is copied)."""


def parse_options(subscription: str) -> SubscriptionOptions:
    """Parse the ``options`` query parameter of *subscription*; malformed options mean none.

    Interned: equal options are one object, shared while any holder keeps it."""
    if OPTION_PARAM_MARK not in subscription:
        return NO_OPTIONS
    options = _by_key.get(subscription)
    if options is None:
        options = _parse(subscription)
        if options is not NO_OPTIONS:
            same = _canonical.get(options)
            canonical = same() if same is not None else None
            if canonical is None:
                _canonical[options] = weakref.ref(options)
            else:
                options = canonical
            _by_key[subscription] = options
    return options


def _query_of(subscription: str) -> str:
    """The query of *subscription* as ``urlsplit`` finds it (tabs and line breaks dropped, the
    fragment cut off), without ``urlsplit``'s cache of recent URLs, which would keep copies of keys."""
    url = subscription.replace("\t", "").replace("\r", "").replace("\n", "")
    return url.partition("#")[0].partition("?")[2]


def _parse(subscription: str) -> SubscriptionOptions:
    try:
        raw_values = parse_qs(_query_of(subscription)).get(OPTIONS_PARAM)
        raw = encoding.loads_untrusted(raw_values[0]) if raw_values else None
    except ValueError:
        return NO_OPTIONS
    if not isinstance(raw, dict):
        return NO_OPTIONS
    query = raw.get("query")
    headers = raw.get("headers")
    if not (isinstance(query, dict) and query) and not (isinstance(headers, dict) and headers):
        return NO_OPTIONS
    return SubscriptionOptions(
        query=MappingProxyType({str(k): _stringify(v) for k, v in query.items()} if isinstance(query, dict) else {}),
        headers=MappingProxyType(
            {snakecase(str(k)): _stringify(v) for k, v in headers.items()} if isinstance(headers, dict) else {}
        ),
    )


def option_errors(subscriptions: list[str], max_sets: int) -> dict[str, dict[str, Any]]:
    """PocketBase-shaped field errors, by index, for keys whose options hold more than
    :data:`MAX_OPTION_ENTRIES` names, or that bring the client's distinct option sets past
    *max_sets*; empty when every key may be kept."""
    errors: dict[str, dict[str, Any]] = {}
    sets: set[int] = set()
    held = []  # keeps the parses alive (and interned) while the keys are looked at
    for index, key in enumerate(subscriptions):
        options = parse_options(key)
        if options is NO_OPTIONS:
            continue
        held.append(options)
        if options.entries > MAX_OPTION_ENTRIES:
            errors[str(index)] = {
                "code": TOO_MANY_OPTIONS_CODE,
                "message": f"The options of one subscription must have no more than {MAX_OPTION_ENTRIES} query and header names.",
                "params": {"max": MAX_OPTION_ENTRIES},
            }
            continue
        sets.add(id(options))
        if len(sets) > max_sets:
            sets.discard(id(options))
            errors[str(index)] = {
                "code": TOO_MANY_OPTION_SETS_CODE,
                "message": f"One connection may use no more than {max_sets} distinct subscription options (RTBROKER_MAX_OPTION_SETS).",
                "params": {"max": max_sets},
            }
    return errors


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


KEY_OVERHEAD = 200
"""Bytes counted per subscription key besides its text: its string and its slots in the client's
subscriptions and the topic index (measured: ~420 bytes for a short key with one topic)."""
TOPIC_OVERHEAD = 240
"""Bytes counted per topic a key is indexed under (itself, and its base topic when it carries
options): that topic's map of subscribers."""


def subscription_cost(subscriptions: Iterable[str]) -> int:
    """The bytes *subscriptions* count against the subscription budgets: each key's UTF-8
    length, its bookkeeping and what its parsed options hold (counted for every key, though keys
    with equal options share one parse)."""
    return sum(_key_cost(sub) for sub in subscriptions)


def _key_cost(key: str) -> int:
    options = parse_options(key)
    topics = 1 if base_topic(key) is None else 2
    return len(encoding.utf8(key)) + KEY_OVERHEAD + TOPIC_OVERHEAD * topics + (0 if options is NO_OPTIONS else options.cost)


def matches_prefix(subscription: str, prefix: str) -> bool:
    """PocketBase's prefix rule: ``subscription + "?"`` starts with *prefix*."""
    return (subscription + "?").startswith(prefix)
