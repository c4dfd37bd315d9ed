"""Shared fixtures (live servers of the example app, redis-server, PostgreSQL) and the ``live`` marker.

Every test that starts a real process is marked ``live`` here, so the in-process unit tests run
alone in seconds: ``pytest -m "not live and not slow"``. A test is live when it uses a fixture of
:data:`LIVE_FIXTURES` (directly or through another fixture), takes a live case of a parametrized
fixture (:data:`LIVE_PARAMS`, for fixtures that start the process only for that case), or is in
a module of :data:`LIVE_MODULES`. ``slow`` marks in-process tests that take more than seconds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from tests.live import SERVER_MODES, LiveServer
from tests.postgres_server import PostgresServer
from tests.redis_server import RedisServer

LIVE_FIXTURES = frozenset({"log_dir", "redis_server", "postgres_url"})
"""Fixtures that start processes; ``log_dir`` is under every LiveServer fixture and pool."""
LIVE_PARAMS = {"make_backplane": "redis", "engine": "postgres"}
"""Parametrized fixtures that start redis-server or PostgreSQL for one case only: name -> case."""
LIVE_MODULES = frozenset({
    "test_backplane_replay",  # a redis-server of its own or PostgreSQL, by parameter
    "test_benchmark_smoke",  # benchmarks.run --smoke: gunicorn servers and load generators
    "test_browser",  # Chromium driven by Node against gunicorn
    "test_channel_churn",  # two gunicorn processes on a redis-server and on a Redis Cluster
    "test_chat_example",  # the tutorial's tests in a pytest of their own; gunicorn, redis-server, nginx, Node
    "test_fresh_install",  # git clone, a fresh venv, pip install and the demo server
    "test_js_sdk",  # the official JS SDK in Node against every server mode
    "test_js_sdk_cluster",
    "test_js_private_topics",  # the JS SDK against topic rules, one process and two on redis-server
    "test_multiprocess",  # two gunicorn processes on a redis-server
    "test_sessions_js",  # the JS SDK across stream ends: gunicorn, Node, redis-server
    "test_oauth2",  # the SDK's authWithOAuth2 in Node and Chromium, a provider on loopback
    "test_presence_cluster",  # the JS SDK on two gunicorn processes and a redis-server
    "test_presence_redis",  # a redis-server, and a Redis Cluster of its own
    "test_protocol_post",  # raw-socket conformance against every server mode
    "test_protocol_stream",
    "test_records_browser",
    "test_records_capture",  # PostgreSQL triggers, psql, a PostgreSQL of its own restarted
    "test_records_js_sdk",
    "test_records_pocketbase_diff",  # a real PocketBase 0.40.6 and Node (the SDK builds the keys)
    "test_reliability",  # thousands of sockets, SIGHUP reloads
    "test_server_modes",
})
"""Modules whose every test drives real processes."""
SLOW_TESTS = frozenset({
    "test_hostile_input.py::test_hostile_posts_get_pocketbase_json_and_never_change_state_when_rejected",
    "test_typing.py::test_mypy_reports_no_errors",
})
"""In-process (or static-check) tests that take more than a few seconds: ``slow``."""


def is_live(item: pytest.Item) -> bool:
    """True when *item* starts a real server, database, browser or install (see the module doc)."""
    if item.path.stem in LIVE_MODULES or LIVE_FIXTURES & set(item.fixturenames):
        return True
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(params.get(name) == case for name, case in LIVE_PARAMS.items())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if is_live(item):
            item.add_marker(pytest.mark.live)
        if item.nodeid.removeprefix("tests/") in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture
def make_server(log_dir: Path) -> Iterator:
    """Factory: ``make_server(mode, env={...}, target=...)`` starts a server stopped after the test."""
    started: list[LiveServer] = []

    def make(mode: str = "gunicorn-gevent", **kwargs) -> LiveServer:
        server = LiveServer(mode, **kwargs).start(log_dir)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module", params=SERVER_MODES)
def server(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[LiveServer]:
    """The example app with default settings, once per server mode (shared by a module)."""
    live = LiveServer(request.param).start(log_dir)
    yield live
    live.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server on a free port, killed after the test."""
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of database ``test`` on a throwaway PostgreSQL, removed after the session.

    ``RTBROKER_TEST_POSTGRES_URL`` overrides it: that server is used as is (trust auth expected).
    """
    override = os.environ.get("RTBROKER_TEST_POSTGRES_URL")
    if override:
        yield override
        return
    server = PostgresServer().start()
    try:
        yield server.url
    finally:
        server.stop()
