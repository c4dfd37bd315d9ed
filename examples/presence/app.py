"""A "who's here" page: presence on ``room/*`` shown by the official JS SDK in the browser.

    POCKETBASE_JS=path/to/pocketbase.umd.js gunicorn -k gevent examples.presence.app:app

``GET /`` is ``index.html`` (the page of docs/presence.rst): it watches ``@presence/room/lobby``
and subscribes to ``room/lobby``, so every open tab lists every other one. ``GET
/vendor/pocketbase.umd.js`` serves the SDK file named by ``POCKETBASE_JS`` (by default the one
``npm install pocketbase`` puts in this folder's ``node_modules``). ``RTBROKER_*`` settings come
from the environment (e.g. ``RTBROKER_BACKPLANE=redis://...`` for several workers).
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, Response, send_file

from flask_rtbroker import RealtimeBroker, load_env

HERE = Path(__file__).resolve().parent
SDK_FILE = HERE / "node_modules" / "pocketbase" / "dist" / "pocketbase.umd.js"


def create_app() -> Flask:
    """The page, the SDK file and the realtime API with presence on ``room/*``."""
    app = Flask(__name__)
    load_env(app.config)
    app.config.setdefault("SECRET_KEY", os.environ.get("PRESENCE_SECRET_KEY") or os.urandom(32).hex())
    broker = RealtimeBroker(app)
    broker.presence("room/*")
    sdk = Path(os.environ.get("POCKETBASE_JS") or SDK_FILE)

    @app.get("/")
    def index() -> Response:
        return send_file(HERE / "index.html", mimetype="text/html")

    @app.get("/vendor/pocketbase.umd.js")
    def sdk_file() -> Response:
        return send_file(sdk, mimetype="text/javascript")

    return app


app = create_app()
