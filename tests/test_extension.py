"""The Flask extension contract: init_app, config, app lookup, errors, the public API."""

from __future__ import annotations

import pytest
from blinker import Signal
from flask import Flask

import flask_rtbroker
from flask_rtbroker import ConfigurationError, NotInitializedError, RealtimeBroker
from flask_rtbroker.runtime.concurrency import GeventRuntime, ThreadingRuntime, gevent_is_active, select_runtime
from flask_rtbroker.config import DEFAULTS, Settings, load_env


def test_public_api_is_pinned() -> None:
    assert sorted(flask_rtbroker.__all__) == [
        "AUTH_KEY", "AlreadyInitializedError", "ApiError", "Backplane", "BackplaneUnavailable", "Broker",
        "ClientNotFound", "ConfigurationError", "DefaultClient", "DisconnectReason", "Emitter", "EnvelopeError",
        "FieldsSyntaxError", "FilterSyntaxError", "IP_KEY", "InvalidArgument", "InvalidJSON",
        "MemoryBackplane", "Message", "MessageTooLarge", "MissingDependency", "NotInitializedError",
        "NotSerializable", "PB_CONNECT", "ReadTimeout", "RealtimeBroker", "RealtimeEvent", "RealtimeTestClient",
        "RtBrokerError", "StreamEnded", "StreamRefused", "SubscriptionOptions", "WatchError",
        "backplane_state_changed", "client_connected", "client_disconnected", "client_subscribed", "load_env",
        "message_notified", "presence_joined", "presence_left",
    ]
    for name in flask_rtbroker.__all__:
        value = getattr(flask_rtbroker, name)
        if isinstance(value, str):
            continue
        assert value.__doc__, f"{name} has no docstring"
        if isinstance(value, Signal):
            assert value.__doc__ != Signal.__doc__, f"{name} has only blinker's docstring"


def test_every_exception_is_an_rtbroker_error() -> None:
    for name in flask_rtbroker.__all__:
        value = getattr(flask_rtbroker, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, flask_rtbroker.RtBrokerError), name


def test_init_app_later_sets_defaults_and_state() -> None:
    broker = RealtimeBroker()
    app = Flask(__name__)
    broker.init_app(app)
    assert all(key in app.config for key in DEFAULTS)
    with app.app_context():
        assert broker.state() is app.extensions["rtbroker"]
    assert "/api/realtime" in {rule.rule for rule in app.url_map.iter_rules()}


def test_double_registration_is_refused() -> None:
    app = Flask(__name__)
    RealtimeBroker(app)
    with pytest.raises(flask_rtbroker.AlreadyInitializedError, match="already registered") as refused:
        RealtimeBroker(app)
    assert isinstance(refused.value, RuntimeError)


def test_custom_url_prefix() -> None:
    app = Flask(__name__)
    app.config["RTBROKER_URL_PREFIX"] = "/rt/"
    RealtimeBroker(app)
    assert "/rt" in {rule.rule for rule in app.url_map.iter_rules()}


def test_use_on_an_app_without_init_app_says_what_to_do() -> None:
    broker = RealtimeBroker()
    with Flask(__name__).app_context(), pytest.raises(NotInitializedError, match=r"call init_app\(app\)"):
        broker.notify("t", 1)
    with pytest.raises(NotInitializedError, match="not registered on any app"):
        broker.notify("t", 1)


def test_outside_app_context_the_only_app_is_used_and_several_are_ambiguous() -> None:
    broker = RealtimeBroker()
    first = Flask("first")
    broker.init_app(first)
    assert broker.notify("t", 1) == 0
    second = Flask("second")
    broker.init_app(second)
    with pytest.raises(NotInitializedError, match="app context"):
        broker.notify("t", 1)
    with second.app_context():
        assert broker.state() is second.extensions["rtbroker"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("RTBROKER_IDLE_TIMEOUT", 0, "must be > 0"),
        ("RTBROKER_LIFETIME_JITTER", 1, "below 1"),
        ("RTBROKER_METRICS_PATH", "metrics", "starting with"),
        ("RTBROKER_IDLE_TIMEOUT", "300", "must be a number"),
        ("RTBROKER_HEARTBEAT", -1, ">= 0"),
        ("RTBROKER_CHUNK_SIZE", 0, "whole number"),
        ("RTBROKER_CLIENT_QUEUE_SIZE", 1.5, "whole number"),
        ("RTBROKER_CONCURRENCY", "asyncio", "'auto', 'gevent' or 'threading'"),
        ("RTBROKER_URL_PREFIX", "api", "starting with '/'"),
        ("RTBROKER_TRUSTED_PROXY_HEADERS", "X-Real-IP", "list of header names"),
        ("RTBROKER_CORS_ORIGINS", "https://a.example", "'\\*', None or a list"),
    ],
)
def test_bad_config_is_named_in_the_error(key: str, value: object, message: str) -> None:
    app = Flask(__name__)
    app.config[key] = value
    with pytest.raises(ConfigurationError, match=f"{key}.*{message}"):
        RealtimeBroker(app)
    assert "rtbroker" not in app.extensions


def test_load_env_parses_json_and_keeps_strings() -> None:
    config: dict[str, object] = {}
    load_env(config, {"RTBROKER_IDLE_TIMEOUT": "3", "RTBROKER_URL_PREFIX": "/rt",
                      "RTBROKER_TRUSTED_PROXY_HEADERS": '["X-Real-IP"]', "OTHER": "1"})
    assert config == {"RTBROKER_IDLE_TIMEOUT": 3, "RTBROKER_URL_PREFIX": "/rt",
                      "RTBROKER_TRUSTED_PROXY_HEADERS": ["X-Real-IP"]}
    settings = Settings.from_config({**DEFAULTS, **config})
    assert settings.idle_timeout == 3.0 and settings.trusted_proxy_headers == ("X-Real-IP",)


def test_runtime_selection() -> None:
    assert isinstance(select_runtime("threading", 2), ThreadingRuntime)
    assert isinstance(select_runtime("gevent", 2), GeventRuntime)
    # This test process is not monkey-patched and runs in the main greenlet.
    assert not gevent_is_active()
    assert isinstance(select_runtime("auto", 2), ThreadingRuntime)


def test_auto_runtime_is_gevent_inside_a_greenlet() -> None:
    import gevent

    assert gevent.spawn(gevent_is_active).get(timeout=5) is True
