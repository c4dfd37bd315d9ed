"""The one JSON encoder of the package (simplejson), configured like PocketBase's output.

Compact separators, non-ASCII written as raw UTF-8, ``<``/``>``/``&`` not escaped. Besides the
types simplejson knows, it encodes Decimal, datetime/date/time (ISO 8601), UUID, dataclasses,
sets (as lists) and objects with a ``__json__()`` or ``to_dict()`` method.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from typing import Any

import simplejson


def _default(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    for method in ("__json__", "to_dict"):
        convert = getattr(value, method, None)
        if callable(convert):
            return convert()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_encoder = simplejson.JSONEncoder(
    separators=(",", ":"),
    ensure_ascii=False,
    use_decimal=True,
    default=_default,
)
_sorted_encoder = simplejson.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, sort_keys=True, default=_default
)


def dumps(value: Any) -> bytes:
    """Encode *value* as compact UTF-8 JSON bytes."""
    return _encoder.encode(value).encode("utf-8")


def dumps_sorted(value: Any) -> bytes:
    """Encode *value* like :func:`dumps`, with object keys sorted (Go's map order)."""
    return _sorted_encoder.encode(value).encode("utf-8")


def loads(data: str | bytes) -> Any:
    """Decode one JSON document."""
    return simplejson.loads(data)


def loads_first(text: str) -> Any:
    """Decode the first JSON value in *text* and ignore whatever follows it (Go's Decoder)."""
    value, _ = simplejson.JSONDecoder().raw_decode(text.lstrip(" \t\r\n"))
    return value
