"""The ``filter`` subscription option: a safe subset of PocketBase's filter syntax, run in Python.

Grammar (whitespace between tokens is ignored)::

    filter     = or_expr
    or_expr    = and_expr { "||" and_expr }
    and_expr   = term { "&&" term }
    term       = "(" or_expr ")" | operand operator operand
    operator   = "=" | "!=" | ">" | ">=" | "<" | "<=" | "~" | "!~"
    operand    = field_path | "@request.auth.id" | string | number | "true" | "false" | "null"
    field_path = name { "." name }                 name = [A-Za-z_][A-Za-z0-9_]*
    string     = "'" ... "'" | '"' ... '"'         a backslash before the quote escapes it
    number     = [ "-" ] digits [ "." digits ]

``&&`` binds tighter than ``||`` (PocketBase's filters become SQL). A field path walks the
serialised record's nested objects; a missing key is ``null``. ``@request.auth.id`` is the
subscriber's auth id (``""`` for a guest). ``true``/``false``/``null`` are case-insensitive.
Operators compare as :mod:`flask_rtbroker.records.compare` describes.

Everything else raises :class:`FilterSyntaxError` — the ``?=``-style any-of operators,
functions, modifiers such as ``:lower``, macros such as ``@now``, other ``@request.*`` and
``@collection.*`` fields, comments, numbers too long for Python to read — as do more than
:data:`MAX_COMPARISONS` comparisons or parentheses nested deeper than :data:`MAX_DEPTH`.

Parsing is linear in the source (one left-to-right scan; no regex can backtrack) and recursion
is bounded by :data:`MAX_DEPTH`. Evaluating never raises: it does at most
:data:`MAX_COMPARISONS` comparisons, each linear in the values it reads except ``~``/``!~``,
whose work :mod:`~flask_rtbroker.records.compare` bounds per evaluation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping, Union

from ..errors import FilterSyntaxError
from . import compare

MAX_COMPARISONS = 200
"""PocketBase's default limit of expressions in one filter."""
MAX_DEPTH = 32
"""How deeply parentheses may nest."""
AUTH_ID = "@request.auth.id"

_OPERATORS = ("!=", "!~", ">=", "<=", "=", "~", ">", "<")
_ANY_OPERATORS = ("?!=", "?!~", "?>=", "?<=", "?=", "?~", "?>", "?<")
_KEYWORDS = {"true": True, "false": False, "null": None}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD = re.compile(r"[@A-Za-z_][A-Za-z0-9_.:@#*]*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


# -- operands and nodes --------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    """A string, number, ``true``, ``false`` or ``null``."""

    value: Any

    def resolve(self, record: Mapping[str, Any], auth_id: str) -> Any:
        """The literal's value."""
        return self.value


@dataclass(frozen=True)
class FieldPath:
    """A dotted path into the record."""

    names: tuple[str, ...]

    def resolve(self, record: Mapping[str, Any], auth_id: str) -> Any:
        """The value at the path, or None when any step is missing or not an object."""
        value: Any = record
        for name in self.names:
            if not isinstance(value, Mapping):
                return None
            value = value.get(name)
        return value


@dataclass(frozen=True)
class AuthId:
    """``@request.auth.id``."""

    def resolve(self, record: Mapping[str, Any], auth_id: str) -> Any:
        """The subscriber's auth id, ``""`` for a guest."""
        return auth_id


Operand = Union[Literal, FieldPath, AuthId]


@dataclass(frozen=True)
class Comparison:
    """``left operator right``; *pattern* is the compiled ``LIKE`` of a literal on the right of ``~``/``!~``."""

    left: Operand
    operator: str
    right: Operand
    pattern: compare.LikePattern | None = field(default=None, compare=False, repr=False)

    def matches(self, record: Mapping[str, Any], auth_id: str, evaluation: compare.Evaluation) -> bool:
        """Evaluate the comparison for *record* and the subscriber *auth_id*."""
        left = self.left.resolve(record, auth_id)
        right = self.right.resolve(record, auth_id)
        if self.operator in ("~", "!~"):
            if isinstance(self.right, Literal):
                found = compare.like(left, self.pattern, evaluation)
            else:
                found = compare.like_field(left, right, evaluation)
            return found is True if self.operator == "~" else found is False
        left, right = evaluation.scalar(left), evaluation.scalar(right)
        if self.operator == "=":
            return compare.equals(left, right)
        if self.operator == "!=":
            return not compare.equals(left, right)
        return compare.ordered(left, self.operator, right)


@dataclass(frozen=True)
class Join:
    """Several terms joined by ``&&`` (*all*) or ``||`` (any)."""

    all: bool
    terms: tuple["Node", ...]

    def matches(self, record: Mapping[str, Any], auth_id: str, evaluation: compare.Evaluation) -> bool:
        """Evaluate the terms left to right, stopping as soon as the result is known."""
        if self.all:
            return all(term.matches(record, auth_id, evaluation) for term in self.terms)
        return any(term.matches(record, auth_id, evaluation) for term in self.terms)


Node = Union[Comparison, Join]


def _comparison(left: Operand, operator: str, right: Operand) -> Comparison:
    """The comparison, with the pattern of a literal on the right of ``~``/``!~`` compiled now."""
    if operator not in ("~", "!~") or not isinstance(right, Literal):
        return Comparison(left, operator, right)
    scalar = compare.scalar(right.value)
    return Comparison(left, operator, right, None if scalar is None else compare.contains_pattern(compare.text(scalar)))


@dataclass(frozen=True)
class Filter:
    """A parsed filter; :meth:`matches` evaluates it against a serialised record."""

    source: str
    root: Node

    def matches(self, record: Mapping[str, Any], auth_id: str) -> bool:
        """True when *record* passes the filter for a subscriber whose auth id is *auth_id*."""
        return self.root.matches(record, auth_id, compare.Evaluation())


# -- scanning ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # "(", ")", "&&", "||", "op", "operand"
    value: Any
    position: int


def _scan_string(source: str, start: int) -> tuple[str, int]:
    quote = source[start]
    chars = []
    i = start + 1
    while i < len(source):
        char = source[i]
        if char == "\\" and source[i + 1 : i + 2] == quote:
            chars.append(quote)
            i += 2
            continue
        if char == quote:
            return "".join(chars), i + 1
        chars.append(char)
        i += 1
    raise FilterSyntaxError(f"unterminated string starting at position {start}")


def _number(text: str, position: int) -> int | float:
    try:
        return float(text) if "." in text else int(text)
    except ValueError:  # more digits than int() reads (sys.get_int_max_str_digits())
        raise FilterSyntaxError(f"the number at position {position} is too long") from None


def _word_operand(word: str, position: int, source: str, end: int) -> Operand:
    if source[end : end + 1] == "(":
        raise FilterSyntaxError(f"functions are not supported ({word}(...) at position {position})")
    if word.lower() in _KEYWORDS:
        return Literal(_KEYWORDS[word.lower()])
    if word.startswith("@"):
        if word == AUTH_ID:
            return AuthId()
        raise FilterSyntaxError(f"{word} is not supported; the only @ field is {AUTH_ID}")
    if ":" in word:
        raise FilterSyntaxError(f"field modifiers are not supported ({word})")
    names = word.split(".")
    if not all(_NAME.fullmatch(name) for name in names):
        raise FilterSyntaxError(f"invalid field path {word!r} at position {position}")
    return FieldPath(tuple(names))


def _tokens(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(source):
        char = source[i]
        if char.isspace():
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
            tokens.append(_Token("operand", Literal(value), i))
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
        left = self.take("operand", "a field, @request.auth.id or a literal").value
        operator = self.take("op", "an operator (= != > >= < <= ~ !~)").value
        right = self.take("operand", "a field, @request.auth.id or a literal").value
        self.comparisons += 1
        if self.comparisons > MAX_COMPARISONS:
            raise FilterSyntaxError(f"more than {MAX_COMPARISONS} comparisons")
        return _comparison(left, operator, right)


@lru_cache(maxsize=1024)
def parse_filter(source: str) -> Filter:
    """Parse *source*; raise :class:`FilterSyntaxError` for anything outside the subset."""
    return Filter(source, _Parser(_tokens(source)).parse())
