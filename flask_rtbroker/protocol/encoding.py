"""The one JSON encoder of the package (simplejson), configured like PocketBase's output.

Compact separators, non-ASCII written as raw UTF-8, ``<``/``>``/``&`` not escaped. Besides the
types simplejson knows, it encodes Decimal, datetime/date/time (ISO 8601), UUID, dataclasses,
sets (as lists) and objects with a ``__json__()`` or ``to_dict()`` method. A lone surrogate in a
string is written as U+FFFD, as Go does, so no value makes encoding fail on the way out.

Decoding bytes from outside (:func:`loads_untrusted`, :func:`loads_first`) is bounded: nesting
deeper than :data:`MAX_DEPTH` or more than *max_items* arrays, objects and commas stop it before
the decoder runs, ``NaN``/``Infinity`` and numbers too large for a float are refused, and no
input makes it raise anything but :class:`~flask_rtbroker.errors.InvalidJSON` (a ValueError).
"""

from __future__ import annotations

import codecs
import dataclasses
import datetime
import math
import re
import uuid
from typing import Any, NoReturn

import simplejson

from ..errors import InvalidJSON, NotSerializable

MAX_DEPTH = 64
"""How deeply arrays and objects may nest in JSON from outside (the SDK's options nest 3 deep)."""
MAX_ITEMS = 4096
"""Default bound on the arrays, objects and commas of one JSON document from outside."""

_SURROGATE_ERRORS = "flask_rtbroker.fffd"
_STRUCTURE = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{},]', re.DOTALL)


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
    raise NotSerializable(f"Object of type {type(value).__name__} is not JSON serializable")


_encoder = simplejson.JSONEncoder(
    separators=(",", ":"),
    ensure_ascii=False,
    use_decimal=True,
    default=_default,
)
_sorted_encoder = simplejson.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, sort_keys=True, default=_default
)


_REPLACEMENT = "\ufffd".encode("utf-8")


def _replace_surrogate(error: UnicodeError) -> tuple[bytes, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    return _REPLACEMENT * (error.end - error.start), error.end


codecs.register_error(_SURROGATE_ERRORS, _replace_surrogate)


def utf8(text: str) -> bytes:
    """*text* as UTF-8, lone surrogates (which UTF-8 cannot hold) written as U+FFFD."""
    return text.encode("utf-8", _SURROGATE_ERRORS)


def _encode(encoder: simplejson.JSONEncoder, value: Any) -> bytes:
    try:
        return utf8(encoder.encode(value))
    except ValueError as exc:  # NaN or infinity (JSON has neither), a circular reference
        raise NotSerializable(str(exc)) from exc


def dumps(value: Any) -> bytes:
    """Encode *value* as compact UTF-8 JSON bytes; :class:`NotSerializable` for what JSON cannot
    hold (an object without a JSON form, NaN or infinity, a circular reference)."""
    return _encode(_encoder, value)


def dumps_sorted(value: Any) -> bytes:
    """Encode *value* like :func:`dumps`, with object keys sorted (Go's map order)."""
    return _encode(_sorted_encoder, value)


def loads(data: str | bytes) -> Any:
    """Decode one JSON document of this deployment (a backplane body); :class:`InvalidJSON` when
    it is not JSON, or nests deeper than the interpreter's recursion limit allows."""
    try:
        return simplejson.loads(data)
    except RecursionError:
        raise InvalidJSON("JSON nests too deeply") from None
    except ValueError as exc:
        raise InvalidJSON(str(exc)) from None


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise InvalidJSON(f"number out of range: {text[:40]}")
    return number


def _no_constant(name: str) -> NoReturn:
    raise InvalidJSON(f"{name} is not JSON")


_strict_decoder = simplejson.JSONDecoder(parse_float=_finite_float, parse_constant=_no_constant)


def check_shape(text: str, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS) -> None:
    """Raise :class:`InvalidJSON` when *text* nests deeper than *max_depth* or has more than *max_items*
    arrays, objects and commas; stops at the first excess, so it costs at most that many steps
    beyond the strings it skips."""
    depth = items = 0
    for match in _STRUCTURE.finditer(text):
        char = text[match.start()]
        if char == '"':
            continue
        if char in "]}":
            depth -= 1
            continue
        items += 1
        if items > max_items:
            raise InvalidJSON(f"JSON with more than {max_items} items")
        if char != ",":
            depth += 1
            if depth > max_depth:
                raise InvalidJSON(f"JSON nested deeper than {max_depth}")


def loads_untrusted(data: str | bytes, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS) -> Any:
    """Decode one JSON document from outside within the bounds of :func:`check_shape`."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        check_shape(text, max_depth, max_items)
        return _strict_decoder.decode(text)
    except InvalidJSON:
        raise
    except ValueError as exc:  # not UTF-8, not JSON
        raise InvalidJSON(str(exc)) from None


def loads_first(text: str, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS) -> Any:
    """Decode the first JSON value of *text* from outside and ignore whatever follows it (Go's
    Decoder), within the bounds of :func:`check_shape`."""
    check_shape(text, max_depth, max_items)
    try:
        value, _ = _strict_decoder.raw_decode(text.lstrip(" \t\r\n"))
    except InvalidJSON:
        raise
    except ValueError as exc:
        raise InvalidJSON(str(exc)) from None
    return value
