"""flask_rtbroker.config on its own: every RTBROKER_* default, what each setting accepts, how it
is normalised, what it refuses (a ConfigurationError naming the key), and the derived values."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from flask_rtbroker.config import DEFAULTS, FALLBACK_MAX_CLIENTS, Settings, load_env, resolve_stream_limits
from flask_rtbroker.errors import ConfigurationError, RtBrokerError

SECRET = "0123456789abcdef"  # exactly 16 bytes


def settings(**config: Any) -> Settings:
    """The checked settings of a config holding *config* (``RTBROKER_`` is added to each name)."""
    return Settings.from_config({f"RTBROKER_{name.upper()}": value for name, value in config.items()})


# -- defaults ------------------------------------------------------------------------------------


def test_every_settings_field_has_a_default_and_every_default_but_the_backplane_a_field() -> None:
    keys = {"RTBROKER_" + field.name.upper() for field in dataclasses.fields(Settings)}
    assert keys == set(DEFAULTS) - {"RTBROKER_BACKPLANE"}
    assert DEFAULTS["RTBROKER_BACKPLANE"] == "memory://"


def test_an_empty_config_gets_the_documented_defaults() -> None:
    assert dataclasses.asdict(Settings.from_config({})) == {
        "url_prefix": "/api/realtime",
        "idle_timeout": 300.0,
        "max_lifetime": 1800.0,
        "lifetime_jitter": 0.1,
        "heartbeat": 25.0,
        "send_timeout": 10.0,
        "chunk_size": 300,
        "pool_size": 16,
        "client_queue_size": 1000,
        "client_queue_bytes": 8 * 1024 * 1024,
        "max_clients": FALLBACK_MAX_CLIENTS,  # "auto" outside a gunicorn event-loop worker
        "max_clients_per_ip": FALLBACK_MAX_CLIENTS // 4,
        "max_subscription_bytes": 128 * 1024,
        "subscription_memory": 256 * 1024 * 1024,
        "concurrency": "auto",
        "disconnect_poll": 0.5,
        "trusted_proxy_headers": (),
        "use_leftmost_ip": False,
        "cors_origins": "*",
        "max_body_size": 1024 * 1024,
        "max_message_size": 4 * 1024 * 1024,
        "channel_prefix": "flask_rtbroker",
        "backplane_secret": None,
        "forward_timeout": 2.0,
        "forward_headers": ("Authorization",),
        "graceful_shutdown": True,
        "metrics_path": None,
    }


def test_the_defaults_themselves_pass_the_checks_unchanged() -> None:
    assert Settings.from_config(DEFAULTS) == Settings.from_config({})


def test_keys_other_than_rtbroker_ones_are_ignored() -> None:
    assert Settings.from_config({"IDLE_TIMEOUT": -1, "rtbroker_idle_timeout": -1, "SECRET_KEY": "x"}) == Settings.from_config({})


# -- accepted values and their checked form --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("url_prefix", "/rt", "/rt"),
        ("url_prefix", "/rt///", "/rt"),
        ("url_prefix", "/", "/"),
        ("url_prefix", "//", "/"),
        ("idle_timeout", 3, 3.0),
        ("idle_timeout", 0.001, 0.001),
        ("max_lifetime", 60, 60.0),
        ("lifetime_jitter", 0, 0.0),
        ("lifetime_jitter", 0.999, 0.999),
        ("heartbeat", 0, 0.0),
        ("heartbeat", None, 0.0),
        ("heartbeat", 5, 5.0),
        ("send_timeout", 0.25, 0.25),
        ("chunk_size", 1, 1),
        ("pool_size", 1, 1),
        ("client_queue_size", 1, 1),
        ("max_clients", 0, 0),
        ("max_clients", None, 0),
        ("max_clients", 7, 7),
        ("max_clients_per_ip", 0, 0),
        ("max_clients_per_ip", 3, 3),
        ("max_subscription_bytes", 1, 1),
        ("subscription_memory", 1, 1),
        ("concurrency", "auto", "auto"),
        ("concurrency", "gevent", "gevent"),
        ("concurrency", "threading", "threading"),
        ("disconnect_poll", 2, 2.0),
        ("trusted_proxy_headers", ["X-Real-IP", "CF-Connecting-IP"], ("X-Real-IP", "CF-Connecting-IP")),
        ("trusted_proxy_headers", ("X-Real-IP",), ("X-Real-IP",)),
        ("use_leftmost_ip", True, True),
        ("use_leftmost_ip", 1, True),
        ("use_leftmost_ip", 0, False),
        ("use_leftmost_ip", None, False),
        ("cors_origins", None, None),
        ("cors_origins", "*", "*"),
        ("cors_origins", ["https://a.example", "https://b.example"], ("https://a.example", "https://b.example")),
        ("cors_origins", [], ()),
        ("max_body_size", 10, 10),
        ("max_message_size", 1, 1),
        ("channel_prefix", "shop", "shop"),
        ("channel_prefix", "shop:eu-1", "shop:eu-1"),
        ("backplane_secret", None, None),
        ("backplane_secret", SECRET, SECRET.encode()),
        ("backplane_secret", SECRET.encode(), SECRET.encode()),
        ("backplane_secret", "é" * 8, ("é" * 8).encode("utf-8")),  # 8 characters, 16 UTF-8 bytes
        ("forward_timeout", 0.5, 0.5),
        ("forward_headers", ["Authorization", "Cookie"], ("Authorization", "Cookie")),
        ("forward_headers", [], ()),
        ("graceful_shutdown", False, False),
        ("graceful_shutdown", 0, False),
        ("metrics_path", None, None),
        ("metrics_path", "/metrics", "/metrics"),
        ("metrics_path", "/ops/metrics/", "/ops/metrics"),
    ],
)
def test_accepted_values_are_stored_in_their_checked_form(name: str, value: Any, expected: Any) -> None:
    checked = getattr(settings(**{name: value}), name)
    assert checked == expected
    assert type(checked) is type(expected)


def test_numbers_of_seconds_become_floats_and_counts_stay_ints() -> None:
    checked = settings(idle_timeout=3, max_lifetime=4, send_timeout=5, disconnect_poll=6, forward_timeout=7, chunk_size=8)
    assert [type(v) for v in (checked.idle_timeout, checked.max_lifetime, checked.send_timeout,
                              checked.disconnect_poll, checked.forward_timeout)] == [float] * 5
    assert type(checked.chunk_size) is int


def test_header_and_origin_lists_are_copied_into_tuples() -> None:
    headers, origins = ["X-Real-IP"], ["https://a.example"]
    checked = settings(trusted_proxy_headers=headers, cors_origins=origins, forward_headers=headers)
    headers.append("X-Forwarded-For")
    origins.append("https://evil.example")
    assert checked.trusted_proxy_headers == ("X-Real-IP",) and checked.forward_headers == ("X-Real-IP",)
    assert checked.cors_origins == ("https://a.example",)


# -- refused values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("url_prefix", "", "must be a path starting with '/'"),
        ("url_prefix", None, "must be a path starting with '/'"),
        ("url_prefix", b"/rt", "must be a path starting with '/'"),
        ("idle_timeout", -1, "must be > 0"),
        ("idle_timeout", True, "must be a number, not True"),
        ("idle_timeout", None, "must be a number, not None"),
        ("max_lifetime", 0, "must be > 0"),
        ("max_lifetime", False, "must be a number, not False"),
        ("max_lifetime", "1800", "must be a number, not '1800'"),
        ("lifetime_jitter", -0.1, "must be >= 0"),
        ("lifetime_jitter", 1.5, "must be below 1"),
        ("lifetime_jitter", True, "must be a number"),
        ("heartbeat", -0.5, "must be >= 0"),
        ("heartbeat", True, "must be a number"),
        ("heartbeat", "25", "must be a number"),
        ("send_timeout", 0, "must be > 0"),
        ("send_timeout", True, "must be a number"),
        ("chunk_size", -1, "must be a whole number >= 1"),
        ("chunk_size", True, "must be a whole number >= 1, not True"),
        ("chunk_size", 2.0, "must be a whole number >= 1, not 2.0"),
        ("chunk_size", "300", "must be a whole number >= 1"),
        ("pool_size", 0, "must be a whole number >= 1"),
        ("pool_size", True, "must be a whole number >= 1"),
        ("client_queue_size", 0, "must be a whole number >= 1"),
        ("client_queue_size", True, "must be a whole number >= 1"),
        ("client_queue_bytes", 0, "must be a whole number >= 1"),
        ("client_queue_bytes", True, "must be a whole number >= 1"),
        ("max_clients", -1, "must be a whole number >= 0"),
        ("max_clients", True, "must be a whole number >= 0, not True"),
        ("max_clients", 1.5, "must be a whole number >= 0"),
        ("max_clients", "many", "must be a whole number >= 0, not 'many'"),
        ("max_clients_per_ip", -1, "must be a whole number >= 0"),
        ("max_clients_per_ip", True, "must be a whole number >= 0"),
        ("max_clients_per_ip", "AUTO", "must be a whole number >= 0"),
        ("max_subscription_bytes", 0, "must be a whole number >= 1"),
        ("max_subscription_bytes", True, "must be a whole number >= 1"),
        ("subscription_memory", 0, "must be a whole number >= 1"),
        ("subscription_memory", True, "must be a whole number >= 1"),
        ("concurrency", "Gevent", "must be 'auto', 'gevent' or 'threading', not 'Gevent'"),
        ("concurrency", "threads", "must be 'auto', 'gevent' or 'threading'"),
        ("concurrency", None, "must be 'auto', 'gevent' or 'threading', not None"),
        ("disconnect_poll", 0, "must be > 0"),
        ("disconnect_poll", True, "must be a number"),
        ("trusted_proxy_headers", ["X-Real-IP", 1], "must be a list of header names"),
        ("trusted_proxy_headers", b"X-Real-IP", "must be a list of header names"),
        ("cors_origins", "", "must be '*', None or a list of origins"),
        ("cors_origins", ["https://a.example", None], "must be '*', None or a list of origins"),
        ("max_body_size", 0, "must be a whole number >= 1"),
        ("max_body_size", True, "must be a whole number >= 1"),
        ("max_message_size", 0, "must be a whole number >= 1"),
        ("max_message_size", True, "must be a whole number >= 1"),
        ("channel_prefix", "", "must be a non-empty string without whitespace"),
        ("channel_prefix", "my shop", "must be a non-empty string without whitespace"),
        ("channel_prefix", "shop\t", "must be a non-empty string without whitespace"),
        ("channel_prefix", None, "must be a non-empty string without whitespace"),
        ("channel_prefix", 5, "must be a non-empty string without whitespace"),
        ("backplane_secret", "0123456789abcde", "must be None or a str/bytes secret of at least 16 bytes"),
        ("backplane_secret", b"x" * 15, "must be None or a str/bytes secret of at least 16 bytes"),
        ("backplane_secret", "é" * 7, "must be None or a str/bytes secret of at least 16 bytes"),  # 14 UTF-8 bytes
        ("backplane_secret", bytearray(32), "must be None or a str/bytes secret"),
        ("backplane_secret", 12345678901234567890, "must be None or a str/bytes secret"),
        ("forward_timeout", 0, "must be > 0"),
        ("forward_timeout", True, "must be a number"),
        ("forward_headers", "Authorization", "must be a list of header names, not 'Authorization'"),
        ("forward_headers", [b"Authorization"], "must be a list of header names"),
        ("metrics_path", "", "must be a path starting with '/'"),
        ("metrics_path", 5, "must be a path starting with '/'"),
    ],
)
def test_a_refused_value_raises_a_configuration_error_naming_the_key(name: str, value: Any, message: str) -> None:
    key = f"RTBROKER_{name.upper()}"
    with pytest.raises(ConfigurationError, match="^" + re.escape(f"{key} {message}")):
        settings(**{name: value})


def test_a_configuration_error_is_an_rtbroker_error_and_a_value_error() -> None:
    with pytest.raises(ConfigurationError) as refused:
        settings(chunk_size=0)
    assert isinstance(refused.value, RtBrokerError) and isinstance(refused.value, ValueError)


def test_a_refused_secret_is_not_repeated_in_the_error() -> None:
    almost = "hunter2-is-short"[:-1]  # 15 bytes
    with pytest.raises(ConfigurationError) as refused:
        settings(backplane_secret=almost)
    assert almost not in str(refused.value)


def test_the_secret_is_kept_out_of_the_settings_repr() -> None:
    checked = settings(backplane_secret=SECRET)
    assert checked.backplane_secret == SECRET.encode()
    assert SECRET not in repr(checked) and "backplane_secret" not in repr(checked)


def test_the_first_bad_key_in_field_order_is_the_one_reported() -> None:
    with pytest.raises(ConfigurationError, match="^RTBROKER_URL_PREFIX "):
        settings(url_prefix="api", idle_timeout=0, metrics_path="metrics")


# -- derived values and cross-key checks ----------------------------------------------------------


def test_the_message_size_may_equal_the_client_queue_budget_but_not_pass_it() -> None:
    assert settings(max_message_size=1000, client_queue_bytes=1000).max_message_size == 1000
    with pytest.raises(ConfigurationError, match=r"^RTBROKER_MAX_MESSAGE_SIZE \(1001\) must not exceed RTBROKER_CLIENT_QUEUE_BYTES \(1000\)"):
        settings(max_message_size=1001, client_queue_bytes=1000)


def test_the_default_message_size_must_fit_a_smaller_client_queue_budget() -> None:
    with pytest.raises(ConfigurationError, match="RTBROKER_MAX_MESSAGE_SIZE"):
        settings(client_queue_bytes=DEFAULTS["RTBROKER_MAX_MESSAGE_SIZE"] - 1)


@pytest.mark.parametrize(
    ("max_clients", "max_clients_per_ip", "expected"),
    [
        (100, "auto", (100, 25)),
        (3, "auto", (3, 1)),  # a quarter, but at least one
        (1, "auto", (1, 1)),
        (0, "auto", (0, 0)),  # no process limit: no per-address limit either
        ("auto", 7, (FALLBACK_MAX_CLIENTS, 7)),
        ("auto", 0, (FALLBACK_MAX_CLIENTS, 0)),
        (40, 50, (40, 50)),  # explicit values are kept as they are
    ],
)
def test_auto_stream_limits_are_resolved_from_the_other_limit(
    max_clients: Any, max_clients_per_ip: Any, expected: tuple[int, int]
) -> None:
    checked = settings(max_clients=max_clients, max_clients_per_ip=max_clients_per_ip)
    assert (checked.max_clients, checked.max_clients_per_ip) == expected


@pytest.mark.parametrize(
    ("connections", "expected"),
    [
        (5, (1, 1)),  # fewer connections than the 10 kept free: still one stream
        (10, (1, 1)),
        (20, (10, 2)),  # at least 10 stay free for ordinary requests
        (200, (180, 45)),  # a tenth stays free once that is more than 10
        (4000, (3600, 900)),
    ],
)
def test_auto_stream_limits_leave_room_for_ordinary_requests(connections: int, expected: tuple[int, int]) -> None:
    assert resolve_stream_limits(None, None, connections) == expected


def test_settings_are_frozen() -> None:
    checked = Settings.from_config({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        checked.idle_timeout = 1.0  # type: ignore[misc]


# -- load_env --------------------------------------------------------------------------------------


def test_load_env_reads_json_values_and_keeps_the_rest_as_text() -> None:
    config: dict[str, Any] = {"RTBROKER_HEARTBEAT": 25.0, "OTHER": "kept"}
    load_env(config, {
        "RTBROKER_HEARTBEAT": "0",
        "RTBROKER_METRICS_PATH": "null",
        "RTBROKER_USE_LEFTMOST_IP": "true",
        "RTBROKER_CORS_ORIGINS": '["https://a.example"]',
        "RTBROKER_CONCURRENCY": "gevent",
        "RTBROKER_CHANNEL_PREFIX": "[broken",
        "RTBROKER_BACKPLANE_SECRET": '"' + SECRET + '"',
        "rtbroker_chunk_size": "5",
        "HOME": "/root",
    })
    assert config == {
        "RTBROKER_HEARTBEAT": 0,
        "RTBROKER_METRICS_PATH": None,
        "RTBROKER_USE_LEFTMOST_IP": True,
        "RTBROKER_CORS_ORIGINS": ["https://a.example"],
        "RTBROKER_CONCURRENCY": "gevent",
        "RTBROKER_CHANNEL_PREFIX": "[broken",
        "RTBROKER_BACKPLANE_SECRET": SECRET,
        "OTHER": "kept",
    }
    checked = Settings.from_config(config)
    assert (checked.heartbeat, checked.metrics_path, checked.use_leftmost_ip) == (0.0, None, True)
    assert checked.cors_origins == ("https://a.example",) and checked.backplane_secret == SECRET.encode()


def test_load_env_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTBROKER_POOL_SIZE", "4")
    monkeypatch.setenv("RTBROKER_URL_PREFIX", "/live")
    config: dict[str, Any] = {}
    load_env(config)
    assert config["RTBROKER_POOL_SIZE"] == 4 and config["RTBROKER_URL_PREFIX"] == "/live"
    assert all(key.startswith("RTBROKER_") for key in config)


def test_a_bad_value_from_the_environment_is_refused_by_the_checks() -> None:
    config: dict[str, Any] = {}
    load_env(config, {"RTBROKER_POOL_SIZE": "four"})
    with pytest.raises(ConfigurationError, match="^RTBROKER_POOL_SIZE must be a whole number >= 1, not 'four'"):
        Settings.from_config(config)
