"""flask_rtbroker: PocketBase's realtime subscriptions for Flask, wire-compatible with its SDKs."""

from .broker import Broker
from .client import AUTH_KEY, IP_KEY, DefaultClient, DisconnectReason
from .config import load_env
from .backplane import Backplane, MemoryBackplane
from .emitter import Emitter
from .errors import (
    AlreadyInitializedError,
    ApiError,
    BackplaneUnavailable,
    ClientNotFound,
    ConfigurationError,
    EnvelopeError,
    FieldsSyntaxError,
    FilterSyntaxError,
    InvalidArgument,
    InvalidJSON,
    MessageTooLarge,
    MissingDependency,
    NotInitializedError,
    NotSerializable,
    RtBrokerError,
    WatchError,
)
from .extension import RealtimeBroker
from .protocol.message import PB_CONNECT, Message
from .protocol.options import SubscriptionOptions
from .testing import ReadTimeout, RealtimeEvent, RealtimeTestClient, StreamEnded, StreamRefused
from .signals import (
    backplane_state_changed,
    client_connected,
    client_disconnected,
    client_subscribed,
    message_notified,
    presence_joined,
    presence_left,
)

__version__ = "0.3.0.dev0"
"""The one place the version is written (setup.cfg and docs/conf.py read it); a ``.devN`` while
CHANGELOG.rst's newest section is unreleased."""

__all__ = [
    "AUTH_KEY",
    "IP_KEY",
    "PB_CONNECT",
    "AlreadyInitializedError",
    "ApiError",
    "Backplane",
    "BackplaneUnavailable",
    "Broker",
    "ClientNotFound",
    "ConfigurationError",
    "DefaultClient",
    "DisconnectReason",
    "Emitter",
    "EnvelopeError",
    "FieldsSyntaxError",
    "FilterSyntaxError",
    "InvalidArgument",
    "InvalidJSON",
    "MemoryBackplane",
    "Message",
    "MessageTooLarge",
    "MissingDependency",
    "NotInitializedError",
    "NotSerializable",
    "ReadTimeout",
    "RealtimeBroker",
    "RealtimeEvent",
    "RealtimeTestClient",
    "RtBrokerError",
    "StreamEnded",
    "StreamRefused",
    "SubscriptionOptions",
    "WatchError",
    "backplane_state_changed",
    "client_connected",
    "client_disconnected",
    "client_subscribed",
    "load_env",
    "message_notified",
    "presence_joined",
    "presence_left",
]
