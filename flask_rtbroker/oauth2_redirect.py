"""The OAuth2 redirect over realtime: where a provider sends the SDK's sign-in popup back.

The SDK's ``authWithOAuth2({provider})`` subscribes a one-off realtime client to ``@oauth2``,
puts that client's id in the provider URL as ``state`` and ``<base>/api/oauth2-redirect`` as
``redirect_uri``. The provider then sends the popup here, by GET or (``response_mode=form_post``)
by POST, with ``state`` and ``code`` or ``error``. As PocketBase does, this endpoint:

1. reads ``state``, ``code`` and ``error`` (query for GET, form or JSON body for POST);
2. finds the realtime client whose id is ``state`` — in this process, or through the backplane
   in the process its id routes to (an :class:`OAuth2Redirect` envelope to the owner's inbox,
   answered by an :class:`OAuth2RedirectReply`); a client that is discarded, does not hold
   ``@oauth2`` or connected from another IP is not reached;
3. takes ``@oauth2`` off that client (a replayed redirect finds nothing) and sends it the event
   ``@oauth2`` with ``{"state","code","error"}`` (``error`` left out when empty, encoded as Go's
   ``json.Marshal`` does);
4. redirects the popup (307 after a GET, 303 after a POST) to the success page when a client was
   reached with a code and no error, else to the failure page.

No input makes it answer anything but one of those two redirects. A state is a client id, a
secret: it is never logged, only a short hash of it.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import weakref
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from flask import Flask, Request, Response, request
from werkzeug.exceptions import HTTPException

from . import wire

from .protocol import encoding
from .backplane import Envelope
from .backplane.base import inbox, route_of
from .client import IP_KEY, DefaultClient
from .errors import EnvelopeError, InvalidJSON
from .http import add_default_headers, client_ip, status_line
from .protocol.message import Message
from .protocol.subscription_request import MAX_CLIENT_ID_LENGTH

if TYPE_CHECKING:
    from .state import BrokerState

log = logging.getLogger("flask_rtbroker.oauth2")

OAUTH2_TOPIC = "@oauth2"
"""The subscription the SDK holds while it waits for the redirect, and the event's name."""
KIND_REDIRECT = "oauth2-redirect"
KIND_REDIRECT_REPLY = "oauth2-redirect-reply"
MAX_FORM_FIELDS = 16
"""Form fields a form_post redirect may have (a provider sends a handful)."""
SUCCESS_PAGE = "<!doctype html><meta charset=utf-8><title>Signed in</title>" \
    "<p>Signed in. You can close this window and return to the app.</p>" \
    "<script>window.close()</script>\n"
FAILURE_PAGE = "<!doctype html><meta charset=utf-8><title>Sign-in failed</title>" \
    "<p>The sign-in did not complete. Close this window and try again from the app.</p>\n"
_GO_HTML_ESCAPES = ((b"<", b"\\u003c"), (b">", b"\\u003e"), (b"&", b"\\u0026"),
                    ("\u2028".encode(), b"\\u2028"), ("\u2029".encode(), b"\\u2029"))


@dataclass(frozen=True)
class RedirectData:
    """What the provider sent back: ``state`` (a realtime client id), ``code``, ``error``."""

    state: str = ""
    code: str = ""
    error: str = ""

    def event_payload(self) -> bytes:
        """The ``@oauth2`` event's data as PocketBase's ``json.Marshal`` writes it: keys in this
        order, ``error`` omitted when empty, ``<``, ``>``, ``&``, U+2028/9 escaped."""
        data = {"state": self.state, "code": self.code}
        if self.error:
            data["error"] = self.error
        payload = encoding.dumps(data)
        for raw, escaped in _GO_HTML_ESCAPES:
            payload = payload.replace(raw, escaped)
        return payload

    @property
    def succeeded(self) -> bool:
        """A code and no error: the SDK can go on with the code exchange."""
        return bool(self.code) and not self.error


def fingerprint(state: str) -> str:
    """A short hash of *state* for logs: the state itself is a client id, a secret."""
    return hashlib.sha256(state.encode("utf-8", "replace")).hexdigest()[:12]


def may_be_client_id(state: str) -> bool:
    """True when *state* could name a client: 1 to 255 characters, as a subscription POST's
    ``clientId`` (an app may register clients with ids of its own)."""
    return 0 < len(state) <= MAX_CLIENT_ID_LENGTH


# -- the envelopes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OAuth2Redirect:
    """A redirect for a client another process holds, sent to that process's inbox."""

    KIND: ClassVar[str] = KIND_REDIRECT
    request_id: str
    data: RedirectData
    ip: str
    body: bytes = b""

    @property
    def channel(self) -> str:
        return inbox(route_of(self.data.state))

    def fields(self) -> dict[str, Any]:
        return {"rid": self.request_id, "c": self.data.state, "code": self.data.code,
                "err": self.data.error, "ip": self.ip}

    @classmethod
    def parse(cls, envelope: Envelope) -> "OAuth2Redirect":
        """The redirect in *envelope*; :class:`EnvelopeError` when a field is not a string."""
        values = _strings(envelope.fields, ("rid", "c", "code", "err", "ip"))
        return cls(values["rid"], RedirectData(values["c"], values["code"], values["err"]), values["ip"])


@dataclass(frozen=True)
class OAuth2RedirectReply:
    """The owner's answer to an :class:`OAuth2Redirect`: whether the client got the event."""

    KIND: ClassVar[str] = KIND_REDIRECT_REPLY
    request_id: str
    to: str
    reached: bool
    body: bytes = b""

    @property
    def channel(self) -> str:
        return inbox(route_of(self.to))

    def fields(self) -> dict[str, Any]:
        return {"rid": self.request_id, "to": self.to, "ok": self.reached}

    @classmethod
    def parse(cls, envelope: Envelope) -> "OAuth2RedirectReply":
        """The reply in *envelope*; :class:`EnvelopeError` when malformed."""
        values = _strings(envelope.fields, ("rid", "to"))
        reached = envelope.fields.get("ok")
        if not isinstance(reached, bool):
            raise EnvelopeError("field 'ok' must be true or false")
        return cls(values["rid"], values["to"], reached)


def _strings(fields: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    values = {name: fields.get(name) for name in names}
    for name, value in values.items():
        if not isinstance(value, str):
            raise EnvelopeError(f"field {name!r} must be a string")
    return values  # type: ignore[return-value]  # checked just above


# -- the endpoint -----------------------------------------------------------------------------


class RedirectEndpoint:
    """The ``RTBROKER_OAUTH2_REDIRECT_PATH`` endpoint of one app, and its backplane side."""

    def __init__(self, state: "BrokerState", path: str) -> None:
        self.state = state
        self.path = path
        self._pending: dict[str, tuple[Any, list[bool]]] = {}
        self._app: "weakref.ref[Flask] | None" = None

    def register(self, app: Flask) -> None:
        """Add the endpoint, its two default pages and the envelope handlers to *app*."""
        self._app = weakref.ref(app)
        app.add_url_rule(self.path, "rtbroker_oauth2_redirect", self.view, methods=["GET", "POST"])
        app.add_url_rule(self.path + "/success", "rtbroker_oauth2_success", lambda: _page(SUCCESS_PAGE))
        app.add_url_rule(self.path + "/failure", "rtbroker_oauth2_failure", lambda: _page(FAILURE_PAGE))
        self.state.cluster.add_handler(KIND_REDIRECT, self._on_redirect)
        self.state.cluster.add_handler(KIND_REDIRECT_REPLY, self._on_reply)

    def view(self) -> Response:
        """Answer one provider redirect: always a redirect to the success or failure page."""
        data = read_redirect(request, self.state.settings.max_body_size)
        try:
            reached = data is not None and self.reach(data, client_ip(request, self.state.settings))
        except Exception:  # noqa: BLE001 - e.g. the backplane failing: the popup still gets its page
            log.exception("OAuth2 redirect could not be delivered")
            reached = False
        succeeded = reached and data is not None and data.succeeded
        if not succeeded:
            log.debug("OAuth2 redirect failed (state #%s, client reached: %s, error: %.80r)",
                      fingerprint(data.state) if data else "-", reached, data.error if data else "")
        return self.finish(succeeded)

    def finish(self, succeeded: bool) -> Response:
        """The redirect to the success or failure page: 307 after a GET, 303 after a POST."""
        settings = self.state.settings
        target = settings.oauth2_success_url if succeeded else settings.oauth2_failure_url
        if target is None:
            target = request.script_root + self.path + ("/success" if succeeded else "/failure")
        response = Response(status=status_line(307 if request.method == "GET" else 303))
        response.headers.remove("Content-Type")  # no body, as PocketBase's redirect
        response.headers["Location"] = target
        return add_default_headers(response, request, settings)

    def reach(self, data: RedirectData, ip: str) -> bool:
        """Send the ``@oauth2`` event to the client *data.state*, here or in its process."""
        if not may_be_client_id(data.state):
            return False
        client = self.state.broker.clients().get(data.state)
        if client is not None:
            return self.deliver(client, data, ip)
        cluster = self.state.cluster
        if not cluster.active or route_of(data.state) == cluster.route:
            return False
        return self._ask_owner(data, ip)

    def deliver(self, client: DefaultClient, data: RedirectData, ip: str) -> bool:
        """PocketBase's checks on a local client, then the event; True when it was sent."""
        if client.is_discarded or not client.has_subscription(OAUTH2_TOPIC):
            return False
        client.unsubscribe(OAUTH2_TOPIC)  # one redirect per subscription: a replay finds nothing
        stored_ip = client.get(IP_KEY)
        if stored_ip and stored_ip != ip:  # from where the stream came (a client the app made has no IP)
            return False
        try:
            # The sign-in handshake, not a topic: PocketBase asks only for the @oauth2 subscription.
            return self.state.send_local(client, Message.raw(OAUTH2_TOPIC, data.event_payload()), judged=False)
        except Exception:  # noqa: BLE001 - a failing before_send hook fails this sign-in only
            log.exception("before_send failed for an @oauth2 event")
            return False

    # -- across processes ---------------------------------------------------------------------

    def _ask_owner(self, data: RedirectData, ip: str) -> bool:
        """Have the process the id routes to deliver; False when none answers in time."""
        cluster = self.state.cluster
        cluster.ensure_started()
        item = OAuth2Redirect(secrets.token_hex(8), data, ip)
        waker = self.state.runtime.waker()
        answers: list[bool] = []
        self._pending[item.request_id] = (waker, answers)
        try:
            if not wire.publish(cluster.backplane, item):  # failed, or no process has that route
                return False
            waker.wait(self.state.settings.forward_timeout)
            return bool(answers) and answers[0]
        finally:
            del self._pending[item.request_id]

    def _on_redirect(self, envelope: Envelope) -> None:
        item = OAuth2Redirect.parse(envelope)
        cluster = self.state.cluster
        if route_of(item.data.state) != cluster.route:
            return  # a backend without routing brings every process everything
        origin = envelope.origin

        def run() -> None:
            app = self._app() if self._app is not None else None
            client = self.state.broker.clients().get(item.data.state)
            with app.app_context() if app is not None else nullcontext():  # before_send may use current_app
                reached = client is not None and self.deliver(client, item.data, item.ip)
            wire.publish(cluster.backplane, OAuth2RedirectReply(item.request_id, origin, reached))

        self.state.runtime.spawn(run)  # before_send may take time: not on the listener

    def _on_reply(self, envelope: Envelope) -> None:
        reply = OAuth2RedirectReply.parse(envelope)
        if reply.to != self.state.cluster.backplane.origin:
            return
        pending = self._pending.get(reply.request_id)
        if pending is not None:
            pending[1].append(reply.reached)
            pending[0].set()


def read_redirect(req: Request, max_body_size: int) -> RedirectData | None:
    """The redirect's fields (query for GET, form or JSON body otherwise); None when the body is
    too large, malformed or a field is not a string."""
    if req.method == "GET":
        source: Mapping[str, Any] = req.args
    else:
        req.max_content_length = max_body_size
        req.max_form_parts = MAX_FORM_FIELDS
        try:
            if req.mimetype == "application/json":
                source = encoding.loads_untrusted(req.get_data(cache=False), max_items=64)
            else:
                source = req.form
        except (HTTPException, InvalidJSON):
            return None
        if not isinstance(source, Mapping):
            return None
    values = [source.get(name, "") for name in ("state", "code", "error")]
    if not all(isinstance(value, str) for value in values):
        return None
    return RedirectData(*values)


def _page(html: str) -> Response:
    return Response(html, status=status_line(200), content_type="text/html; charset=utf-8")


def register_redirect(app: Flask, state: "BrokerState") -> RedirectEndpoint | None:
    """Serve the redirect endpoint on *app* unless ``RTBROKER_OAUTH2_REDIRECT_PATH`` is None."""
    path = state.settings.oauth2_redirect_path
    if path is None:
        return None
    endpoint = RedirectEndpoint(state, path)
    endpoint.register(app)
    return endpoint
