"""The ``filter`` subscription option: a subset of PocketBase's filter syntax, run in Python.

Grammar (tokens may be separated by spaces, tabs and newlines, PocketBase's only whitespace)::

    filter     = or_expr
    or_expr    = and_expr { "||" and_expr }
    and_expr   = term { "&&" term }
    term       = "(" or_expr ")" | operand operator operand
    operator   = "=" | "!=" | ">" | ">=" | "<" | "<=" | "~" | "!~"
    operand    = field_path | string | number | "true" | "false" | "null"
    field_path = name { "." key }     name = [A-Za-z_][A-Za-z0-9_]*     key = [A-Za-z0-9_]+
    string     = "'" ... "'" | '"' ... '"'         escapes \\\\ \\n \\t \\r \\" \\' in both
    number     = [ "-" ] digits [ "." digits ] | "-." digits

``&&`` binds tighter than ``||`` (PocketBase's filters become SQL). ``true``/``false``/``null``
are case-insensitive. A field path names a field of the record (see
:class:`~flask_rtbroker.records.collection.RecordSchema`): a column, or a path inside a JSON
column read like ``JSON_EXTRACT`` (a key of all digits indexes an array; a missing key is
null). A filter naming anything else never matches, as in PocketBase. Operators compare as
:mod:`flask_rtbroker.records.compare` describes.

Everything else raises :class:`FilterSyntaxError`: whitespace PocketBase's tokenizer refuses
(CR, VT, FF, NBSP...), ``@request.`` and ``@collection.`` anywhere in the filter (PocketBase
refuses such client filters for non-superusers: they never match), the ``?=``-style any-of
operators, functions, modifiers such as ``:lower``, macros such as ``@now``, comments, numbers
out of a double's range, and more than :data:`MAX_COMPARISONS` comparisons or parentheses nested
deeper than :data:`MAX_DEPTH`.

Parsing is linear in the source (one left-to-right scan; no regex can backtrack) and recursion
is bounded by :data:`MAX_DEPTH`. Evaluating never raises: it does at most
:data:`MAX_COMPARISONS` comparisons, each linear in the values it reads except ``~``/``!~``,
whose work :mod:`~flask_rtbroker.records.compare` bounds per evaluation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping, Union

from ..errors import FilterSyntaxError
from . import compare
from .collection import RecordSchema

MAX_COMPARISONS = 200
"""PocketBase's default limit of expressions in one filter."""
MAX_DEPTH = 32
"""How deeply parentheses may nest."""
SUPERUSER_ONLY = ("@request.", "@collection.")
"""What PocketBase refuses anywhere in a client filter of a non-superuser."""

_OPERATORS = ("!=", "!~", ">=", "<=", "=", "~", ">", "<")
_ANY_OPERATORS = ("?!=", "?!~", "?>=", "?<=", "?=", "?~", "?>", "?<")
_KEYWORDS = {"true": compare.SqlValue(1, known=True), "false": compare.SqlValue(0, known=True),
             "null": compare.SqlValue(None, empty=True)}
_WHITESPACE = " \t\n"
_ESCAPES = {"\\": "\\", "n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY = re.compile(r"[A-Za-z0-9_]+")
_WORD = re.compile(r"[@A-Za-z_][A-Za-z0-9_.:@#*]*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?|-\.[0-9]+")


# -- operands and nodes --------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    """A string, number, ``true``, ``false`` or ``null``, as the SQL value PocketBase binds."""

    sql: compare.SqlValue

    def resolve(self, record: Mapping[str, Any], schema: RecordSchema, evaluation: compare.Evaluation) -> compare.SqlValue:
        """The literal's value."""
        return self.sql


@dataclass(frozen=True)
class FieldPath:
    """A field of the record, or a path inside a JSON field."""

    names: tuple[str, ...]

    def resolve(self, record: Mapping[str, Any], schema: RecordSchema, evaluation: compare.Evaluation) -> compare.SqlValue:
        """The field's SQL value: a JSON field's as ``JSON_EXTRACT`` reads it, a column's with its affinity."""
        value = record.get(self.names[0])
        if self.names[0] in schema.json:
            for name in self.names[1:]:
                value = _step(value, name)
            return compare.SqlValue(evaluation.scalar(value), json=True)
        scalar = evaluation.scalar(value)
        if scalar is None:
            return compare.SqlValue(None)
        return compare.SqlValue(scalar, compare.TEXT if isinstance(scalar, str) else compare.NUMERIC)


def _step(value: Any, key: str) -> Any:
    """One step of a JSON path: an object's key, or an array's index when *key* is all digits."""
    if key.isdigit():
        if not isinstance(value, list) or len(key) > 18:  # longer: past any list (and int()'s digit limit)
            return None
        index = int(key)
        return value[index] if index < len(value) else None
    return value.get(key) if isinstance(value, Mapping) else None


Operand = Union[Literal, FieldPath]


@dataclass(frozen=True)
class Comparison:
    """``left operator right``; *pattern* is the compiled ``LIKE`` of a literal on the right of ``~``/``!~``."""

    left: Operand
    operator: str
    right: Operand
    pattern: compare.LikePattern | None = field(default=None, compare=False, repr=False)

    def matches(self, record: Mapping[str, Any], schema: RecordSchema, evaluation: compare.Evaluation) -> bool:
        """Evaluate the comparison for *record*."""
        left = self.left.resolve(record, schema, evaluation)
        right = self.right.resolve(record, schema, evaluation)
        if self.operator in ("~", "!~"):
            if isinstance(self.right, Literal):
                found = compare.like(left, self.pattern, evaluation)
            else:
                found = compare.like_field(left, right, evaluation)
            return found is True if self.operator == "~" else found is False
        if self.operator in ("=", "!="):
            return compare.equals(left, right, negated=self.operator == "!=")
        return compare.ordered(left, self.operator, right)


@dataclass(frozen=True)
class Join:
    """Several terms joined by ``&&`` (*all*) or ``||`` (any)."""

    all: bool
    terms: tuple["Node", ...]

    def matches(self, record: Mapping[str, Any], schema: RecordSchema, evaluation: compare.Evaluation) -> bool:
        """Evaluate the terms left to right, stopping as soon as the result is known."""
        if self.all:
            return all(term.matches(record, schema, evaluation) for term in self.terms)
        return any(term.matches(record, schema, evaluation) for term in self.terms)


Node = Union[Comparison, Join]


def _comparison(left: Operand, operator: str, right: Operand) -> Comparison:
    """The comparison, with the pattern of a literal on the right of ``~``/``!~`` compiled now."""
    if operator not in ("~", "!~") or not isinstance(right, Literal):
        return Comparison(left, operator, right)
    return Comparison(left, operator, right, compare.literal_pattern(right.sql))


@dataclass(frozen=True)
class Filter:
    """A parsed filter; :meth:`matches` evaluates it against a serialised record."""

    source: str
    root: Node
    paths: frozenset[tuple[str, ...]]
    _known: dict[RecordSchema, bool] = field(default_factory=dict, init=False, compare=False, repr=False)

    def names_fields_of(self, schema: RecordSchema) -> bool:
        """Whether every field path of the filter exists in *schema* (remembered per schema)."""
        known = self._known.get(schema)
        if known is None:
            known = all(schema.has(path) for path in self.paths)
            if len(self._known) < 64:
                self._known[schema] = known
        return known

    def matches(self, record: Mapping[str, Any], schema: RecordSchema | None = None) -> bool:
        """True when *record* passes the filter; never when it names a field *schema* lacks
        (None: the schema read off the record, :meth:`RecordSchema.of_record`)."""
        if schema is None:
            schema = RecordSchema.of_record(record)
        if not self.names_fields_of(schema):
            return False
        return self.root.matches(record, schema, compare.Evaluation())


# -- scanning ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # "(", ")", "&&", "||", "op", "operand"
    value: Any
    position: int


def _scan_string(source: str, start: int) -> tuple[str, int]:
    """The text of the quoted string at *start* (escapes decoded) and the position after it."""
    quote = source[start]
    chars = []
    i = start + 1
    while i < len(source):
        char = source[i]
        if char == "\\" and i + 1 < len(source):
            decoded = _ESCAPES.get(source[i + 1])
            if decoded is not None:
                chars.append(decoded)
                i += 2
                continue
        elif char == quote:
            return "".join(chars), i + 1
        chars.append(char)
        i += 1
    raise FilterSyntaxError(f"unterminated string starting at position {start}")


def _number(text: str, position: int) -> compare.SqlValue:
    value = float(text)
    if math.isinf(value):
        raise FilterSyntaxError(f"the number at position {position} is out of range")
    return compare.SqlValue(value, known=True)


def _word_operand(word: str, position: int, source: str, end: int) -> Operand:
    if source[end : end + 1] == "(":
        raise FilterSyntaxError(f"functions are not supported ({word}(...) at position {position})")
    keyword = _KEYWORDS.get(word.lower())
    if keyword is not None:
        return Literal(keyword)
    if word.startswith("@"):
        raise FilterSyntaxError(f"{word} is not supported (no @ fields or macros)")
    if ":" in word:
        raise FilterSyntaxError(f"field modifiers are not supported ({word})")
    names = word.split(".")
    if _NAME.fullmatch(names[0]) is None or not all(_KEY.fullmatch(key) for key in names[1:]):
        raise FilterSyntaxError(f"invalid field path {word!r} at position {position}")
    return FieldPath(tuple(names))


def _tokens(source: str) -> list[_Token]:
    for refused in SUPERUSER_ONLY:
        if refused in source:
            raise FilterSyntaxError(f"{refused} is refused in a client filter (PocketBase allows it to superusers only)")
    tokens: list[_Token] = []
    i = 0
    while i < len(source):
        char = source[i]
        if char in _WHITESPACE:
            i += 1
        elif source.startswith("//", i):
            raise FilterSyntaxError("comments are not supported")
        elif char in "()":
            tokens.append(_Token(char, char, i))
            i += 1
        elif source.startswith(("&&", "||"), i):
            tokens.append(_Token(source[i : i + 2], None, i))
            i += 2
        elif source.startswith(_ANY_OPERATORS, i):
            raise FilterSyntaxError(f"the any-of operators (?=, ?~, ...) are not supported (position {i})")
        elif source.startswith(_OPERATORS, i):
            operator = next(op for op in _OPERATORS if source.startswith(op, i))
            tokens.append(_Token("op", operator, i))
            i += len(operator)
        elif char in "'\"":
            value, end = _scan_string(source, i)
            tokens.append(_Token("operand", Literal(compare.SqlValue(value, empty=not value, known=bool(value))), i))
            i = end
        elif (number := _NUMBER.match(source, i)) is not None:
            tokens.append(_Token("operand", Literal(_number(number.group(), i)), i))
            i = number.end()
        elif (word := _WORD.match(source, i)) is not None:
            tokens.append(_Token("operand", _word_operand(word.group(), i, source, word.end()), i))
            i = word.end()
        else:
            raise FilterSyntaxError(f"unexpected character {char!r} at position {i}")
    return tokens


# -- parsing -------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.comparisons = 0
        self.paths: set[tuple[str, ...]] = set()

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, kind: str, what: str) -> _Token:
        token = self.peek()
        if token is None or token.kind != kind:
            where = f"position {token.position}" if token is not None else "the end"
            raise FilterSyntaxError(f"expected {what} at {where}")
        self.index += 1
        return token

    def parse(self) -> Node:
        if not self.tokens:
            raise FilterSyntaxError("the filter is empty")
        node = self.join("||", self.join_and, 0)
        token = self.peek()
        if token is not None:
            raise FilterSyntaxError(f"unexpected {token.kind} at position {token.position}")
        return node

    def join(self, separator: str, parse_term: Any, depth: int) -> Node:
        terms = [parse_term(depth)]
        while (token := self.peek()) is not None and token.kind == separator:
            self.index += 1
            terms.append(parse_term(depth))
        return terms[0] if len(terms) == 1 else Join(separator == "&&", tuple(terms))

    def join_and(self, depth: int) -> Node:
        return self.join("&&", self.term, depth)

    def term(self, depth: int) -> Node:
        token = self.peek()
        if token is not None and token.kind == "(":
            if depth >= MAX_DEPTH:
                raise FilterSyntaxError(f"parentheses nest deeper than {MAX_DEPTH}")
            self.index += 1
            node = self.join("||", self.join_and, depth + 1)
            self.take(")", "')'")
            return node
        left = self.take("operand", "a field or a literal").value
        operator = self.take("op", "an operator (= != > >= < <= ~ !~)").value
        right = self.take("operand", "a field or a literal").value
        self.paths.update(operand.names for operand in (left, right) if isinstance(operand, FieldPath))
        self.comparisons += 1
        if self.comparisons > MAX_COMPARISONS:
            raise FilterSyntaxError(f"more than {MAX_COMPARISONS} comparisons")
        return _comparison(left, operator, right)


@lru_cache(maxsize=1024)
def parse_filter(source: str) -> Filter:
    """Parse *source*; raise :class:`FilterSyntaxError` for anything outside the subset."""
    parser = _Parser(_tokens(source))
    root = parser.parse()
    return Filter(source, root, frozenset(parser.paths))
