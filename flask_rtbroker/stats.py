"""Counters of one app's broker in one process, and their Prometheus text form."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

HELP = {
    # name: (Prometheus type, help text), the figures of BrokerState.stats() but disconnects_total
    "clients": ("gauge", "Open realtime streams."),
    "subscriptions": ("gauge", "Subscription keys held by open streams."),
    "topics": ("gauge", "Distinct topics with at least one subscriber."),
    "connects_total": ("counter", "Streams opened."),
    "notifies_total": ("counter", "notify() calls and backplane notifies handled."),
    "deliveries_total": ("counter", "Messages queued for a client."),
    "dropped_total": ("counter", "Queued messages lost when a slow client was discarded."),
    "queue_high_water": ("gauge", "Most messages a client had queued at one write, since start."),
    "backplane_received_total": ("counter", "Backplane payloads this process's listener received (what routing saves shows here)."),
    "backplane_channels": ("gauge", "Backplane channels this process listens on (all, its inbox, topics, collections)."),
    "capture_forged_total": ("counter", "Database capture: notifications dropped as no reference to a stored change (this process, all its apps)."),
    "capture_replayed_total": ("counter", "Database capture: references to a change already delivered, dropped."),
    "capture_skipped_total": ("counter", "Database capture: notifications skipped past the backlog (each time a gap event)."),
    "capture_gaps_total": ("counter", "Database capture: gap events sent to the subscribers of captured collections."),
    "backplane_rejected_total": ("counter", "Backplane payloads dropped: not envelopes, not signed with the secret, or refused by this process's checks (line breaks, PB_CONNECT, size)."),
    "session_ghosts": ("gauge", "Ended streams' clients kept for the next connection to claim (RTBROKER_RESUME_WINDOW)."),
    "session_ghost_bytes": ("gauge", "Bytes the session ghosts hold queued (bounded by RTBROKER_RESUME_MEMORY)."),
    "sessions_resumed_total": ("counter", "Session ghosts claimed by a new connection's first POST."),
    "sessions_handed_over_total": ("counter", "Session ghosts handed over to another process's claim."),
    "sessions_expired_total": ("counter", "Session ghosts dropped unclaimed (window passed, a ghost budget, shutdown)."),
    "backplane_replayed_total": ("counter", "Backplane envelopes dropped as stale, already seen, unstamped (with a secret) or on a channel not theirs."),
}


@dataclass
class Counters:
    """Monotonic counters, updated once per fan-out, per direct send and per stream, never per
    delivery inside a fan-out."""

    connects: int = 0
    notifies: int = 0
    deliveries: int = 0
    dropped: int = 0
    queue_high_water: int = 0
    disconnects: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """The counters as plain values."""
        return {
            "connects_total": self.connects,
            "notifies_total": self.notifies,
            "deliveries_total": self.deliveries,
            "dropped_total": self.dropped,
            "queue_high_water": self.queue_high_water,
            "disconnects_total": dict(self.disconnects),
        }


def prometheus_text(stats: dict[str, Any], prefix: str = "rtbroker_") -> str:
    """Render :meth:`RealtimeBroker.stats` in the Prometheus text exposition format."""
    lines: list[str] = []
    for name, value in stats.items():
        if name == "disconnects_total":
            lines += [f"# HELP {prefix}{name} Streams ended, by reason.", f"# TYPE {prefix}{name} counter"]
            lines += [f'{prefix}{name}{{reason="{reason}"}} {count}' for reason, count in sorted(value.items())]
            continue
        kind, text = HELP[name]
        lines += [f"# HELP {prefix}{name} {text}", f"# TYPE {prefix}{name} {kind}", f"{prefix}{name} {value}"]
    return "\n".join(lines) + "\n"
