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
        "queue_memory": 128 * 1024 * 1024,
        "max_clients": FALLBACK_MAX_CLIENTS,  # "auto" outside a gunicorn event-loop worker
        "max_clients_per_ip": FALLBACK_MAX_CLIENTS // 4,
        "max_subscription_bytes": 512 * 1024,
        "subscription_memory": 256 * 1024 * 1024,
        "max_subscription_changes": 2000,
        "max_option_sets": 16,
        "max_evaluations": 20_000,
        "concurrency": "auto",
        "disconnect_poll": 0.5,
        "trusted_proxy_headers": (),
        "use_leftmost_ip": False,
        "cors_origins": "*",
        "max_body_size": 1024 * 1024,
        "max_message_size": 4 * 1024 * 1024,
        "channel_prefix": "flask_rtbroker",
        "allow_local_backplane": False,
        "backplane_secret": None,
        "backplane_max_age": 30.0,
        "backplane_accept_unstamped": False,
        "forward_timeout": 2.0,
        "forward_headers": ("Authorization",),
        "resume_window": 30.0,
        "resume_max_ghosts": 10000,
        "resume_memory": 64 * 1024 * 1024,
        "topic_denied_event": False,
        "presence_grace": 5.0,
        "presence_ttl": 15.0,
        "presence_sync_limit": 1000,
        "graceful_shutdown": True,
        "metrics_path": None,
        "write_through": True,
        "oauth2_redirect_path": "/api/oauth2-redirect",
        "oauth2_success_url": None,
        "oauth2_failure_url": None,
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
        ("heartbeat", 0.0, 0.0),
        ("send_timeout", 0.25, 0.25),
        ("chunk_size", 1, 1),
        ("pool_size", 1, 1),
        ("client_queue_size", 1, 1),
        ("max_clients", 0, 0),
        ("max_clients", None, 0),
        ("max_clients", 7, 7),
        ("max_clients_per_ip", 0, 0),
        ("max_clients_per_ip", 3, 3),
        ("max_clients_per_ip", None, 0),
        ("max_subscription_bytes", 1, 1),
        ("subscription_memory", 1, 1),
        ("max_subscription_changes", 1, 1),
        ("max_subscription_changes", 0, 0),
        ("max_subscription_changes", None, 0),
        ("concurrency", "auto", "auto"),
        ("concurrency", "gevent", "gevent"),
        ("concurrency", "threading", "threading"),
        ("disconnect_poll", 2, 2.0),
        ("trusted_proxy_headers", ["X-Real-IP", "CF-Connecting-IP"], ("X-Real-IP", "CF-Connecting-IP")),
        ("trusted_proxy_headers", ("X-Real-IP",), ("X-Real-IP",)),
        ("trusted_proxy_headers", [], ()),
        ("use_leftmost_ip", True, True),
        ("use_leftmost_ip", False, False),
        ("use_leftmost_ip", 1, True),
        ("use_leftmost_ip", 0, False),
        # the words an environment variable spells a flag with, in any case
        ("use_leftmost_ip", "true", True),
        ("use_leftmost_ip", "TRUE", True),
        ("use_leftmost_ip", "yes", True),
        ("use_leftmost_ip", "On", True),
        ("use_leftmost_ip", "1", True),
        ("use_leftmost_ip", "False", False),
        ("use_leftmost_ip", "no", False),
        ("use_leftmost_ip", "OFF", False),
        ("use_leftmost_ip", "0", False),
        ("use_leftmost_ip", " false\n", False),
        ("cors_origins", None, None),
        ("cors_origins", "*", "*"),
        ("cors_origins", ["https://a.example", "https://b.example"], ("https://a.example", "https://b.example")),
        ("cors_origins", ("https://a.example",), ("https://a.example",)),
        ("cors_origins", [], ()),
        ("max_body_size", 10, 10),
        ("max_message_size", 1, 1),
        ("channel_prefix", "shop", "shop"),
        ("channel_prefix", "shop:eu-1", "shop:eu-1"),
        ("backplane_secret", None, None),
        ("backplane_secret", SECRET, SECRET.encode()),
        ("backplane_secret", SECRET.encode(), SECRET.encode()),
        ("backplane_secret", "é" * 8, ("é" * 8).encode("utf-8")),  # 8 characters, 16 UTF-8 bytes
        ("backplane_max_age", 5, 5.0),
        ("backplane_accept_unstamped", True, True),
        ("forward_timeout", 0.5, 0.5),
        ("forward_headers", ["Authorization", "Cookie"], ("Authorization", "Cookie")),
        ("forward_headers", [], ()),
        ("graceful_shutdown", False, False),
        ("graceful_shutdown", 0, False),
        ("graceful_shutdown", True, True),
        ("graceful_shutdown", "False", False),
        ("graceful_shutdown", "off", False),
        ("graceful_shutdown", "Yes", True),
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
        ("idle_timeout", float("nan"), "must be a finite number, not nan"),
        ("idle_timeout", float("inf"), "must be a finite number, not inf"),
        ("idle_timeout", float("-inf"), "must be a finite number, not -inf"),
        pytest.param("idle_timeout", 10**400, "must be a finite number", id="idle_timeout-int-past-the-float-range"),
        ("max_lifetime", 0, "must be > 0"),
        ("max_lifetime", False, "must be a number, not False"),
        ("max_lifetime", "1800", "must be a number, not '1800'"),
        ("max_lifetime", float("inf"), "must be a finite number, not inf"),
        ("max_lifetime", float("nan"), "must be a finite number, not nan"),
        ("lifetime_jitter", -0.1, "must be >= 0"),
        ("lifetime_jitter", 1.5, "must be below 1"),
        ("lifetime_jitter", True, "must be a number"),
        ("lifetime_jitter", float("nan"), "must be a finite number, not nan"),
        ("heartbeat", -0.5, "must be >= 0"),
        ("heartbeat", True, "must be a number"),
        ("heartbeat", "25", "must be a number"),
        ("heartbeat", float("nan"), "must be a finite number, not nan"),
        ("heartbeat", float("inf"), "must be a finite number, not inf"),  # 0 is "never"
        ("heartbeat", "", "must be a number, not ''"),  # an empty value is not 0
        ("heartbeat", False, "must be a number, not False"),
        ("heartbeat", [], "must be a number, not []"),
        ("send_timeout", 0, "must be > 0"),
        ("send_timeout", True, "must be a number"),
        ("send_timeout", float("inf"), "must be a finite number"),
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
        ("queue_memory", 0, "must be a whole number >= 1"),
        ("max_option_sets", 0, "must be a whole number >= 1"),
        ("max_evaluations", 0, "must be a whole number >= 1"),
        ("max_clients", -1, "must be a whole number >= 0"),
        ("max_clients", True, "must be a whole number >= 0 (0 or None = no limit) or 'auto', not True"),
        ("max_clients", 1.5, "must be a whole number >= 0"),
        ("max_clients", "many", "must be a whole number >= 0 (0 or None = no limit) or 'auto', not 'many'"),
        # empty or false values are not "no limit": only 0 and None are
        ("max_clients", "", "must be a whole number >= 0 (0 or None = no limit) or 'auto', not ''"),
        ("max_clients", False, "must be a whole number >= 0 (0 or None = no limit) or 'auto', not False"),
        ("max_clients", [], "must be a whole number >= 0 (0 or None = no limit) or 'auto', not []"),
        ("max_clients", 0.0, "must be a whole number >= 0 (0 or None = no limit) or 'auto', not 0.0"),
        ("max_clients", 1.0, "must be a whole number >= 0 (0 or None = no limit) or 'auto', not 1.0"),
        ("max_clients_per_ip", -1, "must be a whole number >= 0"),
        ("max_clients_per_ip", True, "must be a whole number >= 0"),
        ("max_clients_per_ip", "AUTO", "must be a whole number >= 0"),
        ("max_clients_per_ip", "", "must be a whole number >= 0 (0 or None = no limit) or 'auto', not ''"),
        ("max_clients_per_ip", False, "must be a whole number >= 0 (0 or None = no limit) or 'auto', not False"),
        ("max_clients_per_ip", 0.0, "must be a whole number >= 0"),
        ("max_subscription_bytes", 0, "must be a whole number >= 1"),
        ("max_subscription_bytes", True, "must be a whole number >= 1"),
        ("subscription_memory", 0, "must be a whole number >= 1"),
        ("subscription_memory", True, "must be a whole number >= 1"),
        ("max_subscription_changes", -1, "must be a whole number >= 0 (0 or None = no limit), not -1"),
        ("max_subscription_changes", True, "must be a whole number >= 0 (0 or None = no limit), not True"),
        ("max_subscription_changes", 1.5, "must be a whole number >= 0 (0 or None = no limit), not 1.5"),
        ("max_subscription_changes", "", "must be a whole number >= 0 (0 or None = no limit), not ''"),
        ("concurrency", "Gevent", "must be 'auto', 'gevent' or 'threading', not 'Gevent'"),
        ("concurrency", "threads", "must be 'auto', 'gevent' or 'threading'"),
        ("concurrency", None, "must be 'auto', 'gevent' or 'threading', not None"),
        ("disconnect_poll", 0, "must be > 0"),
        ("disconnect_poll", True, "must be a number"),
        ("disconnect_poll", float("nan"), "must be a finite number, not nan"),
        ("trusted_proxy_headers", ["X-Real-IP", 1], "must be a list of header names"),
        ("trusted_proxy_headers", b"X-Real-IP", "must be a list of header names"),
        ("trusted_proxy_headers", None, "must be a list of header names (a list or tuple of strings), not None"),
        ("trusted_proxy_headers", 5, "must be a list of header names (a list or tuple of strings), not 5"),
        ("trusted_proxy_headers", {"X-Real-IP": 1}, "must be a list of header names (a list or tuple of strings)"),
        ("trusted_proxy_headers", {"X-Real-IP"}, "must be a list of header names (a list or tuple of strings)"),
        ("trusted_proxy_headers", iter(["X-Real-IP"]), "must be a list of header names"),
        ("use_leftmost_ip", None, "must be True or False (or 1/0, true/false, yes/no, on/off), not None"),
        ("use_leftmost_ip", "", "must be True or False (or 1/0, true/false, yes/no, on/off), not ''"),
        ("use_leftmost_ip", "maybe", "must be True or False"),
        ("use_leftmost_ip", "t", "must be True or False"),
        ("use_leftmost_ip", 2, "must be True or False (or 1/0, true/false, yes/no, on/off), not 2"),
        ("use_leftmost_ip", 1.0, "must be True or False"),
        ("use_leftmost_ip", [], "must be True or False"),
        ("cors_origins", "", "must be '*', None or a list of origins"),
        ("cors_origins", ["https://a.example", None], "must be '*', None or a list of origins"),
        ("cors_origins", 5, "must be '*', None or a list of origins (a list or tuple of strings), not 5"),
        ("cors_origins", {"https://a.example": 1}, "must be '*', None or a list of origins (a list or tuple of strings)"),
        ("cors_origins", "https://a.example", "must be '*', None or a list of origins"),
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
        ("forward_timeout", float("inf"), "must be a finite number, not inf"),
        ("forward_headers", "Authorization", "must be a list of header names (a list or tuple of strings), not 'Authorization'"),
        ("forward_headers", [b"Authorization"], "must be a list of header names"),
        ("forward_headers", 5, "must be a list of header names (a list or tuple of strings), not 5"),
        ("forward_headers", None, "must be a list of header names (a list or tuple of strings), not None"),
        ("graceful_shutdown", None, "must be True or False"),
        ("graceful_shutdown", "nope", "must be True or False"),
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


def test_the_process_queue_memory_must_hold_one_client_queue() -> None:
    assert settings(queue_memory=8 * 1024 * 1024).queue_memory == 8 * 1024 * 1024
    with pytest.raises(ConfigurationError, match=r"^RTBROKER_QUEUE_MEMORY \(1000\) must be at least RTBROKER_CLIENT_QUEUE_BYTES"):
        settings(queue_memory=1000)


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


def test_empty_environment_variables_are_refused_not_taken_as_no_limit() -> None:
    for key in ("RTBROKER_MAX_CLIENTS_PER_IP", "RTBROKER_MAX_CLIENTS"):
        config: dict[str, Any] = {}
        load_env(config, {key: ""})
        assert config == {key: ""}
        with pytest.raises(ConfigurationError, match=f"^{key} must be a whole number >= 0 .* or 'auto', not ''"):
            Settings.from_config(config)
    config = {}
    load_env(config, {"RTBROKER_HEARTBEAT": ""})
    with pytest.raises(ConfigurationError, match="^RTBROKER_HEARTBEAT must be a number, not ''"):
        Settings.from_config(config)


@pytest.mark.parametrize("key", ["RTBROKER_FORWARD_HEADERS", "RTBROKER_TRUSTED_PROXY_HEADERS"])
@pytest.mark.parametrize("text", ["null", "5", '{"X-Real-IP": 1}', "X-Real-IP,Cookie", '"X-Real-IP"'])
def test_a_header_list_from_the_environment_that_is_not_a_json_list_is_refused(key: str, text: str) -> None:
    config: dict[str, Any] = {}
    load_env(config, {key: text})
    with pytest.raises(ConfigurationError, match=f"^{key} must be a list of header names \\(a list or tuple of strings\\)"):
        Settings.from_config(config)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("yes", True), ("ON", True),
     ("false", False), ("False", False), ("0", False), ("no", False), ("off", False), ("Off", False)],
)
def test_flags_from_the_environment_mean_what_they_say(text: str, expected: bool) -> None:
    config: dict[str, Any] = {}
    load_env(config, {"RTBROKER_USE_LEFTMOST_IP": text, "RTBROKER_GRACEFUL_SHUTDOWN": text})
    checked = Settings.from_config(config)
    assert (checked.use_leftmost_ip, checked.graceful_shutdown) == (expected, expected)


@pytest.mark.parametrize("text", ["", "null", "2", "maybe", "Flase", "[]"])
def test_a_flag_from_the_environment_that_is_no_flag_word_is_refused(text: str) -> None:
    config: dict[str, Any] = {}
    load_env(config, {"RTBROKER_USE_LEFTMOST_IP": text})
    with pytest.raises(ConfigurationError, match="^RTBROKER_USE_LEFTMOST_IP must be True or False"):
        Settings.from_config(config)


def test_a_number_of_seconds_past_the_float_range_from_the_environment_is_refused() -> None:
    config: dict[str, Any] = {}
    load_env(config, {"RTBROKER_IDLE_TIMEOUT": "1e400"})  # JSON for infinity
    with pytest.raises(ConfigurationError, match="^RTBROKER_IDLE_TIMEOUT must be a finite number, not inf"):
        Settings.from_config(config)


def test_load_env_keeps_text_settings_as_text_even_when_they_look_like_json() -> None:
    digits = "1234567890123456"  # a 16-digit secret, JSON for a number
    config: dict[str, Any] = {}
    load_env(config, {
        "RTBROKER_BACKPLANE_SECRET": digits,
        "RTBROKER_CHANNEL_PREFIX": "2024",
        "RTBROKER_CONCURRENCY": "true",
        "RTBROKER_POOL_SIZE": "4",  # numbers stay numbers elsewhere
    })
    assert config == {"RTBROKER_BACKPLANE_SECRET": digits, "RTBROKER_CHANNEL_PREFIX": "2024",
                      "RTBROKER_CONCURRENCY": "true", "RTBROKER_POOL_SIZE": 4}
    with pytest.raises(ConfigurationError, match="^RTBROKER_CONCURRENCY must be 'auto', 'gevent' or 'threading', not 'true'"):
        Settings.from_config(config)
    del config["RTBROKER_CONCURRENCY"]
    checked = Settings.from_config(config)
    assert checked.backplane_secret == digits.encode() and checked.channel_prefix == "2024"


def test_load_env_still_decodes_json_strings_and_null_for_text_settings() -> None:
    config: dict[str, Any] = {}
    load_env(config, {"RTBROKER_BACKPLANE_SECRET": '"' + SECRET + '"', "RTBROKER_METRICS_PATH": "null",
                      "RTBROKER_CHANNEL_PREFIX": '"shop"'})
    assert config == {"RTBROKER_BACKPLANE_SECRET": SECRET, "RTBROKER_METRICS_PATH": None, "RTBROKER_CHANNEL_PREFIX": "shop"}
    config = {}
    load_env(config, {"RTBROKER_BACKPLANE_SECRET": "null"})
    assert config == {"RTBROKER_BACKPLANE_SECRET": None}
