"""Gunicorn settings for the todo example.

    gunicorn -c examples/todo/gunicorn.conf.py

Environment: ``PORT`` (default 5000, on 127.0.0.1), ``WEB_CONCURRENCY`` (worker processes,
default 1; more need ``RTBROKER_BACKPLANE=redis://...`` so that a subscription reaches the
process holding its stream and, on SQLite, a change made in one process reaches the pages held
by the others; on PostgreSQL each process captures every change itself) and ``TODO_DATABASE_URL``.
"""

import os
from pathlib import Path

wsgi_app = "examples.todo.app:app"
pythonpath = str(Path(__file__).resolve().parents[2])
bind = f"127.0.0.1:{os.environ.get('PORT', '5000')}"

# gevent workers: each open page holds its event stream for minutes; a greenlet each is cheap.
worker_class = "gevent"
worker_connections = 10000
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))

# Streams never end by themselves; the SDK reconnects after a restart, so do not wait long.
graceful_timeout = 3
accesslog = "-"
