"""The filter subset: a table of expressions and whether they match, and what is refused."""

from __future__ import annotations

import pytest

from flask_rtbroker.records import FilterSyntaxError, parse_filter
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

# (expression, matches for auth id "u1", matches for a guest)
CASES = [
    # equality, strings are case-sensitive
    ("title = 'Hello World'", True, True),
    ('title = "Hello World"', True, True),
    ("title = 'hello world'", False, False),
    ("title != 'x'", True, True),
    ("'Hello World' = title", True, True),
    # numbers, numeric strings, booleans as 1/0
    ("views = 10", True, True),
    ("views = 10.0", True, True),
    ("views = '10'", True, True),
    ("code = 42", True, True),
    ("ratio = 0.5", True, True),
    ("done = true", True, True),
    ("done = TRUE", True, True),
    ("done = 1", True, True),
    ("archived = false", True, True),
    ("archived = 0", True, True),
    ("done = 'true'", False, False),
    # null and "" are the same; missing fields are null
    ("note = null", True, True),
    ("note = ''", True, True),
    ("empty = null", True, True),
    ("missing = null", True, True),
    ("missing.deep = ''", True, True),
    ("note != null", False, False),
    ("title != null", True, True),
    ("title = null", False, False),
    # ordering
    ("views > 9", True, True),
    ("views >= 10", True, True),
    ("views < 10", False, False),
    ("views <= 10", True, True),
    ("views > '9'", True, True),
    ("title > 'A'", True, True),
    ("title < 'A'", False, False),
    ("note < 1", False, False),
    ("note > 1", False, False),
    ("title > 1", False, False),
    ("views > -1", True, True),
    # ~ contains (case-insensitive ASCII) and LIKE patterns
    ("title ~ 'world'", True, True),
    ("title ~ 'WORLD'", True, True),
    ("title ~ 'xyz'", False, False),
    ("title !~ 'xyz'", True, True),
    ("title !~ 'world'", False, False),
    ("title ~ 'Hello%'", True, True),
    ("title ~ '%World'", True, True),
    ("title ~ 'World%'", False, False),
    ("title ~ 'H_llo%'", True, True),
    ("under ~ 'a_c'", True, True),
    ("under ~ 'abc'", False, False),
    ("title ~ 'Hello\\%'", False, False),
    ("views ~ 1", True, True),
    ("title ~ pattern", True, True),
    ("note ~ 'x'", False, False),
    ("note !~ 'x'", False, False),
    ("title ~ null", False, False),
    ("tags ~ '\"a\"'", True, True),
    # nested paths, JSON containers compared as JSON text
    ("meta.lang = 'en'", True, True),
    ("meta.depth.level >= 3", True, True),
    ("meta.lang.x = null", True, True),
    ("tags = '[\"a\",\"b\"]'", True, True),
    # @request.auth.id ("" for a guest)
    ("owner = @request.auth.id", True, False),
    ("@request.auth.id != ''", True, False),
    ("@request.auth.id = ''", False, True),
    ("@request.auth.id = null", False, True),
    # joins, precedence (&& before ||), parentheses
    ("views > 5 && done = true", True, True),
    ("views > 50 && done = true", False, False),
    ("views > 50 || done = true", True, True),
    ("views > 50 || done = false && title = 'x'", False, False),
    ("views < 50 || done = false && title = 'x'", True, True),
    ("(views < 50 || done = false) && title = 'x'", False, False),
    ("((owner = @request.auth.id)) || (views = 1)", True, False),
    ("title='Hello World'&&views=10", True, True),
    ("  title  =  'Hello World'  ", True, True),
    ("title = 'it\\'s'", False, False),
]


@pytest.mark.parametrize(("expression", "as_user", "as_guest"), CASES)
def test_expression_table(expression: str, as_user: bool, as_guest: bool) -> None:
    parsed = parse_filter(expression)
    assert parsed.matches(RECORD, "u1") is as_user
    assert parsed.matches(RECORD, "") is as_guest


def test_like_escapes() -> None:
    percent = {"title": "100% sure", "path": "a\\b"}
    assert parse_filter("title ~ '0\\% s'").matches(percent, "")  # escaped %: still a contains test
    assert not parse_filter("title ~ '0\\%s'").matches(percent, "")
    assert parse_filter("title ~ '100%'").matches(percent, "")  # a real pattern: starts with 100
    assert not parse_filter("title ~ 'sure%'").matches(percent, "")
    assert parse_filter("path ~ 'a\\b'").matches(percent, "")  # a lone backslash is literal
    assert not parse_filter("title ~ '1_0'").matches(percent, "")  # _ is literal in a contains test


def test_escaped_quotes_in_strings() -> None:
    assert parse_filter("title = 'it\\'s'").matches({"title": "it's"}, "")
    assert parse_filter('title = "say \\"hi\\""').matches({"title": 'say "hi"'}, "")
    assert parse_filter("title = 'a\\b'").matches({"title": "a\\b"}, "")


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
    ("@request.auth.email = 'x'", "@request.auth.email is not supported"),
    ("@request.query.k = 'v'", "is not supported"),
    ("@collection.posts.id = id", "is not supported"),
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
