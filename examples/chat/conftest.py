"""Fixtures for the chat's tests: an app per test (its own database) and a realtime client."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from flask_rtbroker import RealtimeTestClient


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app({"SECRET_KEY": "test", "CHAT_DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}"})
    yield app
    app.extensions["rtbroker"].close()  # ends the test's streams


@pytest.fixture
def http(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def sign_in(http: FlaskClient) -> Callable[[str], str]:
    """``sign_in("alice")`` -> alice's token."""
    return lambda name: http.post("/api/login", json={"name": name}).json["token"]


@pytest.fixture
def rt(app: Flask) -> Iterator[RealtimeTestClient]:
    """A realtime connection to the app, as the SDK makes it; closed after the test."""
    with RealtimeTestClient(app) as client:
        yield client
