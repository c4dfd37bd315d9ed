"""What processes say to each other on the backplane: one frozen dataclass per kind of envelope.

Every publisher (:class:`~flask_rtbroker.cluster.Cluster`, :class:`~flask_rtbroker.Emitter`,
record events) builds its envelopes from these classes and every listener parses them back with
:func:`parse`, so the header field names are spelled here only. Parsing checks every field's
type: a malformed or forged envelope raises :class:`WireError` (an :class:`EnvelopeError`)
instead of reaching the broker.

=============  ==============================================  =====================================
kind           header fields                                    body
=============  ==============================================  =====================================
notify         ``t`` topic, ``to`` client ids (optional)       the message's encoded JSON data
send           ``c`` client id, ``n`` event name               the message's encoded JSON data
post           ``rid``, ``c`` client id, ``h`` headers,        —
               ``ip`` client IP, ``s`` subscriptions
post-reply     ``rid``, ``to`` origin, ``s`` status            the response body
count          ``rid``                                         —
count-reply    ``rid``, ``to`` origin, ``n`` clients           —
clear-auth     ``a`` identity token, ``d`` disconnect          —
refresh-auth   ``a`` identity token                            the new identity's JSON, or empty
=============  ==============================================  =====================================

Extensions add their own kinds with the same three methods (records: :mod:`.records.event`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Protocol, Sequence, Union

from .backplane.base import ALL, inbox, route_of
from .backplane.envelope import Envelope, EnvelopeError, Stamp

if TYPE_CHECKING:
    from .backplane import Backplane


class WireError(EnvelopeError):
    """An envelope whose fields are not what its kind says."""


class WireItem(Protocol):
    """One kind of envelope: its kind, header fields and body. It may name the ``channel`` it
    goes on (see :mod:`flask_rtbroker.backplane.base`); without one it goes to every process."""

    KIND: ClassVar[str]

    @property
    def body(self) -> bytes: ...

    def fields(self) -> dict[str, Any]: ...


def topic_channel(topic: str) -> str:
    """The channel of a notify to *topic*: its listeners are the processes with a subscriber of
    the topic (a key's ``?options=...`` part does not count)."""
    return "t:" + topic.partition("?")[0]


Reader = Callable[[Mapping[str, Any], str], Any]


def _str(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str):
        raise WireError(f"field {name!r} must be a string, not {type(value).__name__}")
    return value


def _int(fields: Mapping[str, Any], name: str) -> int:
    value = fields.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireError(f"field {name!r} must be a whole number, not {type(value).__name__}")
    return value


def _bool(fields: Mapping[str, Any], name: str) -> bool:
    value = fields.get(name)
    if not isinstance(value, bool):
        raise WireError(f"field {name!r} must be true or false")
    return value


def _strings(fields: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    """A list of strings, or None when the field is absent (it is optional)."""
    if name not in fields:
        return None
    value = fields[name]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise WireError(f"field {name!r} must be a list of strings")
    return tuple(value)


def _required_strings(fields: Mapping[str, Any], name: str) -> tuple[str, ...]:
    """A list of strings that must be there."""
    value = _strings(fields, name)
    if value is None:
        raise WireError(f"field {name!r} is missing")
    return value


def _headers(fields: Mapping[str, Any], name: str) -> tuple[tuple[str, str], ...]:
    value = fields.get(name)
    if not isinstance(value, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair) for pair in value
    ):
        raise WireError(f"field {name!r} must be a list of [name, value] strings")
    return tuple((header, text) for header, text in value)


class _Item:
    """The codec every kind shares: its ``HEADER`` lists (wire name, attribute, reader)."""

    KIND: ClassVar[str]
    HEADER: ClassVar[tuple[tuple[str, str, Reader], ...]]
    body: bytes

    def fields(self) -> dict[str, Any]:
        """The header fields (an absent optional one is left out)."""
        values = ((name, getattr(self, attribute)) for name, attribute, _ in self.HEADER)
        return {name: value for name, value in values if value is not None}

    @classmethod
    def parse(cls, envelope: Envelope) -> Any:
        """The item in *envelope*; :class:`WireError` when a field is missing or of the wrong type."""
        values = {attribute: read(envelope.fields, name) for name, attribute, read in cls.HEADER}
        return cls(**values, body=envelope.body)  # type: ignore[call-arg]


@dataclass(frozen=True)
class Notify(_Item):
    """A notify for every process's subscribers of *topic* (or only the clients *to*)."""

    KIND: ClassVar[str] = "notify"
    HEADER: ClassVar[tuple[tuple[str, str, Reader], ...]] = (("t", "topic", _str), ("to", "to", _strings))
    topic: str
    body: bytes
    to: tuple[str, ...] | None = None

    @property
    def channel(self) -> str:
        """The topic's channel, or the inbox of the process holding *to* (one process's ids)."""
        return topic_channel(self.topic) if self.to is None else inbox(route_of(self.to[0]) if self.to else "")


@dataclass(frozen=True)
class Send(_Item):
    """A direct send to the client *client_id*, wherever it is connected."""

    KIND: ClassVar[str] = "send"
    HEADER: ClassVar[tuple[tuple[str, str, Reader], ...]] = (("c", "client_id", _str), ("n", "name", _str))
    client_id: str
    name: str
    body: bytes

    @property
    def channel(self) -> str:
        return inbox(route_of(self.client_id))


@dataclass(frozen=True)
class Post(_Item):
    """A subscription POST for a client another process holds: decoded and validated by the
    process it reached, with the client IP as that process saw it and the headers that go along
    (for the owner's ``auth_loader`` and ``before_subscribe``)."""

    KIND: ClassVar[str] = "post"
    HEADER: ClassVar[tuple[tuple[str, str, Reader], ...]] = (
        ("rid", "request_id", _str), ("c", "client_id", _str), ("h", "headers", _headers), ("ip", "ip", _str),
        ("s", "subscriptions", _required_strings))
    request_id: str
    client_id: str
    headers: tuple[tuple[str, str], ...]
    ip: str
    subscriptions: tuple[str, ...]
    body: bytes = b""

    @property
    def channel(self) -> str:
        return inbox(route_of(self.client_id))


@dataclass(frozen=True)
class PostReply(_Item):
    """The owner's answer to a :class:`Post`, for the process *to* that forwarded it."""

    KIND: ClassVar[str] = "post-reply"
    HEADER: ClassVar[tuple[tuple[str, str, Reader], ...]] = (("rid", "request_id", _str), ("to", "to", _str), ("s", "status", _int))
    request_id: str
    to: str
    status: int
    body: bytes

    @property
    def channel(self) -> str:
        return inbox(route_of(self.to))


@dataclass(frozen=True)
class Count(_Item):
    """A request for every process's client count."""

    KIND: ClassVar[str] = "count"
    HEADER: ClassVar[tuple[tuple[str, str, Reader], ...]] = (("rid", "request_id", _str),)
    request_id: str
    body: bytes = b""
    channel: ClassVar[str] = ALL


@dataclass(frozen=True)
class CountReply(_Item):
    """One process's answer to a :class:`Count`."""

    KIND: ClassVar[str] = "count-reply"
    HEADER: ClassVar[tuple[tuple[str, str, Reader], ...]] = (("rid", "request_id", _str), ("to", "to", _str), ("n", "clients", _int))
    request_id: str
    to: str
    clients: int
    body: bytes = b""

    @property
    def channel(self) -> str:
        return inbox(route_of(self.to))


@dataclass(frozen=True)
class ClearAuth(_Item):
    """Downgrade (or disconnect) the clients of the identity *token* in every process."""

    KIND: ClassVar[str] = "clear-auth"
    HEADER: ClassVar[tuple[tuple[str, str, Reader], ...]] = (("a", "token", _str), ("d", "disconnect", _bool))
    token: str
    disconnect: bool
    body: bytes = b""
    channel: ClassVar[str] = ALL


@dataclass(frozen=True)
class RefreshAuth(_Item):
    """Give the clients of the identity *token* in every process the identity in *body* (its
    JSON; empty: they keep theirs) and let the topic rules decide again for them."""

    KIND: ClassVar[str] = "refresh-auth"
    HEADER: ClassVar[tuple[tuple[str, str, Reader], ...]] = (("a", "token", _str),)
    token: str
    body: bytes = b""
    channel: ClassVar[str] = ALL


def notifies(topic: str, body: bytes, to: Sequence[str] | None, *, by_route: bool) -> list[Notify]:
    """The envelopes of one notify: one on *topic*'s channel, or for the clients *to* one per
    owning process (*by_route*, on a routing backend) or one for all (an empty *to*: none)."""
    if to is None:
        return [Notify(topic, body)]
    if not by_route:
        return [Notify(topic, body, tuple(to))] if to else []
    groups: dict[str, list[str]] = {}
    for client_id in to:
        groups.setdefault(route_of(client_id), []).append(client_id)
    return [Notify(topic, body, tuple(ids)) for ids in groups.values()]


BuiltIn = Union[Notify, Send, Post, PostReply, Count, CountReply, ClearAuth, RefreshAuth]
BUILT_IN_KINDS: dict[str, Any] = {
    kind.KIND: kind for kind in (Notify, Send, Post, PostReply, Count, CountReply, ClearAuth, RefreshAuth)
}
"""Kind name -> class, for the built-in kinds."""


def publish(backplane: "Backplane", item: WireItem, on_stamp: "Callable[[Stamp], None] | None" = None) -> int | None:
    """Publish *item* on its channel from this process: how many processes it reached (see
    :meth:`~flask_rtbroker.backplane.Backplane.send`, which hands *on_stamp* the envelope's
    stamp), None when it failed (the backplane is down)."""
    return backplane.send(backplane.envelope(item.KIND, item.fields(), item.body), getattr(item, "channel", ALL), on_stamp)


def parse(envelope: Envelope) -> BuiltIn | None:
    """The built-in message in *envelope*; None for another kind; :class:`WireError` when malformed."""
    kind = BUILT_IN_KINDS.get(envelope.kind)
    return None if kind is None else kind.parse(envelope)
