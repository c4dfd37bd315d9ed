"""The filter subset: a table of expressions and whether they match, and what is refused."""

from __future__ import annotations

import pytest

from flask_rtbroker.records import FilterSyntaxError, parse_filter
from flask_rtbroker.records.collection import RecordSchema
from flask_rtbroker.records.filter import MAX_COMPARISONS, MAX_DEPTH

RECORD = {
    "id": "r1",
    "title": "Hello World",
    "views": 10,
    "ratio": 0.5,
    "done": True,
    "archived": False,
    "note": None,
    "empty": "",
    "owner": "u1",
    "code": "42",
    "tags": ["a", "b"],
    "meta": {"lang": "en", "depth": {"level": 3}},
    "pattern": "%llo%",
    "under": "a_c",
}

# (expression, whether it matches RECORD; its schema is read off it: tags and meta are JSON)
CASES = [
    # equality, strings are case-sensitive
    ("title = 'Hello World'", True),
    ('title = "Hello World"', True),
    ("title = 'hello world'", False),
    ("title != 'x'", True),
    ("'Hello World' = title", True),
    # SQLite affinity: numeric text becomes a number against a number column only
    ("views = 10", True),
    ("views = 10.0", True),
    ("views = '10'", True),
    ("views = '1_0'", False),
    ("code = 42", False),  # a text column: 42 becomes '42.0'
    ("code = '42'", True),
    ("views < 'abc'", True),  # numbers sort before text
    ("ratio = 0.5", True),
    ("done = true", True),
    ("done = TRUE", True),
    ("done = 1", True),
    ("done = '1'", True),
    ("archived = false", True),
    ("archived = 0", True),
    ("done = 'true'", False),
    ("1 = '1'", False),
    # null and "" are the same for columns; a field the record lacks never matches
    ("note = null", True),
    ("note = ''", True),
    ("empty = null", True),
    ("missing = null", False),
    ("missing.deep = ''", False),
    ("title.x = null", False),
    ("collectionName = ''", False),
    ("note != null", False),
    ("title != null", True),
    ("title = null", False),
    # ordering
    ("views > 9", True),
    ("views >= 10", True),
    ("views < 10", False),
    ("views <= 10", True),
    # JSON fields: paths read like JSON_EXTRACT, compared with IS (null is not "")
    ("tags ~ '\"a\"'", True),
    ("meta.lang = 'en'", True),
    ("meta.depth.level >= 3", True),
    ("meta.lang.x = null", True),
    ("meta.nothing = null", True),
    ("meta.nothing = ''", False),
    ("tags = '[\"a\",\"b\"]'", True),
    # ~ reads numbers as SQLite writes a REAL, and a number literal as Go does
    ("ratio ~ '0.5'", True),
    ("views ~ -0", False),
    # joins, precedence (&& before ||), parentheses
    ("views > 5 && done = true", True),
    ("views > 50 && done = true", False),
    ("views > 50 || done = true", True),
    ("views > 50 || done = false && title = 'x'", False),
    ("views < 50 || done = false && title = 'x'", True),
    ("(views < 50 || done = false) && title = 'x'", False),
    ("((views = 10)) || (views = 1)", True),
    ("missing = 1 || views = 10", False),
    ("title='Hello World'&&views=10", True),
    ("  title  =\t'Hello World'\n", True),
    ("title = 'it\\'s'", False),
]


@pytest.mark.parametrize(("expression", "expected"), CASES)
def test_expression_table(expression: str, expected: bool) -> None:
    assert parse_filter(expression).matches(RECORD) is expected


def test_a_schema_decides_which_fields_exist() -> None:
    schema = RecordSchema(frozenset({"id", "title", "meta"}), frozenset({"meta"}))
    assert parse_filter("meta = ''").matches({"id": "1", "title": "", "meta": ""}, schema)  # a JSON string ""
    assert not parse_filter("meta = null").matches({"id": "1", "title": "", "meta": ""}, schema)
    assert not parse_filter("title.x = null").matches({"id": "1", "title": "", "meta": None}, schema)
    assert not parse_filter("views = null").matches({"id": "1", "views": None}, schema)


def test_string_escapes() -> None:
    assert parse_filter('title = "a\\\\b"').matches({"title": "a\\b"})
    assert parse_filter('title = "line1\\nline2\\t\\r"').matches({"title": "line1\nline2\t\r"})
    assert parse_filter('title = "ends with \\\\"').matches({"title": "ends with \\"})
    assert parse_filter("title = 'q\\\"uote\\'s'").matches({"title": "q\"uote's"})


def test_like_escapes() -> None:
    percent = {"title": "100% sure", "path": "a\\b"}
    assert parse_filter("title ~ '0\\% s'").matches(percent)  # escaped %: still a contains test
    assert not parse_filter("title ~ '0\\%s'").matches(percent)
    assert parse_filter("title ~ '100%'").matches(percent)  # a real pattern: starts with 100
    assert not parse_filter("title ~ 'sure%'").matches(percent)
    assert parse_filter("path ~ 'a\\b'").matches(percent)  # a lone backslash is literal
    assert not parse_filter("title ~ '1_0'").matches(percent)  # _ is literal in a contains test


def test_escaped_quotes_in_strings() -> None:
    assert parse_filter("title = 'it\\'s'").matches({"title": "it's"})
    assert parse_filter('title = "say \\"hi\\""').matches({"title": 'say "hi"'})
    assert parse_filter("title = 'a\\b'").matches({"title": "a\\b"})


REFUSED = [
    ("", "empty"),
    ("   ", "empty"),
    ("title", "expected an operator"),
    ("title =", "expected a field"),
    ("= 'x'", "expected a field"),
    ("title = 'x' &&", "expected a field"),
    ("title = 'x' title = 'y'", "unexpected operand"),
    ("(title = 'x'", "expected ')'"),
    ("title = 'x')", "unexpected )"),
    ("title = 'unterminated", "unterminated string"),
    ("tags ?= 'a'", "any-of operators"),
    ("tags ?~ 'a'", "any-of operators"),
    ("title:lower = 'x'", "modifiers"),
    ("tags:length > 1", "modifiers"),
    ("created > @now", "@now is not supported"),
    ("@request.auth.email = 'x'", "@request. is refused in a client filter"),
    ("owner = @request.auth.id", "@request. is refused"),
    ("title = '@request.auth.id'", "@request. is refused"),
    ("@collection.posts.id = id", "@collection. is refused"),
    ("title = 'x'\r", "unexpected character"),
    ("title\u00a0= 'x'", "unexpected character"),
    ("title = 'x'\x0c", "unexpected character"),
    ("strftime('%Y', created) = '2024'", "functions are not supported"),
    ("title = 'x' // comment", "comments are not supported"),
    ("title == 'x'", "expected a field"),
    ("title = 'x' & views = 1", "unexpected character '&'"),
    ("title = {:name}", "unexpected character '{'"),
    ("a..b = 1", "invalid field path"),
    ("a. = 1", "invalid field path"),
    ("title = 'x';", "unexpected character ';'"),
]


@pytest.mark.parametrize(("expression", "reason"), REFUSED)
def test_unsupported_syntax_is_refused(expression: str, reason: str) -> None:
    with pytest.raises(FilterSyntaxError, match=reason.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        parse_filter(expression)


def test_limits_bound_size_and_nesting() -> None:
    parse_filter(" && ".join(["views = 1"] * MAX_COMPARISONS))
    with pytest.raises(FilterSyntaxError, match="more than 200 comparisons"):
        parse_filter(" && ".join(["views = 1"] * (MAX_COMPARISONS + 1)))
    parse_filter("(" * MAX_DEPTH + "views = 1" + ")" * MAX_DEPTH)
    with pytest.raises(FilterSyntaxError, match="nest deeper"):
        parse_filter("(" * (MAX_DEPTH + 1) + "views = 1" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(FilterSyntaxError):
        parse_filter("(" * 2000 + "views = 1" + ")" * 2000)  # no RecursionError


def test_numeric_text_of_any_length_never_raises() -> None:
    huge = "1" * 6000  # past int()'s digit limit: SQLite reads it as a REAL
    assert parse_filter(f"n < '{huge}'").matches({"n": 5})
    assert not parse_filter(f"n = '{huge}'").matches({"n": 5})
    assert parse_filter("n = ' +1e1 '").matches({"n": 10})  # SQLite's number text: spaces, sign, exponent
