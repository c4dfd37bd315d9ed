"""The official PocketBase JS SDK (pocketbase@0.28.1, Node, eventsource@4.1.1) against live servers.

Each test starts the example app (examples/notify_app.py) in a real server process and runs one
scenario script from tests/js/; the script drives the SDK and asks the test (through
:func:`jsrun.run_node` steps) to send notifies or to stop and restart the server. The assertions
are here, on the script's JSON result and on the delivery counts that ``POST /notify`` returns.

The basic round trip, the disconnect and the restart run under every server mode of tests/live.py;
the rest under gunicorn + gevent, the production setup.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import pytest

from tests.jsrun import require_node, run_node
from tests.live import SERVER_MODES, LiveServer

AUTH_MISMATCH_BODY = (
    '{"data":{},"message":"The current and the previous request authorization don\'t match.",'
    '"status":403}'
)


@pytest.fixture(autouse=True)
def _node_available() -> None:
    require_node()


def with_log(server: LiveServer) -> Callable[[], str]:
    """A failure-context callback showing the server's log."""
    return lambda: f"server log ({server.log_path}):\n{server.log()}"


def realtime_posts(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in result["requests"] if r["method"] == "POST" and r["path"] == "/api/realtime"]


PAYLOAD = {"hello": "wörld", "n": 1, "pi": 3.5, "ok": True, "none": None, "list": [1, "two"], "nested": {"a": {"b": []}}}


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_subscribe_and_receive_notify(make_server: Callable[..., LiveServer], mode: str) -> None:
    server = make_server(mode)
    sent: list[int] = []

    def subscribed(message: dict[str, Any]) -> dict[str, Any]:
        sent.append(server.notify(message["topic"], PAYLOAD))
        return {"delivered": sent[-1]}

    result = run_node("subscribe_notify.mjs", server.url, steps={"subscribed": subscribed}, context=with_log(server))
    assert sent == [1], "notify should have been queued for exactly one subscriber"
    assert result["received"] == [PAYLOAD], "the callback should get the notify's data, JSON-parsed"
    assert len(result["clientId"]) == 40 and result["clientId"].isalnum()
    assert result["isConnected"] is True
    posts = realtime_posts(result)
    assert [p["body"] for p in posts] == [{"clientId": result["clientId"], "subscriptions": ["example"]}]
    assert [p["status"] for p in posts] == [204]
    # Removing the last listener closes the stream without a POST (SDK behaviour, §9.3).
    assert result["connectedAfterUnsubscribe"] is False


def test_two_listeners_on_one_topic_share_one_post(make_server: Callable[..., LiveServer]) -> None:
    server = make_server("gunicorn-gevent")

    def subscribed(message: dict[str, Any]) -> dict[str, Any]:
        return {"delivered": server.notify(message["topic"], {"n": 7})}

    result = run_node("two_listeners.mjs", server.url, steps={"subscribed": subscribed}, context=with_log(server))
    assert result["first"] == [{"n": 7}] and result["second"] == [{"n": 7}], "each listener is called once"
    assert result["delivered"] == 1, "the server holds one subscription key for both listeners"
    assert (result["postsAfterFirst"], result["postsAfterSecond"], result["postsAtEnd"]) == (1, 1, 1), (
        "the second subscribe() to an existing key must not POST"
    )
    assert realtime_posts(result)[0]["body"]["subscriptions"] == ["shared"]


def test_subscribe_with_options_receives_plain_topic_notify(make_server: Callable[..., LiveServer]) -> None:
    server = make_server("gunicorn-gevent")

    def subscribed(message: dict[str, Any]) -> dict[str, Any]:
        return {"delivered": server.notify(message["topic"], {"to": "plain"})}

    def plain_received(message: dict[str, Any]) -> dict[str, Any]:
        return {"delivered": server.notify(message["optionsKey"], {"to": "key"})}

    result = run_node(
        "options.mjs", server.url, steps={"subscribed": subscribed, "plain-received": plain_received},
        context=with_log(server),
    )
    # The SDK's key: topic + "?options=" + encodeURIComponent(JSON.stringify({query, headers})).
    expected_key = "example?options=%7B%22query%22%3A%7B%22a%22%3A1%7D%2C%22headers%22%3A%7B%22X-Token%22%3A%22abc%22%7D%7D"
    assert result["optionsKey"] == expected_key
    assert result["keys"] == [expected_key, "example"]
    # notify("example") reaches both keys of this client, each event named after its key
    # (the SDK only dispatches an event to the listener registered under exactly its name).
    assert result["deliveredToPlainTopic"] == 2
    # notify(<full key>) reaches only that key.
    assert result["deliveredToOptionsKey"] == 1
    assert result["withOptions"] == [{"to": "plain"}, {"to": "key"}]
    assert result["plain"] == [{"to": "plain"}]


def test_unsubscribe_and_unsubscribe_by_prefix_stop_delivery(make_server: Callable[..., LiveServer]) -> None:
    server = make_server("gunicorn-gevent")
    topics = ("alpha", "beta/1", "beta/2")

    def subscribed(message: dict[str, Any]) -> dict[str, Any]:
        return {"delivered": {topic: server.notify(topic, {"phase": "before", "topic": topic}) for topic in topics}}

    def unsubscribed(message: dict[str, Any]) -> dict[str, Any]:
        delivered = {topic: server.notify(topic, {"phase": "after", "topic": topic}) for topic in topics}
        delivered["gamma"] = server.notify("gamma", {"phase": "after", "topic": "gamma"})
        return {"delivered": delivered}

    result = run_node(
        "unsubscribe.mjs", server.url, steps={"subscribed": subscribed, "unsubscribed": unsubscribed},
        context=with_log(server),
    )
    alpha_options = "alpha?options=%7B%22query%22%3A%7B%22x%22%3A1%7D%7D"  # {"query":{"x":1}}
    assert sorted(result["keysBefore"]) == sorted(["alpha", alpha_options, "beta/1", "beta/2", "gamma"])
    # unsubscribe("alpha") drops the plain key and its options variant; the prefix drops beta/*.
    assert sorted(result["keysAfterUnsubscribe"]) == ["beta/1", "beta/2", "gamma"]
    assert result["keysAfterPrefix"] == ["gamma"]
    # "alpha" reached both of its keys before; nothing afterwards.
    assert result["deliveredBefore"] == {"alpha": 2, "beta/1": 1, "beta/2": 1}
    assert result["deliveredAfter"] == {"alpha": 0, "beta/1": 0, "beta/2": 0, "gamma": 1}
    before = {"alpha": 1, "alpha?options": 1, "beta/1": 1, "beta/2": 1, "gamma": 0}
    assert result["countsBefore"] == before
    assert result["countsAfter"] == {**before, "gamma": 1}, "no message may arrive after unsubscribing"
    assert result["connected"] is True


def test_pb_connect_listener_gets_client_id(make_server: Callable[..., LiveServer]) -> None:
    server = make_server("gunicorn-gevent")
    result = run_node("pb_connect.mjs", server.url, context=with_log(server))
    client_id = result["clientId"]
    assert len(client_id) == 40 and client_id.isalnum()
    assert result["connects"] == [{"clientId": client_id}]
    # The SDK submits PB_CONNECT as an ordinary topic; the broker accepts it.
    assert result["posts"] == [{"body": {"clientId": client_id, "subscriptions": ["PB_CONNECT"]}, "status": 204}]


def _restart_steps(server_box: list[LiveServer], make_server: Callable[..., LiveServer]) -> dict[str, Any]:
    def notify(message: dict[str, Any]) -> dict[str, Any]:
        return {"delivered": server_box[-1].notify("example", {"server": len(server_box)})}

    def stop(message: dict[str, Any]) -> dict[str, Any]:
        server_box[-1].stop()
        return {}

    def start(message: dict[str, Any]) -> dict[str, Any]:
        old = server_box[-1]
        server_box.append(make_server(old.mode, port=old.port, env=old.env))
        return {}

    return {"connected": notify, "stop-server": stop, "start-server": start, "reconnected": notify}


def _logs(server_box: list[LiveServer]) -> Callable[[], str]:
    return lambda: "\n".join(f"server log ({s.log_path}):\n{s.log()}" for s in server_box)


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_on_disconnect_gets_active_keys_when_server_goes_away(make_server: Callable[..., LiveServer], mode: str) -> None:
    servers = [make_server(mode)]
    result = run_node(
        "server_restart.mjs", servers[0].url, "disconnect", steps=_restart_steps(servers, make_server),
        context=_logs(servers),
    )
    assert result["firstDelivered"] == 1 and result["received"] == [{"server": 1}]
    # (How many times is checked by test_sdk_sees_graceful_shutdown_at_once_under_gunicorn_gevent.)
    assert result["disconnects"][0] == ["PB_CONNECT", "example"], "onDisconnect gets the active keys"
    assert all(keys == ["PB_CONNECT", "example"] for keys in result["disconnects"]), result["disconnects"]
    assert result["clientIdAfterDisconnect"] == "" and result["isConnectedAfterDisconnect"] is False
    print(f"{mode}: onDisconnect {result['disconnectTimesMs']} ms after the stop was asked")


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_reconnect_and_resubscribe_after_server_restart(make_server: Callable[..., LiveServer], mode: str) -> None:
    servers = [make_server(mode)]
    result = run_node(
        "server_restart.mjs", servers[0].url, "restart", steps=_restart_steps(servers, make_server),
        context=_logs(servers),
    )
    assert len(servers) == 2 and servers[1].port == servers[0].port
    assert all(keys == ["PB_CONNECT", "example"] for keys in result["disconnects"]), result["disconnects"]
    assert result["secondClientId"] != result["firstClientId"], "a reconnect gets a fresh client id"
    ids = [c["clientId"] for c in result["connects"]]
    assert (ids[0], ids[-1]) == (result["firstClientId"], result["secondClientId"])
    # One POST resubmitted every key for the new id.
    assert result["lastPost"]["body"] == {"clientId": result["secondClientId"], "subscriptions": ["PB_CONNECT", "example"]}
    assert result["lastPost"]["status"] == 204
    assert (result["firstDelivered"], result["secondDelivered"]) == (1, 1)
    assert result["received"] == [{"server": 1}, {"server": 2}]


def test_auth_switch_is_rejected_with_pocketbase_body(make_server: Callable[..., LiveServer]) -> None:
    server = make_server("gunicorn-gevent", env={"RTBROKER_TEST_TOKENS": json.dumps({"tokA": "userA", "tokB": "userB"})})

    def subscribed_a(message: dict[str, Any]) -> dict[str, Any]:
        return {"delivered": server.notify("a-topic", {"for": "A", "n": 1})}

    def rejected(message: dict[str, Any]) -> dict[str, Any]:
        b = server.notify("b-topic", {"for": "B"})
        a = server.notify("a-topic", {"for": "A", "n": 2})
        return {"delivered": {"b-topic": b, "a-topic": a}}

    result = run_node(
        "auth.mjs", server.url, steps={"subscribed-a": subscribed_a, "rejected": rejected}, context=with_log(server),
    )
    posts = realtime_posts(result)
    assert [(p["authorization"], p["status"]) for p in posts] == [("tokA", 204), ("tokB", 403)]
    assert result["firstDelivered"] == 1
    rejection = result["rejection"]
    assert rejection is not None, "subscribing as another user must reject"
    assert rejection["status"] == 403
    assert rejection["response"] == json.loads(AUTH_MISMATCH_BODY)
    assert result["rejectedPost"]["errorBody"] == AUTH_MISMATCH_BODY, "PocketBase's exact bytes"
    # The rejected POST changed nothing: userA's subscription still delivers, b-topic does not.
    assert result["afterDelivered"] == {"b-topic": 0, "a-topic": 1}
    assert result["a"] == [{"for": "A", "n": 1}, {"for": "A", "n": 2}] and result["b"] == []
    assert result["connectedAfterReject"] is True and result["clientIdAfterReject"] == result["clientId"]


@pytest.mark.parametrize("setting", ["RTBROKER_IDLE_TIMEOUT", "RTBROKER_MAX_LIFETIME"])
def test_sdk_reconnects_when_the_server_ends_the_stream(make_server: Callable[..., LiveServer], setting: str) -> None:
    server = make_server("gunicorn-gevent", env={setting: "1"})

    def reconnected(message: dict[str, Any]) -> dict[str, Any]:
        return {"delivered": server.notify("example", {"after": "reconnect"})}

    result = run_node("stream_end_reconnect.mjs", server.url, steps={"reconnected": reconnected}, context=with_log(server))
    first, second = result["connects"][0], result["connects"][1]
    assert first["clientId"] != second["clientId"]
    assert result["disconnects"][0]["keys"] == ["PB_CONNECT", "example"]
    # The stream lasted about the configured second, and the SDK came back about 200 ms later.
    assert 0.8 <= result["disconnects"][0]["ms"] / 1000 <= 3.0, result["disconnects"]
    assert second["ms"] - result["disconnects"][0]["ms"] < 2000, result
    assert {"body": {"clientId": second["clientId"], "subscriptions": ["PB_CONNECT", "example"]}, "status": 204} in result["posts"]
    assert result["delivered"] == 1 and result["received"] == [{"after": "reconnect"}]


def test_heartbeat_comments_do_not_disturb_the_sdk(make_server: Callable[..., LiveServer]) -> None:
    # Heartbeats (":" comment lines, an extension over PocketBase) every 50 ms while the SDK waits.
    server = make_server("gunicorn-gevent", env={"RTBROKER_HEARTBEAT": "0.05"})

    def subscribed(message: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.5)
        return {"delivered": server.notify(message["topic"], PAYLOAD)}

    result = run_node("subscribe_notify.mjs", server.url, steps={"subscribed": subscribed}, context=with_log(server))
    assert result["delivered"] == 1 and result["received"] == [PAYLOAD]
    assert len(realtime_posts(result)) == 1, "no reconnect happened"


def test_auth_guest_upgrade_accepted_logout_rejected(make_server: Callable[..., LiveServer]) -> None:
    server = make_server("gunicorn-gevent", env={"RTBROKER_TEST_TOKENS": json.dumps({"tokA": "userA"})})

    def done(message: dict[str, Any]) -> dict[str, Any]:
        return {"delivered": {t: server.notify(t, {"topic": t}) for t in ("g-topic", "a-topic", "x-topic")}}

    result = run_node("auth_upgrade.mjs", server.url, steps={"done": done}, context=with_log(server))
    assert result["upgrade"] is None, f"guest -> user must be accepted: {result['upgrade']}"
    assert result["downgrade"] is not None and result["downgrade"]["status"] == 403
    assert result["downgrade"]["response"] == json.loads(AUTH_MISMATCH_BODY)
    assert [(p["authorization"], p["status"]) for p in result["posts"]] == [(None, 204), ("tokA", 204), (None, 403)]
    assert result["posts"][2]["errorBody"] == AUTH_MISMATCH_BODY
    assert result["sameClient"] is True
    assert result["delivered"] == {"g-topic": 1, "a-topic": 1, "x-topic": 0}
    assert result["got"] == {"g-topic": [{"topic": "g-topic"}], "a-topic": [{"topic": "a-topic"}], "x-topic": []}


def test_sdk_sees_graceful_shutdown_at_once_under_gunicorn_gevent(make_server: Callable[..., LiveServer]) -> None:
    """SIGTERM ends every stream at once (RTBROKER_GRACEFUL_SHUTDOWN, on by default), like PocketBase.

    The live server runs gunicorn with ``--graceful-timeout 2``: a stream still open on the
    stopping worker lasts until those 2 s are over. Every stream must be gone well within a
    second, including one the SDK opens when it reconnects 200 ms after the first end: PocketBase
    stops accepting before it ends its streams, so the SDK cannot land on the stopping server.
    """
    servers = [make_server("gunicorn-gevent")]
    result = run_node(
        "server_restart.mjs", servers[0].url, "disconnect", steps=_restart_steps(servers, make_server),
        context=_logs(servers),
    )
    assert result["disconnects"][0] == ["PB_CONNECT", "example"]
    assert result["disconnectMs"] < 1000, (
        f"onDisconnect came {result['disconnectMs']} ms after SIGTERM: the stream lasted until gunicorn's "
        "graceful timeout (2 s), so the broker's shutdown handler did not end it"
    )
    assert max(result["disconnectTimesMs"]) < 1000, (
        f"onDisconnect calls at {result['disconnectTimesMs']} ms after SIGTERM, PB_CONNECTs from the stopping "
        f"server: {result['connectsDuringStop']}. The SDK reconnected to the stopping worker, which accepted "
        "the new stream and kept it open until gunicorn's graceful timeout"
    )
