"""The OAuth2 redirect endpoint in process: PocketBase's checks, the event's bytes, every bad
input answered with the failure redirect, and the owner lookup across apps on one memory bus
(the live runs with Redis, Node and Chromium are in tests/test_oauth2.py)."""

from __future__ import annotations

import logging
import secrets
from typing import Any

import pytest
from flask import Flask, current_app

from flask_rtbroker import RealtimeBroker
from flask_rtbroker.client import IP_KEY, DefaultClient
from flask_rtbroker.errors import ConfigurationError
from flask_rtbroker.oauth2_redirect import KIND_REDIRECT, OAUTH2_TOPIC, RedirectData, fingerprint
from flask_rtbroker.testing import parse_events
from tests.test_cluster import Intruder, Node, bus_url, make_cluster  # noqa: F401 - fixtures

SUCCESS = "/api/oauth2-redirect/success"
FAILURE = "/api/oauth2-redirect/failure"


@pytest.fixture
def node() -> Node:
    app = Flask(__name__)
    app.config.update(RTBROKER_CONCURRENCY="threading", RTBROKER_GRACEFUL_SHUTDOWN=False)
    return Node(app, RealtimeBroker(app))


def events(client: Any) -> list[tuple[str, Any]]:
    return [(event.name, event.json()) for event in parse_events(client.take())]


def redirect(node: Node, method: str = "GET", **kwargs: Any) -> tuple[int, str]:
    response = node.app.test_client().open("/api/oauth2-redirect", method=method, **kwargs)
    assert response.data == b"" and "Content-Type" not in response.headers
    return response.status_code, response.headers["Location"]


def test_a_get_redirect_sends_the_event_once_and_lands_on_the_success_page(node: Node) -> None:
    client = node.connect(OAUTH2_TOPIC, "other")
    assert redirect(node, query_string={"state": client.id, "code": "c<&>\u2028"}) == (307, SUCCESS)
    frame = client.take()
    assert frame.endswith(b"event:@oauth2\ndata:{\"state\":\"" + client.id.encode()
                          + b"\",\"code\":\"c\\u003c\\u0026\\u003e\\u2028\"}\n\n"), frame
    assert client.subscriptions().keys() == {"other"}, "@oauth2 is taken off: one redirect per sign-in"
    assert redirect(node, query_string={"state": client.id, "code": "again"}) == (307, FAILURE)
    assert events(client) == [], "a replayed redirect reaches nobody"


def test_a_form_post_redirect_answers_303_and_a_provider_error_is_sent_then_fails(node: Node) -> None:
    client = node.connect(OAUTH2_TOPIC)
    assert redirect(node, "POST", data={"state": client.id, "code": "abc", "user": "{}"}) == (303, SUCCESS)
    assert events(client) == [(OAUTH2_TOPIC, {"state": client.id, "code": "abc"})]
    client.subscribe(OAUTH2_TOPIC)
    assert redirect(node, "POST", json={"state": client.id, "error": "access_denied"}) == (303, FAILURE)
    assert events(client) == [(OAUTH2_TOPIC, {"state": client.id, "code": "", "error": "access_denied"})]
    client.subscribe(OAUTH2_TOPIC)
    assert redirect(node, query_string={"state": client.id}) == (307, FAILURE), "no code: failure"
    assert events(client) == [(OAUTH2_TOPIC, {"state": client.id, "code": ""})]


def test_a_catch_all_topic_rule_does_not_judge_the_sign_in_event(node: Node) -> None:
    node.broker.topic_rule("*", lambda client, topic, auth: auth is not None)  # guests read no topic
    client = node.connect(OAUTH2_TOPIC)
    assert redirect(node, query_string={"state": client.id, "code": "abc"}) == (307, SUCCESS)
    assert events(client) == [(OAUTH2_TOPIC, {"state": client.id, "code": "abc"})]


def test_a_client_without_oauth2_another_ip_or_discarded_gets_nothing(node: Node) -> None:
    plain = node.connect("posts")
    assert redirect(node, query_string={"state": plain.id, "code": "x"}) == (307, FAILURE)
    assert events(plain) == [] and plain.subscriptions().keys() == {"posts"}
    elsewhere = node.connect(OAUTH2_TOPIC)
    elsewhere.set(IP_KEY, "10.9.8.7")
    assert redirect(node, query_string={"state": elsewhere.id, "code": "x"}) == (307, FAILURE)
    assert events(elsewhere) == [] and not elsewhere.has_subscription(OAUTH2_TOPIC)
    gone = node.connect(OAUTH2_TOPIC)
    gone.discard()
    assert redirect(node, query_string={"state": gone.id, "code": "x"}) == (307, FAILURE)


def test_a_client_the_app_registered_itself_is_reached_without_an_ip_check(node: Node) -> None:
    custom = DefaultClient("my-own-client-id")
    node.broker.subscriptions_broker.register(custom)
    custom.subscribe(OAUTH2_TOPIC)
    assert redirect(node, query_string={"state": "my-own-client-id", "code": "x"}) == (307, SUCCESS)
    assert events(custom) == [(OAUTH2_TOPIC, {"state": "my-own-client-id", "code": "x"})]


@pytest.mark.parametrize("kwargs", [
    {"query_string": {"code": "x"}},
    {"query_string": {"state": "", "code": "x"}},
    {"query_string": {"state": "a" * 40, "code": "x"}},
    {"query_string": {"state": "a" * 256, "code": "x"}},
    {"query_string": {"state": "é" * 40, "code": "x"}},
    {"method": "POST", "data": b"state=" + b"a" * (1024 * 1024 + 1), "content_type": "application/x-www-form-urlencoded"},
    {"method": "POST", "data": b"--b\r\n" * 5000, "content_type": "multipart/form-data; boundary=b"},
    {"method": "POST", "data": "&".join(f"f{i}=1" for i in range(5000)), "content_type": "application/x-www-form-urlencoded"},
    {"method": "POST", "data": b'{"state": ["a"]}', "content_type": "application/json"},
    {"method": "POST", "data": b"[" * 100000, "content_type": "application/json"},
    {"method": "POST", "data": b"\xff\xfe", "content_type": "application/json"},
    {"method": "POST", "data": b"\xff\xfe", "content_type": "application/x-www-form-urlencoded"},
])
def test_bad_input_is_a_failure_redirect_never_an_error(node: Node, kwargs: dict[str, Any]) -> None:
    method = kwargs.pop("method", "GET")
    assert redirect(node, method, **kwargs) == (307 if method == "GET" else 303, FAILURE)


def test_the_pages_and_the_configurable_targets() -> None:
    app = Flask(__name__)
    app.config.update(RTBROKER_URL_PREFIX="/pb/api/realtime", RTBROKER_GRACEFUL_SHUTDOWN=False,
                      RTBROKER_OAUTH2_SUCCESS_URL="https://app.example/signed-in",
                      RTBROKER_OAUTH2_FAILURE_URL="/sign-in?failed=1")
    node = Node(app, RealtimeBroker(app))
    http = app.test_client()
    client = node.connect(OAUTH2_TOPIC)
    answer = http.get("/pb/api/oauth2-redirect", query_string={"state": client.id, "code": "x"})
    assert (answer.status, answer.headers["Location"]) == ("307 Temporary Redirect", "https://app.example/signed-in")
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    answer = http.post("/pb/api/oauth2-redirect", data={"state": client.id, "code": "x"})
    assert (answer.status, answer.headers["Location"]) == ("303 See Other", "/sign-in?failed=1")
    for page, words in (("success", b"close this window"), ("failure", b"try again")):
        shown = http.get(f"/pb/api/oauth2-redirect/{page}")
        assert shown.status_code == 200 and words in shown.data and shown.mimetype == "text/html"
    assert http.get("/api/oauth2-redirect").status_code == 404


def test_the_endpoint_can_be_turned_off_and_bad_settings_are_refused() -> None:
    app = Flask(__name__)
    app.config.update(RTBROKER_OAUTH2_REDIRECT_PATH=None, RTBROKER_GRACEFUL_SHUTDOWN=False)
    RealtimeBroker(app)
    assert app.test_client().get("/api/oauth2-redirect").status_code == 404
    for key, value in (("RTBROKER_OAUTH2_REDIRECT_PATH", "oauth2"), ("RTBROKER_OAUTH2_SUCCESS_URL", "/a b"),
                       ("RTBROKER_OAUTH2_FAILURE_URL", "")):
        bad = Flask(__name__)
        bad.config[key] = value
        with pytest.raises(ConfigurationError, match=key):
            RealtimeBroker(bad)


def test_the_state_is_never_logged_in_clear(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="flask_rtbroker")
    client = node.connect(OAUTH2_TOPIC)
    redirect(node, query_string={"state": client.id, "error": "denied"})
    redirect(node, query_string={"state": client.id, "code": "replayed"})
    assert caplog.records, "failures are logged at debug level"
    assert client.id not in caplog.text and fingerprint(client.id) in caplog.text


def test_the_event_payload_is_go_s_json_marshal() -> None:
    assert RedirectData("s", "c").event_payload() == b'{"state":"s","code":"c"}'
    assert RedirectData("s", "", "e>").event_payload() == b'{"state":"s","code":"","error":"e\\u003e"}'


# -- across processes (apps on one memory bus) --------------------------------------------------


def test_the_redirect_reaches_a_client_held_by_another_process(make_cluster) -> None:  # noqa: F811
    a, b = make_cluster(2)
    hooked: list[tuple[str, str]] = []

    @a.broker.before_send
    def before_send(client: Any, message: Any) -> Any:
        hooked.append((message.name, current_app.name))  # the owner runs it in its app context
        return message

    client = a.connect(OAUTH2_TOPIC)
    assert redirect(b, query_string={"state": client.id, "code": "from-b"}) == (307, SUCCESS)
    assert events(client) == [(OAUTH2_TOPIC, {"state": client.id, "code": "from-b"})]
    assert hooked == [(OAUTH2_TOPIC, a.app.name)]
    assert redirect(b, "POST", data={"state": client.id, "code": "again"}) == (303, FAILURE), "replay"
    plain = a.connect("posts")
    assert redirect(b, query_string={"state": plain.id, "code": "x"}) == (307, FAILURE)
    elsewhere = a.connect(OAUTH2_TOPIC)
    elsewhere.set(IP_KEY, "10.1.1.1")
    assert redirect(b, query_string={"state": elsewhere.id, "code": "x"}) == (307, FAILURE)
    assert events(plain) == [] and events(elsewhere) == []


def test_a_state_no_process_routes_fails_at_once_and_forged_envelopes_change_nothing(
        make_cluster, bus_url: str) -> None:  # noqa: F811
    import time

    a, b = make_cluster(2)
    started = time.monotonic()
    assert redirect(b, query_string={"state": "Zz" * 20, "code": "x"}) == (307, FAILURE)
    assert time.monotonic() - started < 0.5, "no listener on that route: no wait for the timeout"
    missing = b.state.cluster.route + secrets.token_hex(16)[: 40 - len(b.state.cluster.route)]
    assert redirect(a, query_string={"state": missing, "code": "x"}) == (307, FAILURE)
    client = a.connect(OAUTH2_TOPIC)
    before = a.rejected()
    intruder = Intruder(bus_url)
    intruder.publish(intruder.envelope(KIND_REDIRECT, {"rid": "1", "c": client.id, "code": 5}), "p:" + a.state.cluster.route)
    deadline = time.monotonic() + 2
    while a.rejected() == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert a.rejected() == before + 1 and events(client) == [] and client.has_subscription(OAUTH2_TOPIC)


def test_a_failing_backplane_is_a_failure_redirect(make_cluster, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    a, b = make_cluster(2)
    client = a.connect(OAUTH2_TOPIC)

    def broken(*args: Any) -> None:
        raise ConnectionError("backplane gone")

    monkeypatch.setattr(b.state.cluster.backplane, "send", broken)
    assert redirect(b, query_string={"state": client.id, "code": "x"}) == (307, FAILURE)
    assert events(client) == [] and client.has_subscription(OAUTH2_TOPIC)
