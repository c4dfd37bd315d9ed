"""Misbehaving clients on a live gunicorn gevent worker: slow readers, abrupt closes, restarts."""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from flask_rtbroker.testing import SSEClient, StreamEnded
from tests.live import HOST, LiveServer


def stats(server: LiveServer, **params: str) -> dict:
    return requests.get(f"{server.url}/stats", params=params, timeout=30).json()


def test_stalled_readers_are_dropped_and_readers_get_everything_in_order(make_server) -> None:
    """50 clients that never read and 200 that do; 2,000 notifies; bulk data clogs the stalled ones."""
    server = make_server(env={"RTBROKER_CLIENT_QUEUE_SIZE": "200", "RTBROKER_SEND_TIMEOUT": "2",
                              "RTBROKER_MAX_MESSAGE_SIZE": "1048576"})
    rss_before = stats(server, resources="1")["rss_kb"]
    stalled = []
    for _ in range(50):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((HOST, server.port))
        sock.sendall(f"GET /api/realtime HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        head = b""
        while b"\n\n" not in head.partition(b"\r\n\r\n")[2]:
            head += sock.recv(4096)
        client_id = head.split(b"id:", 1)[1].split(b"\n", 1)[0].decode()
        assert server.subscribe(client_id, ["feed", "bulk"]).status_code == 204
        stalled.append(sock)  # never read again
    readers = [server.stream() for _ in range(200)]
    for sse in readers:
        assert server.subscribe(sse.client_id, ["feed"]).status_code == 204

    received: dict[int, list[int]] = {i: [] for i in range(len(readers))}

    def read(i: int) -> None:
        while len(received[i]) < 2000:
            try:
                received[i].append(readers[i].next_event(timeout=30).json()["n"])
            except (TimeoutError, StreamEnded):
                return

    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(len(readers))]
    for thread in threads:
        thread.start()
    bulk = "x" * 500_000
    with requests.Session() as session:
        for n in range(2000):
            if n % 100 == 0:
                session.post(f"{server.url}/notify", json={"topic": "bulk", "data": bulk}, timeout=30).raise_for_status()
            session.post(f"{server.url}/notify", json={"topic": "feed", "data": {"n": n}}, timeout=30).raise_for_status()
    for thread in threads:
        thread.join(timeout=60)
    assert all(received[i] == list(range(2000)) for i in received), "a reading client missed or reordered messages"
    deadline = time.monotonic() + 20
    while stats(server)["clients"] > 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    figures = stats(server, resources="1")
    assert figures["clients"] == 200, figures
    assert figures["disconnects_total"].get("slow", 0) + figures["disconnects_total"].get("closed", 0) == 50
    assert figures["rss_kb"] - rss_before < 300_000, figures  # bounded: the 50 stalled queues were freed
    print(f"\nstalled clients dropped: {figures['disconnects_total']}, messages dropped: {figures['dropped_total']}, "
          f"RSS growth {figures['rss_kb'] - rss_before} KB")
    for sock in stalled:
        sock.close()
    for sse in readers:
        sse.close()


def _close(sock: socket.socket, how: str) -> None:
    if how == "rst":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif how == "half":
        sock.shutdown(socket.SHUT_WR)  # half-close: FIN sent, socket still open for reading
        time.sleep(0.01)
    sock.close()


def test_five_thousand_abrupt_closes_leak_nothing(make_server) -> None:
    # Each closed stream leaves a session ghost for the resume window: 1 s here, then nothing.
    server = make_server(env={"RTBROKER_RESUME_WINDOW": "1"})
    with server.stream():
        pass
    time.sleep(0.3)
    baseline = stats(server, resources="1")
    methods = ("fin", "rst", "half")

    def cycle(i: int) -> None:
        sse = SSEClient.connect(HOST, server.port, timeout=10)
        response = requests.post(f"{server.url}/api/realtime", timeout=10,
                                 json={"clientId": sse.client_id, "subscriptions": [f"t{i % 50}", "all"]})
        assert response.status_code == 204
        _close(sse.sock, methods[i % 3])

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(cycle, range(5000)))
    deadline = time.monotonic() + 20
    while (stats(server)["clients"] or stats(server)["session_ghosts"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    after = stats(server, resources="1")
    assert after["session_ghosts"] == 0 and after["session_ghost_bytes"] == 0, after
    assert after["clients"] == 0 and after["subscriptions"] == 0 and after["topics"] == 0
    assert after["connects_total"] - baseline["connects_total"] == 5000
    assert after["fds"] <= baseline["fds"] + 2, (baseline, after)
    assert after["greenlets"] <= baseline["greenlets"] + 2, (baseline, after)


def test_sighup_reload_ends_streams_at_once_and_clients_reach_the_new_worker(make_server) -> None:
    server = make_server(env={"RTBROKER_GRACEFUL_SHUTDOWN": "true"})
    streams = [server.stream() for _ in range(20)]
    for sse in streams:
        assert server.subscribe(sse.client_id, ["news"]).status_code == 204
    os.kill(server.process.pid, signal.SIGHUP)  # gunicorn: start new workers, gracefully stop old
    started = time.monotonic()
    for sse in streams:
        sse.wait_end(timeout=10)
    ended_after = time.monotonic() - started
    assert ended_after < 1.5, f"streams took {ended_after:.1f}s to end"  # gunicorn would wait 2 s (--graceful-timeout)
    reconnected = []
    deadline = time.monotonic() + 15
    while len(reconnected) < len(streams) and time.monotonic() < deadline:
        try:
            sse = server.stream()
        except (OSError, StreamEnded):
            time.sleep(0.2)
            continue
        if sse.status != 200:  # the stopping worker refuses new streams (503) until it closes
            assert sse.status == 503
            sse.close()
            time.sleep(0.1)
            continue
        if server.subscribe(sse.client_id, ["news"]).status_code != 204:
            # The POST reached the old worker before it closed its listener: like the SDK, start over.
            sse.close()
            continue
        reconnected.append(sse)
    assert server.notify("news", "after reload") == len(streams)
    assert all(sse.next_event(timeout=5).json() == "after reload" for sse in reconnected)
    for sse in reconnected:
        sse.close()


def test_sigterm_ends_threaded_worker_streams_before_the_graceful_timeout(make_server) -> None:
    server = make_server("gunicorn-gthread")
    streams = [server.stream() for _ in range(5)]
    os.kill(server.process.pid, signal.SIGTERM)
    started = time.monotonic()
    for sse in streams:
        sse.wait_end(timeout=10)
        sse.close()
    assert time.monotonic() - started < 1.5  # gunicorn would wait 2 s (--graceful-timeout)
