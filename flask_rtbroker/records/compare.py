"""How filter operators compare JSON values, following what PocketBase's filters do in SQL.

- ``=`` / ``!=``: ``null`` and ``""`` are equal (PocketBase folds them with ``COALESCE``); numbers
  compare by value, a number and a numeric string too; ``true``/``false`` are 1 and 0; other
  strings compare exactly (case-sensitive); lists and objects compare by their compact JSON text.
- ``<`` ``<=`` ``>`` ``>=``: numbers (or a number and a numeric string) by value, two strings by
  code point; anything involving ``null`` or other mixed types is false (SQL's NULL).
- ``~`` / ``!~``: SQL ``LIKE``, case-insensitive for ASCII letters. A string literal without
  ``%`` is a *contains* test; with ``%`` it is a pattern (``%`` any run, ``_`` one character,
  ``\\`` escapes the next one). A field on the right is wrapped in ``%...%`` with its wildcards
  active. Either side ``null`` makes both operators false, as in SQL.

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

import operator
from dataclasses import dataclass
from typing import Any, Callable, Union

from .. import encoding
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


def scalar(value: Any) -> Scalar:
    """Reduce a JSON value to what a SQL column would hold: bools as 1/0, containers as JSON text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    return encoding.dumps(value).decode("utf-8")


def _number(value: Scalar) -> float | int | None:
    """The numeric value of a number or numeric string, else None."""
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def equals(left: Any, right: Any) -> bool:
    """PocketBase's ``=``."""
    a, b = scalar(left), scalar(right)
    if a in (None, "") or b in (None, ""):
        return a in (None, "") and b in (None, "")
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    x, y = _number(a), _number(b)
    return x is not None and y is not None and x == y


def ordered(left: Any, operator: str, right: Any) -> bool:
    """PocketBase's ``<``, ``<=``, ``>``, ``>=``."""
    a, b = scalar(left), scalar(right)
    if a is None or b is None:
        return False
    compare = _ORDERINGS[operator]
    if isinstance(a, str) and isinstance(b, str):
        return compare(a, b)
    x, y = _number(a), _number(b)
    return x is not None and y is not None and compare(x, y)


def text(value: Scalar) -> str:
    """The text SQL would compare with ``LIKE`` (integral floats without ``.0``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


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

    def subject(self, value: Any) -> str | None:
        """What ``LIKE`` reads of *value*: its first :data:`MAX_LIKE_TEXT` characters, lowered; None for null."""
        prepared = self._subjects.get(id(value))
        if prepared is None:
            reduced = self.scalar(value)
            subject = None if reduced is None else ascii_lower(text(reduced)[:MAX_LIKE_TEXT])
            prepared = self._subjects[id(value)] = (value, subject)
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

    def matches(self, subject: str, evaluation: Evaluation) -> bool:
        """Whether the whole of *subject* (lowered like the pattern) matches."""
        size = len(subject)
        if size < self.width:
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
    """Compile a ``LIKE`` pattern, ``\\`` escaping the next character (a trailing one is literal)."""
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
        if char != "_":
            run.append(next(chars, "\\") if char == "\\" else char)
        width += 1
    if run:
        runs.append((width - len(run), "".join(run)))
    segments.append(_Segment.of(width, runs))
    return LikePattern(tuple(segments), sum(segment.width for segment in segments))


def like_pattern(pattern: str) -> LikePattern | None:
    """Compile a SQL ``LIKE`` pattern with ``\\`` as the escape character; None past :data:`MAX_LIKE_PATTERN`."""
    return None if len(pattern) > MAX_LIKE_PATTERN else _compile(pattern)


def contains_pattern(literal: str) -> LikePattern | None:
    """The pattern of ``field ~ 'literal'``: a contains test, or the literal itself if it has ``%``."""
    if len(literal) > MAX_LIKE_PATTERN or _has_unescaped_percent(literal):
        return like_pattern(literal)
    return _compile("%" + _escape_wildcards(literal) + "%")


def _escape_wildcards(literal: str) -> str:
    """Escape ``\\``, ``%`` and ``_`` unless a backslash already escapes them."""
    out = []
    i = 0
    while i < len(literal):
        char = literal[i]
        if char == "\\" and literal[i + 1 : i + 2] in ("\\", "%", "_"):
            out.append(literal[i : i + 2])
            i += 2
            continue
        out.append("\\" + char if char in "\\%_" else char)
        i += 1
    return "".join(out)


def _has_unescaped_percent(literal: str) -> bool:
    escaped = False
    for char in literal:
        if char == "%" and not escaped:
            return True
        escaped = char == "\\" and not escaped
    return False


def like(value: Any, pattern: LikePattern | None, evaluation: Evaluation) -> bool | None:
    """``value LIKE pattern``; None (SQL NULL) when the value or the pattern is null or the steps ran out."""
    subject = evaluation.subject(value)
    if subject is None or pattern is None:
        return None
    try:
        return pattern.matches(subject, evaluation)
    except _OutOfSteps:
        return None


def like_field(value: Any, field_value: Any, evaluation: Evaluation) -> bool | None:
    """``value LIKE '%' || field || '%'``, the field's wildcards active (NULL past :data:`MAX_LIKE_PATTERN`).

    Compiling the field's text costs a step per character.
    """
    reduced = evaluation.scalar(field_value)
    if evaluation.subject(value) is None or reduced is None:
        return None
    source = text(reduced)
    if len(source) > MAX_LIKE_PATTERN:
        return None
    try:
        evaluation.spend(len(source))
    except _OutOfSteps:
        return None
    return like(value, _compile("%" + source + "%"), evaluation)
