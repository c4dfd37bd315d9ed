"""Comparing auth identities, for PocketBase's rule that a client's auth may only be upgraded.

An identity is whatever the app's ``auth_loader`` returns. Two identities are the same user
when their :func:`identity_key` values are equal:

- a mapping with an ``"id"``: ``(collectionId or collectionName, id)``, PocketBase's record shape;
- an object with ``get_id()`` (Flask-Login's UserMixin) or an ``id`` attribute: ``(class, id)``,
  the class named with its module (``shop.models.User`` is not ``backoffice.models.User``);
- anything else: the value itself.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping

from .protocol import encoding


def identity_key(identity: Any) -> Hashable:
    """Return what makes *identity* the same user across requests (None for a guest)."""
    if identity is None:
        return None
    if isinstance(identity, Mapping):
        if "id" in identity:
            return (identity.get("collectionId", identity.get("collectionName")), identity["id"])
        return tuple(sorted(identity.items(), key=repr))
    get_id = getattr(identity, "get_id", None)
    if callable(get_id):
        return (_class_name(identity), get_id())
    if hasattr(identity, "id"):
        return (_class_name(identity), identity.id)
    return identity


def hashable_identity(identity: Any) -> Hashable:
    """:func:`identity_key`, or, when that cannot be hashed, the object's own id: what caches of
    per-identity decisions (record and topic rules) are keyed by."""
    key = identity_key(identity)
    try:
        hash(key)
    except TypeError:
        return ("unhashable", id(identity))
    return key


def _class_name(identity: Any) -> str:
    cls = type(identity)
    return f"{cls.__module__}.{cls.__qualname__}"


def may_switch_auth(current: Any, new: Any) -> bool:
    """PocketBase's rule: a guest may become anyone; an identified client must stay the same user."""
    return current is None or identity_key(current) == identity_key(new)


def identity_token(identity: Any) -> str | None:
    """A canonical string for *identity*'s key, to compare identities across processes.

    None for a guest, or when the key cannot be encoded as JSON (then only this process can
    match it).
    """
    key = identity_key(identity)
    if key is None:
        return None
    try:
        return encoding.dumps_sorted(key).decode()
    except TypeError:
        return None
