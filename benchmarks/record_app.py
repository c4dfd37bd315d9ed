"""The benchmark's record-event app: a watched SQLAlchemy model on SQLite, created over HTTP.

    RECORD_APP_DATABASE=sqlite:////tmp/posts.sqlite3 \\
        gunicorn -k gevent -w 1 -c benchmarks/gunicorn_conf.py benchmarks.record_app:app

What ``benchmarks/run.py`` measures against PocketBase's own record events (its ``posts``
collection comes from ``benchmarks/pb_migrations/``):

- ``Post`` (table ``posts``: a PocketBase-style 15-character ``id``, ``seq``, ``pad``) is
  watched with ``broker.watch(Post, collection="posts")`` and no rule, so every subscriber of
  ``posts/*`` may see every record, like a PocketBase collection whose list and view rules are
  ``""``;
- ``POST /api/collections/posts/records {"seq": int, "pad": str}`` inserts a row and commits
  (the commit broadcasts the ``create``) and answers the record, as PocketBase's create does;
- ``GET /stats`` answers ``{"clients": N}`` (what the runner and the load generator poll).
- ``RECORD_APP_RULE=query`` gives ``posts`` a list rule that runs one SQL query per call (what
  ``benchmarks/hostile_costs.py`` measures rule calls with); unset, there is no rule.

SQLite runs as PocketBase runs its own: ``journal_mode=WAL``, ``synchronous=NORMAL``.
``RECORD_APP_DATABASE`` is the SQLAlchemy URL (default: a file in the temp directory); the
table is created at start-up. A test hook, not an example of a production app (no auth, no
limits beyond the broker's).
"""

from __future__ import annotations

import os
import secrets
import string
import tempfile
from typing import Any

from flask import Flask, jsonify, request
from sqlalchemy import Engine, Integer, String, create_engine, event, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from flask_rtbroker import RealtimeBroker, load_env

COLLECTION = "posts"
DEFAULT_DATABASE = "sqlite:///" + os.path.join(tempfile.gettempdir(), "flask-rtbroker-bench-records.sqlite3")
_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_id() -> str:
    """A random id like PocketBase's: 15 characters of ``[a-z0-9]``."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(15))


class Base(DeclarativeBase):
    """The benchmark's declarative base."""


class Post(Base):
    """One created record: its sequence number (the load generator's round) and padding."""

    __tablename__ = COLLECTION

    id: Mapped[str] = mapped_column(String(15), primary_key=True, default=new_id)
    seq: Mapped[int] = mapped_column(Integer)
    pad: Mapped[str] = mapped_column(String(1000), default="")


def make_engine(url: str) -> Engine:
    """An engine on *url*; SQLite connections get PocketBase's journal settings."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def sqlite_pragmas(connection: Any, record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()
    return engine


def error(status: int, message: str) -> Any:
    """A JSON error in PocketBase's shape."""
    return jsonify({"data": {}, "message": message, "status": status}), status


def create_app(database: str | None = None) -> Flask:
    """The realtime API, the watched ``posts`` collection, its create route and ``/stats``."""
    app = Flask(__name__)
    load_env(app.config)
    broker = RealtimeBroker(app)
    engine = make_engine(database or os.environ.get("RECORD_APP_DATABASE") or DEFAULT_DATABASE)
    Base.metadata.create_all(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    def query_rule(record: Any, auth: Any, options: Any) -> bool:
        with sessions() as session:
            return session.execute(select(func.count()).select_from(Post).where(Post.id == record["id"])).scalar_one() > 0

    broker.watch(Post, collection=COLLECTION, list_rule=query_rule if os.environ.get("RECORD_APP_RULE") == "query" else None)

    @app.post(f"/api/collections/{COLLECTION}/records")
    def create_post() -> Any:
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("seq"), int) or not isinstance(body.get("pad", ""), str):
            return error(400, 'Expected {"seq": int, "pad": str}.')
        post = Post(seq=body["seq"], pad=body.get("pad", ""))
        with sessions() as session:
            session.add(post)
            session.commit()  # the watch broadcasts the create to posts/* here
        return jsonify({"collectionId": COLLECTION, "collectionName": COLLECTION, "id": post.id,
                        "pad": post.pad, "seq": post.seq})

    @app.get("/stats")
    def stats() -> Any:
        return jsonify({"clients": broker.total_clients()})

    return app


app = create_app()
