"""Exceptions raised by flask_rtbroker.

The tree::

    RtBrokerError                 base of everything raised here
    ├── ConfigurationError        a RTBROKER_* setting is invalid (ValueError)
    ├── NotInitializedError       the extension is used before init_app(app) (RuntimeError)
    ├── ClientNotFound            no connected client has that id (LookupError)
    ├── MessageTooLarge           an encoded message is over RTBROKER_MAX_MESSAGE_SIZE (ValueError)
    ├── BackplaneUnavailable      an Emitter could not publish (ConnectionError)
    └── ApiError                  an HTTP error answered with PocketBase's JSON body;
                                  raise it from a hook to reject a connect or subscribe
"""

from __future__ import annotations

from typing import Any, Mapping


class RtBrokerError(Exception):
    """Base class of every exception raised by flask_rtbroker."""


class ConfigurationError(RtBrokerError, ValueError):
    """A ``RTBROKER_*`` configuration value is missing, of the wrong type or out of range."""


class NotInitializedError(RtBrokerError, RuntimeError):
    """The extension was used on an app it was never registered on."""


class ClientNotFound(RtBrokerError, LookupError):
    """No client with the given id is registered with the broker."""

    def __init__(self, client_id: str) -> None:
        super().__init__(f"no client associated with connection id {client_id!r}")
        self.client_id = client_id


class MessageTooLarge(RtBrokerError, ValueError):
    """An encoded message exceeds the configured size limit."""


class BackplaneUnavailable(RtBrokerError, ConnectionError):
    """The backplane could not take a message (e.g. Redis is down)."""


class ApiError(RtBrokerError):
    """An HTTP error with PocketBase's body ``{"data": {...}, "message": ..., "status": ...}``.

    Raise it from ``before_connect`` or ``before_subscribe`` hooks to refuse the request::

        raise ApiError(403, "Only signed-in users may subscribe to private topics.")
    """

    def __init__(self, status: int, message: str, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.data = dict(data or {})

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON body PocketBase would send for this error."""
        return {"data": self.data, "message": self.message, "status": self.status}
