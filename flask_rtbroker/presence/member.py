"""Who a presence member is: a signed-in user (by identity) or a guest's session, and what it shows.

A member is keyed by its *identity*: ``u:`` plus :func:`~flask_rtbroker.identity.identity_token`
for a signed-in client, ``g:`` plus a random session id kept in the client's store
(:data:`GUEST_SESSION_KEY`) for a guest, never by the connection id: three tabs of one user are
one member, and a connection that takes over another's store keeps its member. What clients see
is the member's *key*, an HMAC of the identity (the app's ``SECRET_KEY``), and the *info* the
app's ``info(client, auth)`` returns (by default the identity's ``id`` and ``collectionName``;
nothing for a guest).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any, Callable, Mapping

from ..protocol import encoding
from ..client import AUTH_KEY, DefaultClient
from ..runtime.ids import random_chars
from ..identity import identity_token

log = logging.getLogger("flask_rtbroker.presence")

GUEST_SESSION_KEY = "presence_member"
"""Store key of a guest's presence session id (made on first need, kept with the store)."""
MAX_DOCUMENT_SIZE = 4096
"""Bytes a member's encoded document may take; a larger ``info`` is replaced by ``{}`` (logged)."""

InfoFunction = Callable[[DefaultClient, Any], Mapping[str, Any]]
"""``info(client, auth) -> public fields``: what a member shows to those who watch the room."""


def member_identity(client: DefaultClient) -> str:
    """The member *client* counts as: its user's identity, or its guest session."""
    auth = client.get(AUTH_KEY)
    token = identity_token(auth) if auth is not None else None
    if token is not None:
        return "u:" + token
    session = client.get(GUEST_SESSION_KEY)
    if not isinstance(session, str):
        session = random_chars(24)
        client.set(GUEST_SESSION_KEY, session)
    return "g:" + session


def default_info(client: DefaultClient, auth: Any) -> dict[str, Any]:
    """The identity's ``id`` and ``collectionName`` (attributes or keys); ``{}`` for a guest."""
    if auth is None:
        return {}
    if isinstance(auth, Mapping):
        return {"id": auth.get("id"), "collectionName": auth.get("collectionName")}
    get_id = getattr(auth, "get_id", None)
    return {"id": get_id() if callable(get_id) else getattr(auth, "id", None),
            "collectionName": getattr(auth, "collectionName", None)}


def public_key(identity: str, secret: bytes) -> str:
    """The key clients see for the member *identity* (an HMAC: it does not reveal the identity)."""
    return hmac.new(secret, identity.encode(), hashlib.sha256).hexdigest()[:24]


def member_document(client: DefaultClient, identity: str, info: InfoFunction, secret: bytes) -> bytes:
    """The encoded ``{"key", "info"}`` of *client*'s member (an ``info`` that fails, is not
    JSON, or is too large shows ``{}``)."""
    key = public_key(identity, secret)
    try:
        fields = dict(info(client, client.get(AUTH_KEY)))
        document = encoding.dumps({"key": key, "info": fields})
    except Exception:  # noqa: BLE001 - the app's info function must not break a subscription
        log.exception("the presence info function failed; the member shows no info")
        return encoding.dumps({"key": key, "info": {}})
    if len(document) > MAX_DOCUMENT_SIZE:
        log.warning("a presence member's info takes %d bytes (over %d); it shows none", len(document), MAX_DOCUMENT_SIZE)
        return encoding.dumps({"key": key, "info": {}})
    return document
