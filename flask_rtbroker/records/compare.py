"""How filter operators compare, following the SQL PocketBase 0.40.6 builds for them on SQLite.

Operands become SQL values (:class:`SqlValue`): NULL, INTEGER, REAL or TEXT, with the *affinity*
SQLite gives them: a text column's TEXT, a number or bool column's NUMERIC (bools are 1 and 0, a
REAL that is a whole 64-bit number is stored as INTEGER), none for literals (a number literal is
a REAL) and for JSON fields (read as ``JSON_EXTRACT`` does: strings are TEXT, objects and arrays
their compact JSON text, ``true``/``false`` 1 and 0).

- Before comparing, SQLite's affinity rules apply: against a NUMERIC column, a well-formed numeric
  text becomes a number; against a TEXT column, a number becomes its text (a REAL as SQLite
  writes it: ``10.0``, ``1.0e+20``). Otherwise nothing converts, and numbers sort before text.
- ``=`` / ``!=``: as PocketBase writes them. A JSON field compares with ``IS`` (null is not
  ``""``); ``null`` or ``""`` against a column means "is ``""`` or NULL"; a column against a
  column compares ``COALESCE(x, '')``; ``!=`` is ``IS NOT`` (true against NULL).
- ``<`` ``<=`` ``>`` ``>=``: plain SQL, false when either side is NULL.
- ``~`` / ``!~``: SQL ``LIKE`` on the left side's text, case-insensitive for ASCII letters. A
  literal on the right without an unescaped ``%`` is a *contains* test (its ``\\``, ``%``, ``_``
  escaped as PocketBase escapes them); with one it is the pattern itself (``%`` any run, ``_`` one
  character, ``\\`` escapes the next; a pattern ending in a lone ``\\`` matches nothing). A
  number literal is written as Go writes it (``-0``, ``1.5``). A field on the right (or
  ``true``/``false``) is wrapped in ``%...%`` with its wildcards active. Either side NULL makes
  both operators false.

Record values and patterns may be hostile, so ``LIKE`` is bounded (where a bound bites, the
comparison is NULL: ``~`` and ``!~`` are both false, as when SQLite refuses a pattern):

- it looks at the first :data:`MAX_LIKE_TEXT` characters of a value;
- a pattern longer than :data:`MAX_LIKE_PATTERN` characters is NULL;
- it never backtracks: the pattern is split at ``%`` into fixed-width segments, the first and
  last are anchored and the others are found leftmost in turn with ``str.find``, so a pattern
  without ``_`` costs O(len(value) + len(pattern)); a segment with ``_`` is found by its longest
  literal run, each candidate checked at fixed offsets;
- one :class:`Evaluation` (one filter against one record) makes at most :data:`MAX_LIKE_STEPS`
  steps: a step is one ``str.find``/``str.startswith`` call, plus one per 64 characters of its
  needle; compiling a pattern taken from a field costs one step per character. Once they are
  spent, the evaluation's remaining ``~``/``!~`` comparisons are NULL.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, NamedTuple, Union

from ..protocol import encoding
from ..errors import RtBrokerError

Scalar = Union[None, int, float, str]
MAX_LIKE_TEXT = 100_000
"""How many characters of a value ``~``/``!~`` look at."""
MAX_LIKE_PATTERN = 2_500
"""The longest ``LIKE`` pattern (the longest subscription a client may POST); a longer one is NULL."""
MAX_LIKE_STEPS = 100_000
"""How many ``LIKE`` steps one filter evaluation may make (see :class:`Evaluation`)."""
_CHARS_PER_STEP = 64
_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_INT64 = 2**63
NO_AFFINITY = ""
TEXT = "text"
NUMERIC = "numeric"
_SQL_NUMBER = re.compile(r"[ \t\n\v\f\r]*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t\n\v\f\r]*")
"""Text SQLite reads as a number when NUMERIC affinity applies (its ``sqlite3AtoF``)."""
_SQL_INTEGER = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+[ \t\n\v\f\r]*")


class SqlValue(NamedTuple):
    """An operand as the SQL PocketBase builds sees it.

    *json*: a JSON field (PocketBase compares it with ``IS``); *empty*: the literal ``null`` or
    ``""``; *known*: a literal known not to be empty (a number, a non-empty string, ``true``,
    ``false``), which PocketBase compares directly.
    """

    value: Scalar
    affinity: str = NO_AFFINITY
    json: bool = False
    empty: bool = False
    known: bool = False


_EMPTY_TEXT = SqlValue("")


def stored_number(value: int | float) -> int | float:
    """A number as SQLite holds it in a NUMERIC column or ``JSON_EXTRACT`` reads it: a whole
    64-bit value as INTEGER, anything else as REAL."""
    if isinstance(value, int):
        if -_INT64 <= value < _INT64:
            return value
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if value.is_integer() and -_INT64 <= value < _INT64:
        return int(value)
    return value


def scalar(value: Any) -> Scalar:
    """A JSON value as a SQL value: bools as 1/0, numbers as :func:`stored_number`, containers as
    the compact JSON text PocketBase stores (keys sorted, as Go writes a map)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return stored_number(value)
    return encoding.dumps_sorted(value).decode("utf-8")


def real_text(value: float) -> str:
    """SQLite's text of a REAL (``%!.15g``): ``10.0``, ``0.1``, ``1.0e+20``, ``1.0e-07``."""
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    text = format(value, ".15g")
    mantissa, e, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa + e + exponent


def go_text(value: float) -> str:
    """Go's ``strconv.FormatFloat(value, 'f', -1, 64)`` of a finite number: the shortest digits, never an exponent."""
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def text(value: Scalar) -> str | None:
    """The TEXT SQLite makes of a value (for ``LIKE`` and TEXT affinity); None for NULL."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else real_text(value)
    return str(value)


def _numeric(value: Scalar) -> Scalar:
    """NUMERIC affinity: well-formed numeric text becomes a number; anything else is unchanged."""
    if not isinstance(value, str) or _SQL_NUMBER.fullmatch(value) is None:
        return value
    digits = value.strip(" \t\n\v\f\r")
    if len(digits) <= 20 and _SQL_INTEGER.fullmatch(digits) is not None:  # longer: past 64 bits anyway
        number = int(digits)
        if -_INT64 <= number < _INT64:
            return number
    return float(digits)


def _with_affinities(left: SqlValue, right: SqlValue) -> tuple[Scalar, Scalar]:
    """The two values after SQLite applies the operands' affinities to each other."""
    a, b = left.value, right.value
    if left.affinity == NUMERIC and right.affinity != NUMERIC:
        b = _numeric(b)
    elif right.affinity == NUMERIC and left.affinity != NUMERIC:
        a = _numeric(a)
    elif left.affinity == TEXT and right.affinity == NO_AFFINITY:
        b = text(b)
    elif right.affinity == TEXT and left.affinity == NO_AFFINITY:
        a = text(a)
    return a, b


def _compare(a: Scalar, b: Scalar) -> int | None:
    """SQLite's comparison: None when either side is NULL; numbers before text; text by code point."""
    if a is None or b is None:
        return None
    a_text, b_text = isinstance(a, str), isinstance(b, str)
    if a_text != b_text:
        return 1 if a_text else -1
    return (a > b) - (a < b)  # type: ignore[operator]


def _equal(left: SqlValue, right: SqlValue) -> bool | None:
    """SQL ``=``: None when either side is NULL."""
    order = _compare(*_with_affinities(left, right))
    return None if order is None else order == 0


def _is(left: SqlValue, right: SqlValue) -> bool:
    """SQL ``IS``: ``=`` where NULL is NULL."""
    a, b = _with_affinities(left, right)
    if a is None or b is None:
        return a is None and b is None
    return _compare(a, b) == 0


def _coalesced(value: SqlValue) -> SqlValue:
    """``COALESCE(x, '')``: a function result, without affinity."""
    return SqlValue("" if value.value is None else value.value)


def equals(left: SqlValue, right: SqlValue, negated: bool = False) -> bool:
    """PocketBase's ``=`` (``!=`` when *negated*), written as its SQL is."""
    if left.json or right.json:
        return _is(left, right) != negated
    if left.empty and right.empty:
        return not negated
    if left.known or right.known:
        a = _EMPTY_TEXT if left.empty else left
        b = _EMPTY_TEXT if right.empty else right
        return not _is(a, b) if negated else _equal(a, b) is True
    if left.empty or right.empty:
        other = right if left.empty else left
        if negated:
            return not _is(_EMPTY_TEXT, other) and other.value is not None
        return _equal(_EMPTY_TEXT, other) is True or other.value is None
    a, b = _coalesced(left), _coalesced(right)
    return not _is(a, b) if negated else _equal(a, b) is True


def ordered(left: SqlValue, operator: str, right: SqlValue) -> bool:
    """PocketBase's ``<``, ``<=``, ``>``, ``>=``: false when either side is NULL."""
    order = _compare(*_with_affinities(left, right))
    return order is not None and _ORDERINGS[operator](order, 0)


def ascii_lower(value: str) -> str:
    """*value* with ASCII letters lowered and every other character (lone surrogates too) unchanged.

    ``bytes.lower`` changes only ASCII bytes, which UTF-8 uses for ASCII characters alone.
    """
    if value.isascii():
        return value.lower()
    return value.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")


class _OutOfSteps(RtBrokerError):
    """The evaluation spent its :data:`MAX_LIKE_STEPS`."""


class Evaluation:
    """One filter evaluated against one record: the ``LIKE`` steps left and the values prepared so far.

    A value is prepared once per evaluation however many comparisons use it (a container turned
    into JSON text, a ``LIKE`` subject cut and lowered). Preparations are keyed by the value's
    identity and hold the value, so the key stays valid; they take at most about the size of the
    record's own values.
    """

    def __init__(self, steps: int = MAX_LIKE_STEPS) -> None:
        self.steps_left = steps
        self._scalars: dict[int, tuple[Any, Scalar]] = {}
        self._subjects: dict[int, tuple[Any, str | None]] = {}

    def spend(self, steps: int) -> None:
        """Count *steps* of ``LIKE`` work; raise :class:`_OutOfSteps` past the budget."""
        self.steps_left -= steps
        if self.steps_left < 0:
            raise _OutOfSteps

    def scalar(self, value: Any) -> Scalar:
        """:func:`scalar`, once per container."""
        if value is None or isinstance(value, (str, int, float)):
            return scalar(value)
        prepared = self._scalars.get(id(value))
        if prepared is None:
            prepared = self._scalars[id(value)] = (value, scalar(value))
        return prepared[1]

    def subject(self, value: Scalar) -> str | None:
        """What ``LIKE`` reads of *value*: the first :data:`MAX_LIKE_TEXT` characters of its text, lowered; None for NULL."""
        if not isinstance(value, str):
            source = text(value)
            return None if source is None else ascii_lower(source[:MAX_LIKE_TEXT])
        prepared = self._subjects.get(id(value))
        if prepared is None:
            prepared = self._subjects[id(value)] = (value, ascii_lower(value[:MAX_LIKE_TEXT]))
        return prepared[1]


def _cost(needle: str) -> int:
    return 1 + len(needle) // _CHARS_PER_STEP


@dataclass(frozen=True)
class _Segment:
    """The pattern between two ``%``: *width* characters, literal runs (lowered) at fixed offsets, ``_`` elsewhere.

    *anchor* is the longest run (None when there is none), *others* the rest.
    """

    width: int
    anchor: tuple[int, str] | None
    others: tuple[tuple[int, str], ...]

    @classmethod
    def of(cls, width: int, runs: list[tuple[int, str]]) -> "_Segment":
        """The segment with these literal *runs* (offset, text)."""
        if not runs:
            return cls(width, None, ())
        longest = max(range(len(runs)), key=lambda index: len(runs[index][1]))
        return cls(width, runs[longest], tuple(runs[:longest] + runs[longest + 1 :]))

    def _others_at(self, subject: str, start: int, evaluation: Evaluation) -> bool:
        for offset, run in self.others:
            evaluation.spend(_cost(run))
            if not subject.startswith(run, start + offset):
                return False
        return True

    def match_at(self, subject: str, start: int, evaluation: Evaluation) -> bool:
        """Whether the segment matches *subject* at *start* (``start + width`` must fit)."""
        if self.anchor is not None:
            offset, run = self.anchor
            evaluation.spend(_cost(run))
            if not subject.startswith(run, start + offset):
                return False
        return self._others_at(subject, start, evaluation)

    def find(self, subject: str, start: int, end: int, evaluation: Evaluation) -> int:
        """The leftmost position in ``[start, end - width]`` where the segment matches, or -1."""
        if end - start < self.width:
            return -1
        if self.anchor is None:
            return start
        offset, run = self.anchor
        low, high = start + offset, end - self.width + offset + len(run)
        while True:
            evaluation.spend(_cost(run))
            found = subject.find(run, low, high)
            if found < 0:
                return -1
            if self._others_at(subject, found - offset, evaluation):
                return found - offset
            low = found + 1


@dataclass(frozen=True)
class LikePattern:
    """A compiled SQL ``LIKE`` pattern: its segments between ``%`` (a run of ``%`` counts once).

    One segment when there is no ``%``; otherwise the first and last (possibly empty) are
    anchored to the ends and the middle ones (never empty) float.
    """

    segments: tuple[_Segment, ...]
    width: int
    dangling_escape: bool = False
    """The pattern ends in a lone ``\\``: SQLite matches nothing with it."""

    def matches(self, subject: str, evaluation: Evaluation) -> bool:
        """Whether the whole of *subject* (lowered like the pattern) matches."""
        size = len(subject)
        if size < self.width or self.dangling_escape:
            return False
        first, last = self.segments[0], self.segments[-1]
        if len(self.segments) == 1:
            return size == first.width and first.match_at(subject, 0, evaluation)
        end = size - last.width
        if not (first.match_at(subject, 0, evaluation) and last.match_at(subject, end, evaluation)):
            return False
        position = first.width
        for segment in self.segments[1:-1]:
            found = segment.find(subject, position, end, evaluation)
            if found < 0:
                return False
            position = found + segment.width
        return True


def _compile(pattern: str) -> LikePattern:
    """Compile a ``LIKE`` pattern, ``\\`` escaping the next character (a trailing one matches nothing)."""
    segments: list[_Segment] = []
    runs: list[tuple[int, str]] = []
    run: list[str] = []
    width = 0
    chars = iter(ascii_lower(pattern))
    for char in chars:
        if char in "%_" and run:
            runs.append((width - len(run), "".join(run)))
            run = []
        if char == "%":
            if width or not segments:
                segments.append(_Segment.of(width, runs))
            runs, width = [], 0
            continue
        if char == "\\":
            escaped = next(chars, None)
            if escaped is None:
                return LikePattern((_Segment.of(0, []),), 0, dangling_escape=True)
            char = escaped
        elif char == "_":
            width += 1
            continue
        run.append(char)
        width += 1
    if run:
        runs.append((width - len(run), "".join(run)))
    segments.append(_Segment.of(width, runs))
    return LikePattern(tuple(segments), sum(segment.width for segment in segments))


def like_pattern(pattern: str) -> LikePattern | None:
    """Compile a SQL ``LIKE`` pattern with ``\\`` as the escape character; None past :data:`MAX_LIKE_PATTERN`."""
    return None if len(pattern) > MAX_LIKE_PATTERN else _compile(pattern)


def literal_pattern(literal: SqlValue) -> LikePattern | None:
    """The pattern of ``x ~ literal``: for a string or number (written as Go writes it), a contains
    test, or the literal itself if it has an unescaped ``%``; ``true``/``false`` as ``%1%``/``%0%``;
    None for ``null``."""
    value = literal.value
    if value is None:
        return None
    if isinstance(value, int):  # true, false: SQL 1 and 0, concatenated with '%'
        return _compile(f"%{value}%")
    source = go_text(value) if isinstance(value, float) else value
    if len(source) > MAX_LIKE_PATTERN or _has_unescaped_percent(source):
        return like_pattern(source)
    return _compile("%" + _escape_wildcards(source) + "%")


def _escape_wildcards(literal: str) -> str:
    """Put a backslash before each ``\\``, ``%`` and ``_`` whose previous character is not one,
    reading from the end as PocketBase does (``__`` becomes ``_\\_``)."""
    out: list[str] = []
    pending = False
    for char in reversed(literal):
        if pending:
            if char != "\\":
                out.append("\\")
            pending = False
        else:
            pending = char in "\\%_"
        out.append(char)
    if pending:
        out.append("\\")
    return "".join(reversed(out))


def _has_unescaped_percent(literal: str) -> bool:
    escaped = False
    for char in literal:
        if char == "%" and not escaped:
            return True
        escaped = char == "\\" and not escaped
    return False


def like(value: SqlValue, pattern: LikePattern | None, evaluation: Evaluation) -> bool | None:
    """``value LIKE pattern``; None (SQL NULL) when the value or the pattern is null or the steps ran out."""
    subject = evaluation.subject(value.value)
    if subject is None or pattern is None:
        return None
    try:
        return pattern.matches(subject, evaluation)
    except _OutOfSteps:
        return None


def like_field(value: SqlValue, field_value: SqlValue, evaluation: Evaluation) -> bool | None:
    """``value LIKE '%' || field || '%'``, the field's wildcards active (NULL past :data:`MAX_LIKE_PATTERN`).

    Compiling the field's text costs a step per character.
    """
    source = text(field_value.value)
    if evaluation.subject(value.value) is None or source is None:
        return None
    if len(source) > MAX_LIKE_PATTERN:
        return None
    try:
        evaluation.spend(len(source))
    except _OutOfSteps:
        return None
    return like(value, _compile("%" + source + "%"), evaluation)
