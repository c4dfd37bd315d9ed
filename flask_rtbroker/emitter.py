"""Emitter: publish to every connected client from outside the web app (jobs, scripts, shells).

::

    from flask_rtbroker import Emitter

    emitter = Emitter("redis://127.0.0.1:6379/0")      # the web app's RTBROKER_BACKPLANE
    emitter.notify("example", {"test": 123})

    emitter = Emitter.from_config(app.config)          # or: the app's backplane, prefix and secret

It needs no Flask app or request context and never listens: it writes to the backplane and
every web process delivers to its own subscribers.
"""

from __future__ import annotations

from typing import Any, Collection, Mapping

from .backplane import Backplane, from_url
from .cluster import KIND_NOTIFY, KIND_SEND
from .config import Settings
from .errors import BackplaneUnavailable, ConfigurationError, MessageTooLarge
from .message import Message

DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024


class Emitter:
    """A write-only publisher on a shared backplane (a URL or a Backplane instance)."""

    def __init__(
        self,
        backplane: str | Backplane,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        channel_prefix: str | None = None,
        secret: str | bytes | None = None,
    ) -> None:
        """*channel_prefix* and *secret* must be the web app's ``RTBROKER_CHANNEL_PREFIX`` and
        ``RTBROKER_BACKPLANE_SECRET`` when it sets them."""
        self.backplane = from_url(
            backplane,
            write_only=True,
            channel_prefix=channel_prefix,
            secret=secret.encode("utf-8") if isinstance(secret, str) else secret,
        )
        if not self.backplane.has_peers:
            raise ConfigurationError(
                "an Emitter needs a shared backplane (redis://... or memory://NAME), not a private memory://"
            )
        self.max_message_size = max_message_size

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Emitter":
        """The emitter of the app whose settings are *config* (``app.config``, or a dict filled by
        :func:`~flask_rtbroker.load_env`): its backplane, channel prefix, secret and message limit."""
        if "RTBROKER_BACKPLANE" not in config:
            raise ConfigurationError("RTBROKER_BACKPLANE is not set: an Emitter needs the web app's shared backplane")
        settings = Settings.from_config(config)
        return cls(
            config["RTBROKER_BACKPLANE"],
            max_message_size=settings.max_message_size,
            channel_prefix=settings.channel_prefix,
            secret=settings.backplane_secret,
        )

    def _publish(self, kind: str, fields: dict[str, Any], message: Message) -> None:
        if len(message.payload) > self.max_message_size:
            raise MessageTooLarge(
                f"message data for {message.name!r} is {len(message.payload)} bytes encoded, over "
                f"the limit of {self.max_message_size} bytes"
            )
        if not self.backplane.send(self.backplane.envelope(kind, fields, message.payload)):
            raise BackplaneUnavailable(f"could not publish to {self.backplane.url}")

    def notify(self, topic: str, data: Any, *, to: str | Collection[str] | None = None) -> None:
        """Send *data* to every subscriber of *topic* in every process (or only clients *to*)."""
        fields: dict[str, Any] = {"t": topic}
        if to is not None:
            fields["to"] = [to] if isinstance(to, str) else list(to)
        self._publish(KIND_NOTIFY, fields, Message(topic, data))

    def send(self, client_id: str, name: str, data: Any) -> None:
        """Send one event named *name* to the client *client_id*, wherever it is connected."""
        self._publish(KIND_SEND, {"c": client_id, "n": name}, Message(name, data))

    def close(self) -> None:
        """Release the backplane."""
        self.backplane.close()
