"""A minimal app for benchmarks and external checks: the realtime API plus ``POST /notify``.

    gunicorn -k gevent examples.notify_app:app

``POST /notify {"topic": ..., "data": ..., "to": [client ids]?}`` calls ``broker.notify`` and
answers ``{"delivered": N}``. It is a test hook: never expose it in production.

Settings come from ``RTBROKER_*`` environment variables. ``RTBROKER_TEST_TOKENS`` (a JSON object
token -> user id) makes the auth loader accept those tokens, raw or as ``Bearer <token>``, so
external checks can act as different users.
"""

from __future__ import annotations

import os
from typing import Any

import simplejson
from flask import Flask, Request, jsonify, request

from flask_rtbroker import RealtimeBroker, load_env

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
        counts = {"clients": broker.total_clients()}
        if request.args.get("cluster"):
            counts["cluster"] = broker.count_clients(timeout=0.5)
        return jsonify(counts)

    return app


app = create_app()
