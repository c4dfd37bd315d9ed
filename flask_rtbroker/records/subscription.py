"""What the ``?options=`` of a record subscription mean: rule inputs, ``filter`` and ``fields``.

A subscription key is its topic (``posts/*``) plus an options suffix (``?options=...``, or
nothing). Only the parsed options matter here, and they are interned
(:func:`~flask_rtbroker.protocol.options.parse_options`), so each distinct option set is compiled once and
shared by every key and client that carries it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..protocol.options import SubscriptionOptions, parse_options
from .fields import FieldPicker, FieldsSyntaxError, parse_fields
from .filter import Filter, FilterSyntaxError, parse_filter

FILTER_PARAM = "filter"
FIELDS_PARAM = "fields"
INVALID_FILTER_CODE = "validation_invalid_filter"
INVALID_FIELDS_CODE = "validation_invalid_fields"


@dataclass(frozen=True)
class RecordOptions:
    """The compiled options of one subscription suffix.

    An invalid filter means no event is delivered for the key; invalid fields mean the whole
    record is sent (both as PocketBase does). POSTs reject both up front, see :meth:`error`.
    """

    options: SubscriptionOptions
    filter: Filter | None = None
    filter_error: str | None = None
    fields: FieldPicker | None = None
    fields_error: str | None = None

    def error(self) -> dict[str, Any] | None:
        """The validation error a POST answers for this subscription, or None."""
        if self.filter_error is not None:
            return {"code": INVALID_FILTER_CODE, "message": f"Unsupported filter: {self.filter_error}."}
        if self.fields_error is not None:
            return {"code": INVALID_FIELDS_CODE, "message": f"Invalid fields: {self.fields_error}."}
        return None


_compiled: "weakref.WeakValueDictionary[int, RecordOptions]" = weakref.WeakValueDictionary()
"""Compiled options by the id of their interned options (alive while the compiled form, which
holds them, is)."""


def compile_record_options(suffix: str) -> RecordOptions:
    """Compile the options *suffix* of a subscription key (``""`` or ``"?options=..."``); equal
    options share one compiled form."""
    options = parse_options(suffix)
    compiled = _compiled.get(id(options))
    if compiled is None or compiled.options is not options:
        compiled = _compiled[id(options)] = _compile(options)
    return compiled


def _compile(options: SubscriptionOptions) -> RecordOptions:
    filter_source = options.query.get(FILTER_PARAM, "")
    fields_source = options.query.get(FIELDS_PARAM, "")
    compiled_filter = filter_error = picker = fields_error = None
    if filter_source:
        try:
            compiled_filter = parse_filter(filter_source)
        except FilterSyntaxError as exc:
            filter_error = str(exc)
    if fields_source:
        try:
            picker = parse_fields(fields_source)
        except FieldsSyntaxError as exc:
            fields_error = str(exc)
    return RecordOptions(options, compiled_filter, filter_error, picker, fields_error)


@lru_cache(maxsize=1024)
def record_options(suffix: str) -> RecordOptions:
    """:func:`compile_record_options`, cached: for keys the app subscribed in code, whose options
    were not compiled by a POST (see :mod:`flask_rtbroker.records.validation`)."""
    return compile_record_options(suffix)
