"""The realtime blueprint: ``GET`` opens the SSE stream, ``POST`` sets a client's subscriptions.

Every response carries PocketBase's default headers (and CORS when allowed); every error is
PocketBase's JSON body. The POST is processed in PocketBase's observable order: decode ->
validate -> find the client (404) -> IP check (400) -> auth-change rule (403) -> then ours: the
caps on options (400), the client's subscription budget (400) and the process's (503), the
client's rate of added keys (429, see :mod:`.change_rate`), the subscription validators (400,
e.g. record options) -> the app's ``before_subscribe`` hook -> replace the subscriptions (the
connection's first POST may claim a session, :mod:`.sessions`) -> 204.
A rejected POST changes nothing. Topic rules never refuse a POST: they decide at delivery.
"""

from __future__ import annotations

import io
import logging
import sys
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import change_rate, signals

from .protocol import encoding
from .client import AUTH_KEY, IP_KEY, DefaultClient
from .errors import ApiError, ClientNotFound
from .http import (
    GENERIC_MESSAGE,
    add_default_headers,
    bad_request,
    client_ip,
    error_response,
    no_content,
    preflight_response,
    status_line,
    stream_response,
)
from .identity import may_switch_auth
from .metrics import start_exporting
from .stream import StreamBody, event_stream
from .protocol.options import option_errors, subscription_cost
from .sessions import RESUME_HEADER
from .state import SUBSCRIPTION_MEMORY_MESSAGE
from .protocol.subscription_request import (
    MAX_SUBSCRIPTIONS,
    DecodeError,
    SubscriptionRequest,
    decode_body,
    is_form,
    validate,
)

log = logging.getLogger("flask_rtbroker")

if TYPE_CHECKING:
    from flask.blueprints import BlueprintSetupState

    from .wire import Post
    from .state import BrokerState

NOT_FOUND_MESSAGE = "The requested resource wasn't found."
FILE_NOT_FOUND_MESSAGE = "File not found."
MISSING_CLIENT_MESSAGE = "Missing or invalid client id."
INVALID_CLIENT_MESSAGE = "Invalid realtime client."
AUTH_MISMATCH_MESSAGE = "The current and the previous request authorization don't match."
BODY_TOO_LARGE_MESSAGE = "The request body is too large."
SUBSCRIPTIONS_TOO_LARGE_CODE = "validation_subscriptions_too_large"
TOO_MANY_CHANGES_CODE = "validation_too_many_subscription_changes"
TOO_MANY_CHANGES_MESSAGE = "Too many subscription changes; try again later."

MAX_FORM_FIELDS = 2 * MAX_SUBSCRIPTIONS + 64
"""Form fields a subscription POST may have: room for PocketBase's own too-many-items answer."""
_URLENCODED = "application/x-www-form-urlencoded"

_METHODS = ["GET", "HEAD", "POST", "OPTIONS", "PUT", "PATCH", "DELETE"]


def create_blueprint(state: "BrokerState") -> Blueprint:
    """Build the blueprint serving one app's realtime endpoint."""
    blueprint = Blueprint("rtbroker", __name__)
    settings = state.settings

    def realtime() -> Response:
        if request.method in ("GET", "HEAD"):
            return open_stream(state)
        if request.method == "POST":
            return set_subscriptions(state)
        if request.method == "OPTIONS":
            return preflight_response(request, settings)
        raise ApiError(404, NOT_FOUND_MESSAGE)

    def answer_forwarded(setup: "BlueprintSetupState") -> None:
        app: Flask = setup.app  # type: ignore[assignment]  # a Flask app registers Flask blueprints
        state.cluster.answer_post = lambda envelope: answer_forwarded_post(app, state, envelope)

    def unknown_path(rest: str) -> Response:
        raise ApiError(404, FILE_NOT_FOUND_MESSAGE)

    realtime.provide_automatic_options = False  # type: ignore[attr-defined]
    blueprint.add_url_rule("", "realtime", realtime, methods=_METHODS, strict_slashes=True)
    blueprint.add_url_rule("/<path:rest>", "unknown", unknown_path, methods=_METHODS)
    blueprint.register_error_handler(ApiError, error_response)
    blueprint.register_error_handler(HTTPException, http_exception_response)
    blueprint.after_request(lambda response: add_default_headers(response, request, settings))
    blueprint.record_once(answer_forwarded)
    return blueprint


def open_stream(state: "BrokerState") -> Response:
    """Create the client, let ``before_connect`` veto it, and return the streaming response."""
    state.cluster.ensure_started()
    start_exporting(state)
    ip = client_ip(request, state.settings)
    state.admit(ip)
    try:
        client = state.new_client()
        client.set(IP_KEY, ip)
        if state.hooks.before_connect_hook is not None:
            state.hooks.before_connect_hook(client, request)
    except BaseException:
        state.release(ip)
        raise
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    environ = request.environ
    # The server keeps the environ for the stream's whole life; don't let it keep the parsed
    # request too (werkzeug stores it there, in a reference cycle).
    environ.pop("werkzeug.request", None)
    return stream_response(StreamBody(event_stream(app, state, client, environ), state, ip, client))


def read_subscription_request(max_body_size: int) -> SubscriptionRequest:
    """Decode the POST body once, or raise the ApiError PocketBase would answer.

    Past :data:`MAX_FORM_FIELDS` form fields the body is refused unread (generic 400).
    """
    request.max_content_length = max_body_size
    request.max_form_parts = MAX_FORM_FIELDS
    content_type = request.headers.get("Content-Type", "")
    try:
        body = request.get_data(cache=True, parse_form_data=False)
        form = None
        if is_form(content_type) and body:
            if content_type.startswith(_URLENCODED) and body.count(b"&") >= MAX_FORM_FIELDS:
                raise DecodeError(f"more than {MAX_FORM_FIELDS} form fields")
            form = request.form
        return decode_body(content_type, body, form)
    except RequestEntityTooLarge:
        if request.content_length is not None and request.content_length <= max_body_size:
            raise bad_request() from None  # too many multipart fields
        raise ApiError(413, BODY_TOO_LARGE_MESSAGE) from None
    except DecodeError as exc:
        # PocketBase's answer is the generic 400 (no field errors); why is kept for the app's log.
        log.debug("subscription POST refused with 400: %s (Content-Type %r)", exc, content_type)
        raise bad_request() from None


def set_subscriptions(state: "BrokerState") -> Response:
    """Answer a subscription POST; a client held by another process gets it forwarded."""
    submitted = read_subscription_request(state.settings.max_body_size)
    errors = validate(submitted)
    if errors:
        raise bad_request(errors)
    ip = client_ip(request, state.settings)
    try:
        client = state.broker.get_client(submitted.client_id)
    except ClientNotFound:
        return forward_post(state, submitted, ip)
    apply_subscriptions(state, client, submitted.subscriptions, ip)
    return no_content()


def forward_post(state: "BrokerState", submitted: SubscriptionRequest, ip: str) -> Response:
    """Let the process holding the client apply this decoded, validated POST; 404 when none
    does in time.

    What crosses the backplane is the client id, the subscriptions, the client IP as this
    process sees it, the ``RTBROKER_FORWARD_HEADERS`` (the auth header by default) and a
    session's ``X-Rtbroker-Resume``, no other header: the owner runs its ``auth_loader`` and ``before_subscribe`` on a request made of them.
    """
    forwarded = {name.lower() for name in state.settings.forward_headers} | {RESUME_HEADER.lower()}
    headers = [(k, v) for k, v in request.headers.items() if k.lower() in forwarded]
    answer = state.cluster.forward_post(
        submitted.client_id, submitted.subscriptions, headers, ip, state.settings.forward_timeout
    )
    if answer is None:
        raise ApiError(404, MISSING_CLIENT_MESSAGE)
    status, body = answer
    if status == 204:
        return no_content()
    return Response(body, status=status_line(status), content_type="application/json")


def _check_budgets(state: "BrokerState", client: DefaultClient, submitted: list[str], subscriptions: list[str]) -> None:
    """400 for options past their caps (keyed by the index in *submitted*) or for *subscriptions*
    past the client's subscription budget, 503 past the process's."""
    errors = option_errors(submitted, state.settings.max_option_sets)
    if errors:
        raise bad_request({"subscriptions": errors})
    cost = subscription_cost(subscriptions)
    limit = state.settings.max_subscription_bytes
    if cost > limit:
        raise bad_request({"subscriptions": {
            "code": SUBSCRIPTIONS_TOO_LARGE_CODE,
            "message": f"The subscriptions must take no more than {limit} bytes together (RTBROKER_MAX_SUBSCRIPTION_BYTES).",
            "params": {"max": limit},
        }})
    growth = cost - client.subscription_bytes
    if growth > 0 and state.subscription_memory_full(growth):
        raise ApiError(503, SUBSCRIPTION_MEMORY_MESSAGE)


def _added_keys(state: "BrokerState", client: DefaultClient, subscriptions: list[str]) -> int:
    """How many of *subscriptions* the client does not hold yet (0 without a limit); 400 when
    more than a bucket holds at all, 429 when more than the client's holds now
    (``RTBROKER_MAX_SUBSCRIPTION_CHANGES``)."""
    limit = state.settings.max_subscription_changes
    if not limit:
        return 0
    added = sum(1 for sub in subscriptions if not client.has_subscription(sub))
    if added > limit:
        raise bad_request({"subscriptions": {
            "code": TOO_MANY_CHANGES_CODE,
            "message": f"A request must not add more than {limit} subscriptions (RTBROKER_MAX_SUBSCRIPTION_CHANGES).",
            "params": {"max": limit},
        }})
    if added and added > change_rate.available(client, limit):
        raise ApiError(429, TOO_MANY_CHANGES_MESSAGE)
    return added


def apply_subscriptions(state: "BrokerState", client: "DefaultClient", submitted: list[str], ip: str) -> None:
    """Check IP, auth rule, budgets, added keys, validators and hook for a local *client*, make sure this
    process listens on the keys' backplane channels, then replace its subscriptions."""
    if client.get(IP_KEY) != ip:
        raise bad_request(message=INVALID_CLIENT_MESSAGE)
    hooks = state.hooks
    auth = hooks.auth_loader_hook(request) if hooks.auth_loader_hook is not None else None
    if not may_switch_auth(client.get(AUTH_KEY), auth):
        raise ApiError(403, AUTH_MISMATCH_MESSAGE)
    subscriptions = list(dict.fromkeys(sub for sub in submitted if sub))
    _check_budgets(state, client, submitted, subscriptions)
    added = _added_keys(state, client, subscriptions)
    for validator in state.subscription_validators:
        errors = validator(client, submitted)
        if errors:
            raise bad_request({"subscriptions": errors})
    if hooks.before_subscribe_hook is not None:
        hooks.before_subscribe_hook(client, subscriptions, auth)
    state.cluster.listen_for(subscriptions)  # before the 204: what is published after it arrives
    denied_before = state.denied_keys(client)
    held = client.subscriptions()
    if auth is None:
        client.unset(AUTH_KEY)
    else:
        client.set(AUTH_KEY, auth)
    # the connection's first POST may claim an ended stream's session (see :mod:`.sessions`)
    resume_id = request.headers.get(RESUME_HEADER)
    state.sessions.start(client, subscriptions, auth, ip, resume_id, state.send_local)
    change_rate.spend(client, added, state.settings.max_subscription_changes)
    state.auth_changed(client, denied_before)  # the topic rules decide with this POST's auth
    if state.presence is not None:
        state.presence.subscriptions_changed(client, [key for key in subscriptions if key not in held])
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    signals.client_subscribed.send(app, client=client, subscriptions=subscriptions)


def forwarded_environ(app: Flask, path: str, post: "Post") -> dict[str, Any]:
    """A bodiless WSGI environ for a forwarded POST: its headers and the client IP as the
    forwarding process saw it (what ``auth_loader`` and ``before_subscribe`` may read)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": post.ip,
        "CONTENT_LENGTH": "0",
        "HTTP_HOST": app.config.get("SERVER_NAME") or "localhost",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in post.headers:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        environ[key] = value
    return environ


def answer_forwarded_post(app: Flask, state: "BrokerState", post: "Post") -> tuple[int, bytes]:
    """Apply a POST another process decoded and validated to our client; return (status, body).

    The owner runs what needs the client (IP binding, the auth-change rule, budgets, validators)
    and the hooks, on a request made of the forwarded headers. The subscriptions are validated
    again, cheaply: a peer's bug must not plant a key no local POST could.
    """
    submitted = SubscriptionRequest(post.client_id, list(post.subscriptions))
    with app.request_context(forwarded_environ(app, state.settings.url_prefix, post)):
        try:
            errors = validate(submitted)
            if errors:
                raise bad_request(errors)
            client = state.broker.get_client(submitted.client_id)
            apply_subscriptions(state, client, submitted.subscriptions, post.ip)
        except ClientNotFound:
            error = ApiError(404, MISSING_CLIENT_MESSAGE)
        except ApiError as exc:
            error = exc
        else:
            return 204, b""
    return error.status, encoding.dumps_sorted(error.to_dict())


def http_exception_response(exc: HTTPException) -> Response:
    """Any werkzeug HTTP error raised while serving the endpoint, as PocketBase-shaped JSON."""
    code = exc.code or 500
    return error_response(ApiError(code, GENERIC_MESSAGE if code == 400 else (exc.description or exc.name)))
