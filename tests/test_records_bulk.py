"""Record events from ORM bulk statements (UPDATE/DELETE with WHERE, multi-row INSERT, upserts),
on SQLite and on the PostgreSQL the fixtures start, with in-process clients."""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest
from flask import Flask
from sqlalchemy import Engine, Integer, String, Text, delete, event, func, insert, select, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from flask_rtbroker import RealtimeBroker
from flask_rtbroker.records import bulk

from tests.records_support import engine, Post, close_app, connect, database, make_app, received, record


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


# -- statements of any size ----------------------------------------------------------------------

GAP = {"action": "gap", "record": {"collectionId": "posts", "collectionName": "posts"}}


def test_rows_are_read_a_chunk_of_keys_at_a_time(
    engine: Engine, app_broker: tuple[Flask, RealtimeBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "KEYS_PER_SELECT", 2)
    client = seeded_client(engine, app_broker, 5, "posts/*")
    selects: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: selects.append(args[2]) if args[2].startswith("SELECT") else None)
    with Session(engine) as session:
        session.execute(update(Post), [{"id": i, "title": f"t{i}"} for i in range(1, 6)])
        session.execute(insert(Post), [{"title": f"new{i}"} for i in range(5)])
        session.commit()
    assert sorted(actions(received(client))) == sorted(
        [("update", str(i), f"t{i}") for i in range(1, 6)] + [("create", str(i), f"new{i - 6}") for i in range(6, 11)])
    assert len(selects) == 3 * 3, "three chunks before the update, three after, three for the insert"


def test_past_the_row_limit_a_statement_is_one_gap_per_subscription(
    engine: Engine, app_broker: tuple[Flask, RealtimeBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "MAX_ROW_EVENTS", 3)
    client = seeded_client(engine, app_broker, 3, "posts/*", "posts", "posts/1")
    with Session(engine) as session:
        session.execute(update(Post).where(Post.id <= 3).values(title="three rows"))  # at the limit: rows
        session.commit()
    assert len(received(client)) == 3 + 3 + 1  # posts/* and posts for each row, posts/1 for the first
    with Session(engine) as session:
        session.execute(insert(Post), [{"title": f"n{i}"} for i in range(4)])  # over it
        session.execute(update(Post).values(title="all"))
        session.execute(delete(Post).where(Post.id > 5))
        session.commit()
        assert session.scalar(select(func.count()).select_from(Post)) == 5
    assert sorted(received(client), key=lambda event: event[0]) == [
        ("posts", GAP), ("posts/*", GAP), ("posts/1", GAP)], "one for the commit, whatever else it held"


def test_a_failed_read_leaves_the_statement_and_its_transaction_alone(
    engine: Engine, app_broker: tuple[Flask, RealtimeBroker], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = seeded_client(engine, app_broker, 3, "posts/*")

    def failing(reader: Session, *args: Any, **kwargs: Any) -> list[Any]:
        reader.execute(text("SELECT * FROM no_such_table"))  # a real error (on PostgreSQL it aborts the transaction)
        return []

    monkeypatch.setattr(bulk, "_load", failing)
    with Session(engine) as session:
        result = session.execute(update(Post).where(Post.views >= 2).values(title="done"))
        assert result.rowcount == 2
        session.add(Post(title="later in the same transaction"))
        session.commit()
        assert sorted(session.scalars(select(Post.title))) == ["done", "done", "later in the same transaction", "p1"]
    assert received(client) == [("posts/*", GAP)], "the gap replaces the rows the commit also flushed"
    assert "could not read the rows a bulk statement on Post changes" in caplog.text


class PlainBase(DeclarativeBase):
    pass


class Plain(PlainBase):
    """Post's columns in a table nobody watches: the same statements, for comparison."""

    __tablename__ = "plain_posts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    owner: Mapped[str] = mapped_column(String(40), default="")
    views: Mapped[int] = mapped_column(Integer, default=0)
    body: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), server_default="draft")


ROWS = 70_000
"""More than the 65,535 parameters PostgreSQL binds in one statement."""


def timed(engine: Engine, statement: Any, parameters: Any = None) -> float:
    started = time.perf_counter()
    with Session(engine) as session:
        session.execute(statement, parameters)
        session.commit()
    return time.perf_counter() - started


def test_statements_of_70000_rows_on_a_watched_model_succeed_with_one_gap_each(postgres_url: str) -> None:
    engine = next(databases := database("postgres", postgres_url))
    app, broker = make_app()
    try:
        with app.app_context():
            broker.watch(Post)
        PlainBase.metadata.create_all(engine)
        client = connect(broker, app, "posts/*", "posts")
        rows = [{"title": f"p{i}", "views": i} for i in range(ROWS)]
        times: dict[str, tuple[float, float]] = {}
        for name, statement, parameters in [
            ("INSERT", insert, rows), ("UPDATE", lambda model: update(model).where(model.id > 0).values(views=model.views + 1), None),
            ("DELETE", lambda model: delete(model).where(model.id > 0), None),
        ]:
            times[name] = (timed(engine, statement(Post), parameters), timed(engine, statement(Plain), parameters))
            assert sorted(received(client)) == [("posts", GAP), ("posts/*", GAP)], name
            with Session(engine) as session:
                counts = [session.scalar(select(func.count()).select_from(model)) for model in (Post, Plain)]
            assert counts == [0, 0] if name == "DELETE" else [ROWS, ROWS]
        print("\n" + "\n".join(f"{name} of {ROWS} rows: watched {watched:.2f} s, unwatched {plain:.2f} s, "
                                f"{watched / plain:.2f}x" for name, (watched, plain) in times.items()))
        assert all(watched < 3 * plain + 1.0 for watched, plain in times.values()), times
    finally:
        close_app(app)
        next(databases, None)
