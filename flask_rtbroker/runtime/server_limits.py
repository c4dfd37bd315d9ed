"""How many connections the WSGI server serving this process accepts, and how many worker
processes it runs, when that can be read.

Only gunicorn's event-loop workers (gevent, eventlet) have such a number: ``worker_connections``,
the most connections one worker serves at once. Its config is not passed to the app, so it is
found on the call stack: an app is imported (and ``init_app`` runs) inside gunicorn's worker
start-up, or inside the master's start-up with ``--preload``; both frames hold the config.
"""

from __future__ import annotations

import sys
from typing import Any

_EVENT_LOOP_WORKERS = ("gevent", "eventlet")
_MAX_FRAMES = 200


def _gunicorn_config() -> Any | None:
    frame = sys._getframe(1)
    for _ in range(_MAX_FRAMES):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        config = getattr(owner, "cfg", None)
        if type(owner).__module__.startswith("gunicorn.") and hasattr(config, "worker_connections"):
            return config
        frame = frame.f_back  # type: ignore[assignment]
    return None


def server_connections() -> int | None:
    """The ``worker_connections`` of the gunicorn gevent/eventlet worker starting up, or None."""
    if "gunicorn" not in sys.modules:
        return None
    config = _gunicorn_config()
    if config is None:
        return None
    try:
        worker_class = str(config.worker_class_str)
        connections = int(config.worker_connections)
    except (AttributeError, TypeError, ValueError):
        return None
    if not any(name in worker_class for name in _EVENT_LOOP_WORKERS) or connections <= 0:
        return None
    return connections


def server_workers() -> int | None:
    """The number of worker processes of the gunicorn server starting up (``-w``), or None when
    this is not gunicorn starting a worker or loading the app."""
    if "gunicorn" not in sys.modules:
        return None
    config = _gunicorn_config()
    try:
        return None if config is None else int(config.workers)
    except (AttributeError, TypeError, ValueError):
        return None
