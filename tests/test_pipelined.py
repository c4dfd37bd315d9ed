"""PipelinedPublisher: concurrent publishes share round trips; each caller gets its own answer."""

from __future__ import annotations

import threading
import time
from typing import Sequence

import pytest

from flask_rtbroker.backplane.pipelined import PipelinedPublisher


class SlowServer:
    """Answers each publish with its payload's length, one round trip taking *delay* seconds."""

    def __init__(self, delay: float = 0.02, fail_on: bytes | None = None) -> None:
        self.delay = delay
        self.fail_on = fail_on
        self.batches: list[list[tuple[str, bytes]]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()

    def execute(self, batch: Sequence[tuple[str, bytes]]) -> list[int]:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.batches.append(list(batch))
        try:
            time.sleep(self.delay)
            if self.fail_on is not None and any(payload == self.fail_on for _, payload in batch):
                raise ConnectionError("the server went away")
            return [len(payload) for _, payload in batch]
        finally:
            with self._lock:
                self.in_flight -= 1


def publish_concurrently(publisher: PipelinedPublisher, count: int) -> dict[int, object]:
    results: dict[int, object] = {}
    start = threading.Barrier(count)

    def one(i: int) -> None:
        start.wait(5)
        try:
            results[i] = publisher.publish(f"c{i}", b"x" * i)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertions
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads), "a publisher never returned"
    return results


def test_a_lone_publish_is_sent_at_once_on_its_own() -> None:
    server = SlowServer(delay=0)
    publisher = PipelinedPublisher(server.execute, threading.Event, timeout=5)
    assert publisher.publish("news", b"abc") == 3
    assert publisher.publish("news", b"abcd") == 4
    assert server.batches == [[("news", b"abc")], [("news", b"abcd")]]


def test_concurrent_publishes_share_round_trips_and_each_gets_its_own_answer() -> None:
    server = SlowServer()
    publisher = PipelinedPublisher(server.execute, threading.Event, timeout=5)
    results = publish_concurrently(publisher, 50)
    assert results == {i: i for i in range(50)}
    assert server.most_in_flight == 1, "one round trip at a time, on one connection"
    assert len(server.batches) < 10, f"50 publishes took {len(server.batches)} round trips"
    sent = sorted(channel for batch in server.batches for channel, _ in batch)
    assert sent == sorted(f"c{i}" for i in range(50)), "every publish went exactly once"


def test_a_failed_round_trip_fails_its_batch_only_and_the_next_caller_leads() -> None:
    server = SlowServer(fail_on=b"x" * 7)
    publisher = PipelinedPublisher(server.execute, threading.Event, timeout=5)
    results = publish_concurrently(publisher, 30)
    failed_batch = next(batch for batch in server.batches if ("c7", b"x" * 7) in batch)
    failed = {int(channel[1:]) for channel, _ in failed_batch}
    assert all(isinstance(results[i], ConnectionError) for i in failed)
    assert all(results[i] == i for i in set(range(30)) - failed)
    assert publisher.publish("after", b"ok") == 2, "the publisher is not stuck after a failure"


def test_a_caller_that_times_out_leaves_nothing_stuck() -> None:
    server = SlowServer(delay=0.3)
    publisher = PipelinedPublisher(server.execute, threading.Event, timeout=0.05)
    results = publish_concurrently(publisher, 5)
    leader = [i for i, result in results.items() if result == i]
    timed_out = [i for i, result in results.items() if isinstance(result, TimeoutError)]
    assert len(leader) >= 1 and len(leader) + len(timed_out) == 5
    time.sleep(0.7)  # whatever was in flight finishes
    assert publisher.publish("after", b"fine") == 4, "a later publish still goes out"


@pytest.mark.parametrize("count", [2, 200])
def test_publishes_from_greenlets_are_pipelined(count: int) -> None:
    import gevent
    import gevent.event

    batches: list[int] = []

    def execute(batch: Sequence[tuple[str, bytes]]) -> list[int]:
        batches.append(len(batch))
        gevent.sleep(0.01)  # the round trip: other greenlets queue meanwhile
        return [1] * len(batch)

    publisher = PipelinedPublisher(execute, gevent.event.Event, timeout=5)
    jobs = [gevent.spawn(publisher.publish, "t", b"p") for _ in range(count)]
    gevent.joinall(jobs, timeout=10)
    assert [job.value for job in jobs] == [1] * count
    assert sum(batches) == count and len(batches) <= 3
