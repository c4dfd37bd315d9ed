"""Blinker signals: observations of what the broker does. Decisions are hooks, not signals.

Every signal's sender is the Flask app whose broker emitted it. Connect receivers with
``client_connected.connect(receiver, app)`` to listen to one app only.

==========================  ======================================================================
signal                      keyword arguments
==========================  ======================================================================
``client_connected``        ``client``: the registered client, before ``PB_CONNECT`` is written
``client_subscribed``       ``client``; ``subscriptions``: the new full list of keys (after a 204)
``client_disconnected``     ``client``; ``reason``: a :class:`~flask_rtbroker.DisconnectReason`
                            (a str: ``"idle"``, ``"lifetime"``, ``"closed"``, ``"slow"``,
                            ``"discarded"``, ``"revoked"`` or ``"shutdown"``)
``message_notified``        ``message``: the Message; ``topic``; ``delivered``: how many
                            deliveries were queued in this process
``presence_joined``         ``topic``; ``member``: ``{"key", "info"}`` (see :doc:`presence`), sent
                            once in the cluster, by the process that counted its first connection
``presence_left``           ``topic``; ``member``, after the grace period, by the process that saw it go
``backplane_state_changed`` ``state``: ``"up"`` or ``"down"``; ``error``: the exception or None
==========================  ======================================================================
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

client_connected = _signals.signal("rtbroker.client-connected", doc="A stream opened and its client was registered.")
client_subscribed = _signals.signal("rtbroker.client-subscribed", doc="A subscription POST was applied.")
client_disconnected = _signals.signal("rtbroker.client-disconnected", doc="A stream ended; its client was unregistered.")
message_notified = _signals.signal("rtbroker.message-notified", doc="notify() queued a message for its subscribers.")
backplane_state_changed = _signals.signal("rtbroker.backplane-state-changed", doc="The backplane connection went up or down.")
presence_joined = _signals.signal("rtbroker.presence-joined", doc="A member joined a presence topic.")
presence_left = _signals.signal("rtbroker.presence-left", doc="A member left a presence topic (after the grace period).")
