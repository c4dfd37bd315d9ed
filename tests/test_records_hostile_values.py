"""Hostile filters, fields and record values: bounded work, the same answers, one failure skips one subscription.

The worst cases below froze a worker on the regex LIKE matcher and the html.parser excerpt
(minutes, or forever); here each one has a hang guard (``timeout``), not a timing assertion.
How long they take is measured by ``benchmarks/hostile_records.py``.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterator

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from flask_rtbroker import RealtimeBroker
from flask_rtbroker.records import FieldsSyntaxError, parse_fields
from flask_rtbroker.records import compare
from flask_rtbroker.records.fields import MAX_PATH_DEPTH
from flask_rtbroker.records.filter import parse_filter

from tests.records_support import Post, close_app, connect, database, make_app, received, with_options


def regex_like(pattern: str) -> re.Pattern[str]:
    """The old matcher (a regex per pattern), kept here as the oracle for small inputs; a
    dangling escape matches nothing, as in SQLite."""
    parts = []
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            escaped = next(chars, None)
            parts.append(re.escape(escaped) if escaped is not None else "(?!)")
        elif char == "%":
            parts.append(".*")
        elif char == "_":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.IGNORECASE | re.ASCII | re.DOTALL)


def linear_like(value: str | None, pattern: str) -> bool | None:
    return compare.like(compare.SqlValue(value), compare.like_pattern(pattern), compare.Evaluation())


# -- LIKE ----------------------------------------------------------------------------------------


@settings(max_examples=3000, deadline=None)
@given(st.text("aAb%_\\", max_size=10), st.text("aAbB_%\\\n", max_size=12))
def test_like_agrees_with_the_regex_on_small_inputs(pattern: str, value: str) -> None:
    assert linear_like(value, pattern) is (regex_like(pattern).fullmatch(value) is not None)


@settings(max_examples=500, deadline=None)
@given(st.text("ab%_é\\", max_size=8), st.text(st.characters(codec="utf-8") | st.sampled_from("abAB"), max_size=10))
def test_contains_and_field_patterns_agree_with_the_regex(literal: str, value: str) -> None:
    contains = compare.literal_pattern(compare.SqlValue(literal))
    expected_source = literal if compare._has_unescaped_percent(literal) else "%" + compare._escape_wildcards(literal) + "%"
    expected = regex_like(expected_source).fullmatch(value) is not None
    assert compare.like(compare.SqlValue(value), contains, compare.Evaluation()) is expected
    from_field = compare.like_field(compare.SqlValue(value), compare.SqlValue(literal), compare.Evaluation())
    assert from_field is (regex_like("%" + literal + "%").fullmatch(value) is not None)


def test_like_null_and_escapes() -> None:
    assert linear_like("100%", "100\\%") is True and linear_like("1000", "100\\%") is False
    assert linear_like("a_c", "a\\_c") is True and linear_like("abc", "a\\_c") is False
    assert linear_like("ends with \\", "%\\") is False  # SQLite: a dangling escape matches nothing
    assert linear_like(None, "%") is None
    assert compare.like(compare.SqlValue("x"), None, compare.Evaluation()) is None


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("%a%a%a%a%a%a%a%a%b", "a" * 50, False),
        ("%a%a%a%a%a%a%a%a%b", "a" * 50 + "b", True),
        ("%a" * 25 + "%b", "a" * 3000, False),
        ("%" * 50 + "b", "a" * 3000, False),
        ("_%" * 500, "a" * 3000, True),
        ("_%" * 500 + "b", "a" * 3000, False),
        ("%" + "a_" * 600 + "b%", "a" * 100_000, None),  # past the step budget: NULL
    ],
)
def test_worst_case_patterns_are_answered(pattern: str, value: str, expected: bool | None) -> None:
    assert linear_like(value, pattern) is expected


@pytest.mark.timeout(20)
def test_one_filter_has_a_step_budget() -> None:
    """200 costly comparisons against a 100,000-character title: the budget turns the rest NULL."""
    source = " || ".join(["title ~ '%" + "a_" * 10 + "b%'"] * 200)
    flt = parse_filter(source)
    assert flt.matches({"title": "a" * 100_000}) is False
    assert flt.matches({"title": "a" * 20 + "b"}) is True


def test_patterns_longer_than_a_subscription_are_null() -> None:
    long = "a" * (compare.MAX_LIKE_PATTERN + 1)
    assert compare.like_pattern(long) is None
    assert compare.like_field(compare.SqlValue("x"), compare.SqlValue(long), compare.Evaluation()) is None
    assert parse_filter(f"title ~ '{long}'").matches({"title": long}) is False
    assert parse_filter(f"title !~ '{long}'").matches({"title": "b"}) is False


def test_values_longer_than_the_like_window_are_cut() -> None:
    assert linear_like("a" * compare.MAX_LIKE_TEXT + "b", "%b") is False
    assert linear_like("b" + "a" * compare.MAX_LIKE_TEXT, "b%") is True


# -- excerpt -------------------------------------------------------------------------------------


def excerpt(value: str, size: int = 200, ellipsis: bool = True) -> Any:
    return parse_fields(f"v:excerpt({size},{str(ellipsis).lower()})").pick({"v": value})["v"]


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<a " * 100_000, ""),
        ("<p>" * 120_000 + "deep", "deep"),
        ("<a href='" * 50_000, ""),
        ("<a x=" * 60_000 + ">t", "t"),
        ("<!--" * 80_000, ""),
        ("<![foo[x]]> hi", "hi"),
        ("<script>" + "<p>" * 50_000, ""),
        ("x<" * 100_000, "x"),  # "<x<x<..." is one tag name that never ends, as in HTML
        ("x < " * 100_000, ("x < " * 100)[:200].strip() + "..."),
        ("&amp;" * 100_000, "&" * 200 + "..."),
    ],
)
def test_hostile_markup_is_read_in_one_pass(value: str, expected: str) -> None:
    assert excerpt(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<p>One</p><p>Two</p>", "One Two"),
        ("a <b>bold</b> word", "a bold word"),
        ("<div title='a > b'>x</div>y", "x y"),
        ('<img alt="<p>">after', "after"),
        ("<script>if (a<b) { '</p>' }</script>shown", "shown"),
        ("<STYLE>p{}</Style>Shown", "Shown"),
        ("<form><input><select><option>o</option></select>f</form>after", "after"),
        ("1 < 2 &lt; 3 &#x41; &#66; &nosuch;", "1 < 2 < 3 A B &nosuch;"),
        ("<!DOCTYPE html><?xml x?><!-- c -->text", "text"),
        ("unterminated <b", "unterminated"),
        ("a</>b</ x>c", "abc"),
        ("  \n spaced \t\n out  ", "spaced out"),
    ],
)
def test_excerpt_reads_markup_like_a_tokenizer(value: str, expected: str) -> None:
    assert excerpt(value) == expected


@settings(max_examples=2000, deadline=None)
@given(st.text("<>!/-='\"a p&;#xscript", max_size=60), st.integers(1, 30))
def test_excerpt_never_raises_and_respects_the_length(value: str, size: int) -> None:
    cut = excerpt(value, size, ellipsis=False)
    assert isinstance(cut, str) and len(cut) <= size and cut == cut.strip()


# -- fields --------------------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_star_paths_are_linear_in_the_keys() -> None:
    data = {"x": {f"k{i}": i for i in range(20_000)}, "y": 1}
    assert parse_fields("x.*").pick(data) == {"x": data["x"]}
    assert parse_fields("x.*,x.k5:excerpt(1)").pick(data)["x"]["k5"] == 5


def test_paths_deeper_than_the_cap_are_refused() -> None:
    deep = {"v": 1}
    for _ in range(600):
        deep = {"a": deep}
    with pytest.raises(FieldsSyntaxError, match="deeper than"):
        parse_fields(".".join(["a"] * 600))
    picked = parse_fields(".".join(["a"] * MAX_PATH_DEPTH)).pick(deep)
    for _ in range(MAX_PATH_DEPTH):
        picked = picked["a"]
    assert picked == deep_at(deep, MAX_PATH_DEPTH)


def deep_at(value: dict, depth: int) -> dict:
    for _ in range(depth):
        value = value["a"]
    return value


# -- one subscription's failure is its own -------------------------------------------------------


@pytest.fixture
def engine() -> Iterator[Engine]:
    yield from database("sqlite")


@pytest.fixture
def app_broker() -> Iterator[tuple[Flask, RealtimeBroker]]:
    app, broker = make_app()
    yield app, broker
    close_app(app)


def test_a_poisoned_value_reaches_every_subscriber(engine: Engine, app_broker: tuple[Flask, RealtimeBroker]) -> None:
    """The title that made html.parser raise: the excerpt subscriber and the plain one both get it."""
    app, broker = app_broker
    with app.app_context():
        broker.watch(Post)
    picked = with_options("posts/*", fields="id,title:excerpt(50)")
    plain = connect(broker, app, "posts/*")
    excerpted = connect(broker, app, picked)
    with Session(engine) as session:
        session.add(Post(title="<![foo[x]]> hi"))
        session.commit()
    assert [data["record"]["title"] for _, data in received(plain)] == ["<![foo[x]]> hi"]
    assert received(excerpted) == [(picked, {"record": {"id": "1", "title": "hi"}, "action": "create"})]


def test_a_failing_delivery_skips_only_its_subscription(
    engine: Engine, app_broker: tuple[Flask, RealtimeBroker], caplog: pytest.LogCaptureFixture
) -> None:
    """``before_send`` raises for one client: the clients registered before and after it get the event."""
    app, broker = app_broker
    with app.app_context():
        broker.watch(Post)
    before = connect(broker, app, "posts/*")
    bad = connect(broker, app, "posts/*")
    after = connect(broker, app, "posts/*")

    @broker.before_send
    def explode_for_one(client: Any, message: Any) -> Any:
        if client is bad:
            raise RuntimeError("hook failed")
        return message

    with caplog.at_level(logging.WARNING, "flask_rtbroker.records"), Session(engine) as session:
        session.add(Post(title="x"))
        session.commit()
    assert [data["action"] for _, data in received(before)] == ["create"]
    assert [data["action"] for _, data in received(after)] == ["create"]
    assert received(bad) == []
    assert "skipped 1 subscription(s); first reason: RuntimeError: hook failed" in caplog.text


def test_a_record_message_over_the_size_limit_is_skipped(engine: Engine) -> None:
    app, broker = make_app(RTBROKER_MAX_MESSAGE_SIZE=2048)
    try:
        with app.app_context():
            broker.watch(Post)
        whole = connect(broker, app, "posts/*")
        picked_key = with_options("posts/*", fields="id")
        picked = connect(broker, app, picked_key)
        with Session(engine) as session:
            session.add(Post(title="x" * 4096))
            session.commit()
        assert received(whole) == [], "over the limit: skipped, not a reason to drop the client"
        assert received(picked) == [(picked_key, {"record": {"id": "1"}, "action": "create"})]
        assert whole in broker.clients().values()
    finally:
        close_app(app)
