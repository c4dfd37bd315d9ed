"""A live shared counter: the smallest useful flask_rtbroker app.

Every open page shows the same number. Pressing **+1** (or ``curl -X POST .../api/counter/increment``)
changes it on the server, which calls ``broker.notify("counter", ...)``; every page, the one
that pressed the button included, redraws from that realtime event. The page talks to the
server with the unmodified PocketBase JS SDK, exactly as it would talk to PocketBase.

Run it (from the repository root)::

    npm ci --prefix examples/demo                 # the browser SDK, once
    gunicorn -c examples/demo/gunicorn.conf.py    # then open http://127.0.0.1:5000

Routes:

- ``GET /``                           the page
- ``GET /vendor/pocketbase.umd.js``   the SDK from ``examples/demo/node_modules``
- ``GET /api/counter``                ``{"value": n, "version": v}``
- ``POST /api/counter/increment``     add one, tell every subscriber; answers the new state
  plus ``delivered`` (how many streams of this process the event was queued for)
- ``POST /api/counter/reset``         back to zero, same answer
- ``GET|POST /api/realtime``          the realtime endpoint (flask_rtbroker)

Settings: ``RTBROKER_*`` environment variables (see ``flask_rtbroker.config``), and
``DEMO_POCKETBASE_JS`` to serve the SDK file from another path.

One process (the default) keeps the counter in memory; gevent serves thousands of pages from
it. With ``RTBROKER_BACKPLANE=redis://...`` the counter lives in that Redis too, so any number
of workers and hosts share both the pages and the number::

    RTBROKER_BACKPLANE=redis://127.0.0.1:6379/0 WEB_CONCURRENCY=4 gunicorn -c examples/demo/gunicorn.conf.py
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Mapping

from flask import Flask, Response, jsonify, render_template, send_file

from flask_rtbroker import RealtimeBroker, load_env

HERE = Path(__file__).resolve().parent
SDK_FILE = HERE / "node_modules" / "pocketbase" / "dist" / "pocketbase.umd.js"
INSTALL_COMMAND = "npm ci --prefix examples/demo"
COUNTER_TOPIC = "counter"


class MemoryCounter:
    """A number shared by the pages of this process, with a version that grows on every change.

    Two changes racing may publish their events out of order; pages keep the state with the
    highest version, so they always settle on the latest value.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0
        self._version = 0

    def snapshot(self) -> dict[str, int]:
        """The current ``{"value", "version"}``."""
        with self._lock:
            return {"value": self._value, "version": self._version}

    def increment(self) -> dict[str, int]:
        """Add one; return the new snapshot."""
        with self._lock:
            self._value += 1
            self._version += 1
            return {"value": self._value, "version": self._version}

    def reset(self) -> dict[str, int]:
        """Back to zero (a new version all the same); return the new snapshot."""
        with self._lock:
            self._value = 0
            self._version += 1
            return {"value": self._value, "version": self._version}


class RedisCounter:
    """The same counter in a Redis hash, shared by every process that uses that Redis."""

    KEY = "flask-rtbroker-demo:counter"

    def __init__(self, url: str) -> None:
        import redis  # the "redis" extra; only needed in this mode

        self._redis = redis.Redis.from_url(url)

    def snapshot(self) -> dict[str, int]:
        """The current ``{"value", "version"}`` (zeros before the first change)."""
        value, version = self._redis.hmget(self.KEY, ["value", "version"])
        return {"value": int(value or 0), "version": int(version or 0)}

    def increment(self) -> dict[str, int]:
        """Add one and bump the version in one transaction; return the new snapshot."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hincrby(self.KEY, "value", 1)
        pipe.hincrby(self.KEY, "version", 1)
        value, version = pipe.execute()
        return {"value": value, "version": version}

    def reset(self) -> dict[str, int]:
        """Set zero and bump the version in one transaction; return the new snapshot."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self.KEY, "value", 0)
        pipe.hincrby(self.KEY, "version", 1)
        _, version = pipe.execute()
        return {"value": 0, "version": version}


def make_counter(backplane: Any) -> MemoryCounter | RedisCounter:
    """A Redis counter when the broker's backplane is a Redis URL, else an in-memory one."""
    if isinstance(backplane, str) and backplane.startswith(("redis://", "rediss://")):
        return RedisCounter(backplane)
    return MemoryCounter()


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the demo app: settings from the environment, then *config* on top."""
    app = Flask(__name__)
    app.config["DEMO_POCKETBASE_JS"] = os.environ.get("DEMO_POCKETBASE_JS") or str(SDK_FILE)
    load_env(app.config)
    if config:
        app.config.update(config)
    broker = RealtimeBroker(app)
    counter = make_counter(app.config.get("RTBROKER_BACKPLANE"))

    def sdk_path() -> Path:
        return Path(app.config["DEMO_POCKETBASE_JS"])

    @app.get("/")
    def index() -> Any:
        """The counter page, or an explanation of how to install the SDK it needs."""
        if not sdk_path().is_file():
            page = render_template("missing_sdk.html", path=sdk_path(), command=INSTALL_COMMAND)
            return page, 503
        return render_template("index.html", topic=COUNTER_TOPIC)

    @app.get("/vendor/pocketbase.umd.js")
    def pocketbase_sdk() -> Any:
        """The official PocketBase JS SDK (UMD build: defines ``window.PocketBase``)."""
        if not sdk_path().is_file():
            message = f"// PocketBase JS SDK not installed: run `{INSTALL_COMMAND}`\n"
            return Response(message, status=404, mimetype="text/javascript")
        return send_file(sdk_path(), mimetype="text/javascript", max_age=3600)

    @app.get("/api/counter")
    def get_counter() -> Any:
        """The current value; pages load it once they are subscribed."""
        return jsonify(counter.snapshot())

    def publish(state: dict[str, int]) -> Any:
        delivered = broker.notify(COUNTER_TOPIC, state)
        return jsonify({**state, "delivered": delivered})

    @app.post("/api/counter/increment")
    def increment() -> Any:
        """Add one and push the new state to every subscribed page."""
        return publish(counter.increment())

    @app.post("/api/counter/reset")
    def reset() -> Any:
        """Set the counter back to zero and push it."""
        return publish(counter.reset())

    return app


app = create_app()

if __name__ == "__main__":
    # Development server (threads): python -m examples.demo.app
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")), threaded=True)
