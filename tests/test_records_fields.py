"""The fields option: PocketBase's picker (comma list, nested paths, *, :excerpt) and its errors."""

from __future__ import annotations

import pytest

from flask_rtbroker.records import FieldsSyntaxError, parse_fields

RECORD = {
    "collectionName": "posts",
    "id": "r1",
    "title": "Hello",
    "body": "<p>First <b>bold</b> paragraph.</p><script>alert(1)</script><p>Second   one</p>",
    "meta": {"lang": "en", "seo": {"title": "T", "score": 3}},
    "items": [{"a": 1, "b": 2}, {"a": 3, "b": 4}],
    "tags": ["x", "y"],
}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ("id,title", {"id": "r1", "title": "Hello"}),
        (" id , title ", {"id": "r1", "title": "Hello"}),
        ("title,id", {"id": "r1", "title": "Hello"}),
        ("id,missing", {"id": "r1"}),
        ("meta.lang", {"meta": {"lang": "en"}}),
        ("meta.seo.score,id", {"id": "r1", "meta": {"seo": {"score": 3}}}),
        ("meta,meta.lang", {"meta": RECORD["meta"]}),
        ("items.a", {"items": [{"a": 1}, {"a": 3}]}),
        ("tags.x", {"tags": ["x", "y"]}),
        ("title.x", {"title": "Hello"}),
        ("meta.*", {"meta": RECORD["meta"]}),
        ("*", RECORD),
        ("*,meta.lang", {**RECORD, "meta": {"lang": "en"}}),
        ("title:excerpt(3)", {"title": "Hel"}),
        ("title:excerpt(3,true)", {"title": "Hel..."}),
        ("title:excerpt(10, true)", {"title": "Hello"}),
        ("body:excerpt(100)", {"body": "First bold paragraph. Second one"}),
        ("body:excerpt(10,1)", {"body": "First bold..."}),
        ("meta:excerpt(2)", {"meta": RECORD["meta"]}),
        ("*:excerpt(2),id", {**{k: (v[:2] if isinstance(v, str) else v) for k, v in RECORD.items()}, "id": "r1",
                              "body": "Fi"}),
        (",,id,,", {"id": "r1"}),
        (" , ", RECORD),
    ],
)
def test_pick(fields: str, expected: dict) -> None:
    assert parse_fields(fields).pick(RECORD) == expected


def test_pick_does_not_touch_the_record() -> None:
    record = {"a": {"b": 1, "c": 2}}
    assert parse_fields("a.b").pick(record) == {"a": {"b": 1}}
    assert record == {"a": {"b": 1, "c": 2}}


def test_excerpt_drops_excluded_elements_and_joins_blocks() -> None:
    html = "<div>One</div><div>Two<img src=x><form><input><button>Go</button>no</form></div>three &amp; four"
    assert parse_fields("t:excerpt(100)").pick({"t": html}) == {"t": "One Two three & four"}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ("title:lower", "unknown field modifier"),
        ("title:excerpt", "needs a max length"),
        ("title:excerpt()", "needs a max length"),
        ("title:excerpt(0)", "above 0"),
        ("title:excerpt(abc)", "above 0"),
        ("title:excerpt(1,true,3)", "too many arguments"),
        ("title:excerpt(3", "unbalanced"),
        ("title:'x", "unbalanced"),
    ],
)
def test_malformed_fields_are_refused(fields: str, reason: str) -> None:
    with pytest.raises(FieldsSyntaxError, match=reason):
        parse_fields(fields)
