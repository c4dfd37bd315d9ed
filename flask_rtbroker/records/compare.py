"""How filter operators compare JSON values, following what PocketBase's filters do in SQL.

- ``=`` / ``!=``: ``null`` and ``""`` are equal (PocketBase folds them with ``COALESCE``); numbers
  compare by value, a number and a numeric string too; ``true``/``false`` are 1 and 0; other
  strings compare exactly (case-sensitive); lists and objects compare by their compact JSON text.
- ``<`` ``<=`` ``>`` ``>=``: numbers (or a number and a numeric string) by value, two strings by
  code point; anything involving ``null`` or other mixed types is false (SQL's NULL).
- ``~`` / ``!~``: SQL ``LIKE``, case-insensitive for ASCII letters. A string literal without
  ``%`` is a *contains* test; with ``%`` it is a pattern (``%`` any run, ``_`` one character,
  ``\\`` escapes the next one). A field on the right is wrapped in ``%...%`` with its wildcards
  active. Either side ``null`` makes both operators false, as in SQL.
"""

from __future__ import annotations

import operator
import re
from functools import lru_cache
from typing import Any, Callable, Union

from .. import encoding

Scalar = Union[None, int, float, str]
_LIKE_FLAGS = re.IGNORECASE | re.ASCII | re.DOTALL
_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def scalar(value: Any) -> Scalar:
    """Reduce a JSON value to what a SQL column would hold: bools as 1/0, containers as JSON text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    return encoding.dumps(value).decode("utf-8")


def _number(value: Scalar) -> float | int | None:
    """The numeric value of a number or numeric string, else None."""
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def equals(left: Any, right: Any) -> bool:
    """PocketBase's ``=``."""
    a, b = scalar(left), scalar(right)
    if a in (None, "") or b in (None, ""):
        return a in (None, "") and b in (None, "")
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    x, y = _number(a), _number(b)
    return x is not None and y is not None and x == y


def ordered(left: Any, operator: str, right: Any) -> bool:
    """PocketBase's ``<``, ``<=``, ``>``, ``>=``."""
    a, b = scalar(left), scalar(right)
    if a is None or b is None:
        return False
    compare = _ORDERINGS[operator]
    if isinstance(a, str) and isinstance(b, str):
        return compare(a, b)
    x, y = _number(a), _number(b)
    return x is not None and y is not None and compare(x, y)


def text(value: Scalar) -> str:
    """The text SQL would compare with ``LIKE`` (integral floats without ``.0``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@lru_cache(maxsize=1024)
def like_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a SQL ``LIKE`` pattern with ``\\`` as the escape character."""
    parts = []
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            parts.append(re.escape(next(chars, "\\")))
        elif char == "%":
            parts.append(".*")
        elif char == "_":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), _LIKE_FLAGS)


def contains_pattern(literal: str) -> re.Pattern[str]:
    """The pattern of ``field ~ 'literal'``: a contains test, or the literal itself if it has ``%``."""
    if _has_unescaped_percent(literal):
        return like_pattern(literal)
    return like_pattern("%" + _escape_wildcards(literal) + "%")


def _escape_wildcards(literal: str) -> str:
    """Escape ``\\``, ``%`` and ``_`` unless a backslash already escapes them."""
    out = []
    i = 0
    while i < len(literal):
        char = literal[i]
        if char == "\\" and literal[i + 1 : i + 2] in ("\\", "%", "_"):
            out.append(literal[i : i + 2])
            i += 2
            continue
        out.append("\\" + char if char in "\\%_" else char)
        i += 1
    return "".join(out)


def _has_unescaped_percent(literal: str) -> bool:
    escaped = False
    for char in literal:
        if char == "%" and not escaped:
            return True
        escaped = char == "\\" and not escaped
    return False


def like(value: Any, pattern: re.Pattern[str] | None) -> bool | None:
    """``value LIKE pattern``; None (SQL NULL) when the value or the pattern is null."""
    subject = scalar(value)
    if subject is None or pattern is None:
        return None
    return pattern.fullmatch(text(subject)) is not None
