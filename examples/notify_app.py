"""A minimal app for benchmarks and external checks: the realtime API plus ``POST /notify``.

    gunicorn -k gevent examples.notify_app:app

``POST /notify {"topic": ..., "data": ..., "to": [client ids]?}`` calls ``broker.notify`` and
answers ``{"delivered": N}``; ``GET /stats`` answers ``broker.stats()`` (``?cluster=1`` adds
the cluster-wide count, ``?resources=1`` open fds, greenlets, threads and RSS). Both are test
hooks: never expose them in production. ``private/*`` and ``user/<id>`` topics show the
per-topic authorisation recipe (a ``before_subscribe`` hook).

Settings come from ``RTBROKER_*`` environment variables. ``RTBROKER_TEST_TOKENS`` (a JSON object
token -> user id) makes the auth loader accept those tokens, raw or as ``Bearer <token>``, so
external checks can act as different users.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import simplejson
from flask import Flask, Request, jsonify, request

from flask_rtbroker import ApiError, DefaultClient, RealtimeBroker, load_env

TOKENS: dict[str, str] = simplejson.loads(os.environ.get("RTBROKER_TEST_TOKENS") or "{}")


def create_app() -> Flask:
    """Build the notify app from the environment."""
    app = Flask(__name__)
    load_env(app.config)
    app.config.pop("RTBROKER_TEST_TOKENS", None)
    broker = RealtimeBroker(app)

    @broker.auth_loader
    def load_user(req: Request) -> dict[str, Any] | None:
        token = req.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        user_id = TOKENS.get(token)
        return {"collectionName": "users", "id": user_id} if user_id else None

    @broker.before_subscribe
    def check_topic_access(client: DefaultClient, subscriptions: list[str], auth: dict[str, Any] | None) -> None:
        """Per-topic authorisation: ``private/*`` needs a signed-in user, ``user/<id>`` that user."""
        for subscription in subscriptions:
            topic = subscription.partition("?")[0]
            if topic.startswith("private/") and auth is None:
                raise ApiError(403, "Sign in to subscribe to private topics.", {"topic": subscription})
            if topic.startswith("user/") and (auth is None or topic != f"user/{auth['id']}"):
                raise ApiError(403, "You can only subscribe to your own user topic.", {"topic": subscription})

    @app.post("/notify")
    def notify() -> Any:
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("topic"), str):
            return jsonify({"data": {}, "message": "Expected {\"topic\": str, \"data\": any}.", "status": 400}), 400
        try:
            delivered = broker.notify(body["topic"], body.get("data"), to=body.get("to"))
        except ValueError as exc:
            return jsonify({"data": {}, "message": str(exc), "status": 400}), 400
        return jsonify({"delivered": delivered})

    @app.get("/stats")
    def stats() -> Any:
        """This process's client count; with ``?cluster=1`` also every process's, summed."""
        counts: dict[str, Any] = {"clients": broker.total_clients()}
        if request.args.get("cluster"):
            counts["cluster"] = broker.count_clients(timeout=0.5)
        if request.args.get("resources"):
            counts.update(resources())
        return jsonify({**broker.stats(), **counts})

    return app


def resources() -> dict[str, int]:
    """Open file descriptors, live greenlets and threads of this process (for leak tests)."""
    import gc

    from greenlet import greenlet

    gc.collect()
    objects = gc.get_objects()
    greenlets = sum(1 for obj in objects if isinstance(obj, greenlet) and not obj.dead)
    return {
        "gc_objects": len(objects),
        "fds": len(os.listdir("/proc/self/fd")),
        "greenlets": greenlets,
        "threads": threading.active_count(),
        "rss_kb": _rss_kb(),
    }


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


app = create_app()
