"""Gunicorn settings for the live counter demo.

    gunicorn -c examples/demo/gunicorn.conf.py

Environment: ``PORT`` (default 5000; the demo listens on 127.0.0.1 only), ``WEB_CONCURRENCY``
(worker processes, default 1; more need ``RTBROKER_BACKPLANE=redis://...``). Command-line
flags override this file, e.g. ``-b 0.0.0.0:8000`` to listen on every interface.
"""

import os
from pathlib import Path

# The app to serve, so the command above needs no argument. The repository root goes on the
# import path so that ``examples.demo`` imports from any working directory.
wsgi_app = "examples.demo.app:app"
pythonpath = str(Path(__file__).resolve().parents[2])

bind = f"127.0.0.1:{os.environ.get('PORT', '5000')}"

# gevent workers: every open page holds one request (its event stream) for minutes; with
# greenlets that costs a few kilobytes, not a thread. One worker takes up to
# worker_connections simultaneous requests, streams included.
worker_class = "gevent"
worker_connections = 10000

# One process by default: the counter and the broker's list of connected pages live in its
# memory, and broker.notify reaches the streams of the process that calls it. For several
# workers, set RTBROKER_BACKPLANE=redis://...: the processes then share pages and counter.
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))

# On a graceful stop the broker ends every stream at once (RTBROKER_GRACEFUL_SHUTDOWN) and the
# SDK in each page reconnects; the timeout only bounds requests that are still running.
graceful_timeout = 3

# Request lines on stdout: shows the SDK's GET (stream) and POST (subscriptions) traffic.
accesslog = "-"


def on_starting(server):  # noqa: ANN001 - gunicorn's hook signature
    """Each stream holds a file descriptor: lift the soft open-files limit (often 1024) to the
    hard one, so worker_connections streams can really be open. Workers inherit it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server.log.info("open files limit: %s", hard)
