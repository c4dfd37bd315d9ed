"""The only module that knows gevent from threads: events, pools and socket watching.

:func:`select_runtime` picks :class:`GeventRuntime` when the process is monkey-patched by gevent
(``gunicorn -k gevent`` does that) or the caller runs inside a gevent greenlet (an unpatched
``gevent.pywsgi`` server), and :class:`ThreadingRuntime` otherwise (``flask run``, gunicorn
gthread). ``RTBROKER_CONCURRENCY`` forces one.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Protocol, Sequence

from .client import Waker
from .errors import ConfigurationError

Task = Callable[[], Any]

CONCURRENCY_CHOICES = ("auto", "gevent", "threading")


class ReadWatch(Protocol):
    """A started watch for readability of one socket."""

    def stop(self) -> None: ...


class Runtime(Protocol):
    """Concurrency primitives for one app's broker."""

    name: str
    watches_sockets: bool
    """True when :meth:`watch_readable` is event-driven; False when streams must poll."""

    def waker(self) -> Waker: ...

    def run_all(self, tasks: Sequence[Task]) -> list[Any]: ...

    def watch_readable(self, fileno: int, callback: Callable[[], None]) -> ReadWatch | None: ...

    def spawn(self, func: Task) -> None: ...

    def sleep(self, seconds: float) -> None: ...

    def queue(self) -> Any: ...

    def close(self) -> None: ...


def _collect(results: list[tuple[Any, BaseException | None]]) -> list[Any]:
    for _, error in results:
        if error is not None:
            raise error
    return [value for value, _ in results]


class ThreadingRuntime:
    """Threads: ``threading.Event`` wakers, a thread pool for fan-out, streams poll sockets."""

    name = "threading"
    watches_sockets = False

    def __init__(self, pool_size: int) -> None:
        self._pool_size = pool_size
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def waker(self) -> Waker:
        return threading.Event()

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self._pool_size, thread_name_prefix="rtbroker")
            return self._executor

    def run_all(self, tasks: Sequence[Task]) -> list[Any]:
        """Run *tasks* concurrently, wait for all, re-raise the first error (in task order)."""
        if len(tasks) == 1:
            return [tasks[0]()]
        futures = [self._pool().submit(task) for task in tasks]
        return _collect([(f.result() if f.exception() is None else None, f.exception()) for f in futures])

    def watch_readable(self, fileno: int, callback: Callable[[], None]) -> ReadWatch | None:
        return None

    def spawn(self, func: Task) -> None:
        """Run *func* in a daemon thread."""
        threading.Thread(target=func, daemon=True, name="rtbroker-task").start()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def queue(self) -> "queue.Queue[Any]":
        """An unbounded FIFO queue safe between threads."""
        return queue.Queue()

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None


class _GeventReadWatch:
    __slots__ = ("_watcher",)

    def __init__(self, watcher: Any, callback: Callable[[], None]) -> None:
        self._watcher = watcher

        def fire() -> None:
            watcher.stop()
            callback()

        watcher.start(fire)

    def stop(self) -> None:
        self._watcher.stop()
        self._watcher.close()


class GeventRuntime:
    """gevent: gevent Events, a greenlet Pool for fan-out, libev io watchers on sockets."""

    name = "gevent"
    watches_sockets = True

    def __init__(self, pool_size: int) -> None:
        import gevent.event
        import gevent.pool

        self._event_class = gevent.event.Event
        self._pool = gevent.pool.Pool(pool_size)

    def waker(self) -> Waker:
        return self._event_class()

    def run_all(self, tasks: Sequence[Task]) -> list[Any]:
        """Run *tasks* on greenlets, wait for all, re-raise the first error (in task order)."""
        if len(tasks) == 1:
            return [tasks[0]()]
        import gevent

        greenlets = [self._pool.spawn(task) for task in tasks]
        gevent.joinall(greenlets)
        return _collect([(g.value, g.exception) for g in greenlets])

    def watch_readable(self, fileno: int, callback: Callable[[], None]) -> ReadWatch:
        """Call *callback* once, from the hub, when *fileno* becomes readable (or closes)."""
        from gevent import get_hub

        return _GeventReadWatch(get_hub().loop.io(fileno, 1), callback)

    def spawn(self, func: Task) -> None:
        """Run *func* in a new greenlet."""
        import gevent

        gevent.spawn(func)

    def sleep(self, seconds: float) -> None:
        import gevent

        gevent.sleep(seconds)

    def queue(self) -> Any:
        """An unbounded FIFO queue safe between greenlets."""
        import gevent.queue

        return gevent.queue.Queue()

    def close(self) -> None:
        self._pool.kill(block=False)


def gevent_is_active() -> bool:
    """True when gevent monkey-patched the socket module or the caller runs in a gevent greenlet."""
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    if monkey.is_module_patched("socket"):
        return True
    import greenlet

    return greenlet.getcurrent().parent is not None


def select_runtime(choice: str, pool_size: int) -> Runtime:
    """Return the runtime for *choice*: ``"auto"``, ``"gevent"`` or ``"threading"``."""
    if choice not in CONCURRENCY_CHOICES:
        raise ConfigurationError(
            f"RTBROKER_CONCURRENCY must be one of {', '.join(CONCURRENCY_CHOICES)}, not {choice!r}"
        )
    if choice == "gevent" or (choice == "auto" and gevent_is_active()):
        return GeventRuntime(pool_size)
    return ThreadingRuntime(pool_size)
