"""The only module that knows gevent from threads: events, pools and socket watching.

:func:`select_runtime` picks :class:`GeventRuntime` when the process is monkey-patched by gevent
(``gunicorn -k gevent`` does that) or the caller runs inside a gevent greenlet (an unpatched
``gevent.pywsgi`` server), and :class:`ThreadingRuntime` otherwise (``flask run``, gunicorn
gthread). ``RTBROKER_CONCURRENCY`` forces one.
"""

from __future__ import annotations

import contextvars
import queue
import select
import selectors
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Protocol, Sequence

from greenlet import getcurrent

from .waker import Waker

Task = Callable[[], Any]

CONCURRENCY_CHOICES = ("auto", "gevent", "threading")


class ReadWatch(Protocol):
    """A started watch for readability of one socket (a gevent io watcher)."""

    def stop(self) -> None: ...

    def close(self) -> None: ...


class Runtime(Protocol):
    """Concurrency primitives for one app's broker."""

    watches_sockets: bool
    """True when :meth:`watch_readable` is event-driven; False when streams must poll."""
    sweeps_deadlines: bool
    """True when streams wait without a timeout and a sweeper wakes them at their deadline."""
    preemptive: bool
    """True when its tasks are OS threads, so counts they share need a lock."""

    def waker(self) -> Waker: ...

    def event(self) -> Waker: ...

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

    watches_sockets = False
    sweeps_deadlines = False
    preemptive = True

    def __init__(self, pool_size: int) -> None:
        self._pool_size = pool_size
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def waker(self) -> Waker:
        return threading.Event()

    def event(self) -> Waker:
        """An event any number of threads may wait on."""
        return threading.Event()

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self._pool_size, thread_name_prefix="rtbroker")
            return self._executor

    def run_all(self, tasks: Sequence[Task]) -> list[Any]:
        """Run *tasks* concurrently, wait for all, re-raise the first error (in task order).
        Each task runs in a copy of the caller's context (Flask's app context included)."""
        if len(tasks) == 1:
            return [tasks[0]()]
        futures = [self._pool().submit(contextvars.copy_context().run, task) for task in tasks]
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


class _ResumeQueue:
    """Wakers of parked greenlets, resumed together from one hub callback per loop iteration.

    A broadcast sets thousands of wakers; one callback that switches into each parked stream
    in turn costs far less than one scheduled callback per stream.
    """

    __slots__ = ("_wakers", "_scheduled", "_loop", "hub")

    def __init__(self, hub: Any) -> None:
        self._wakers: list[GreenletWaker] = []
        self._scheduled = False
        self._loop = hub.loop
        self.hub = hub

    def add(self, waker: "GreenletWaker") -> None:
        self._wakers.append(waker)
        if not self._scheduled:
            self._scheduled = True
            self._loop.run_callback(self._resume_all)

    def _resume_all(self) -> None:
        wakers, self._wakers, self._scheduled = self._wakers, [], False
        for waker in wakers:  # waker.resume(), inlined: this loop runs once per delivery
            parked = waker._parked
            if parked is not None:
                waker._parked = None
                parked.switch()


class GreenletWaker:
    """A :class:`Waker` for one greenlet, cheaper than ``gevent.event.Event``.

    ``wait()`` parks the calling greenlet in the hub; ``set()`` marks the flag and queues the
    waker for the hub's next :class:`_ResumeQueue` pass, which switches back into whichever
    greenlet is parked on it then (none: nothing happens). Streams under gevent wait without a
    timeout, so there is no timer per wait either; the broker's sweeper wakes them at their
    deadlines.
    """

    __slots__ = ("_flag", "_parked", "_queue")

    def __init__(self, queue: _ResumeQueue) -> None:
        self._flag = False
        self._parked: Any = None
        self._queue = queue

    def set(self) -> None:
        if self._flag:
            return
        self._flag = True
        if self._parked is not None:
            self._queue.add(self)

    def resume(self) -> None:
        """Switch into the parked greenlet, if one is parked (called from the hub)."""
        parked = self._parked
        if parked is not None:
            self._parked = None
            parked.switch()

    def clear(self) -> None:
        self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        if self._flag:
            return True
        hub = self._queue.hub
        self._parked = getcurrent()
        if timeout is None:
            try:
                hub.switch()
            finally:
                self._parked = None
            return self._flag
        timer = hub.loop.timer(max(timeout, 0.0))
        timer.start(self.resume)
        try:
            hub.switch()
        finally:
            self._parked = None
            timer.stop()
            timer.close()
        return self._flag


class GeventRuntime:
    """gevent: gevent Events, a greenlet Pool for fan-out, libev io watchers on sockets."""

    watches_sockets = True
    sweeps_deadlines = True
    preemptive = False

    def __init__(self, pool_size: int) -> None:
        import gevent.pool

        self._pool = gevent.pool.Pool(pool_size)
        self._resume_queues: "weakref.WeakKeyDictionary[Any, _ResumeQueue]" = weakref.WeakKeyDictionary()

    def waker(self) -> Waker:
        from gevent import get_hub

        hub = get_hub()
        queue = self._resume_queues.get(hub)
        if queue is None:
            queue = self._resume_queues[hub] = _ResumeQueue(hub)
        return GreenletWaker(queue)

    def event(self) -> Waker:
        """An event any number of greenlets may wait on (a waker serves one greenlet only)."""
        import gevent.event

        return gevent.event.Event()

    def run_all(self, tasks: Sequence[Task]) -> list[Any]:
        """Run *tasks* on greenlets, wait for all, re-raise the first error (in task order).
        Each task runs in a copy of the caller's context (Flask's app context included)."""
        if len(tasks) == 1:
            return [tasks[0]()]
        import gevent

        greenlets = [self._pool.spawn(contextvars.copy_context().run, task) for task in tasks]
        gevent.joinall(greenlets)
        return _collect([(g.value, g.exception) for g in greenlets])

    def watch_readable(self, fileno: int, callback: Callable[[], None]) -> ReadWatch:
        """Call *callback* from the hub when *fileno* becomes readable (or closes); the caller
        stops the returned watcher (``stop()``, then ``close()``) when done."""
        from gevent import get_hub

        watcher = get_hub().loop.io(fileno, 1)
        watcher.start(callback)
        return watcher  # type: ignore[no-any-return]

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


def wait_readable(runtime: Runtime, fileno: int, timeout: float) -> None:
    """Wait until *fileno* is readable or *timeout* passes: on the gevent hub (a socket watch)
    or, with threads, in a selector; never in a call that blocks the hub."""
    waker = runtime.waker()
    watch = runtime.watch_readable(fileno, waker.set)
    if watch is None:
        with selectors.DefaultSelector() as selector:
            selector.register(fileno, selectors.EVENT_READ)
            selector.select(timeout)
        return
    try:
        waker.wait(timeout)
    finally:
        watch.stop()
        watch.close()


def system_poll() -> "select.poll":
    """The operating system's ``select.poll`` object even where gevent patched ``select`` (its
    poll knows reads and writes only, not ``POLLRDHUP``); for ``poll(0)``, which never blocks."""
    if "gevent" in sys.modules:
        from gevent import monkey

        if monkey.is_module_patched("select"):
            return monkey.get_original("select", "poll")()
    return select.poll()


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
    """Return the runtime for *choice*, one of :data:`CONCURRENCY_CHOICES` (checked by the config)."""
    if choice == "gevent" or (choice == "auto" and gevent_is_active()):
        return GeventRuntime(pool_size)
    return ThreadingRuntime(pool_size)
