"""Record events from SQLAlchemy commits, on SQLite and PostgreSQL, with in-process clients."""

from __future__ import annotations

import logging
from typing import Any, Iterator

import pytest
from flask import Flask
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from flask_rtbroker import RealtimeBroker
from flask_rtbroker.protocol.options import SubscriptionOptions

from tests.records_support import engine, Author, Post, close_app, connect, make_app, received, record, with_options


@pytest.fixture
def app_broker() -> Iterator[tuple[Flask, RealtimeBroker]]:
    app, broker = make_app()
    yield app, broker
    close_app(app)


def watch(app_broker: tuple[Flask, RealtimeBroker], **options: Any) -> None:
    app, broker = app_broker
    with app.app_context():
        broker.watch(Post, **options)


def owner_rule(post: Any, auth: Any, options: SubscriptionOptions) -> bool:
    return post["owner"] == "" or (auth is not None and post["owner"] == auth["id"])


# -- the basic flow ------------------------------------------------------------------------------


def test_create_update_delete_reach_every_record_topic(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    watch(app_broker)
    wildcard = connect(broker, app, "posts/*")
    legacy = connect(broker, app, "posts")
    single = connect(broker, app, "posts/1", "posts/*")
    others = connect(broker, app, "posts/2", "posts2/*", "post/*", "posts/1/x", "Posts/*", "authors/*")
    with Session(engine) as session:
        post = Post(title="first")
        session.add(post)
        session.commit()
        post.title = "renamed"
        session.commit()
        session.delete(post)
        session.commit()
    created, updated = record(1, title="first"), record(1, title="renamed")
    expected = [
        ("posts/*", {"record": created, "action": "create"}),
        ("posts/*", {"record": updated, "action": "update"}),
        ("posts/*", {"record": updated, "action": "delete"}),
    ]
    assert received(wildcard) == expected
    assert received(legacy) == [("posts", data) for _, data in expected]
    assert received(single) == [(name, data) for _, data in expected for name in ("posts/1", "posts/*")]
    assert received(others) == []


def test_message_bytes_are_pocketbase_s(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    watch(app_broker)
    client = connect(broker, app, "posts/*")
    with Session(engine) as session:
        session.add(Post(title="Zürich <&>", views=3))
        session.commit()
    assert client.take() == b"id:" + client.id.encode() + (
        b'\nevent:posts/*\ndata:{"record":{"author_id":null,"body":"","collectionId":"posts",'
        b'"collectionName":"posts","id":"1","owner":"","status":"draft","title":"Z\xc3\xbcrich <&>",'
        b'"views":3},"action":"create"}\n\n'
    )


def test_nothing_before_commit_nothing_on_rollback(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    watch(app_broker)
    client = connect(broker, app, "posts/*")
    with Session(engine) as session:
        session.add(Post(title="kept"))
        session.flush()
        assert received(client) == []
        session.commit()
        assert [data["record"]["title"] for _, data in received(client)] == ["kept"]

        session.add(Post(title="rolled back"))
        session.flush()
        session.get(Post, 1).title = "changed, rolled back"
        session.flush()
        session.delete(session.get(Post, 1))
        session.flush()
        session.rollback()
        session.add(Post(title="never flushed"))
        session.close()
    assert received(client) == []


def test_failed_flush_then_rollback_sends_nothing(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    watch(app_broker)
    client = connect(broker, app, "posts/*")
    with Session(engine) as session:
        session.add(Post(id=1, title="one"))
        session.commit()
    with Session(engine) as session:
        session.add_all([Post(id=2, title="two"), Post(id=1, title="duplicate")])
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
        session.add(Post(id=3, title="three"))
        session.commit()
    assert [data["record"]["id"] for _, data in received(client)] == ["1", "3"]


def test_savepoints(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    watch(app_broker)
    client = connect(broker, app, "posts/*")
    with Session(engine) as session:
        session.add(Post(id=1, title="outer"))
        with session.begin_nested() as savepoint:
            session.add(Post(id=2, title="inner, rolled back"))
            session.flush()
            savepoint.rollback()
        with session.begin_nested():
            session.add(Post(id=3, title="inner, released"))
        with pytest.raises(IntegrityError):
            with session.begin_nested():
                session.add(Post(id=1, title="duplicate in a savepoint"))
        assert received(client) == [], "a released savepoint is not a commit"
        session.commit()
    assert [data["record"]["title"] for _, data in received(client)] == ["outer", "inner, released"]


def test_several_rows_in_one_commit_arrive_in_commit_order(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    watch(app_broker)
    with Session(engine) as session:
        session.add_all([Post(title="stays"), Post(title="goes")])
        session.commit()
    client = connect(broker, app, "posts/*")
    with Session(engine) as session:
        session.add_all([Post(title=f"bulk {i}") for i in range(50)])
        session.flush()
        session.get(Post, 1).title = "updated"
        session.delete(session.get(Post, 2))
        session.flush()
        session.add(Post(title="last"))
        session.commit()
    events = [(data["action"], data["record"]["title"]) for _, data in received(client)]
    assert events == [("create", f"bulk {i}") for i in range(50)] + [
        ("update", "updated"), ("delete", "goes"), ("create", "last")]


def test_an_update_without_changes_is_not_an_event(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    watch(app_broker)
    with Session(engine) as session:
        session.add(Post(title="same"))
        session.commit()
        client = connect(broker, app, "posts/*")
        post = session.get(Post, 1)
        post.title = "same"
        session.commit()
    assert received(client) == []


def test_generated_values_are_in_the_record(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    watch(app_broker)
    client = connect(broker, app, "posts/*")
    with Session(engine) as session:
        session.add(Post(title="defaults"))
        session.commit()
    ((_, data),) = received(client)
    assert data["record"]["id"] == "1" and data["record"]["status"] == "draft" and data["record"]["views"] == 0


# -- rules -----------------------------------------------------------------------------------


def test_rules_per_auth_identity(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    watch(app_broker, list_rule=owner_rule, view_rule=lambda post, auth, options: auth is not None)
    alice = connect(broker, app, "posts/*", "posts/1", auth={"collectionName": "users", "id": "alice"})
    bob = connect(broker, app, "posts/*", "posts/1", auth={"collectionName": "users", "id": "bob"})
    guest = connect(broker, app, "posts/*", "posts/1")
    with Session(engine) as session:
        session.add_all([Post(title="alice's", owner="alice"), Post(title="public")])
        session.commit()
    assert [(name, data["record"]["title"]) for name, data in received(alice)] == [
        ("posts/1", "alice's"), ("posts/*", "alice's"), ("posts/*", "public")]
    assert [(name, data["record"]["title"]) for name, data in received(bob)] == [("posts/1", "alice's"), ("posts/*", "public")]
    assert [(name, data["record"]["title"]) for name, data in received(guest)] == [("posts/*", "public")]


def test_a_rule_that_denies_everyone(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    watch(app_broker, list_rule=lambda post, auth, options: False)
    client = connect(broker, app, "posts/*", "posts/1", auth={"id": "alice"})
    with Session(engine) as session:
        session.add(Post(title="hidden from lists"))
        session.commit()
    assert [name for name, _ in received(client)] == ["posts/1"]


def test_rules_see_the_options(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    watch(app_broker, list_rule=lambda post, auth, options: options.query.get("k") == "v")
    key = with_options("posts/*", k="v")
    client = connect(broker, app, "posts/*", key, with_options("posts/*", k="w"))
    with Session(engine) as session:
        session.add(Post(title="x"))
        session.commit()
    assert [name for name, _ in received(client)] == [key]


def test_delete_rule_sees_the_row_before_deletion(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    seen: list[dict] = []

    def only_published(post: Any, auth: Any, options: Any) -> bool:
        seen.append(dict(post))
        return post["status"] == "published"

    watch(app_broker, list_rule=only_published)
    with Session(engine) as session:
        session.add(Post(title="gone", status="published", author_id=None))
        session.commit()
        client = connect(broker, app, "posts/*")
        seen.clear()
        post = session.get(Post, 1)
        session.commit()  # expires the row: the delete has to load it before it is gone
        session.delete(post)
        session.commit()
        assert session.get(Post, 1) is None
    assert seen == [record(1, title="gone", status="published")]
    assert received(client) == [("posts/*", {"record": record(1, title="gone", status="published"), "action": "delete"})]


def test_cascade_deletes_are_events(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    watch(app_broker)
    with Session(engine) as session:
        author = Author(name="a")
        session.add(author)
        session.flush()
        session.add_all([Post(title="p1", author_id=author.id), Post(title="p2", author_id=author.id)])
        session.commit()
        client = connect(broker, app, "posts/*")
        session.delete(author)  # the relationship's cascade deletes the posts
        session.commit()
    assert [(data["action"], data["record"]["title"]) for _, data in received(client)] == [("delete", "p1"), ("delete", "p2")]


def test_each_rule_runs_once_per_identity_and_options_per_event(
    engine: Engine, app_broker: tuple[Flask, RealtimeBroker]
) -> None:
    app, broker = app_broker
    calls: list[tuple[str, str]] = []

    def counted(post: Any, auth: Any, options: SubscriptionOptions) -> bool:
        calls.append(((auth or {}).get("id", "guest"), options.query.get("filter", "")))
        return True

    watch(app_broker, list_rule=counted, view_rule=counted)
    filtered = with_options("posts/*", filter="views > 1")
    clients = []
    for i in range(300):
        auth = [None, {"collectionName": "users", "id": "alice"}, {"collectionName": "users", "id": "bob"}][i % 3]
        clients.append(connect(broker, app, "posts/*", "posts", filtered, "posts/1", auth=dict(auth) if auth else None))
    with Session(engine) as session:
        session.add(Post(title="counted", views=5))
        session.commit()
    assert app.extensions["rtbroker.records"].delivery.wait_idle(10), "300 subscribers: broadcast off the request"
    # 3 identities x (list rule with no options, list rule with the filter, view rule)
    assert sorted(calls) == sorted((who, flt) for who in ("guest", "alice", "bob") for flt in ("", "views > 1", ""))
    assert all(len(received(client)) == 4 for client in clients)


def test_a_failing_rule_denies_and_the_commit_stands(
    engine: Engine, app_broker: tuple[Flask, RealtimeBroker], caplog: pytest.LogCaptureFixture
) -> None:
    app, broker = app_broker

    def fragile(post: Any, auth: Any, options: Any) -> bool:
        if auth is None:
            raise RuntimeError("no auth")
        return True

    watch(app_broker, list_rule=fragile)
    guest = connect(broker, app, "posts/*")
    user = connect(broker, app, "posts/*", auth={"id": "u"})
    with caplog.at_level(logging.ERROR, "flask_rtbroker.records"), Session(engine) as session:
        session.add(Post(title="x"))
        session.commit()
        assert session.scalar(select(Post.title)) == "x"
    assert received(guest) == [] and len(received(user)) == 1
    assert "the list rule of 'posts' raised" in caplog.text


def test_a_failing_serializer_does_not_break_the_commit(
    engine: Engine, app_broker: tuple[Flask, RealtimeBroker], caplog: pytest.LogCaptureFixture
) -> None:
    app, broker = app_broker

    def serialize(post: Post) -> dict:
        if post.title == "bad":
            raise ValueError("cannot")
        return {"id": post.id, "title": post.title}

    watch(app_broker, serialize=serialize)
    client = connect(broker, app, "posts/*")
    with caplog.at_level(logging.ERROR, "flask_rtbroker.records"), Session(engine) as session:
        session.add_all([Post(title="bad"), Post(title="good")])
        session.commit()
        session.delete(session.get(Post, 1))
        session.commit()
        assert session.scalars(select(Post.title)).all() == ["good"]
    assert [data["record"]["title"] for _, data in received(client)] == ["good"]
    assert caplog.text.count("could not serialise") == 2


# -- options ---------------------------------------------------------------------------------


def test_filter_and_fields_options(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    watch(app_broker)
    mine = with_options("posts/*", filter="owner = 'alice' && views >= 10", fields="id,title")
    popular = with_options("posts/1", filter="views >= 10 || title ~ 'hot'")
    picked = with_options("posts/1", fields="id,title:excerpt(4,true)")
    alice = connect(broker, app, mine, popular, picked, auth={"id": "alice"})
    guest = connect(broker, app, mine, popular)
    with Session(engine) as session:
        post = Post(title="hot topic", owner="alice", views=1)
        session.add(post)
        session.commit()
        post.views = 10
        session.commit()
        post.title = "cold"
        post.views = 2
        session.commit()
    assert received(alice) == [
        (popular, {"record": record(1, title="hot topic", owner="alice", views=1), "action": "create"}),
        (picked, {"record": {"id": "1", "title": "hot..."}, "action": "create"}),
        (popular, {"record": record(1, title="hot topic", owner="alice", views=10), "action": "update"}),
        (picked, {"record": {"id": "1", "title": "hot..."}, "action": "update"}),
        (mine, {"record": {"id": "1", "title": "hot topic"}, "action": "update"}),
        (picked, {"record": {"id": "1", "title": "cold"}, "action": "update"}),
    ]
    assert [(name, data["action"]) for name, data in received(guest)] == [(popular, "create"), (popular, "update"), (mine, "update")]


def test_transitions_turn_updates_into_create_and_delete(engine: Engine) -> None:
    results = {}
    for transitions in (False, True):
        app, broker = make_app()
        with app.app_context():
            broker.watch(Post, list_rule=owner_rule, transitions=transitions)
        bob = connect(broker, app, "posts/*", auth={"id": "bob"})
        popular = connect(broker, app, with_options("posts/*", filter="views > 5"))
        with Session(engine) as session:
            post = Post(title="t", owner="bob")
            session.add(post)
            session.commit()
            post.owner = ""  # public now: visible to both
            post.views = 6
            session.commit()
            post.title = "t2"  # still visible
            session.commit()
            post.views = 1  # out of the filter
            session.commit()
            post.owner = "alice"  # out of bob's rule
            session.commit()
            session.delete(post)
            session.commit()
        results[transitions] = [
            [(data["action"], data["record"]["title"], data["record"]["owner"]) for _, data in received(client)]
            for client in (bob, popular)
        ]
        close_app(app)
        with Session(engine) as session:
            session.query(Post).delete()
            session.commit()
    assert results[False] == [
        [("create", "t", "bob"), ("update", "t", ""), ("update", "t2", ""), ("update", "t2", "")],
        [("update", "t", ""), ("update", "t2", "")],
    ]
    assert results[True] == [
        [("create", "t", "bob"), ("update", "t", ""), ("update", "t2", ""), ("update", "t2", ""), ("delete", "t2", "")],
        [("create", "t", ""), ("update", "t2", ""), ("delete", "t2", "")],
    ]


# -- configuration ---------------------------------------------------------------------------


def test_custom_serializer_and_collection_id(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    with app.app_context():
        watched = broker.watch(
            Post, collection="articles", collection_id="pbc_123",
            serialize=lambda post: {"id": f"p{post.id}", "headline": post.title.upper()},
        )
    assert (watched.name, watched.id) == ("articles", "pbc_123")
    client = connect(broker, app, "articles/*", "pbc_123/*", "pbc_123/p1", "posts/*")
    with Session(engine) as session:
        session.add(Post(title="hi"))
        session.commit()
    expected = {"record": {"id": "p1", "headline": "HI", "collectionId": "pbc_123", "collectionName": "articles"}, "action": "create"}
    assert received(client) == [("articles/*", expected), ("pbc_123/p1", expected), ("pbc_123/*", expected)]


def test_watch_defaults_and_mistakes(app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    with app.app_context():
        assert broker.watch(Post).name == "posts"
        with pytest.raises(ValueError, match="already watched"):
            broker.watch(Post)
        with pytest.raises(ValueError, match="without '/'"):
            broker.watch(Author, collection="a/b")
        with pytest.raises(TypeError):
            broker.watch(Author, list_rules=None)
