"""The ``fields`` subscription option: PocketBase's field picker.

``fields`` is a comma-separated list of paths into the record, with dots for nested objects
(``id,title,meta.tags``); ``*`` stands for every key at its level (``*,expand.author.name``); a
path may end with the ``:excerpt(max, withEllipsis?)`` modifier. Keys not listed are left out;
listed keys that do not exist are ignored; lists of objects are picked item by item.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping, Optional

from .excerpt import Excerpt

_MODIFIER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?", re.DOTALL)
_ARGUMENT_SEPARATORS = re.compile(r"[\s,]+")

Fields = Mapping[str, Optional[Excerpt]]


class FieldsSyntaxError(ValueError):
    """The fields list is malformed or uses an unknown modifier."""


def _split_top_level(source: str) -> list[str]:
    """Split on commas outside parentheses and quotes, as PocketBase's tokenizer does."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    quote = ""
    for char in source:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif char == "," and not depth:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if depth or quote:
        raise FieldsSyntaxError(f"unbalanced parenthesis or quote in fields {source!r}")
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _modifier(source: str) -> Excerpt:
    match = _MODIFIER.fullmatch(source.strip())
    if match is None or match.group(1) != "excerpt":
        raise FieldsSyntaxError(f"unknown field modifier {source!r}; the only one is :excerpt(max, withEllipsis?)")
    args = [arg for arg in _ARGUMENT_SEPARATORS.split(match.group(2) or "") if arg]
    try:
        return Excerpt.from_args(args)
    except ValueError as exc:
        raise FieldsSyntaxError(str(exc)) from None


@dataclass(frozen=True)
class FieldPicker:
    """A parsed fields list; :meth:`pick` applies it."""

    fields: Fields

    def pick(self, data: Any) -> Any:
        """A copy of *data* with only the listed fields (modifiers applied)."""
        return _pick(data, self.fields)


def _pick(data: Any, fields: Fields) -> Any:
    if isinstance(data, Mapping):
        return _pick_mapping(data, fields)
    if isinstance(data, list) and data and isinstance(data[0], Mapping):
        return [_pick_mapping(item, fields) if isinstance(item, Mapping) else item for item in data]
    return data


def _pick_mapping(data: Mapping[str, Any], fields: Fields) -> dict[str, Any]:
    if not fields:
        return dict(data)
    if "*" in fields:
        fields = dict(fields)
        for key in data:
            if not any((path + ".").startswith(key + ".") for path in fields):
                fields[key] = fields["*"]
    picked: dict[str, Any] = {}
    for key, value in data.items():
        prefix = key + "."
        matching = {path: modifier for path, modifier in fields.items() if (path + ".").startswith(prefix)}
        if not matching:
            continue
        if key in matching:
            modifier = matching[key]
            picked[key] = value if modifier is None else modifier.apply(value)
        else:
            picked[key] = _pick(value, {path[len(prefix):]: modifier for path, modifier in matching.items()})
    return picked


@lru_cache(maxsize=1024)
def parse_fields(source: str) -> FieldPicker:
    """Parse a fields list; raise :class:`FieldsSyntaxError` when it is malformed."""
    fields: dict[str, Excerpt | None] = {}
    for entry in _split_top_level(source):
        path, colon, modifier = entry.partition(":")
        fields[path.strip()] = _modifier(modifier) if colon else None
    return FieldPicker(fields)
