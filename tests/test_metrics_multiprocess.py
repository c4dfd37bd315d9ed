"""/metrics across gunicorn's workers: with prometheus_client and ``PROMETHEUS_MULTIPROC_DIR``
every scrape, whichever worker answers it, counts the streams of both workers; when a worker
dies, gunicorn's ``child_exit`` (``flask_rtbroker.metrics.child_exit``) drops its live gauges
and its counters stay."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from flask_rtbroker.backplane.base import ROUTE_LENGTH
from flask_rtbroker.testing import ReadTimeout, SSEClient, StreamEnded
from tests.live import HOST, ROOT, free_port
from tests.netns import kill_group, wait_tcp
from tests.redis_server import RedisServer

pytest.importorskip("prometheus_client", reason="the test extra installs prometheus-client")

GUNICORN_CONF = "from flask_rtbroker.metrics import child_exit  # noqa: F401  (gunicorn calls it)\n"
MAX_STREAMS = 200
"""Streams opened at most until both workers hold one (one worker often accepts dozens first)."""


@pytest.fixture
def two_workers(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "gunicorn.conf.py").write_text(GUNICORN_CONF)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
           "RTBROKER_METRICS_PATH": "/metrics", "RTBROKER_BACKPLANE": redis_server.url, "RTBROKER_HEARTBEAT": "0"}
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(tmp_path / "gunicorn.conf.py"), "-k", "gevent", "-w", "2",
         "--graceful-timeout", "1", "-b", f"{HOST}:{port}", "examples.notify_app:app"],
        cwd=ROOT, env=env, stdout=(tmp_path / "gunicorn.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_tcp(HOST, port, 30, server, "gunicorn")
        yield f"http://{HOST}:{port}", server
    finally:
        kill_group(server, signal.SIGTERM)
        print((tmp_path / "gunicorn.log").read_text(errors="replace")[-3000:])


def scraped(url: str, name: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, text
    return float(match.group(1))


def scrapes_agree(url: str, name: str, expected: float, timeout: float = 10.0) -> None:
    """Scrape until *name* is *expected* (the workers copy their figures every second), then
    scrape 6 more times: each answer, from either worker, must say the same."""
    deadline = time.monotonic() + timeout
    while scraped(url, name) != expected:
        assert time.monotonic() < deadline, f"{name} never reached {expected}"
        time.sleep(0.2)
    assert [scraped(url, name) for _ in range(6)] == [expected] * 6


def worker_pids(master: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                pids.append(int(entry))
    return pids


def test_a_scrape_sees_both_workers_and_a_dead_workers_streams_leave(two_workers: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, master = two_workers
    port = int(url.rsplit(":", 1)[1])
    streams: list[SSEClient] = []
    try:
        while len({s.client_id[:ROUTE_LENGTH] for s in streams}) < 2:  # a stream on each worker
            assert len(streams) < MAX_STREAMS, "every stream went to one worker"
            streams.append(SSEClient.connect(HOST, port))
        scrapes_agree(url, "rtbroker_clients", len(streams))
        scrapes_agree(url, "rtbroker_connects_total", len(streams))

        workers = worker_pids(master.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)  # its streams end; gunicorn calls child_exit and starts another
        alive = []
        for stream in streams:
            try:
                stream.next_event(timeout=0.5)
            except ReadTimeout:
                alive.append(stream)
            except (StreamEnded, OSError):
                pass
        assert 0 < len(alive) < len(streams)
        scrapes_agree(url, "rtbroker_clients", len(alive))  # the dead worker's live gauge is gone
        assert scraped(url, "rtbroker_connects_total") == len(streams)  # its counters are kept
    finally:
        for stream in streams:
            stream.close()
