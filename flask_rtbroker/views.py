"""The realtime blueprint: ``GET`` opens the SSE stream, ``POST`` sets a client's subscriptions.

Every response carries PocketBase's default headers (and CORS when allowed); every error is
PocketBase's JSON body. The POST is processed in PocketBase's observable order: decode ->
validate -> find the client (404) -> IP check (400) -> auth-change rule (403) -> the app's
``before_subscribe`` hook -> replace the subscriptions -> 204. A rejected POST changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from . import signals
from .client import AUTH_KEY, IP_KEY
from .errors import ApiError, ClientNotFound
from .http import (
    add_default_headers,
    bad_request,
    client_ip,
    error_response,
    no_content,
    preflight_response,
    stream_response,
)
from .identity import may_switch_auth
from .stream import event_stream
from .subscription_request import DecodeError, SubscriptionRequest, decode_body, is_form, validate

if TYPE_CHECKING:
    from .extension import RealtimeBroker
    from .state import BrokerState

NOT_FOUND_MESSAGE = "The requested resource wasn't found."
MISSING_CLIENT_MESSAGE = "Missing or invalid client id."
INVALID_CLIENT_MESSAGE = "Invalid realtime client."
AUTH_MISMATCH_MESSAGE = "The current and the previous request authorization don't match."
BODY_TOO_LARGE_MESSAGE = "The request body is too large."

_METHODS = ["GET", "HEAD", "POST", "OPTIONS", "PUT", "PATCH", "DELETE"]


def create_blueprint(extension: "RealtimeBroker", state: "BrokerState") -> Blueprint:
    """Build the blueprint serving one app's realtime endpoint."""
    blueprint = Blueprint("rtbroker", __name__)
    settings = state.settings

    def realtime() -> Response:
        if request.method in ("GET", "HEAD"):
            return open_stream(extension, state)
        if request.method == "POST":
            return set_subscriptions(extension, state)
        if request.method == "OPTIONS":
            return preflight_response(request, settings)
        raise ApiError(404, NOT_FOUND_MESSAGE)

    realtime.provide_automatic_options = False  # type: ignore[attr-defined]
    blueprint.add_url_rule("", "realtime", realtime, methods=_METHODS, strict_slashes=True)
    blueprint.register_error_handler(ApiError, error_response)
    blueprint.after_request(lambda response: add_default_headers(response, request, settings))
    return blueprint


def open_stream(extension: "RealtimeBroker", state: "BrokerState") -> Response:
    """Create the client, let ``before_connect`` veto it, and return the streaming response."""
    client = state.new_client()
    client.set(IP_KEY, client_ip(request, state.settings))
    if extension.before_connect_hook is not None:
        extension.before_connect_hook(client, request)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return stream_response(event_stream(app, state, client, request.environ))


def read_subscription_request(max_body_size: int) -> SubscriptionRequest:
    """Decode the POST body, or raise the ApiError PocketBase would answer."""
    request.max_content_length = max_body_size
    content_type = request.headers.get("Content-Type", "")
    try:
        body = request.get_data(cache=True, parse_form_data=False)
        return decode_body(content_type, body, request.form if is_form(content_type) else None)
    except RequestEntityTooLarge:
        raise ApiError(413, BODY_TOO_LARGE_MESSAGE) from None
    except DecodeError:
        raise bad_request() from None


def set_subscriptions(extension: "RealtimeBroker", state: "BrokerState") -> Response:
    """Replace a client's subscriptions; 204 on success, PocketBase's errors otherwise."""
    submitted = read_subscription_request(state.settings.max_body_size)
    errors = validate(submitted)
    if errors:
        raise bad_request(errors)
    try:
        client = state.broker.get_client(submitted.client_id)
    except ClientNotFound:
        raise ApiError(404, MISSING_CLIENT_MESSAGE) from None
    if client.get(IP_KEY) != client_ip(request, state.settings):
        raise bad_request(message=INVALID_CLIENT_MESSAGE)
    auth = extension.auth_loader_hook(request) if extension.auth_loader_hook is not None else None
    if not may_switch_auth(client.get(AUTH_KEY), auth):
        raise ApiError(403, AUTH_MISMATCH_MESSAGE)
    subscriptions = list(dict.fromkeys(sub for sub in submitted.subscriptions if sub))
    if extension.before_subscribe_hook is not None:
        extension.before_subscribe_hook(client, subscriptions, auth)
    if auth is None:
        client.unset(AUTH_KEY)
    else:
        client.set(AUTH_KEY, auth)
    client.set_subscriptions(subscriptions)
    signals.client_subscribed.send(current_app._get_current_object(), client=client, subscriptions=subscriptions)  # type: ignore[attr-defined]
    return no_content()
