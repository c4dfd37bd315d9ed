"""The demo app (examples/demo) without a browser: its routes, its error page, its gunicorn config."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
from flask import Flask

from examples.demo.app import INSTALL_COMMAND, create_app
from tests.live import ROOT


@pytest.fixture
def sdk_file(tmp_path: Path) -> Path:
    path = tmp_path / "pocketbase.umd.js"
    path.write_text("window.PocketBase = function () {};\n")
    return path


def make_app(sdk: Path) -> Flask:
    return create_app({"DEMO_POCKETBASE_JS": str(sdk), "TESTING": True})


def test_page_loads_the_sdk_the_app_serves(sdk_file: Path) -> None:
    client = make_app(sdk_file).test_client()
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert '<script src="/vendor/pocketbase.umd.js"></script>' in html
    assert 'data-topic="counter"' in html and 'data-state="connecting"' in html
    sdk = client.get("/vendor/pocketbase.umd.js")
    assert sdk.status_code == 200 and sdk.mimetype == "text/javascript"
    assert sdk.get_data() == sdk_file.read_bytes()
    sdk.close()


def test_missing_sdk_gives_an_error_page_with_the_install_command(tmp_path: Path) -> None:
    client = make_app(tmp_path / "not-installed.js").test_client()
    page = client.get("/")
    assert page.status_code == 503
    html = page.get_data(as_text=True)
    assert INSTALL_COMMAND == "npm ci --prefix examples/demo" and INSTALL_COMMAND in html
    assert str(tmp_path / "not-installed.js") in html
    sdk = client.get("/vendor/pocketbase.umd.js")
    assert sdk.status_code == 404 and sdk.mimetype == "text/javascript"
    assert INSTALL_COMMAND in sdk.get_data(as_text=True)


def test_counter_changes_are_versioned_and_published(sdk_file: Path) -> None:
    client = make_app(sdk_file).test_client()
    assert client.get("/api/counter").get_json() == {"value": 0, "version": 0}
    assert client.post("/api/counter/increment").get_json() == {"value": 1, "version": 1, "delivered": 0}
    assert client.post("/api/counter/increment").get_json() == {"value": 2, "version": 2, "delivered": 0}
    assert client.post("/api/counter/reset").get_json() == {"value": 0, "version": 3, "delivered": 0}
    assert client.get("/api/counter").get_json() == {"value": 0, "version": 3}
    assert client.get("/api/counter/increment").status_code == 405


def test_each_app_has_its_own_counter(sdk_file: Path) -> None:
    first, second = make_app(sdk_file).test_client(), make_app(sdk_file).test_client()
    first.post("/api/counter/increment")
    assert second.get("/api/counter").get_json()["value"] == 0


def test_gunicorn_config(monkeypatch: pytest.MonkeyPatch) -> None:
    path = ROOT / "examples" / "demo" / "gunicorn.conf.py"
    monkeypatch.delenv("PORT", raising=False)
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    defaults = runpy.run_path(str(path))
    assert defaults["bind"] == "127.0.0.1:5000"
    assert (defaults["worker_class"], defaults["worker_connections"], defaults["workers"]) == ("gevent", 10000, 1)
    assert defaults["wsgi_app"] == "examples.demo.app:app" and defaults["pythonpath"] == str(ROOT)
    monkeypatch.setenv("PORT", "5123")
    assert runpy.run_path(str(path))["bind"] == "127.0.0.1:5123"


def test_counter_in_redis_is_shared_by_apps_on_one_backplane(sdk_file: Path, redis_server) -> None:
    config = {"DEMO_POCKETBASE_JS": str(sdk_file), "RTBROKER_BACKPLANE": redis_server.url}
    first, second = create_app(config), create_app(config)
    try:
        one, two = first.test_client(), second.test_client()
        assert one.get("/api/counter").get_json() == {"value": 0, "version": 0}
        assert one.post("/api/counter/increment").get_json() == {"value": 1, "version": 1, "delivered": 0}
        assert two.post("/api/counter/increment").get_json() == {"value": 2, "version": 2, "delivered": 0}
        assert one.post("/api/counter/reset").get_json() == {"value": 0, "version": 3, "delivered": 0}
        assert two.get("/api/counter").get_json() == {"value": 0, "version": 3}
    finally:
        for app in (first, second):
            app.extensions["rtbroker"].close()
