"""Graceful shutdown: end every stream when a gevent worker is told to stop.

gunicorn's gevent worker stops accepting on SIGTERM (and SIGINT/SIGQUIT) but waits up to
``--graceful-timeout`` for open requests, which for event streams means "until killed". The
handler installed here chains to the server's own and ends every stream cleanly first, so the
SDK reconnects at once (to a new worker after a SIGHUP reload, to another host otherwise).
Installed in the main thread only, and only where the server installed handlers of its own
(Python's default SIGINT handler and ignored or default dispositions are left alone).
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any, Callable

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def chain_shutdown_handlers(on_shutdown: Callable[[], None], spawn: Callable[[Callable[[], None]], None]) -> bool:
    """Wrap the current handlers of :data:`SHUTDOWN_SIGNALS`; return True if any was wrapped.

    Only possible in the process's main OS thread (where gevent runs its greenlets).
    """
    wrapped = False
    for signum in SHUTDOWN_SIGNALS:
        previous = signal.getsignal(signum)
        if not callable(previous) or previous is signal.default_int_handler:
            continue

        def handler(number: int, frame: FrameType | None, previous: Any = previous) -> None:
            spawn(on_shutdown)
            previous(number, frame)

        try:
            signal.signal(signum, handler)
        except ValueError:  # not the main OS thread: leave the server's handlers alone
            return wrapped
        wrapped = True
    return wrapped
