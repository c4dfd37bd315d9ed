"""Hostile subscription POSTs (hypothesis): never a 500, always JSON, rejected ones change nothing."""

from __future__ import annotations

from typing import Any, Iterator
from urllib.parse import quote

import pytest
import simplejson
from flask import Flask, Request
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_rtbroker import AUTH_KEY, IP_KEY, DefaultClient, RealtimeBroker

ALLOWED = {204, 400, 403, 404, 413, 429}
TOKENS = {"tokA": "userA", "tokB": "userB"}


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[FlaskClient, DefaultClient]]:
    app = Flask(__name__)
    app.config.update(RTBROKER_CONCURRENCY="threading", RTBROKER_MAX_BODY_SIZE=64 * 1024)
    broker = RealtimeBroker(app)

    @broker.auth_loader
    def load(request: Request) -> dict[str, str] | None:
        user = TOKENS.get(request.headers.get("Authorization", "").removeprefix("Bearer "))
        return {"id": user} if user else None

    state = app.extensions["rtbroker"]
    client = state.new_client()
    client.set(IP_KEY, "127.0.0.1")
    client.set(AUTH_KEY, {"id": "userA"})
    client.subscribe("before")
    state.broker.register(client)
    yield app.test_client(), client
    state.close()


def snapshot(client: DefaultClient) -> tuple[Any, ...]:
    return (sorted(client.subscriptions()), client.get(AUTH_KEY), client.is_discarded)


texts = st.text(max_size=40) | st.sampled_from(["", " ", "a\nb", "a\r", "\x00", "é✓", "x" * 2501])
# JSON text a hostile client writes by hand: deep or unbalanced nesting, numbers Python reads
# slowly or not at all, NaN/Infinity (not JSON), lone surrogates (not Unicode scalar values).
hostile_json = st.sampled_from([
    "[" * 1000 + "]" * 1000, "[" * 2480, "{\"a\":" * 700 + "1" + "}" * 700, '{"query":' * 300 + "{}" + "}" * 300,
    "1" * 5000, "-" + "9" * 4400, "1e999999", "-1e400", "0." + "0" * 3000 + "1",
    "NaN", "Infinity", "-Infinity", "[NaN]", '{"query": {"filter": Infinity}}',
    '"\\ud800"', '["a\\udc00b"]', '{"query": {"filter": "\\udfff"}}', '"\\ud83d\\ude00"',
])
option_strings = st.builds(
    lambda topic, options: f"{topic}?options={quote(options)}",
    st.sampled_from(["t", "posts/*", "c/r1"]),
    hostile_json | st.text(max_size=30) | st.builds(simplejson.dumps, st.dictionaries(st.text(max_size=5), st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
        max_leaves=6), max_size=3)),
)
subscriptions = st.lists(texts | option_strings, max_size=5) | st.just(["s"] * 1001) | st.none() | st.integers() | texts
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | texts, lambda inner: st.lists(inner, max_size=3), max_leaves=5
)


@st.composite
def bodies(draw: st.DrawFn, client_id: str) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["json", "json", "raw_json", "form", "multipart", "raw"]))
    cid = draw(st.just(client_id) | texts | st.integers() | st.none())
    subs = draw(subscriptions)
    if kind == "raw_json":  # the hostile fragment in each place a value goes
        fragment = draw(hostile_json)
        body = draw(st.sampled_from([
            '{"clientId": %s, "subscriptions": ["t"]}', '{"clientId": "%s", "subscriptions": %%s}' % client_id,
            '{"clientId": "%s", "subscriptions": [%%s]}' % client_id, "%s",
        ])) % fragment
        return "application/json", body.encode()
    if kind == "json":
        obj: Any = {draw(st.sampled_from(["clientId", "CLIENTID", "clientid"])): cid, "subscriptions": subs}
        if draw(st.booleans()):
            obj = draw(json_values)
        body = simplejson.dumps(obj).encode() + draw(st.sampled_from([b"", b"trailing", b"{", b"\xff"]))
        return draw(st.sampled_from(["application/json", "application/json; charset=utf-8", "application/jsonx"])), body
    if kind == "form":
        items = [("clientId", str(cid))] + [("subscriptions", str(s)) for s in (subs if isinstance(subs, list) else [subs])]
        return "application/x-www-form-urlencoded", "&".join(f"{quote(k)}={quote(v)}" for k, v in items).encode()
    if kind == "multipart":
        return "multipart/form-data; boundary=" + draw(st.sampled_from(["xyz", "", "\"q\""])), draw(st.binary(max_size=200))
    return draw(st.sampled_from(["", "text/plain", "Application/JSON", "application/xml", "garbage/\x7f"])), draw(st.binary(max_size=300))


@settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile_posts_get_pocketbase_json_and_never_change_state_when_rejected(
    setup: tuple[FlaskClient, DefaultClient], data: st.DataObject
) -> None:
    http, client = setup
    content_type, body = data.draw(bodies(client.id))
    headers = {"Content-Type": content_type} if content_type else {}
    authorization = data.draw(st.sampled_from([None, "tokA", "Bearer tokA", "tokB", "garbage", "Bearer "]))
    if authorization is not None:
        headers["Authorization"] = authorization
    before = snapshot(client)
    response = http.post("/api/realtime", data=body, headers=headers)
    assert response.status_code in ALLOWED, (response.status_code, response.data)
    if response.status_code == 204:
        assert response.data == b"" and "Content-Type" not in response.headers
        client.set_subscriptions(["before"])  # back to the known state for the next example
        client.set(AUTH_KEY, {"id": "userA"})
        return
    payload = simplejson.loads(response.data)
    assert set(payload) == {"data", "message", "status"} and payload["status"] == response.status_code
    assert response.headers["Content-Type"] == "application/json"
    assert snapshot(client) == before


def test_oversized_body_is_413_json(setup: tuple[FlaskClient, DefaultClient]) -> None:
    http, client = setup
    before = snapshot(client)
    response = http.post("/api/realtime", data=b"{" + b" " * 70_000 + b"}", content_type="application/json")
    assert response.status_code == 413
    assert response.json == {"data": {}, "message": "The request body is too large.", "status": 413}
    assert snapshot(client) == before
