"""Live conformance of ``POST /api/realtime`` with protocol.md §3 and §5, exact bytes.

Bodies are written and responses read over raw sockets (``raw_request``), so the tests see the
exact status line, headers and body. One server per mode, shared by the module; it knows two
test tokens (``tokA`` -> userA, ``tokB`` -> userB) and refuses bodies over 64 KiB.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode

import pytest

from flask_rtbroker.testing import SSEClient
from tests.live import HOST, SERVER_MODES, LiveServer
from tests.protocol_wire import (
    GENERIC_400,
    SECURITY_HEADERS,
    RawResponse,
    ServerPool,
    pool_fixture,
    post_json,
    raw_request,
    unique,
)

MAX_BODY = 64 * 1024
CONFIGS = {
    "post": {
        "RTBROKER_TEST_TOKENS": json.dumps({"tokA": "userA", "tokB": "userB"}),
        "RTBROKER_MAX_BODY_SIZE": str(MAX_BODY),
    }
}

REQUIRED = b'{"data":{"clientId":{"code":"validation_required","message":"Cannot be blank."}},"message":"Something went wrong while processing your request.","status":400}'
ID_TOO_LONG = b'{"data":{"clientId":{"code":"validation_length_out_of_range","message":"The length must be between 1 and 255.","params":{"max":255,"min":1}}},"message":"Something went wrong while processing your request.","status":400}'
TOO_MANY = b'{"data":{"subscriptions":{"code":"validation_length_too_long","message":"The length must be no more than 1000.","params":{"max":1000,"min":0}}},"message":"Something went wrong while processing your request.","status":400}'
ITEM_TOO_LONG = '{"code":"validation_length_too_long","message":"The length must be no more than 2500.","params":{"max":2500,"min":0}}'
ITEM_1_TOO_LONG = ('{"data":{"subscriptions":{"1":' + ITEM_TOO_LONG + '}},"message":"Something went wrong while processing your request.","status":400}').encode()
ITEMS_0_2_TOO_LONG = ('{"data":{"subscriptions":{"0":' + ITEM_TOO_LONG + ',"2":' + ITEM_TOO_LONG + '}},"message":"Something went wrong while processing your request.","status":400}').encode()
REQUIRED_AND_TOO_MANY = b'{"data":{"clientId":{"code":"validation_required","message":"Cannot be blank."},"subscriptions":{"code":"validation_length_too_long","message":"The length must be no more than 1000.","params":{"max":1000,"min":0}}},"message":"Something went wrong while processing your request.","status":400}'
NOT_FOUND_CLIENT = b'{"data":{},"message":"Missing or invalid client id.","status":404}'
INVALID_CLIENT = b'{"data":{},"message":"Invalid realtime client.","status":400}'
AUTH_MISMATCH = b'{"data":{},"message":"The current and the previous request authorization don\'t match.","status":403}'
NOT_FOUND = b'{"data":{},"message":"The requested resource wasn\'t found.","status":404}'


@pytest.fixture(scope="module")
def pool(log_dir: Path) -> Iterator[ServerPool]:
    yield from pool_fixture(log_dir, CONFIGS)


@pytest.fixture(params=SERVER_MODES)
def srv(request: pytest.FixtureRequest, pool: ServerPool) -> LiveServer:
    return pool(request.param, "post")


@pytest.fixture
def sse(srv: LiveServer) -> Iterator[SSEClient]:
    """An open stream on the mode's server, closed after the test."""
    with SSEClient.connect(HOST, srv.port) as client:
        yield client


# Go's http.StatusText, as PocketBase's status lines carry it.
REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 413: "Request Entity Too Large"}


def assert_error(response: RawResponse, status: int, body: bytes) -> None:
    """PocketBase's error shape: exact JSON body, application/json, Content-Length, default headers."""
    assert (response.status, response.body) == (status, body)
    assert response.status_line == f"HTTP/1.1 {status} {REASONS[status]}".encode()
    assert response.headers.one("Content-Type") == "application/json"
    assert response.headers.one("Content-Length") == str(len(body))
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.one(name) == value
    assert "Origin" in response.headers.tokens("Vary")


def assert_204(response: RawResponse) -> None:
    assert response.status == 204, (response.status_line, response.body)
    assert response.body == b""
    assert "Content-Type" not in response.headers
    assert "Content-Length" not in response.headers
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.one(name) == value
    assert "Origin" in response.headers.tokens("Vary")


def post(srv: LiveServer, client_id: str, topics: list[Any], **kwargs: Any) -> RawResponse:
    return post_json(srv.port, {"clientId": client_id, "subscriptions": topics}, **kwargs)


def probe(srv: LiveServer, sse: SSEClient, topic: str, sentinel: str) -> int:
    """Notify *topic*, then *sentinel* (which the client must hold); return how many *topic*
    events arrived before the sentinel event (delivery to one client is ordered)."""
    queued = srv.notify(topic, "probe")
    assert srv.notify(sentinel, "end") == 1
    got = 0
    for _ in range(queued + 1):
        received = sse.next_event(timeout=5)
        assert received.id == sse.client_id
        if received.name == sentinel:
            break
        assert (received.name, received.data) == (topic, '"probe"')
        got += 1
    else:
        raise AssertionError(f"no sentinel event after {queued} events")
    assert got == queued
    return got


def multipart(fields: list[tuple[str, str]], boundary: str = "rtbBoundary7MA4YWxk") -> tuple[str, bytes]:
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode() + b"\r\n"
        for name, value in fields
    )
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


# -- protocol.md §3.4: every row of the error table ----------------------------------------

JSON_CT = "application/json"
LONG = "x" * 2501
VALID_IF_DECODED = b'{"clientId":"nope","subscriptions":["a"]}'  # would be a 404 if it were decoded

TABLE = [
    # (case, Content-Type or None, body, status, exact response body)
    ("empty object", JSON_CT, b"{}", 400, REQUIRED),
    ("null", JSON_CT, b"null", 400, REQUIRED),
    ("empty body", JSON_CT, b"", 400, REQUIRED),
    ("empty clientId", JSON_CT, b'{"clientId":"","subscriptions":["a"]}', 400, REQUIRED),
    ("no clientId", JSON_CT, b'{"subscriptions":["a"]}', 400, REQUIRED),
    ("clientId of 256", JSON_CT, json.dumps({"clientId": "c" * 256}).encode(), 400, ID_TOO_LONG),
    ("clientId of 255, unknown", JSON_CT, json.dumps({"clientId": "c" * 255}).encode(), 404, NOT_FOUND_CLIENT),
    ("unknown clientId", JSON_CT, VALID_IF_DECODED, 404, NOT_FOUND_CLIENT),
    ("blank-looking clientId", JSON_CT, b'{"clientId":" ","subscriptions":["a"]}', 404, NOT_FOUND_CLIENT),
    ("unknown clientId and 1001 items", JSON_CT, json.dumps({"clientId": "nope", "subscriptions": ["a"] * 1001}).encode(), 400, TOO_MANY),
    ("unknown clientId and item 1 too long", JSON_CT, json.dumps({"clientId": "nope", "subscriptions": ["a", LONG]}).encode(), 400, ITEM_1_TOO_LONG),
    ("items 0 and 2 too long", JSON_CT, json.dumps({"clientId": "nope", "subscriptions": [LONG, "ok", LONG]}).encode(), 400, ITEMS_0_2_TOO_LONG),
    ("1001 items and some too long", JSON_CT, json.dumps({"clientId": "nope", "subscriptions": [LONG] + ["a"] * 999 + [LONG]}).encode(), 400, TOO_MANY),
    ("no clientId and 1001 items", JSON_CT, json.dumps({"subscriptions": ["a"] * 1001}).encode(), 400, REQUIRED_AND_TOO_MANY),
    ("malformed JSON", JSON_CT, b'{"clientId":"nope","subscriptions":["a"', 400, GENERIC_400),
    ("non-JSON text", JSON_CT, b"clientId=nope", 400, GENERIC_400),
    ("subscriptions is a string", JSON_CT, b'{"clientId":"nope","subscriptions":"abc"}', 400, GENERIC_400),
    ("subscriptions are numbers", JSON_CT, b'{"clientId":"nope","subscriptions":[1,2]}', 400, GENERIC_400),
    ("clientId is a number", JSON_CT, b'{"clientId":123,"subscriptions":["a"]}', 400, GENERIC_400),
    ("body is an array", JSON_CT, b'[{"clientId":"nope"}]', 400, GENERIC_400),
    ("text/plain", "text/plain", VALID_IF_DECODED, 400, GENERIC_400),
    ("no Content-Type", None, VALID_IF_DECODED, 400, GENERIC_400),
    ("upper-case Application/JSON", "Application/JSON", VALID_IF_DECODED, 400, GENERIC_400),
]


@pytest.mark.parametrize(("case", "content_type", "body", "status", "expected"), TABLE, ids=[row[0] for row in TABLE])
def test_error_table(srv: LiveServer, case: str, content_type: str | None, body: bytes, status: int, expected: bytes) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    assert_error(raw_request(srv.port, body=body, headers=headers), status, expected)


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "text/plain", "application/x-www-form-urlencoded",
     "multipart/form-data; boundary=xyz", "Application/JSON", "application/xml"],
)
def test_empty_body_with_any_content_type_is_an_empty_form(srv: LiveServer, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    assert_error(raw_request(srv.port, body=b"", headers=headers), 400, REQUIRED)


def test_limits_with_a_live_client(srv: LiveServer, sse: SSEClient) -> None:
    cid = sse.client_id
    prefix = unique("many")
    assert_204(post(srv, cid, [f"{prefix}-{i}" for i in range(1000)]))
    assert srv.notify(f"{prefix}-999", 1) == 1
    assert_error(post(srv, cid, [f"{prefix}-{i}" for i in range(1001)]), 400, TOO_MANY)
    assert_204(post(srv, cid, ["a", "x" * 2500]))
    assert_204(post(srv, cid, ["a", "\u00e9" * 2500]))  # characters, not bytes
    assert_error(post(srv, cid, ["a", "\u00e9" * 2501]), 400, ITEM_1_TOO_LONG)
    assert_error(post(srv, cid, ["a", LONG]), 400, ITEM_1_TOO_LONG)


def test_a_closed_client_is_unknown(srv: LiveServer) -> None:
    with SSEClient.connect(HOST, srv.port) as sse:
        assert_204(post(srv, sse.client_id, ["a"]))
    deadline = time.monotonic() + 1.5
    response = post(srv, sse.client_id, ["a"])
    while response.status == 204 and time.monotonic() < deadline:
        time.sleep(0.05)
        response = post(srv, sse.client_id, ["a"])
    assert_error(response, 404, NOT_FOUND_CLIENT)


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_other_methods_answer_not_found(srv: LiveServer, sse: SSEClient, method: str) -> None:
    body = json.dumps({"clientId": sse.client_id, "subscriptions": ["a"]}).encode()
    assert_error(raw_request(srv.port, method, body=body, headers={"Content-Type": JSON_CT}), 404, NOT_FOUND)


def test_oversized_body_answers_413_json(srv: LiveServer) -> None:
    body = b'{"clientId":"nope","subscriptions":["' + b"a" * MAX_BODY + b'"]}'
    response = raw_request(srv.port, body=body, headers={"Content-Type": JSON_CT})
    assert response.status_line == b"HTTP/1.1 413 Request Entity Too Large"
    assert response.headers.one("Content-Type") == "application/json"
    decoded = json.loads(response.body)
    assert decoded["status"] == 413 and decoded["data"] == {} and isinstance(decoded["message"], str)


# -- success and decoding quirks -----------------------------------------------------------


def test_success_is_a_bare_204(srv: LiveServer, sse: SSEClient) -> None:
    assert_204(post(srv, sse.client_id, [unique()]))


def test_success_status_line_is_exact(srv: LiveServer, sse: SSEClient) -> None:
    # protocol.md §3.3 shows the status line PocketBase (Go's net/http) writes.
    assert post(srv, sse.client_id, [unique()]).status_line == b"HTTP/1.1 204 No Content"


def test_trailing_bytes_after_the_object_are_ignored(srv: LiveServer, sse: SSEClient) -> None:
    topic, sentinel = unique(), unique("sentinel")
    obj = json.dumps({"clientId": sse.client_id, "subscriptions": [topic, sentinel]}).encode()
    for trailer in (b" trailing garbage", b'{"clientId":"other"}', b"\n[1,2", b"}}}"):
        assert_204(post_json(srv.port, obj + trailer))
    assert probe(srv, sse, topic, sentinel) == 1


def test_key_names_match_case_insensitively(srv: LiveServer, sse: SSEClient) -> None:
    topic, sentinel = unique(), unique("sentinel")
    body = json.dumps({"CLIENTID": sse.client_id, "SubScriptions": [topic, sentinel], "unknown": 1}).encode()
    assert_204(post_json(srv.port, body))
    assert probe(srv, sse, topic, sentinel) == 1


def test_null_items_become_empty_and_a_null_list_is_empty(srv: LiveServer, sse: SSEClient) -> None:
    topic, sentinel = unique(), unique("sentinel")
    assert_204(post(srv, sse.client_id, [None, topic, None, "", sentinel]))
    assert probe(srv, sse, topic, sentinel) == 1
    assert_204(post_json(srv.port, {"clientId": sse.client_id, "subscriptions": None}))
    assert srv.notify(topic, 1) == 0 and srv.notify(sentinel, 1) == 0
    assert_204(post(srv, sse.client_id, [topic]))
    assert_204(post_json(srv.port, {"clientId": sse.client_id}))
    assert srv.notify(topic, 1) == 0


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/json;charset=UTF-8", "application/jsonx"])
def test_json_content_type_prefix(srv: LiveServer, sse: SSEClient, content_type: str) -> None:
    topic, sentinel = unique(), unique("sentinel")
    body = json.dumps({"clientId": sse.client_id, "subscriptions": [topic, sentinel]}).encode()
    assert_204(raw_request(srv.port, body=body, headers={"Content-Type": content_type}))
    assert probe(srv, sse, topic, sentinel) == 1


def test_form_urlencoded_body(srv: LiveServer, sse: SSEClient) -> None:
    topic, sentinel = unique("a b&c=d/\u00e9"), unique("sentinel")
    body = urlencode([("clientId", sse.client_id), ("subscriptions", topic), ("subscriptions", sentinel)]).encode()
    assert_204(raw_request(srv.port, body=body, headers={"Content-Type": "application/x-www-form-urlencoded"}))
    assert probe(srv, sse, topic, sentinel) == 1
    missing = urlencode([("subscriptions", topic)]).encode()
    assert_error(raw_request(srv.port, body=missing, headers={"Content-Type": "application/x-www-form-urlencoded"}), 400, REQUIRED)


def test_multipart_body(srv: LiveServer, sse: SSEClient) -> None:
    topic, sentinel = unique("m\u00fcl"), unique("sentinel")
    content_type, body = multipart([("clientId", sse.client_id), ("subscriptions", topic), ("subscriptions", sentinel)])
    assert_204(raw_request(srv.port, body=body, headers={"Content-Type": content_type}))
    assert probe(srv, sse, topic, sentinel) == 1


def test_multipart_json_payload_field(srv: LiveServer, sse: SSEClient) -> None:
    topic, sentinel = unique(), unique("sentinel")
    payload = json.dumps({"clientId": sse.client_id, "subscriptions": [topic, sentinel]})
    content_type, body = multipart([("@jsonPayload", payload)])
    assert_204(raw_request(srv.port, body=body, headers={"Content-Type": content_type}))
    assert probe(srv, sse, topic, sentinel) == 1


def test_topics_with_line_breaks_are_refused_per_item(srv: LiveServer, sse: SSEClient) -> None:
    response = post(srv, sse.client_id, ["ok", "a\nb", "c\rd", "e\r\nf", "fine"])
    assert response.status == 400
    assert response.headers.one("Content-Type") == "application/json"
    decoded = json.loads(response.body)
    assert decoded["message"] == "Something went wrong while processing your request."
    assert decoded["status"] == 400
    assert list(decoded["data"]) == ["subscriptions"]
    items = decoded["data"]["subscriptions"]
    assert sorted(items) == ["1", "2", "3"]
    assert all(isinstance(item["code"], str) and isinstance(item["message"], str) for item in items.values())


def test_duplicates_collapse(srv: LiveServer, sse: SSEClient) -> None:
    topic, sentinel = unique(), unique("sentinel")
    assert_204(post(srv, sse.client_id, [topic, topic, sentinel, topic, sentinel]))
    assert probe(srv, sse, topic, sentinel) == 1


def test_a_post_replaces_the_whole_list(srv: LiveServer, sse: SSEClient) -> None:
    first, second, sentinel = unique(), unique(), unique("sentinel")
    assert_204(post(srv, sse.client_id, [first, sentinel]))
    assert_204(post(srv, sse.client_id, [second, sentinel]))
    assert probe(srv, sse, first, sentinel) == 0
    assert probe(srv, sse, second, sentinel) == 1


# -- a rejected POST changes nothing -------------------------------------------------------

TOKEN_A = {"Authorization": "tokA"}


def _reject(kind: str, srv: LiveServer, cid: str, b_topics: list[str]) -> tuple[RawResponse, int]:
    if kind == "validation":
        return post(srv, cid, b_topics + [LONG], headers=TOKEN_A), 400
    if kind == "too many":
        return post(srv, cid, b_topics + ["z"] * 1000, headers=TOKEN_A), 400
    if kind == "line break":
        return post(srv, cid, b_topics + ["x\ny"], headers=TOKEN_A), 400
    if kind == "decode":
        body = json.dumps({"clientId": cid, "subscriptions": b_topics + [1]}).encode()
        return post_json(srv.port, body, headers=TOKEN_A), 400
    if kind == "other ip":
        return post(srv, cid, b_topics, headers=TOKEN_A, source="127.0.0.2"), 400
    if kind == "auth change":
        return post(srv, cid, b_topics, headers={"Authorization": "tokB"}), 403
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["validation", "too many", "line break", "decode", "other ip", "auth change"])
def test_a_rejected_post_changes_nothing(srv: LiveServer, sse: SSEClient, kind: str) -> None:
    topic_a, topic_b, sentinel = unique("A"), unique("B"), unique("sentinel")
    assert_204(post(srv, sse.client_id, [topic_a, sentinel], headers=TOKEN_A))
    response, status = _reject(kind, srv, sse.client_id, [topic_b, sentinel])
    assert response.status == status, response.body
    assert probe(srv, sse, topic_a, sentinel) == 1
    assert probe(srv, sse, topic_b, sentinel) == 0
    # The stored auth is still A's: A may post again, B still may not.
    assert post(srv, sse.client_id, [topic_b], headers={"Authorization": "tokB"}).status == 403
    assert_204(post(srv, sse.client_id, [topic_a, sentinel], headers=TOKEN_A))


# -- IP binding (§5.2) and the auth rule (§5.1) --------------------------------------------


def test_a_stream_is_bound_to_its_ip(srv: LiveServer) -> None:
    topic, sentinel = unique(), unique("sentinel")
    with SSEClient.connect(HOST, srv.port, source_address=("127.0.0.2", 0)) as sse:
        assert_error(post(srv, sse.client_id, [topic, sentinel]), 400, INVALID_CLIENT)
        spoofed = {"X-Forwarded-For": "127.0.0.2", "X-Real-IP": "127.0.0.2"}
        assert_error(post(srv, sse.client_id, [topic, sentinel], headers=spoofed), 400, INVALID_CLIENT)
        assert_204(post(srv, sse.client_id, [topic, sentinel], source="127.0.0.2"))
        assert probe(srv, sse, topic, sentinel) == 1
        # Order: the lookup (404) comes before the IP check, the IP check before the auth rule.
        assert_error(post(srv, ("x" if sse.client_id[0] != "x" else "y") + sse.client_id[1:], [topic], source="127.0.0.1"), 404, NOT_FOUND_CLIENT)
        assert_204(post(srv, sse.client_id, [topic, sentinel], source="127.0.0.2", headers=TOKEN_A))
        assert_error(post(srv, sse.client_id, [topic], headers={"Authorization": "tokB"}), 400, INVALID_CLIENT)


def test_a_guest_may_become_a_user_who_may_stay_that_user(srv: LiveServer, sse: SSEClient) -> None:
    topic, sentinel = unique(), unique("sentinel")
    cid = sse.client_id
    assert_204(post(srv, cid, [topic]))
    assert_204(post(srv, cid, [topic], headers={"Authorization": "garbage"}))  # invalid token = guest
    assert_204(post(srv, cid, [topic], headers=TOKEN_A))
    assert_204(post(srv, cid, [topic], headers=TOKEN_A))
    assert_204(post(srv, cid, [topic, sentinel], headers={"Authorization": "Bearer tokA"}))
    assert probe(srv, sse, topic, sentinel) == 1


@pytest.mark.parametrize("authorization", [None, "tokB", "Bearer tokB", "garbage", "Bearer garbage", ""])
def test_a_user_may_not_switch_identity(srv: LiveServer, sse: SSEClient, authorization: str | None) -> None:
    cid = sse.client_id
    assert_204(post(srv, cid, [unique()], headers={"Authorization": "Bearer tokA"}))
    headers = {} if authorization is None else {"Authorization": authorization}
    assert_error(post(srv, cid, [unique()], headers=headers), 403, AUTH_MISMATCH)
