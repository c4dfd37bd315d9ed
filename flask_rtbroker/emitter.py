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

from . import wire
from .backplane import Backplane, from_url
from .config import DEFAULTS, Settings
from .errors import BackplaneUnavailable, ConfigurationError
from .protocol.message import Message, check_size
from .wire import WireItem


class Emitter:
    """A write-only publisher on a shared backplane (a URL or a Backplane instance)."""

    def __init__(
        self,
        backplane: str | Backplane,
        *,
        max_message_size: int = DEFAULTS["RTBROKER_MAX_MESSAGE_SIZE"],
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
                "an Emitter needs a shared backplane (redis://..., postgresql://... or memory://NAME), not a private memory://"
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

    def publish(self, item: WireItem) -> None:
        """Publish *item* (see :mod:`flask_rtbroker.wire`); raise :class:`BackplaneUnavailable` on failure."""
        if wire.publish(self.backplane, item) is None:
            raise BackplaneUnavailable(f"could not publish to {self.backplane.url}")

    def notify(self, topic: str, data: Any, *, to: str | Collection[str] | None = None) -> None:
        """Send *data* to every subscriber of *topic* in every process (or only clients *to*)."""
        message = Message(topic, data)
        check_size(topic, message.payload, self.max_message_size)
        recipients = None if to is None else ((to,) if isinstance(to, str) else tuple(to))
        for item in wire.notifies(topic, message.payload, recipients, by_route=self.backplane.routes):
            self.publish(item)

    def send(self, client_id: str, name: str, data: Any) -> None:
        """Send one event named *name* to the client *client_id*, wherever it is connected."""
        message = Message(name, data)
        check_size(name, message.payload, self.max_message_size)
        self.publish(wire.Send(client_id, name, message.payload))

    def close(self) -> None:
        """Release the backplane."""
        self.backplane.close()
