"""Decoding and validating the body of a subscription POST, as PocketBase does.

Decoding picks the format by the Content-Type prefix (case-sensitive): ``application/json``,
``application/x-www-form-urlencoded`` or ``multipart/form-data`` (whose ``@jsonPayload`` field
may hold the JSON object). An empty body is an empty form. Anything else is a decode error.
Validation reports every failing field at once, with PocketBase's codes and messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from . import encoding
from ..errors import RtBrokerError

MAX_CLIENT_ID_LENGTH = 255
MAX_SUBSCRIPTIONS = 1000
MAX_SUBSCRIPTION_LENGTH = 2500

JSON_PAYLOAD_FIELD = "@jsonPayload"
_JSON_TYPE = "application/json"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class DecodeError(RtBrokerError, ValueError):
    """The body could not be read as a subscription request (PocketBase's generic 400)."""


@dataclass(frozen=True)
class SubscriptionRequest:
    """The fields of a subscription POST."""

    client_id: str
    subscriptions: list[str]


def is_form(content_type: str) -> bool:
    """True when *content_type* selects form decoding."""
    return content_type.startswith(_FORM_TYPES)


def decode_json(text: str) -> SubscriptionRequest:
    """Decode the first JSON value of *text* into a request; keys match case-insensitively."""
    try:
        value = encoding.loads_first(text)
    except ValueError as exc:
        raise DecodeError(str(exc)) from None
    if value is None:
        return SubscriptionRequest("", [])
    if not isinstance(value, dict):
        raise DecodeError("the body must be a JSON object")
    client_id: Any = ""
    subscriptions: Any = None
    for key, field_value in value.items():
        folded = key.casefold()
        if folded == "clientid":
            client_id = field_value
        elif folded == "subscriptions":
            subscriptions = field_value
    if client_id is None:
        client_id = ""
    if not isinstance(client_id, str):
        raise DecodeError("clientId must be a string")
    if subscriptions is None:
        subscriptions = []
    if not isinstance(subscriptions, list) or not all(s is None or isinstance(s, str) for s in subscriptions):
        raise DecodeError("subscriptions must be a list of strings")
    return SubscriptionRequest(client_id, [s or "" for s in subscriptions])


def decode_form(form: Any) -> SubscriptionRequest:
    """Decode a parsed form (a werkzeug MultiDict), honouring ``@jsonPayload``."""
    payload = form.get(JSON_PAYLOAD_FIELD)
    if payload is not None:
        return decode_json(payload)
    return SubscriptionRequest(form.get("clientId", ""), form.getlist("subscriptions"))


def decode_body(content_type: str, body: bytes, form: Any | None) -> SubscriptionRequest:
    """Decode a POST body; *form* is the parsed form for form content types, else None."""
    if not body:
        return SubscriptionRequest("", [])
    if content_type.startswith(_JSON_TYPE):
        try:
            return decode_json(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise DecodeError("the body is not UTF-8") from None
    if is_form(content_type) and form is not None:
        return decode_form(form)
    raise DecodeError(f"unsupported Content-Type {content_type!r}")


def _length_error(code: str, message: str, minimum: int, maximum: int) -> dict[str, Any]:
    return {"code": code, "message": message, "params": {"max": maximum, "min": minimum}}


def _too_long(maximum: int) -> dict[str, Any]:
    return _length_error("validation_length_too_long", f"The length must be no more than {maximum}.", 0, maximum)


def validate(request: SubscriptionRequest) -> Mapping[str, Any]:
    """Return PocketBase's field errors for *request* (empty when it is valid).

    Topics with a CR or LF are refused too (they would break SSE framing); PocketBase accepts them.
    """
    errors: dict[str, Any] = {}
    if not request.client_id:
        errors["clientId"] = {"code": "validation_required", "message": "Cannot be blank."}
    elif len(request.client_id) > MAX_CLIENT_ID_LENGTH:
        errors["clientId"] = _length_error(
            "validation_length_out_of_range",
            f"The length must be between 1 and {MAX_CLIENT_ID_LENGTH}.",
            1,
            MAX_CLIENT_ID_LENGTH,
        )
    if len(request.subscriptions) > MAX_SUBSCRIPTIONS:
        errors["subscriptions"] = _too_long(MAX_SUBSCRIPTIONS)
        return errors
    item_errors: dict[str, Any] = {}
    for i, sub in enumerate(request.subscriptions):
        if len(sub) > MAX_SUBSCRIPTION_LENGTH:
            item_errors[str(i)] = _too_long(MAX_SUBSCRIPTION_LENGTH)
        elif "\r" in sub or "\n" in sub:
            item_errors[str(i)] = {
                "code": "validation_invalid_topic",
                "message": "Must not contain line breaks.",
            }
    if item_errors:
        errors["subscriptions"] = item_errors
    return errors
