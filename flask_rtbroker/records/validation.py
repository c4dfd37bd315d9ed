"""Record subscriptions' options at POST time: rejecting the unusable, keeping the compiled ones.

A subscription validator of the broker (it runs once the client is found, after PocketBase's own
checks) looks at the keys of watched collections: one whose ``filter`` or ``fields`` cannot be
used makes the whole POST fail with PocketBase's 400 shape, the error keyed by the item's index::

    {"data":{"subscriptions":{"1":{"code":"validation_invalid_filter","message":"..."}}},
     "message":"Something went wrong while processing your request.","status":400}

The options are compiled once here and, when the POST is applied, kept with the client (in its
store under :data:`RECORD_OPTIONS_KEY`), so broadcasts never parse a subscriber's filter again.
What one client's filters and fields may cost is bounded by :data:`MAX_OPTIONS_SOURCE`.
"""

from __future__ import annotations

from typing import Any, Callable

from flask import g

from ..client import DefaultClient
from ..protocol.options import parse_options
from .subscription import FIELDS_PARAM, FILTER_PARAM, RecordOptions, compile_record_options

RECORD_OPTIONS_KEY = "rtbroker.record_options"
"""Client store key of ``{options suffix: RecordOptions}`` for the client's record subscriptions."""
MAX_OPTIONS_SOURCE = 8192
"""Characters of ``filter`` and ``fields`` text one client's distinct record options may hold
together (PocketBase's own single-filter limit of 200 comparisons fits in about 4,000)."""
OPTIONS_TOO_LARGE_CODE = "validation_options_too_large"

_PENDING = "rtbroker_record_options"


class RecordOptionsCheck:
    """The validator: ``check(client, subscriptions) -> {index: error}``."""

    def __init__(self, owns_topic: Callable[[str], bool]) -> None:
        self.owns_topic = owns_topic

    def __call__(self, client: DefaultClient, subscriptions: list[str]) -> dict[str, Any]:
        compiled: dict[str, RecordOptions] = {}
        errors: dict[str, Any] = {}
        source = 0
        for index, key in enumerate(subscriptions):
            topic = key.partition("?")[0]
            if not self.owns_topic(topic):
                continue
            suffix = key[len(topic):]
            if not suffix:
                continue  # no options: nothing to compile, check or keep
            options = compiled.get(suffix)
            if options is None:
                query = parse_options(suffix).query
                source += len(query.get(FILTER_PARAM, "")) + len(query.get(FIELDS_PARAM, ""))
                if source > MAX_OPTIONS_SOURCE:
                    errors[str(index)] = {
                        "code": OPTIONS_TOO_LARGE_CODE,
                        "message": f"The filters and fields of one connection must be no more than {MAX_OPTIONS_SOURCE} characters together.",
                        "params": {"max": MAX_OPTIONS_SOURCE},
                    }
                    continue
                options = compiled[suffix] = compile_record_options(suffix)
            error = options.error()
            if error is not None:
                errors[str(index)] = error
        if not errors:
            setattr(g, _PENDING, compiled)
        return errors


def keep_compiled_options(client: DefaultClient) -> None:
    """Store the options the validator compiled for this request's POST with *client*; a client
    whose record keys have no options keeps nothing (broadcasts share one view of such clients)."""
    compiled = g.pop(_PENDING, None)
    if compiled:
        client.set(RECORD_OPTIONS_KEY, compiled)
    elif compiled is not None:
        client.unset(RECORD_OPTIONS_KEY)
