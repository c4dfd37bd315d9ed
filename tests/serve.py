"""Run a WSGI app under gevent.pywsgi or werkzeug's threaded server (for live tests).

    python tests/serve.py pywsgi|werkzeug HOST PORT MODULE:ATTR
"""

from __future__ import annotations

import importlib
import signal
import sys


def load(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr or "app")


def main() -> None:
    mode, host, port, target = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if mode == "pywsgi":
        from gevent import monkey

        monkey.patch_all()
        from gevent.pywsgi import WSGIServer

        server = WSGIServer((host, port), load(target), log=None)
        signal.signal(signal.SIGTERM, lambda *_: server.stop(timeout=1))
        server.serve_forever()
    elif mode == "werkzeug":
        from werkzeug.serving import run_simple

        run_simple(host, port, load(target), threaded=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
