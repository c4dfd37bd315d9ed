"""A minimal app for benchmarks and external checks: the realtime API plus ``POST /notify``.

    gunicorn -k gevent examples.notify_app:app

``POST /notify {"topic": ..., "data": ..., "to": [client ids]?}`` calls ``broker.notify`` and
answers ``{"delivered": N}``; ``GET /stats`` answers ``broker.stats()`` (``?cluster=1`` adds
the cluster-wide count, ``?resources=1`` open fds, greenlets, threads and RSS). Both are test
hooks: never expose them in production. ``private/*``, ``user/<id>`` and ``staff/*`` topics
show the per-topic authorisation recipe: topic rules, checked at delivery, so a subscription is
never refused (a refused one traps the JS SDK; see docs/guide.rst, "Private topics").

Settings come from ``RTBROKER_*`` environment variables. ``RTBROKER_TEST_TOKENS`` (a JSON object
token -> user id) makes the auth loader accept those tokens, raw or as ``Bearer <token>``, so
external checks can act as different users; it also adds two test hooks: ``POST /test/token
{"token": ..., "user": id or null}`` makes a token valid or stale in this process, and ``POST
/test/auth {"user": id, "staff": bool, "clear": bool}`` marks a user staff (or not) here and
calls ``broker.refresh_auth`` (or ``broker.clear_auth``) for every process.
``NOTIFY_APP_PRESENCE`` (a pattern, e.g. ``room/*``) enables presence there and adds the test
hook ``GET /presence?topic=...``: ``{"members", "count", "pid"}`` as this process sees them.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import simplejson
from flask import Flask, Request, jsonify, request

from flask_rtbroker import DefaultClient, RealtimeBroker, load_env

TOKENS: dict[str, str] = simplejson.loads(os.environ.get("RTBROKER_TEST_TOKENS") or "{}")
STAFF: set[str] = set()
"""The ids of the users who may read ``staff/*`` (changed through ``POST /test/auth``)."""


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
        return user_record(user_id) if user_id else None

    @broker.topic_rule("private/*")
    def signed_in(client: DefaultClient, topic: str, auth: dict[str, Any] | None) -> bool:
        """``private/*`` is for signed-in users."""
        return auth is not None

    @broker.topic_rule("user/*")
    def own_topic(client: DefaultClient, topic: str, auth: dict[str, Any] | None) -> bool:
        """``user/<id>`` is for that user only."""
        return auth is not None and topic == f"user/{auth['id']}"

    @broker.topic_rule("staff/*")
    def staff_only(client: DefaultClient, topic: str, auth: dict[str, Any] | None) -> bool:
        """``staff/*`` is for users whose record says so (``broker.refresh_auth`` after a change)."""
        return auth is not None and bool(auth.get("staff"))

    if TOKENS:
        add_test_hooks(app, broker)
    if os.environ.get("NOTIFY_APP_PRESENCE"):
        add_presence(app, broker, os.environ["NOTIFY_APP_PRESENCE"])

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


def user_record(user_id: str) -> dict[str, Any]:
    """The identity of *user_id*, shaped like a PocketBase auth record."""
    return {"collectionName": "users", "id": user_id, "staff": user_id in STAFF}


def add_test_hooks(app: Flask, broker: RealtimeBroker) -> None:
    """``POST /test/token`` and ``POST /test/auth`` (see the module docstring); tests only."""

    @app.post("/test/token")
    def set_token() -> Any:
        body = request.get_json(force=True)
        if body.get("user"):
            TOKENS[body["token"]] = body["user"]
        else:
            TOKENS.pop(body["token"], None)
        return jsonify({"tokens": len(TOKENS)})

    @app.post("/test/auth")
    def change_user() -> Any:
        body = request.get_json(force=True)
        user_id = body["user"]
        if body.get("staff"):
            STAFF.add(user_id)
        else:
            STAFF.discard(user_id)
        if body.get("clear"):
            return jsonify({"changed": broker.clear_auth(user_record(user_id))})
        return jsonify({"changed": broker.refresh_auth(user_record(user_id))})


def add_presence(app: Flask, broker: RealtimeBroker, pattern: str) -> None:
    """Presence on *pattern* and ``GET /presence?topic=...`` (see the module docstring); tests only."""
    with app.app_context():
        broker.presence(pattern)

    @app.get("/presence")
    def presence() -> Any:
        topic = request.args.get("topic", "")
        return jsonify({"members": broker.presence(topic), "count": broker.presence_count(topic), "pid": os.getpid()})


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
