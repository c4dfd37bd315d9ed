"""The official JS SDK against two server processes sharing Redis, behind a round-robin proxy.

The SDK's stream and its subscription POSTs travel over different connections, which the proxy
sends to different processes: the POST is forwarded to the stream's owner over the backplane.
"""

from __future__ import annotations

from typing import Any

from tests.jsrun import require_node, run_node
from tests.redis_server import RedisServer
from tests.rr_proxy import RoundRobinProxy

PAYLOAD = {"across": "processes"}


def test_sdk_subscribes_through_either_process_and_receives_from_both(make_server, redis_server: RedisServer) -> None:
    require_node()
    env = {"RTBROKER_BACKPLANE": redis_server.url}
    a, b = make_server(env=env), make_server(env=env)
    proxy = RoundRobinProxy([a.port, b.port]).start()
    delivered: list[int] = []

    def subscribed(message: dict[str, Any]) -> dict[str, Any]:
        for server in (a, b):  # one of them holds the stream, the other reaches it through Redis
            delivered.append(server.notify(message["topic"], PAYLOAD))
        return {"delivered": sum(delivered)}

    try:
        result = run_node("subscribe_notify.mjs", proxy.url, steps={"subscribed": subscribed},
                          context=lambda: f"A:\n{a.log()}\nB:\n{b.log()}")
    finally:
        proxy.stop()
    assert result["received"][:1] == [PAYLOAD]
    assert sorted(delivered) == [0, 1], "exactly one process holds the stream"
    stream_backend = next(port for port, line in proxy.routes if line.startswith(b"GET /api/realtime"))
    post_backends = {port for port, line in proxy.routes if line.startswith(b"POST /api/realtime")}
    assert post_backends and stream_backend not in post_backends, proxy.routes
