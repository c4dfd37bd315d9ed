"""An in-process realtime client for an app's own tests: no server, no socket.

::

    with broker.test_client(app) as rt:                     # GET /api/realtime, PB_CONNECT read
        assert rt.subscribe("example").status_code == 204   # the real POST view and its hooks
        broker.notify("example", {"test": 123})
        assert rt.get_received()[0].data == {"test": 123}   # what the server queued so far
    # closed like a browser tab: the stream ends and ``client_disconnected`` fires

Auth is sticky, like the SDK's ``authStore``: ``rt.auth = token`` (or ``headers=`` given to the
constructor) goes with the GET and every POST, so an :meth:`~RealtimeTestClient.unsubscribe`
carries the same authorization as the subscribe before it.

The stream is opened through Flask's test client (``app.test_client()``), so ``before_connect``,
``auth_loader``, ``before_subscribe``, validation and PocketBase's error bodies all run as they
do for the SDK. A background reader (a thread, or a greenlet under gevent) takes the stream's
chunks as the app writes them and parses them with :mod:`flask_rtbroker.testing.sse_client`.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

from ..protocol import encoding
from ..client import DisconnectReason
from ..errors import NotInitializedError, RtBrokerError
from ..protocol.message import PB_CONNECT, Message
from ..state import EXTENSION_KEY
from .sse_client import ReadTimeout, StreamEnded, parse_event, split_event

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

    from ..client import DefaultClient
    from ..state import BrokerState

_END = object()
"""Put on the event queue by the reader when the stream has ended."""

_MARK = "@flask_rtbroker.test_client/mark"
"""The name of the event :meth:`RealtimeTestClient.get_received` queues behind everything the
server has queued, to know when the reader has read all of it; never returned."""


class StreamRefused(RtBrokerError):
    """The realtime GET did not open a stream (``before_connect`` refused it, the per-IP or
    connection limit, shutdown...): :attr:`response` is the answer, e.g. its ``status_code`` and
    PocketBase's ``json`` error body."""

    def __init__(self, response: "TestResponse") -> None:
        super().__init__(f"the realtime GET answered {response.status}: {response.get_data(as_text=True)}")
        self.response = response


@dataclass(frozen=True)
class RealtimeEvent:
    """One event as the SDK's callback gets it: its name (the subscription key), id and
    decoded JSON data."""

    name: str
    id: str
    data: Any


class RealtimeTestClient:
    """One realtime connection to *app*, made in process; see the module doc.

    ``RealtimeTestClient(app)`` opens one to an app with a :class:`RealtimeBroker` (also
    :meth:`RealtimeBroker.test_client`, for the broker's current app). *headers* go with the
    stream's GET (e.g. for ``before_connect``) and with every subscription POST, as
    :attr:`headers`; :attr:`auth` sets their ``Authorization`` (the SDK's ``authStore`` token).
    The *headers* of one :meth:`subscribe` call add to them for that call only. Several clients
    may be open at once.
    """

    def __init__(self, app: "Flask", headers: Mapping[str, str] | None = None) -> None:
        state: "BrokerState | None" = app.extensions.get(EXTENSION_KEY)
        if state is None:
            raise NotInitializedError(f"no RealtimeBroker is registered on {app!r}; call init_app(app)")
        self.app = app
        self.http: "FlaskClient" = app.test_client()
        """The Flask test client the realtime requests go through."""
        self.url = state.settings.url_prefix
        self.headers: dict[str, str] = dict(headers or {})
        """Sent with every request of this client (the GET and each POST)."""
        self.subscriptions: list[str] = []
        """The keys the server holds for this client, as the SDK keeps them."""
        self._runtime = state.runtime
        self._events = state.runtime.queue()
        self._ended = state.runtime.event()
        self._marks: dict[int, Any] = {}
        self._last_mark = 0
        self._closed = False
        response = self.http.get(self.url, headers=self.headers, buffered=False)
        if response.status_code != 200:
            raise StreamRefused(response)
        self._response = response
        chunks = response.iter_encoded()
        self._pending = b""
        connect = self._read_until_event(chunks)
        if connect is None or connect.name != PB_CONNECT:
            response.close()
            raise StreamEnded(f"the stream ended before {PB_CONNECT}")
        self.client_id: str = connect.data["clientId"]
        """The id PocketBase's ``PB_CONNECT`` event gave this connection."""
        self.connect_event = connect
        self.client: "DefaultClient" = state.broker.get_client(self.client_id)
        """The server side of this connection (its store holds ``auth`` after a subscribe)."""
        state.runtime.spawn(lambda: self._read(chunks))

    @property
    def auth(self) -> str | None:
        """The ``Authorization`` header sent with every request (the SDK's ``authStore.token``;
        PocketBase takes the bare token or ``Bearer <token>``). Set it to sign in, None to sign out."""
        return self.headers.get("Authorization")

    @auth.setter
    def auth(self, token: str | None) -> None:
        if token is None:
            self.headers.pop("Authorization", None)
        else:
            self.headers["Authorization"] = token

    # -- the stream ------------------------------------------------------------------------------

    def _read_until_event(self, chunks: Iterator[bytes]) -> RealtimeEvent | None:
        """Read chunks until one whole event (comments skipped); None when the stream ends."""
        while True:
            block, self._pending = split_event(self._pending)
            if block is not None:
                event = parse_event(block)
                if event is not None:
                    return RealtimeEvent(event.name, event.id, encoding.loads(event.data) if event.data else None)
                continue
            chunk = next(chunks, None)
            if chunk is None:
                return None
            self._pending += chunk

    def _read(self, chunks: Iterator[bytes]) -> None:
        try:
            while (event := self._read_until_event(chunks)) is not None:
                if event.name == _MARK:
                    self._marks.pop(event.data).set()
                else:
                    self._events.put(event)
        finally:
            self._response.close()
            self._events.put(_END)
            self._ended.set()
            for mark in list(self._marks.values()):
                mark.set()

    def next_event(self, timeout: float = 2.0) -> RealtimeEvent:
        """Wait at most *timeout* seconds for the next event. Raises :class:`ReadTimeout`, or
        :class:`StreamEnded` once the stream has ended and every event before the end was read."""
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            raise ReadTimeout(f"no realtime event within {timeout} s") from None
        if event is _END:
            self._events.put(_END)
            raise StreamEnded("the realtime stream ended")
        return event  # type: ignore[no-any-return]

    def get_received(self, timeout: float = 5.0) -> list[RealtimeEvent]:
        """Every event the server has queued for this client by the time of the call and not
        yet returned, oldest first (e.g. right after a ``notify``): a marker is queued behind
        them and this returns once the reader has read up to it, within *timeout* seconds
        (else :class:`ReadTimeout`). Use :meth:`next_event` to wait for an event still to come."""
        if not self._ended.wait(0) and not self.client.is_discarded:
            self._last_mark += 1
            mark = self._marks[self._last_mark] = self._runtime.event()
            if self.client.send(Message(_MARK, self._last_mark)) and not mark.wait(timeout):
                raise ReadTimeout(f"the stream did not deliver what was queued within {timeout} s")
        received = []
        while not self._events.empty():
            event = self._events.get()
            if event is _END:
                self._events.put(_END)
                break
            received.append(event)
        return received

    @property
    def connected(self) -> bool:
        """True until the stream ends (:meth:`disconnect`, or the server ending it)."""
        return not self._ended.wait(0)

    # -- subscriptions ---------------------------------------------------------------------------

    def subscribe(self, *keys: str, headers: Mapping[str, str] | None = None) -> "TestResponse":
        """Add *keys* to this client's subscriptions the way the SDK does (a POST with the whole
        list, :attr:`headers` and *headers*) and return the answer: 204, or PocketBase's error
        with nothing changed."""
        return self.set_subscriptions(self.subscriptions + [k for k in keys if k not in self.subscriptions], headers=headers)

    def unsubscribe(self, *keys: str, headers: Mapping[str, str] | None = None) -> "TestResponse":
        """Remove *keys* (every key when none is given) and POST the rest; return the answer."""
        kept = [k for k in self.subscriptions if keys and k not in keys]
        return self.set_subscriptions(kept, headers=headers)

    def set_subscriptions(self, keys: Iterable[str], headers: Mapping[str, str] | None = None) -> "TestResponse":
        """POST exactly *keys* as this client's subscriptions, with :attr:`headers` and *headers*
        (for this call only); return the answer (204 or the error). On 204 :attr:`subscriptions`
        becomes *keys*."""
        wanted = list(keys)
        response = self.http.post(
            self.url, json={"clientId": self.client_id, "subscriptions": wanted},
            headers={**self.headers, **(headers or {})},
        )
        if response.status_code == 204:
            self.subscriptions = wanted
        return response

    # -- closing ---------------------------------------------------------------------------------

    def disconnect(self, timeout: float = 5.0) -> None:
        """Close the connection like a browser tab: the stream ends, its client is unregistered
        and ``client_disconnected`` fires (reason ``closed``) before this returns."""
        if self._closed:
            return
        self._closed = True
        self.client.discard(DisconnectReason.CLOSED)
        if not self._ended.wait(timeout):
            raise ReadTimeout(f"the realtime stream did not end within {timeout} s")

    def __enter__(self) -> "RealtimeTestClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.disconnect()
