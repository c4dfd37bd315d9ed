"""Exceptions raised by flask_rtbroker.

The tree (each also derives from the builtin in brackets, so ``except ValueError`` still works)::

    RtBrokerError                 base of everything raised here
    ├── ConfigurationError        a RTBROKER_* setting is invalid [ValueError]
    ├── NotInitializedError       the extension is used before init_app(app) [RuntimeError]
    ├── AlreadyInitializedError   a second RealtimeBroker on one app [RuntimeError]
    ├── MissingDependency         an optional extra is not installed [ImportError]
    ├── ClientNotFound            no connected client has that id [LookupError]
    ├── InvalidArgument           an argument no broker call accepts (a line break in a name,
    │                             PB_CONNECT as a send, a built-in envelope kind) [ValueError]
    ├── MessageTooLarge           an encoded message is over RTBROKER_MAX_MESSAGE_SIZE [ValueError]
    ├── NotSerializable           message or record data has no JSON form [TypeError]
    ├── InvalidJSON               JSON from outside is malformed or past its bounds [ValueError]
    ├── EnvelopeError             a backplane payload is not a valid envelope [ValueError]
    ├── BackplaneUnavailable      an Emitter could not publish [ConnectionError]
    ├── WatchError                a model cannot be watched as asked (records) [ValueError]
    ├── FilterSyntaxError         a records ``filter`` outside the supported subset [ValueError]
    ├── FieldsSyntaxError         a malformed records ``fields`` list [ValueError]
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


class AlreadyInitializedError(RtBrokerError, RuntimeError):
    """An app already has a RealtimeBroker: create one per app, call ``init_app`` once."""


class MissingDependency(RtBrokerError, ImportError):
    """An optional dependency (an extra such as ``sqlalchemy`` or ``redis``) is not installed."""


class ClientNotFound(RtBrokerError, LookupError):
    """No client with the given id is registered with the broker."""

    def __init__(self, client_id: str) -> None:
        super().__init__(f"no client associated with connection id {client_id!r}")
        self.client_id = client_id


class InvalidArgument(RtBrokerError, ValueError):
    """An argument no broker call accepts."""


class MessageTooLarge(RtBrokerError, ValueError):
    """An encoded message exceeds the configured size limit."""


class NotSerializable(RtBrokerError, TypeError):
    """A value in message or record data has no JSON form."""


class InvalidJSON(RtBrokerError, ValueError):
    """JSON from outside is malformed, or nests or counts past its bounds."""


class EnvelopeError(RtBrokerError, ValueError):
    """A backplane payload is not an envelope this version understands, or its fields are wrong."""


class BackplaneUnavailable(RtBrokerError, ConnectionError):
    """The backplane could not take a message (e.g. Redis is down)."""


class WatchError(RtBrokerError, ValueError):
    """A model cannot be watched as asked (no table name, a composite key, a name taken...)."""


class FilterSyntaxError(RtBrokerError, ValueError):
    """A records ``filter`` uses syntax outside the supported subset, or is malformed."""


class FieldsSyntaxError(RtBrokerError, ValueError):
    """A records ``fields`` list is malformed or uses an unknown modifier."""


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
