"""flask_rtbroker: PocketBase's realtime subscriptions for Flask, wire-compatible with its SDKs."""

from .broker import Broker
from .client import AUTH_KEY, IP_KEY, Client, DefaultClient
from .config import load_env
from .backplane import Backplane, MemoryBackplane
from .emitter import Emitter
from .errors import (
    ApiError,
    BackplaneUnavailable,
    ClientNotFound,
    ConfigurationError,
    MessageTooLarge,
    NotInitializedError,
    RtBrokerError,
)
from .extension import RealtimeBroker
from .message import Message
from .options import SubscriptionOptions
from .signals import (
    backplane_state_changed,
    client_connected,
    client_disconnected,
    client_subscribed,
    message_notified,
)
from .stream import PB_CONNECT

__version__ = "0.1.0"

__all__ = [
    "AUTH_KEY",
    "IP_KEY",
    "PB_CONNECT",
    "ApiError",
    "Backplane",
    "BackplaneUnavailable",
    "Broker",
    "Client",
    "ClientNotFound",
    "ConfigurationError",
    "DefaultClient",
    "Emitter",
    "MemoryBackplane",
    "Message",
    "MessageTooLarge",
    "NotInitializedError",
    "RealtimeBroker",
    "RtBrokerError",
    "SubscriptionOptions",
    "backplane_state_changed",
    "client_connected",
    "client_disconnected",
    "client_subscribed",
    "load_env",
    "message_notified",
]
