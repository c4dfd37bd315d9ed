"""Envelope authentication: an HMAC-SHA256 of the whole envelope under a shared secret.

With ``RTBROKER_BACKPLANE_SECRET`` set, a payload on the wire is ``s1:<64 hex digits>\\n`` then
the envelope; a process drops (and counts) every payload whose signature is missing or wrong,
so whoever can publish on the channel but lacks the secret cannot make a process deliver, send,
subscribe or count anything. It authenticates, it does not encrypt: use ``rediss://`` for that.
The signed envelope carries its stamp (channel, sequence, time), so a captured payload
published again is dropped as well (see :mod:`.freshness`).
"""

from __future__ import annotations

import hashlib
import hmac

_PREFIX = b"s1:"
_DIGEST_HEX = 64
_SIGNED_HEAD = len(_PREFIX) + _DIGEST_HEX + 1


def sign(payload: bytes, secret: bytes) -> bytes:
    """*payload* with its signature line in front."""
    digest = hmac.new(secret, payload, hashlib.sha256).hexdigest().encode("ascii")
    return _PREFIX + digest + b"\n" + payload


def verified(payload: bytes, secret: bytes) -> bytes | None:
    """The envelope inside a signed *payload*, or None when the signature is missing or wrong."""
    if len(payload) < _SIGNED_HEAD or not payload.startswith(_PREFIX) or payload[_SIGNED_HEAD - 1 : _SIGNED_HEAD] != b"\n":
        return None
    envelope = payload[_SIGNED_HEAD:]
    expected = hmac.new(secret, envelope, hashlib.sha256).hexdigest().encode("ascii")
    return envelope if hmac.compare_digest(expected, payload[len(_PREFIX) : _SIGNED_HEAD - 1]) else None
