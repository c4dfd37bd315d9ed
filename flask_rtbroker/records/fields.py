"""The ``fields`` subscription option: PocketBase's field picker.

``fields`` is a comma-separated list of paths into the record, with dots for nested objects
(``id,title,meta.tags``); ``*`` stands for every key at its level (``*,expand.author.name``); a
path may end with the ``:excerpt(max, withEllipsis?)`` modifier. Keys not listed are left out;
listed keys that do not exist are ignored; lists of objects are picked item by item.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping, Optional

from ..errors import FieldsSyntaxError
from .excerpt import Excerpt, PlainTexts

_MODIFIER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?", re.DOTALL)
_ARGUMENT_SEPARATORS = re.compile(r"[\s,]+")

MAX_PATH_DEPTH = 32
"""The most segments one path may have (``a.b.c`` has three); a deeper path is a syntax error."""


@dataclass
class FieldNode:
    """What a fields list says of one key: take it *whole* (with *modifier*), or pick *children* inside it."""

    whole: bool = False
    modifier: Optional[Excerpt] = None
    children: dict[str, "FieldNode"] = field(default_factory=dict)

    def apply(self, value: Any, texts: PlainTexts) -> Any:
        """The key's value as the fields list shows it."""
        if self.whole:
            return value if self.modifier is None else self.modifier.apply(value, texts)
        return _pick(value, self.children, texts)


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
    return Excerpt.from_args(args)


@dataclass(frozen=True)
class FieldPicker:
    """A parsed fields list, its paths grouped by first segment into a tree; :meth:`pick` applies it."""

    fields: dict[str, FieldNode]

    def pick(self, data: Any, texts: PlainTexts | None = None) -> Any:
        """A copy of *data* with only the listed fields (modifiers applied).

        *texts* lets the pickers of one event share the plain text of the values they excerpt.
        """
        return _pick(data, self.fields, PlainTexts() if texts is None else texts)


def _pick(data: Any, fields: dict[str, FieldNode], texts: PlainTexts) -> Any:
    if isinstance(data, Mapping):
        return _pick_mapping(data, fields, texts)
    if isinstance(data, list) and data and isinstance(data[0], Mapping):
        return [_pick_mapping(item, fields, texts) if isinstance(item, Mapping) else item for item in data]
    return data


def _pick_mapping(data: Mapping[str, Any], fields: dict[str, FieldNode], texts: PlainTexts) -> dict[str, Any]:
    """One pass over *data*'s keys, a dict lookup each: linear in the keys, recursion as deep as the paths."""
    if not fields:
        return dict(data)
    star = fields.get("*")
    if star is not None and not star.whole:
        star = None
    picked: dict[str, Any] = {}
    for key, value in data.items():
        node = fields.get(key, star)
        if node is not None:
            picked[key] = node.apply(value, texts)
    return picked


@lru_cache(maxsize=1024)
def parse_fields(source: str) -> FieldPicker:
    """Parse a fields list; raise :class:`FieldsSyntaxError` when it is malformed."""
    fields: dict[str, FieldNode] = {}
    for entry in _split_top_level(source):
        path, colon, modifier = entry.partition(":")
        segments = path.strip().split(".")
        if len(segments) > MAX_PATH_DEPTH:
            raise FieldsSyntaxError(f"the path {path.strip()[:40]!r}... is nested deeper than {MAX_PATH_DEPTH} levels")
        level = fields
        for segment in segments[:-1]:
            level = level.setdefault(segment, FieldNode()).children
        node = level.setdefault(segments[-1], FieldNode())
        node.whole, node.modifier = True, _modifier(modifier) if colon else None
    return FieldPicker(fields)
