"""Shared pieces of the record-event tests: a model, databases, apps and in-process clients.

Databases: SQLite in memory always; PostgreSQL at the URL of the ``postgres_url`` fixture (a
throwaway server the tests start, see postgres_server.py, or ``RTBROKER_TEST_POSTGRES_URL``), in
a schema of its own that is dropped afterwards. An unreachable PostgreSQL fails the tests that use
it, loudly; it is never skipped.
"""

from __future__ import annotations

import gc
import secrets
import urllib.parse
from typing import Any, Iterator

import pytest
import simplejson
from flask import Flask
from sqlalchemy import Engine, ForeignKey, Integer, String, Text, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.pool import StaticPool

from flask_rtbroker import AUTH_KEY, DefaultClient, RealtimeBroker
from flask_rtbroker.testing import parse_events

DATABASES = ("sqlite", "postgres")


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    posts: Mapped[list["Post"]] = relationship(cascade="all, delete-orphan", order_by="Post.id")


class Post(Base):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    owner: Mapped[str] = mapped_column(String(40), default="")
    views: Mapped[int] = mapped_column(Integer, default=0)
    body: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), server_default="draft")
    author_id: Mapped[int | None] = mapped_column(ForeignKey("authors.id"), nullable=True)


def sqlite_engine() -> Engine:
    """A fresh in-memory SQLite database shared by every thread of the test."""
    return create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})


def postgres_engine(url: str) -> tuple[Engine, str]:
    """A schema of its own on the PostgreSQL at *url*; fails the test when it is unreachable."""
    schema = "rtbroker_" + secrets.token_hex(6)
    admin = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with admin.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
    except Exception as exc:  # noqa: BLE001 - any failure is reported as is
        pytest.fail(
            f"PostgreSQL is required by these tests and is unreachable at {url} ({exc}). "
            "Without RTBROKER_TEST_POSTGRES_URL the tests start their own server (Debian package "
            "postgresql, installed by scripts/test.sh); with it, it must point at a running server "
            "with trust auth.",
            pytrace=False,
        )
    finally:
        admin.dispose()
    engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}", "connect_timeout": 3})
    return engine, schema


def drop_schema(url: str, schema: str) -> None:
    admin = create_engine(url, connect_args={"connect_timeout": 3})
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def database(kind: str, postgres_url: str | None = None) -> Iterator[Engine]:
    """Yield an engine with the tables created; clean up afterwards. ``postgres`` needs *postgres_url*."""
    schema = None
    if kind == "sqlite":
        engine = sqlite_engine()
    else:
        assert postgres_url is not None, "database('postgres') needs the postgres_url fixture's URL"
        engine, schema = postgres_engine(postgres_url)
    Base.metadata.create_all(engine)
    try:
        yield engine
    finally:
        engine.dispose()
        if schema is not None:
            assert postgres_url is not None
            drop_schema(postgres_url, schema)


@pytest.fixture(params=DATABASES)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An engine on each of :data:`DATABASES` in turn (PostgreSQL starts only for its case);
    test modules import it as their ``engine`` fixture."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    yield from database(request.param, url)


def make_app(**config: Any) -> tuple[Flask, RealtimeBroker]:
    """A Flask app with a broker on threads (no streams are opened in process)."""
    app = Flask(__name__)
    app.config.update(RTBROKER_CONCURRENCY="threading", **config)
    return app, RealtimeBroker(app)


def close_app(app: Flask) -> None:
    """Close the app's broker and let its watches go."""
    app.extensions["rtbroker"].close()
    app.extensions.clear()
    gc.collect()


def connect(broker: RealtimeBroker, app: Flask, *subscriptions: str, auth: Any = None) -> DefaultClient:
    """Register an in-process client with *subscriptions* and *auth*."""
    with app.app_context():
        client = broker.state().new_client()
        broker.subscriptions_broker.register(client)
    if auth is not None:
        client.set(AUTH_KEY, auth)
    client.subscribe(*subscriptions)
    return client


def received(client: DefaultClient) -> list[tuple[str, Any]]:
    """Take what *client* has queued: ``(event name, decoded data)`` per message."""
    return [(event.name, event.json()) for event in parse_events(client.take())]


def with_options(topic: str, **query: Any) -> str:
    """The key the SDK makes for ``subscribe(topic, cb, {query...})``."""
    return f"{topic}?options=" + urllib.parse.quote(simplejson.dumps({"query": query}), safe="")


def record(post_id: int, **values: Any) -> dict[str, Any]:
    """The default serialisation of a Post."""
    base = {
        "author_id": None, "body": "", "collectionId": "posts", "collectionName": "posts", "id": str(post_id),
        "owner": "", "status": "draft", "title": "", "views": 0,
    }
    return {**base, **values}
