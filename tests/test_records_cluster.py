"""Record events across processes: row events on the backplane, rules evaluated by each receiver.

Two apps on one ``memory://NAME`` bus stand for two processes. Each "process" maps the table
with its own model class (as separate processes would), so a commit is seen by exactly one of
them, which publishes the row event to the other.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Callable, Iterator

import pytest
from flask import Flask
from sqlalchemy import Engine, Integer, String, insert
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from flask_rtbroker import DefaultClient, Emitter, RealtimeBroker
from flask_rtbroker.backplane import Envelope
from flask_rtbroker.records import KIND_RECORD, bulk, emit_changes

from tests.records_support import Base, Post, close_app, connect, make_app, received, sqlite_engine, with_options


class PostColumns:
    """The posts table's columns, for the mappings of "other processes" below."""

    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    owner: Mapped[str] = mapped_column(String(40), default="")
    views: Mapped[int] = mapped_column(Integer, default=0)
    body: Mapped[str] = mapped_column(String, default="")


class OtherBase(DeclarativeBase):
    pass


class OtherPost(PostColumns, OtherBase):
    """The same table as Post, mapped by "the other process"."""


class WorkerBase(DeclarativeBase):
    pass


class WorkerPost(PostColumns, WorkerBase):
    """The same table again, mapped by a worker script without a broker."""


def owner_rule(post: Any, auth: Any, options: Any) -> bool:
    return post["owner"] == "" or (auth is not None and post["owner"] == auth["id"])


def serialize(post: Any) -> dict[str, Any]:
    """One serializer for every process (the default one would differ: Post has more columns)."""
    return {"id": str(post.id), "title": post.title, "owner": post.owner, "views": post.views}


def wait_for(client: DefaultClient, count: int, timeout: float = 5.0) -> list[tuple[str, Any]]:
    """Collect *count* messages that arrive through the backplane listener."""
    got: list[tuple[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += received(client)
        time.sleep(0.01)
    return got


@pytest.fixture
def bus() -> str:
    return "memory://records-" + secrets.token_hex(4)


@pytest.fixture
def engine() -> Engine:
    engine = sqlite_engine()
    Base.metadata.create_all(engine)
    return engine


@pytest.fixture
def two_processes(bus: str) -> Iterator[tuple[tuple[Flask, RealtimeBroker], tuple[Flask, RealtimeBroker]]]:
    first, second = make_app(RTBROKER_BACKPLANE=bus), make_app(RTBROKER_BACKPLANE=bus)
    for (app, broker), model in ((first, Post), (second, OtherPost)):
        with app.app_context():
            broker.watch(model, collection="posts", list_rule=owner_rule, serialize=serialize, transitions=True)
            broker.state().cluster.ensure_started()
    yield first, second
    for app, _ in (first, second):
        close_app(app)


def test_row_events_reach_the_other_process_and_its_rules(two_processes: Any, engine: Engine) -> None:
    (app_a, broker_a), (app_b, broker_b) = two_processes
    bob_here = connect(broker_a, app_a, "posts/*", auth={"id": "bob"})
    alice_there = connect(broker_b, app_b, "posts/*", auth={"id": "alice"})
    picky_there = connect(broker_b, app_b, with_options("posts/*", filter="views > 5", fields="id,views"))
    with Session(engine) as session:  # committed through the first process's model
        post = Post(title="alice's", owner="alice")
        session.add_all([post, Post(title="public")])
        session.commit()
        post.owner = ""
        post.views = 9
        session.commit()
    assert [(d["action"], d["record"]["title"]) for _, d in received(bob_here)] == [
        ("create", "public"), ("create", "alice's")]
    assert [(d["action"], d["record"]["title"]) for _, d in wait_for(alice_there, 3)] == [
        ("create", "alice's"), ("create", "public"), ("update", "alice's")]
    assert [d for _, d in wait_for(picky_there, 1)] == [{"record": {"id": "1", "views": 9}, "action": "create"}]
    time.sleep(0.1)
    assert received(alice_there) == received(picky_there) == [], "each event arrives once"


def test_a_worker_without_a_broker_publishes_through_an_emitter(two_processes: Any, engine: Engine, bus: str) -> None:
    (app_a, broker_a), (app_b, broker_b) = two_processes
    here = connect(broker_a, app_a, "posts/*", auth={"id": "bob"})
    there = connect(broker_b, app_b, "posts/1", "posts/*", auth={"id": "bob"})
    emitter = Emitter(bus)
    watch = emit_changes(emitter, WorkerPost, serialize=serialize)
    try:
        with Session(engine) as session:
            post = WorkerPost(title="from a job", owner="bob")
            session.add(post)
            session.commit()
            post.owner = "carol"  # out of bob's list rule: a delete with transitions
            session.commit()
            session.add(WorkerPost(title="rolled back"))
            session.flush()
            session.rollback()
    finally:
        watch.close()
        emitter.close()
    expected = [("create", "from a job", "bob"), ("delete", "from a job", "bob")]
    assert [(d["action"], d["record"]["title"], d["record"]["owner"]) for _, d in wait_for(here, 2)] == expected
    assert [(name, d["action"]) for name, d in wait_for(there, 4)] == [
        ("posts/1", "create"), ("posts/*", "create"), ("posts/1", "update"), ("posts/*", "delete")]


def test_malformed_and_unknown_row_events_are_dropped(
    two_processes: Any, bus: str, caplog: pytest.LogCaptureFixture
) -> None:
    (_, _), (app_b, broker_b) = two_processes
    client = connect(broker_b, app_b, "posts/*", "comments/*")
    emitter = Emitter(bus)
    send: Callable[[dict, bytes], bool] = lambda fields, body: emitter.backplane.send(
        Envelope(emitter.backplane.origin, KIND_RECORD, fields, body))
    try:
        send({"c": "posts"}, b"not json")
        send({"c": "posts"}, b'{"action":"explode","record":{"id":"1"}}')
        send({"c": "posts"}, b'{"action":"create","record":{"title":"no id"}}')
        send({"c": "comments"}, b'{"action":"create","record":{"id":"1"},"previous":null}')
        send({"c": "posts"}, b'{"action":"create","record":{"id":"7","owner":""},"previous":null}')
    finally:
        emitter.close()
    assert [(name, d["record"]["id"]) for name, d in wait_for(client, 1)] == [("posts/*", "7")]
    assert caplog.text.count("dropping a malformed record event") == 3 * 2, "three, in both processes"


def test_a_bulk_statement_past_the_row_limit_is_one_gap_in_the_other_process_too(
    two_processes: Any, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "MAX_ROW_EVENTS", 2)
    (app_a, broker_a), (app_b, broker_b) = two_processes
    there = connect(broker_b, app_b, "posts/*", "posts/2", auth={"id": "alice"})
    with Session(engine) as session:  # committed through the first process's model
        session.execute(insert(Post), [{"title": f"p{i}", "owner": "bob"} for i in range(3)])
        session.commit()
    gap = {"action": "gap", "record": {"collectionId": "posts", "collectionName": "posts"}}
    assert sorted(wait_for(there, 2)) == [("posts/*", gap), ("posts/2", gap)], "no rule hides a gap: it shows no record"
    time.sleep(0.1)
    assert received(there) == []
