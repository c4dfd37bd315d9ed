"""What a record rule read of a subscription's options, so its result can be reused.

A rule is called as ``rule(record, auth, options)``. Within one event its result depends on the
record, the identity and the option values it read (a rule should depend on nothing else, see
:mod:`flask_rtbroker.records.broadcast`). :class:`RuleResults` calls the rule with options that
note what is read, and reuses the result for every subscription whose options hold the same
values there: a thousand option sets a rule never looks at cost one call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Callable, Hashable

from ..protocol.options import SubscriptionOptions

_WHOLE = ("*", "*")
"""Read marker: the rule iterated or compared a whole mapping, so every value matters."""


class _NotingMapping(Mapping[str, str]):
    """A read-only view of one options mapping that notes the names looked up."""

    __slots__ = ("_values", "_section", "_reads")

    def __init__(self, values: Mapping[str, str], section: str, reads: list[tuple[str, str]]) -> None:
        self._values, self._section, self._reads = values, section, reads

    def __getitem__(self, name: str) -> str:
        self._reads.append((self._section, name))
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        self._reads.append(_WHOLE)
        return iter(self._values)

    def __len__(self) -> int:
        self._reads.append(_WHOLE)
        return len(self._values)


def _value(options: SubscriptionOptions, read: tuple[str, str]) -> Hashable:
    if read == _WHOLE:
        return id(options)  # interned: equal options are one object
    section, name = read
    return (options.query if section == "query" else options.headers).get(name)


class RuleResults:
    """One rule's results for one record and identity, keyed by the option values it read."""

    __slots__ = ("_shapes",)

    def __init__(self) -> None:
        self._shapes: dict[tuple[tuple[str, str], ...], dict[tuple[Hashable, ...], bool]] = {}
        """For each set of reads seen, the results by the values read."""

    def lookup(self, options: SubscriptionOptions) -> bool | None:
        """The result for *options*, when a call already read the same values; else None."""
        for reads, results in self._shapes.items():
            found = results.get(tuple(_value(options, read) for read in reads))
            if found is not None:
                return found
        return None

    def call(self, rule: Callable[[Any, Any, SubscriptionOptions], Any], record: Any, auth: Any,
             options: SubscriptionOptions) -> bool:
        """Call *rule* with options that note what it reads; keep and return its result (an
        exception propagates, after a denial is kept)."""
        reads: list[tuple[str, str]] = []
        noting = SubscriptionOptions(_NotingMapping(options.query, "query", reads),
                                     _NotingMapping(options.headers, "headers", reads))
        allowed = False
        try:
            allowed = bool(rule(record, auth, noting))
        finally:
            shape = tuple(dict.fromkeys(reads))
            self._shapes.setdefault(shape, {})[tuple(_value(options, read) for read in shape)] = allowed
        return allowed
