"""Record subscriptions over the POST endpoint (400 for unusable options) and with Flask-SQLAlchemy."""

from __future__ import annotations

import urllib.parse
from typing import Any, Iterator

import pytest
import simplejson
from flask import Flask, abort, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.pool import StaticPool

from flask_rtbroker import IP_KEY, DefaultClient, RealtimeBroker
from flask_rtbroker.records.validation import RECORD_OPTIONS_KEY

from tests.records_support import Base, Post, close_app, connect, make_app, received, sqlite_engine, with_options

GENERIC = "Something went wrong while processing your request."


@pytest.fixture
def app_broker() -> Iterator[tuple[Flask, RealtimeBroker]]:
    app, broker = make_app()
    with app.app_context():
        broker.watch(Post, collection_id="pbc_posts")
    yield app, broker
    close_app(app)


def local_client(app: Flask, broker: RealtimeBroker, *subscriptions: str) -> DefaultClient:
    client = connect(broker, app, *subscriptions)
    client.set(IP_KEY, "127.0.0.1")
    return client


def post(app: Flask, client_id: str, subscriptions: list[str]) -> tuple[int, Any]:
    response = app.test_client().post("/api/realtime", json={"clientId": client_id, "subscriptions": subscriptions})
    return response.status_code, (simplejson.loads(response.data) if response.data else None)


def test_unsupported_filter_is_a_400_and_changes_nothing(app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    client = local_client(app, broker, "before")
    bad = with_options("posts/*", filter="tags ?= 'a'")
    status, body = post(app, client.id, ["posts/*", bad])
    assert status == 400
    assert body == {
        "data": {"subscriptions": {"1": {
            "code": "validation_invalid_filter",
            "message": "Unsupported filter: the any-of operators (?=, ?~, ...) are not supported (position 5).",
        }}},
        "message": GENERIC,
        "status": 400,
    }
    assert list(client.subscriptions()) == ["before"]


def test_every_unusable_item_is_reported(app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    client = local_client(app, broker)
    subscriptions = [
        with_options("posts/1", filter="title = 'ok'", fields="id"),
        with_options("posts", fields="title:lower"),
        with_options("custom-topic", filter="not a filter at all ((("),
        with_options("pbc_posts/*", filter="created > @now"),
        with_options("posts/*", filter=""),
    ]
    status, body = post(app, client.id, subscriptions)
    assert status == 400
    assert body["data"]["subscriptions"] == {
        "1": {"code": "validation_invalid_fields",
              "message": "Invalid fields: unknown field modifier 'lower'; the only one is :excerpt(max, withEllipsis?)."},
        "3": {"code": "validation_invalid_filter",
              "message": "Unsupported filter: @now is not supported (no @ fields or macros)."},
    }


def test_options_of_other_topics_are_not_checked(app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    client = local_client(app, broker)
    keys = [with_options("custom", filter="((("), with_options("postsX/*", filter="?="), "posts/*?foo=bar"]
    assert post(app, client.id, keys) == (204, None)
    assert list(client.subscriptions()) == keys


def test_validation_order(app_broker: tuple[Flask, RealtimeBroker]) -> None:
    """PocketBase's checks first, then the client lookup, then the record options: an unknown
    client costs no filter parsing."""
    app, broker = app_broker
    bad = with_options("posts/*", filter="a ?= 1")
    assert post(app, "nobody", [bad])[0] == 404
    status, body = post(app, "", [bad])
    assert (status, body["data"]) == (400, {"clientId": {"code": "validation_required", "message": "Cannot be blank."}})
    status, body = post(app, local_client(app, broker).id, [bad])
    assert status == 400 and "0" in body["data"]["subscriptions"]


def test_the_options_of_one_client_have_a_budget(app_broker: tuple[Flask, RealtimeBroker]) -> None:
    """Keys of long filters (1,000 of 200 comparisons stalled a worker for 3.3 s per POST): an
    unknown client is a 404 before any filter is read; a known one gets a 400 naming the limit
    and keeps its subscriptions."""
    from flask_rtbroker.records.validation import MAX_OPTIONS_SOURCE

    app, broker = app_broker
    costly = [with_options(f"posts/{i}", filter="||".join(["a=1"] * 150 + [f"a={i}"])) for i in range(16)]
    assert post(app, "nobody", costly)[0] == 404
    client = local_client(app, broker, "before")
    status, body = post(app, client.id, costly)
    errors = body["data"]["subscriptions"]
    lengths = [len(simplejson.loads(urllib.parse.unquote(key.partition("=")[2]))["query"]["filter"]) for key in costly]
    over = next(i for i in range(len(costly)) if sum(lengths[: i + 1]) > MAX_OPTIONS_SOURCE)
    assert status == 400 and sorted(errors, key=int) == [str(i) for i in range(over, len(costly))]
    assert errors[str(over)]["code"] == "validation_options_too_large"
    assert errors[str(over)]["params"] == {"max": MAX_OPTIONS_SOURCE}
    assert list(client.subscriptions()) == ["before"]
    within = [with_options(f"posts/{i}", filter="||".join(["a=1"] * 100 + [f"a={i}"])) for i in range(16)]
    assert sum(len("||".join(["a=1"] * 100 + [f"a={i}"])) for i in range(16)) <= MAX_OPTIONS_SOURCE
    assert post(app, client.id, within) == (204, None)


def test_a_valid_filter_subscribes_and_filters(app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    client = local_client(app, broker)
    key = with_options("posts/*", filter="views > 1", fields="title")
    assert post(app, client.id, [key]) == (204, None)
    engine = sqlite_engine()
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all([Post(title="low", views=1), Post(title="high", views=2)])
        session.commit()
    assert received(client) == [(key, {"record": {"title": "high"}, "action": "create"})]


def test_a_post_without_options_drops_the_filter_of_the_one_before(app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    client = local_client(app, broker)
    filtered = with_options("posts/*", filter="views > 1")
    assert post(app, client.id, [filtered]) == (204, None)
    assert client.get(RECORD_OPTIONS_KEY) is not None
    assert post(app, client.id, ["posts/*"]) == (204, None)
    assert client.get(RECORD_OPTIONS_KEY) is None  # plain keys keep nothing per client
    engine = sqlite_engine()
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Post(title="low", views=1))
        session.commit()
    assert [(name, data["record"]["title"]) for name, data in received(client)] == [("posts/*", "low")]


# -- Flask-SQLAlchemy ------------------------------------------------------------------------

db = SQLAlchemy()


class Note(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(100))
    board: Mapped[str] = mapped_column(String(20))


class Member(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "members"

    id: Mapped[int] = mapped_column(primary_key=True)
    board: Mapped[str] = mapped_column(String(20))
    user: Mapped[str] = mapped_column(String(20))


@pytest.fixture
def notes_app() -> Iterator[tuple[Flask, RealtimeBroker]]:
    app, broker = make_app(
        SQLALCHEMY_DATABASE_URI="sqlite://",
        SQLALCHEMY_ENGINE_OPTIONS={"poolclass": StaticPool, "connect_args": {"check_same_thread": False}},
    )
    db.init_app(app)

    def members_only(note: Any, auth: Any, options: Any) -> bool:
        """A rule that asks the database (in a fresh app context and session)."""
        user = (auth or {}).get("id")
        return db.session.query(Member).filter_by(board=note["board"], user=user).first() is not None

    @app.post("/notes")
    def add_note() -> Any:
        body = request.get_json()
        db.session.add(Note(text=body["text"], board=body["board"]))
        if body.get("fail"):
            db.session.flush()
            db.session.rollback()
            abort(409)
        db.session.commit()
        return {"ok": True}

    with app.app_context():
        broker.watch(Note, list_rule=members_only)
        db.create_all()
        db.session.add_all([Member(board="red", user="ann"), Member(board="blue", user="bo")])
        db.session.commit()
    yield app, broker
    close_app(app)


def test_flask_sqlalchemy_commits_in_requests(notes_app: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = notes_app
    ann = connect(broker, app, "notes/*", auth={"id": "ann"})
    bo = connect(broker, app, "notes/*", auth={"id": "bo"})
    client = app.test_client()
    assert client.post("/notes", json={"text": "hello red", "board": "red"}).status_code == 200
    assert client.post("/notes", json={"text": "rolled back", "board": "red", "fail": True}).status_code == 409
    assert client.post("/notes", json={"text": "hello blue", "board": "blue"}).status_code == 200
    assert [data["record"]["text"] for _, data in received(ann)] == ["hello red"]
    assert [data["record"]["text"] for _, data in received(bo)] == ["hello blue"]
    with app.app_context():
        assert [note.text for note in db.session.query(Note).order_by(Note.id)] == ["hello red", "hello blue"]
