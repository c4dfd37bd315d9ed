"""Publishing for many callers at once over one connection, one pipeline per round trip.

A caller that finds no round trip under way sends its publish at once and so leads; callers
that come while it waits queue theirs and wait, and the leader sends all of them as the next
pipeline. Then the first waiter still queued leads, so no caller waits for more than its own
batch and the one before. N concurrent publishes cost a few round trips and one connection
instead of N of each; a lone publish costs what it did.
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence

from ..runtime.waker import Waker

ExecuteBatch = Callable[[Sequence[tuple[str, bytes]]], Sequence[int]]
"""Publishes (channel, payload) pairs in one round trip; returns each one's receiver count."""


class _Publish:
    """One caller's publish: what it sends, and the result or error it waits for."""

    __slots__ = ("channel", "payload", "waker", "reached", "error", "done", "leads")

    def __init__(self, channel: str, payload: bytes) -> None:
        self.channel = channel
        self.payload = payload
        self.waker: Waker | None = None
        self.reached = 0
        self.error: BaseException | None = None
        self.done = False
        self.leads = False


class PipelinedPublisher:
    """Publishes from any number of greenlets or threads, pipelining what accumulates."""

    def __init__(self, execute: ExecuteBatch, new_waker: Callable[[], Waker], timeout: float) -> None:
        self._execute = execute
        self._new_waker = new_waker
        self._timeout = timeout
        self._lock = threading.Lock()
        self._queued: list[_Publish] = []
        self._sending = False

    def publish(self, channel: str, payload: bytes) -> int:
        """Publish *payload* on *channel*; return how many subscribers Redis reached. Raises
        what the round trip raised, or TimeoutError when no answer came in time."""
        publish = _Publish(channel, payload)
        with self._lock:
            self._queued.append(publish)
            if self._sending:
                publish.waker = self._new_waker()
            else:
                self._sending = publish.leads = True
        if not publish.leads:
            self._wait(publish)
        if not publish.done:
            self._send_queued()
        if publish.error is not None:
            raise publish.error
        return publish.reached

    def _wait(self, publish: _Publish) -> None:
        """Wait until *publish* is answered or is handed the lead."""
        assert publish.waker is not None
        if publish.waker.wait(self._timeout):
            return
        with self._lock:
            if publish.done or publish.leads:
                return
            if publish in self._queued:
                self._queued.remove(publish)
        raise TimeoutError(f"no answer to a publish within {self._timeout} s")

    def _send_queued(self) -> None:
        """Send everything queued as one pipeline, answer each caller, hand the lead on."""
        with self._lock:
            batch, self._queued = self._queued, []
        try:
            counts = self._execute([(p.channel, p.payload) for p in batch])
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch gets it
            for publish in batch:
                publish.error = exc
        else:
            for publish, reached in zip(batch, counts):
                publish.reached = int(reached)
        finally:
            for publish in batch:
                publish.done = True
                if publish.waker is not None:
                    publish.waker.set()
            with self._lock:
                if self._queued:
                    following = self._queued[0]
                    following.leads = True
                    assert following.waker is not None
                    following.waker.set()
                else:
                    self._sending = False
