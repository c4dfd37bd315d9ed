"""Shared fixtures: live servers of the example app under each supported WSGI server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from live import SERVER_MODES, LiveServer
from postgres_server import PostgresServer
from redis_server import RedisServer


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
