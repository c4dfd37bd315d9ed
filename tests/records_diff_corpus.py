"""The records and subscriptions tests/test_records_pocketbase_diff.py puts side by side on a real
PocketBase and on the library: corner cases by hand, plus cases generated from a fixed seed."""

from __future__ import annotations

import random
from typing import Any

COLLECTION = "d"
SEED = 20261208
GENERATED = 160
"""How many filters :func:`generated_cases` makes."""
GENERATED_BODIES = 8
"""How many records with a generated HTML ``body`` :data:`RECORDS` has."""
GENERATED_VALUES = 6
"""How many records with generated ``title``, ``n``, ``flag`` and ``meta`` :data:`RECORDS` ends with."""

RECORDS: list[dict[str, Any]] = [
    {"id": "r00000000000001", "title": "10", "n": 10, "flag": True, "meta": {"a": 1, "x": "10", "s": "hello"},
     "body": "<p>Hello <b>world</b></p>"},
    {"id": "r00000000000002", "title": "", "n": 0, "flag": False, "meta": None, "body": ""},
    {"id": "r00000000000003", "title": "abc", "n": -5, "flag": False, "meta": {}, "body": "x\u00a0\u00a0y\u2003z  w\tv\r\nu\x0bt\x0cs"},
    {"id": "r00000000000004", "title": "a\\b", "n": 1e20, "flag": True, "meta": {"x": ""},
     "body": "<title>Doc title</title><p>Body text here</p>"},
    {"id": "r00000000000005", "title": "line1\nline2", "n": 1e-7, "flag": False, "meta": {"x": None, "a": "1"},
     "body": "<xmp><b>raw</b> text</xmp> after"},
    {"id": "r00000000000006", "title": "ends with \\", "n": 1.5, "flag": True, "meta": "",
     "body": "<head><p>in head?</p></head>body"},
    {"id": "r00000000000007", "title": "q\"uote's", "n": 2, "flag": False, "meta": [1, 2, "x"],
     "body": "<script>alert('<b>x</b>')</script>visible <style>p{}</style>text"},
    {"id": "r00000000000008", "title": "ABC", "n": 100, "flag": True, "meta": 10,
     "body": "<div>one</div><div>two</div><ul><li>three</li></ul>"},
    {"id": "r00000000000009", "title": "5.0", "n": 5, "flag": False, "meta": {"x": 10},
     "body": "&amp; &lt;tag&gt; &nbsp;x &copy; &#x1F600; &unknown; &amp"},
    {"id": "r00000000000010", "title": "100%_off", "n": 0.1, "flag": True, "meta": True,
     "body": "<textarea><b>t</b></textarea>after <noscript>ns</noscript> <iframe>if</iframe>end"},
    {"id": "r00000000000011", "title": "-0", "n": -3, "flag": False, "meta": {"x": "abc", "n": 1.5},
     "body": "<plaintext><b>x</b> y"},
    {"id": "r00000000000012", "title": "@request.auth.id", "n": 3, "flag": True, "meta": "abc",
     "body": "a<br>b<hr>c<p>d</p>e<span>f</span>g <title>t2</title> h"},
    {"id": "r00000000000013", "title": "1e3", "n": 1000, "flag": False, "meta": {"x": "1e3", "a": [1]},
     "body": "<!-- c --><p>after comment</p><![CDATA[cd]]>x<?pi?>y</p >z"},
    {"id": "r00000000000014", "title": "Ünïcode ÄÖ", "n": 123456789.123, "flag": True, "meta": {"x": {"y": 1}},
     "body": "<svg><text>s</text></svg>after<select><option>o</option></select>z <button>b</button>w"},
    {"id": "r00000000000015", "title": "a__b", "n": -0.5, "flag": False, "meta": [[1, 2], {"a": "x"}],
     "body": "<noscript>ns</noscript>x <p>a</p><title><b>t</b> &amp;</title>b"},
    {"id": "r00000000000016", "title": "50%", "n": 7, "flag": True, "meta": {"x": 0, "a": [3, "y"], "h": "<b>&é\u2028"},
     "body": "<meta charset=utf-8><link rel=x>  <p>text</p><textarea>t</textarea>z<xmp>&amp;</xmp>"},
    {"id": "r00000000000017", "title": "tab\there", "n": 0, "flag": False, "meta": {"x": False, "a": None},
     "body": "<html><head><title>T</title></head><body><p>B</p></body></html><template><p>t</p></template>after"},
    {"id": "r00000000000018", "title": " padded ", "n": 42, "flag": True, "meta": {"x": "", "a": {"b": [1]}},
     "body": "<div>a<head>h</head>b</div><P>UPPER</P><BR>x <a href='x>y'>link</a> tail a < b > c <p>unclosed <b>bold"},
    {"id": "r00000000000020", "title": "日本語のテキスト", "n": 8, "flag": True, "meta": {"x": "日本"},
     "body": "日本語<b>太字</b>です<p>次の段落はここにあります</p>終わり"},
    {"id": "r00000000000021", "title": "Grüße", "n": 9, "flag": False, "meta": {"x": "ü"},
     "body": "<p>Grüße aus Köln, schöne Grüße</p><ul><li>ä</li><li>ö</li></ul>   ende"},
    {"id": "r00000000000019", "title": "<b>x</b>", "n": 3.25, "flag": False, "meta": "x10",
     "body": "<!doctype html><title>x</title>y< p>not a tag</p><script>s</script><style>st</style>end"},
]

_TAGS = ["p", "b", "div", "span", "br", "title", "xmp", "script", "style", "textarea", "head", "noscript", "li",
         "h1", "a href='x>y'", "img src=x", "template", "select", "option", "body", "em", "iframe", "table", "td"]
_TEXTS = ["word", "Two words", "&amp;", "&lt;b&gt;", "&nbsp;", "&copy;", "&#65;", "&bogus;", "\u00a0", " ", "\n", "\t",
          "\u2003", "\r\n", "<", ">", "a<b", "x=1", "é", "<!-- c -->", "<!doctype html>"]


def generated_body(rng: random.Random) -> str:
    """A body of random tags (opened and closed in any order), text, references and whitespace."""
    parts = []
    for _ in range(rng.randint(8, 20)):
        roll = rng.random()
        tag = rng.choice(_TAGS)
        if roll < 0.3:
            parts.append(f"<{tag}>")
        elif roll < 0.5:
            parts.append(f"</{tag.split()[0]}>")
        else:
            parts.append(rng.choice(_TEXTS))
    return "".join(parts)


def _generated_records(seed: int = SEED) -> list[dict[str, Any]]:
    rng = random.Random(seed + 1)
    return [{"id": f"g{index:014d}", "title": f"generated {index}", "n": index, "flag": bool(index % 2), "meta": None,
             "body": generated_body(rng)} for index in range(GENERATED_BODIES)]


_TITLES = ["", "10", "-5", "1.5", "1e3", "abc", "ABC", " 7 ", "0x10", "5.0", "%_\\", "a b", "é", "-0", "0", "00",
           "1_0", "+3"]
_NUMBERS = [0, 1, -1, 10, 1.5, -0.5, 1e20, 1e-7, 0.1, 100, 3, 5, 2.5, 123456789.123, -1e10]
_METAS: list[Any] = [None, "", "abc", 10, 0, 1.5, True, False, [], {}, [1, "a"], {"x": ""}, {"x": None}, {"x": 10},
                     {"x": "10"}, {"x": "abc"}, {"a": 1, "x": 1.5}, {"x": True}, {"x": [1]}, {"x": {"y": 2}}]


def _generated_values(seed: int = SEED) -> list[dict[str, Any]]:
    rng = random.Random(seed + 2)
    return [{"id": f"v{index:014d}", "title": rng.choice(_TITLES), "n": rng.choice(_NUMBERS), "flag": rng.random() < 0.5,
             "meta": rng.choice(_METAS), "body": ""} for index in range(GENERATED_VALUES)]


RECORDS += _generated_records() + _generated_values()


# -- the corpus by hand ---------------------------------------------------------------------------

FILTERS = [
    # the table
    '@request.auth.id = ""', 'title = "@request.auth.id"', "@request.auth.id != 'x'", '@collection.d.id = ""',
    "nosuch = null", "title.x = null", 'collectionName = "d"', 'collectionId != ""', "n.x = null",
    'meta.a = ""', "meta.x = null", 'meta = ""', "meta = null", "meta != null", 'meta != ""',
    "title = 10", "title > 5", 'n < "abc"', "meta.x = 10", '1 = "1"', 'n = "1_0"', 'n = "10"', 'n > "5"',
    'n ~ "e+"', 'n ~ "1.0e"', "title ~ -0", 'n ~ ".5"', 'n ~ "0.1"', 'n ~ "e-07"', "n ~ 1", 'n ~ "123456789.123"',
    r'title = "a\\b"', r'title = "line1\nline2"', r'title = "ends with \\"', r"title = 'ends with \\'",
    r'title = "q\"uote\'s"', r"title = 'q\"uote\'s'", r'title ~ "\t"', r'title ~ "\r"', r'title = "a\b"',
    r'title = "a\\\\b"', r'title ~ "\\"', r"title ~ '\\'", r'title ~ "\%"', r'title = "\x"',
    "title = 'abc'\r", "title\r= 'abc'", "title\x0b= 'abc'", "title\x0c= 'abc'", "title\u00a0= 'abc'",
    "title\u2003= 'abc'", "title\t=\n'abc'", " title = 'abc' ", "title='abc'",
    # equality, null and ""
    'title = ""', "title = null", 'title != ""', "title != null", 'n = ""', "n = null", 'n != ""', "n = 0",
    "flag = true", "flag = false", "flag = 1", 'flag = "1"', 'flag = "true"', "flag != true", "flag = null",
    'meta.x = ""', 'meta.x != ""', "meta.x != null", "meta.a = 1", 'meta.a = "1"', "meta.n = 1.5",
    'meta = "abc"', "meta = 10", 'meta = "10"', "meta = true", "meta = 1", 'meta = "{}"', 'meta = "[1,2,\\"x\\"]"',
    'meta ~ "x"', 'meta ~ "\\"x\\""', 'meta ~ "{"', "meta.x.y = 1", 'meta.a ~ "1"', "meta.s = 'hello'",
    '"" = title', "null = title", "null = null", '"" = ""', "null = ''", '"a" = "a"', '"a" = "A"', "1 = 1",
    "1 = 1.0", "true = 1", "true = true", 'true = "1"', "null != null", "1 != 2", "1 < 2", '"a" < "b"', "2 < 10",
    '"2" < "10"', '2 < "10"', '"abc" > 5', "null < 1", "null > null",
    # mixed comparisons
    'title = "10"', 'title = 10.0', 'title >= "10"', 'title < 20', 'title > "5"', 'title > "5.0"', "title < 6",
    'n = "10.0"', 'n = " 10"', 'n = "10 "', 'n = "0x10"', 'n = "1e1"', 'n = "+10"', 'n > "abc"', 'n < ""',
    "n > -10", "n >= 100", "n <= 0.1", "n < 1e-6", "n = 0.1", "n = 1.5", "n > 1000000000000000000",
    'meta.x = "10"', "meta.x > 5", 'meta.x > "5"', "meta.x < 20", 'meta.a > "0"', "meta > 5", 'meta > "a"',
    "title = n", "n = title", "title ~ n", "n ~ title", "meta.x = title", "title = meta.x", "title != n",
    "flag = n", "n > flag", "meta.a = n", "id = title", "id ~ 'r000'", "id > 'r00000000000010'",
    # like
    'title ~ "b"', 'title ~ "B"', 'title ~ "%b"', 'title ~ "a%"', 'title ~ "_b_"', 'title ~ "a_b"',
    'title ~ "100%"', 'title ~ "100\\\\%"', 'title ~ "%\\\\%%"', 'title ~ "%_off"', 'title ~ "\\\\_"',
    'title !~ "b"', 'title !~ ""', 'title ~ ""', "title ~ null", "title !~ null", 'title ~ "ü"', 'title ~ "Ü"',
    'title ~ "ä"', 'title ~ "%\\\\"', 'title ~ "a%\\\\"', "title ~ 10", "title ~ 1.0", "title ~ 1e3",
    'flag ~ "1"', 'flag ~ "t"', 'n ~ "-"', 'n ~ "00"', "meta ~ 10", 'meta.x ~ "1"', 'meta.a ~ "["',
    '"abc" ~ title', '"xabcx" ~ title', '"b" ~ "abc"', '"abc" ~ "b"', '"10" ~ n', "10 ~ n", '"-0" ~ title',
    # joins and groups
    'title = "abc" || n = 10', 'title = "abc" && n = 10', '(title = "abc" || n = 10) && flag = true',
    'title = "abc" || n = 10 && flag = true', 'nosuch = 1 || title = "abc"', '(title ~ "a")', "((n > 1))",
    "n > 1 && n < 100 || meta.x = 10", "title = 'abc' && (nosuch = 1)", "(n = 5 || n = 10) && (flag = true || flag = false)",
    # identifiers
    "TITLE = 'abc'", "Title = 'abc'", "title_ = 'abc'", "_title = 'abc'", "title = True", "title = NULL",
    "n = TRUE", "created = ''", "updated != ''", "expand = null", "id = 'r00000000000001'",
    "title = 'a' && n =", "= 1", "title", "(title = 'abc'", "title = 'abc')", "title == 'abc'", "title <> 'abc'",
    "n = 1.", "n = .5", "n = -.5", "n = 1.2.3", "n = -5", "n = - 5", "n = 05", "n = 1e2",
    # more wildcards, escapes and JSON paths
    'title ~ "__"', 'title ~ "_"', 'title ~ "a__"', 'title ~ "%%"', r'title ~ "\\%"', r'title ~ "0\\%"',
    'title ~ "50%"', 'title ~ "%0%"', r'title ~ "\n"', r'title ~ "\t"', "title = 'line1\nline2'",
    "meta.a.0 = 1", "meta.a.0 = 3", "meta.a.1 = 'y'", "meta.0 = 1", "meta.0.1 = 2", "meta.1.a = 'x'",
    "meta.x.y = 1", "meta.a.b.0 = 1", "meta.a.5 = null", "meta.x = false", "meta.x = 0", "meta.x = true",
    'meta = "10"', "meta = 10", 'meta ~ "[1,2"', 'meta.a = null', "meta.a != null",
    "n = 123456789.123", 'n ~ "123456789.12"', "n > 123456789", "n = -0.5", 'n ~ "-0.5"', "n ~ 3.25",
    'id = "R00000000000001"', 'id ~ "R0"', "flag > 0", "flag < true", 'flag = "0"', 'body ~ "<p>"',
    'title = " padded "', 'title ~ " "', "title < ' '", 'title > ""', "title >= null", 'title ~ "<b>"',
    'meta ~ "<b>"', 'meta ~ "u003c"', 'meta ~ "é"', 'meta.h = "<b>&é\u2028"', r'meta ~ "{\"a\""', "meta <= meta.a",
    "meta > meta.x", 'meta ~ "u2028"',
]

OUTSIDE_SUBSET = [
    'title ?= "abc"', 'n ?> 5', 'title:lower = "abc"', "title:length > 3", 'meta:each ~ "x"',
    'strftime("%Y", "2024-01-01") = "2024"',
]
"""PocketBase syntax the library refuses with a 400 (PocketBase evaluates it)."""

INVALID_FIELDS = ["title:excerpt(0)", "body:excerpt", "title:upper", "body:excerpt(1,2,3)", "title,(x"]
"""Fields lists the library refuses with a 400 (PocketBase sends the whole record)."""

TEMPLATES: list[tuple[str, dict[str, Any]]] = [
    ("title = {:t}", {"t": "a\\b"}), ("title = {:t}", {"t": "line1\nline2"}), ("title = {:t}", {"t": "ends with \\"}),
    ("title = {:t}", {"t": "q\"uote's"}), ("title ~ {:t}", {"t": "100%"}), ("n = {:v}", {"v": 1.5}),
    ("n > {:v}", {"v": -1}), ("flag = {:v}", {"v": True}), ("meta = {:v}", {"v": None}), ("title = {:t}", {"t": "Ünïcode ÄÖ"}),
    ("title = {:t}", {"t": "\t"}), ("meta.x = {:v}", {"v": ""}),
]

FIELDS = [
    "title", "id,title", "*", "meta.x", "meta", "meta.x.y", "nosuch", "title,nosuch", "*,body:excerpt(30)",
    "body:excerpt(30)", "body:excerpt(10,true)", "body:excerpt(5, 1)", "body:excerpt(200)", "body:excerpt(3,true)",
    "body:excerpt(1)", "title:excerpt(4,true)", "n:excerpt(2)", "meta:excerpt(3)", "body:excerpt(12, false)",
    "id, title ,n", "TITLE", "meta.a,meta.s", "flag,n", "body:excerpt(40,true),title", "body:excerpt(80)",
    "meta.a.b", "meta.0", "title:excerpt(2)", "body:excerpt(7)", "body:excerpt(15,true)", "title:excerpt(3,true)",
]


# -- generated cases --------------------------------------------------------------------------------

_FIELD_OPERANDS = ["title", "n", "flag", "meta", "meta.x", "meta.a", "id", "body", "nosuch"]
_LITERALS = ['""', "null", "true", "false", "0", "1", "10", "-5", "1.5", "0.1", '"10"', '"abc"', "'a'", '"5.0"',
             '"1e3"', '"%"', '"_"', '"\\\\"', '"x"', "'hello'", '"1"', '"-0"', "1000", '"ABC"']
_OPERATORS = ["=", "!=", "<", "<=", ">", ">=", "~", "!~"]


def _operand(rng: random.Random) -> str:
    return rng.choice(_FIELD_OPERANDS) if rng.random() < 0.55 else rng.choice(_LITERALS)


def _expression(rng: random.Random, depth: int) -> str:
    if depth < 2 and rng.random() < 0.3:
        join = rng.choice([" && ", " || "])
        inner = join.join(_expression(rng, depth + 1) for _ in range(rng.randint(2, 3)))
        return f"({inner})" if rng.random() < 0.5 else inner
    left = _operand(rng)
    right = _operand(rng) if rng.random() < 0.3 else rng.choice(_LITERALS)
    return f"{left} {rng.choice(_OPERATORS)} {right}"


def generated_cases(seed: int = SEED, count: int = GENERATED) -> list[dict[str, Any]]:
    """*count* filters from the grammar above, from a fixed *seed*; a few with ``fields`` too."""
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        case: dict[str, Any] = {"filter": _expression(rng, 0)}
        if rng.random() < 0.15:
            case["fields"] = rng.choice(FIELDS)
        cases.append(case)
    return cases


def all_cases() -> list[dict[str, Any]]:
    """Every case once, in a fixed order: hand-written filters, SDK-written filters, fields, generated."""
    cases: list[dict[str, Any]] = [{"filter": source} for source in FILTERS]
    cases += [{"template": template, "params": params} for template, params in TEMPLATES]
    cases += [{"filter": source} for source in OUTSIDE_SUBSET]
    cases += [{"fields": fields} for fields in FIELDS + INVALID_FIELDS]
    cases += [{"filter": 'title != "zz"', "fields": fields} for fields in FIELDS[:6]]
    cases += generated_cases()
    seen: set[str] = set()
    unique = []
    for case in cases:
        marker = repr(sorted(case.items()))
        if marker not in seen:
            seen.add(marker)
            unique.append(case)
    return unique
