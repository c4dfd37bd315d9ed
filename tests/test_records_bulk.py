"""Record events from ORM bulk statements (UPDATE/DELETE with WHERE, multi-row INSERT, upserts),
on SQLite and on the PostgreSQL the fixtures start, with in-process clients."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from flask import Flask
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.orm import Session

from flask_rtbroker import RealtimeBroker

from tests.records_support import engine, Post, close_app, connect, make_app, received, record


@pytest.fixture
def app_broker() -> Iterator[tuple[Flask, RealtimeBroker]]:
    app, broker = make_app()
    with app.app_context():
        broker.watch(Post)
    yield app, broker
    close_app(app)


def seed(engine: Engine, count: int) -> None:
    with Session(engine) as session:
        session.add_all([Post(title=f"p{i}", views=i) for i in range(1, count + 1)])
        session.commit()


def seeded_client(engine: Engine, app_broker: tuple[Flask, RealtimeBroker], count: int, *subscriptions: str) -> Any:
    """Posts p1..p<count> (views 1..count) committed, then a client of *subscriptions*."""
    seed(engine, count)
    app, broker = app_broker
    return connect(broker, app, *subscriptions)


def actions(events: list[tuple[str, Any]]) -> list[tuple[str, str, str]]:
    return [(data["action"], data["record"]["id"], data["record"]["title"]) for _, data in events]


def test_update_where_is_one_event_per_affected_row_after_commit(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    client = seeded_client(engine, app_broker, 5, "posts/*")
    with Session(engine) as session:
        result = session.execute(update(Post).where(Post.views >= 3).values(title="hot"))
        assert result.rowcount == 3  # the caller's result is untouched
        assert received(client) == []  # nothing before the commit
        session.commit()
    assert received(client) == [
        ("posts/*", {"action": "update", "record": record(i, title="hot", views=i)}) for i in (3, 4, 5)
    ]


def test_update_that_changes_nothing_and_rollback_send_nothing(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    client = seeded_client(engine, app_broker, 3, "posts/*")
    with Session(engine) as session:
        session.execute(update(Post).where(Post.id == 1).values(title="p1"))  # the same value
        session.execute(update(Post).where(Post.id == 99).values(title="none"))  # no row
        session.commit()
        session.execute(update(Post).values(title="all"))
        session.rollback()
    assert received(client) == []


def test_delete_where_carries_the_rows_as_they_were(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    client = seeded_client(engine, app_broker, 4, "posts/*", "posts/2")
    with Session(engine) as session:
        session.execute(delete(Post).where(Post.views.in_([2, 4])))
        session.commit()
        assert session.scalars(select(Post.id).order_by(Post.id)).all() == [1, 3]
    events = received(client)  # per event, one message per matching key (in no set order)
    assert sorted(events[:2], key=lambda event: event[0]) == [
        ("posts/*", {"action": "delete", "record": record(2, title="p2", views=2)}),
        ("posts/2", {"action": "delete", "record": record(2, title="p2", views=2)}),
    ]
    assert events[2:] == [("posts/*", {"action": "delete", "record": record(4, title="p4", views=4)})]


def test_multi_row_insert_and_executemany_insert_are_creates_in_order(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    client = connect(broker, app, "posts/*")
    with Session(engine) as session:
        session.execute(insert(Post).values([{"title": "a"}, {"title": "b"}]))
        session.execute(insert(Post), [{"title": "c"}, {"title": "d", "views": 7}])
        session.commit()
    assert actions(received(client)) == [("create", "1", "a"), ("create", "2", "b"), ("create", "3", "c"),
                                          ("create", "4", "d")]


def test_update_by_primary_key_parameters(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    client = seeded_client(engine, app_broker, 3, "posts/*")
    with Session(engine) as session:
        session.execute(update(Post), [{"id": 3, "title": "three"}, {"id": 1, "title": "one"}])
        session.commit()
    assert sorted(actions(received(client))) == [("update", "1", "one"), ("update", "3", "three")]


def test_upsert_reports_create_or_update(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    client = seeded_client(engine, app_broker, 1, "posts/*")
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    statement = dialect_insert(Post).values([{"id": 1, "title": "kept"}, {"id": 2, "title": "new"}])
    statement = statement.on_conflict_do_update(index_elements=[Post.id], set_={"title": statement.excluded.title})
    with Session(engine) as session:
        session.execute(statement)
        session.commit()
    assert actions(received(client)) == [("update", "1", "kept"), ("create", "2", "new")]


def test_bulk_and_unit_of_work_changes_interleave_in_execution_order(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    app, broker = app_broker
    client = connect(broker, app, "posts/*")
    with Session(engine) as session:
        session.add(Post(title="flushed"))
        session.execute(update(Post).values(title="bulk"))  # autoflushes the add first
        session.add(Post(title="after"))
        session.commit()
    assert actions(received(client)) == [("create", "1", "flushed"), ("update", "1", "bulk"), ("create", "2", "after")]


def test_transitions_see_the_previous_row_of_a_bulk_update(engine: Engine) -> None:
    app, broker = make_app()
    try:
        with app.app_context():
            broker.watch(Post, list_rule=lambda post, auth, options: post["status"] == "published", transitions=True)
        seed(engine, 2)
        client = connect(broker, app, "posts/*")
        with Session(engine) as session:
            session.execute(update(Post).where(Post.id == 1).values(status="published"))
            session.commit()
            session.execute(update(Post).where(Post.id == 1).values(status="draft"))
            session.commit()
        assert [(data["action"], data["record"]["status"]) for _, data in received(client)] == [
            ("create", "published"), ("delete", "published"),
        ]
    finally:
        close_app(app)


def test_the_callers_session_keeps_its_own_state(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    client = seeded_client(engine, app_broker, 2, "posts/*")
    with Session(engine) as session:
        kept = session.get(Post, 1)
        assert kept is not None
        with session.no_autoflush:
            kept.title = "edited, not flushed"
            session.execute(update(Post).values(views=9))  # the rows it reads must not overwrite the edit
        assert (kept.title, kept.views) == ("edited, not flushed", 9)
        session.commit()
    assert actions(received(client)) == [("update", "1", "p1"), ("update", "2", "p2"), ("update", "1", "edited, not flushed")]
