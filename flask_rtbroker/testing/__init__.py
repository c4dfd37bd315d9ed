"""Test helpers for apps using flask_rtbroker: :class:`SSEClient`, a raw-socket client speaking
the protocol, and its parsers (:mod:`.sse_client`); :class:`RealtimeTestClient`, the in-process
client over Flask's test client (:mod:`.app_client`, also ``broker.test_client(app)``)."""

from .app_client import RealtimeEvent, RealtimeTestClient, StreamRefused
from .sse_client import (
    Chunk,
    Event,
    FramingError,
    ReadTimeout,
    SSEClient,
    StreamEnded,
    parse_event,
    parse_events,
    parse_head,
    read_chunk,
    recv_before,
    split_event,
)

__all__ = [
    "Chunk",
    "Event",
    "FramingError",
    "ReadTimeout",
    "RealtimeEvent",
    "RealtimeTestClient",
    "SSEClient",
    "StreamEnded",
    "StreamRefused",
    "parse_event",
    "parse_events",
    "parse_head",
    "read_chunk",
    "recv_before",
    "split_event",
]
