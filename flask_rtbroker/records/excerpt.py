"""The ``:excerpt(max, withEllipsis?)`` field modifier: plain text from HTML, cut to *max* characters.

As PocketBase 0.40.6 makes it from the tree its HTML5 parser builds: the text of the body (the
head, scripts, styles, forms, media and the like dropped), a space around each block element,
runs of Go's ``\\s`` whitespace (space, tab, LF, FF, CR; not NBSP or other Unicode spaces)
collapsed to one space, character references decoded. PocketBase stops reading elements once it
has more than *max* + 2 UTF-8 bytes (it still adds the text around them), trims Go's Unicode
spaces, cuts to *max* characters and, when *withEllipsis* is true and something was cut, appends
``...``. Values other than strings are left as they are.

What the parser does that matters here is followed: elements that open the document before any
content (``title``, ``style``, ``meta``...) go into the head and are dropped, and so is an
explicit ``<head>`` until content starts the body; the content of raw-text elements (``xmp``,
``noscript``, ``noembed``, ``noframes``, ``title`` and ``textarea`` with character references
decoded) is text, tags included, up to their end tag; after ``<plaintext>`` everything is text; an
end tag without an open element is ignored (``</p>`` makes an empty paragraph), and so are table
parts outside a table. Its other tree rules (text moved out of a table, implied ends such as a
``<p>`` closed by ``<xmp>``) are not followed.

Record values are often written by users, so the markup is read by :class:`_PlainText`, a single
left-to-right scan in the spirit of an HTML tokenizer: every search starts where the last one
ended, so any input costs time linear in its length and never raises; the scan of a value is
shared by every excerpt of it in one event and goes only as far as the longest one needs.
"""

from __future__ import annotations

import html
import re
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from ..errors import FieldsSyntaxError

_EXCLUDED_TAGS = frozenset({
    "style", "script", "iframe", "embed", "applet", "object", "svg", "img", "picture",
    "dialog", "template", "button", "form", "textarea", "input", "select", "option",
})
_INLINE_TAGS = frozenset({
    "a", "abbr", "acronym", "b", "bdo", "big", "br", "button", "cite", "code", "em", "i", "label",
    "q", "small", "span", "strong", "strike", "sub", "sup", "time",
})
_VOID_TAGS = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr",
})
_RAW_TEXT_TAGS = frozenset({"script", "style", "xmp", "iframe", "noembed", "noframes", "noscript", "title", "textarea"})
"""Elements whose content is text up to their own end tag, whatever it contains."""
_ESCAPABLE_RAW_TEXT_TAGS = frozenset({"title", "textarea"})
"""Raw-text elements whose character references are decoded."""
_HEAD_TAGS = frozenset({"base", "basefont", "bgsound", "link", "meta", "noframes", "noscript", "script", "style", "template", "title"})
"""Elements that, before the body starts, go into the (dropped) head."""
_BEFORE_BODY_TAGS = frozenset({"html", "head"})
"""Tags that leave the parser before the body."""
_DOCUMENT_TAGS = frozenset({"html", "head", "body"})
"""Tags ignored once in the body: their content shows, without a word break."""
_TAG_NAME = re.compile(r"[a-zA-Z][^\t\n\f\r />]*")
"""A tag name: up to HTML's whitespace (not Unicode's), ``/`` or ``>``."""
_SIMPLE_TAG = re.compile(r"<(/?)([a-z][a-z0-9]*)[\t\n\f\r ]*/?>")
"""A tag without attributes (read from the lowered source): the common case, in one match."""
_WHITESPACE = re.compile(r"[ \t\n\f\r]+")
_HTML_SPACE = " \t\n\f\r"
_GO_SPACE = " \t\n\v\f\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
"""What Go's ``strings.TrimSpace`` trims (``unicode.IsSpace``)."""
_IMPLIED_END = {"option": frozenset({"option", "optgroup"}), "button": frozenset({"button"}),
                 "select": frozenset({"select", "input", "keygen", "textarea"})}
"""Start tags that end an open element of the key's name (and then open their own)."""
_TABLE_TAGS = frozenset({"caption", "col", "colgroup", "tbody", "td", "tfoot", "th", "thead", "tr"})
"""Start tags that make elements only inside a ``<table>`` (elsewhere they are ignored), and that
end a ``<select>`` inside one."""
_IMPLIED_END_BY_END_TAG = {"option": frozenset({"select", "optgroup", "datalist"})}
"""End tags that end an open element of the key's name."""
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})


_GO_SPACE_DELETED = str.maketrans("", "", _GO_SPACE)


def _visible_length(text: str) -> int:
    """How many characters of collapsed *text* are not Go spaces (VT is the only one left in ASCII but " ")."""
    if text.isascii():
        return len(text) - text.count(" ") - text.count("\v")
    return len(text.translate(_GO_SPACE_DELETED))


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class _Visible:
    """A text growing at its end, with the length it has once trimmed of Go's spaces, kept as it grows."""

    def __init__(self, text: str) -> None:
        self.text = text
        stripped = text.lstrip(_GO_SPACE)
        self.start = len(text) - len(stripped) if stripped else None
        self.end = len(text.rstrip(_GO_SPACE))

    def add(self, part: str) -> None:
        """Append *part*."""
        before = len(self.text)
        self.text += part
        content = part.strip(_GO_SPACE)
        if content:
            if self.start is None:
                self.start = before + len(part) - len(part.lstrip(_GO_SPACE))
            self.end = before + len(part.rstrip(_GO_SPACE))

    def length(self) -> int:
        """The length of the text trimmed of Go's spaces."""
        return 0 if self.start is None else self.end - self.start


LATE_WINDOW = 64
"""How many parts past the stopping point :meth:`_PlainText.text` looks at for the text PocketBase
still adds there (see :meth:`_PlainText.text`)."""


class _PlainText:
    """The visible text of an HTML fragment, scanned lazily: only as far as the longest text asked for.

    The text is a list of *parts*: text nodes and the spaces around blocks. Like PocketBase's, it
    starts with the space of the ``<html>`` block, and its length is counted in UTF-8 bytes. Each
    part remembers the element it is in (by opening order) and how many elements were opened
    before it, so that what PocketBase adds after it stops (text outside the elements opened
    since) can be told for any limit. An excluded element is skipped up to its own end tag (nested
    ones of the same name counted; an ``option`` also ends where the next one starts), as a
    parser's tree would hold it; an end tag without an open element of its name is ignored.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.lowered = source.translate(_ASCII_LOWER)  # same length: only ASCII letters change
        self.position = 0
        self._found: dict[str, int] = {}
        self.parts: list[list[str]] = [[" "]]
        """Each part's pieces (a text node is read in pieces when ignored markup splits it)."""
        self.ends: list[int] = [1]
        """The UTF-8 size of the text up to the end of each part."""
        self.levels: list[int] = [0]
        """The opening number of the element each part is in (0: the body)."""
        self.openings_before: list[int] = [0]
        """How many elements were opened when each part was written."""
        self.size = 1
        self.skipped: str | None = None
        self.skip_depth = 0
        self.after_space = True
        self.in_body = False
        self.in_text = False
        """The last part is a text node that may go on (no element or comment since)."""
        self.node_visible = 0
        """How many characters other than spaces the text node read last has."""
        self.stack: list[tuple[str, int]] = []
        """The open elements of the body: name and opening number."""
        self.open: dict[str, int] = {}
        """How many elements of each name the stack holds."""
        self.openings = 0

    def _find(self, needle: str, position: int, text: str | None = None) -> int:
        """``text.find(needle, position)`` (*text* defaults to the source), remembered per needle.

        Positions only move forward, so a remembered hit at or after *position* (or a miss) is
        still the answer: each needle's searches together read the text once.
        """
        found = self._found.get(needle)
        if found is None or (0 <= found < position):
            found = self._found[needle] = (self.source if text is None else text).find(needle, position)
        return found

    def _scan(self, limit: int, parts: int, length: int) -> None:
        """Read on from the last position until the text is past *limit* UTF-8 bytes and has more
        than *parts* parts, or the source ends; not within a text node unless it has more than
        *length* characters other than spaces (it is read whole, and that many decide the excerpt)."""
        source, size, position = self.source, len(self.source), self.position
        while position < size and (
                (self.in_text and self.node_visible <= length) or self.size <= limit or len(self.parts) <= parts):
            if source.startswith("<", position):  # markup right after markup: no text between
                position = self._markup(position)
                continue
            opening = self._find("<", position)
            if opening < 0:
                self._data(source[position:])
                position = size
                break
            self._data(source[position:opening])
            position = self._markup(opening)
        self.position = position

    def text(self, limit: int, length: int) -> str:
        """The text PocketBase collects for an excerpt of *length* characters that stops reading
        elements past *limit* UTF-8 bytes.

        Every part up to the one that takes the text past *limit*; then, as PocketBase still
        visits the rest of the elements it was in, the parts outside the elements opened since,
        until the trimmed text is known to be longer than *length* (looking at
        :data:`LATE_WINDOW` parts at most).
        """
        self._scan(limit, 0, length)
        last = bisect_right(self.ends, limit)
        if last >= len(self.parts):
            return "".join(piece for part in self.parts for piece in part)
        text = "".join(piece for part in self.parts[: last + 1] for piece in part)
        visible = _Visible(text)
        opened = self.openings_before[last]  # the elements opened after it are not read
        index = last + 1
        while index <= last + LATE_WINDOW and visible.length() <= length:
            if index >= len(self.parts):
                self._scan(-1, index, length)
                if index >= len(self.parts):
                    break
            if self.levels[index] <= opened:
                part = "".join(self.parts[index])
                if visible.text.endswith(" "):  # what it followed may be left out: no second space
                    part = part.lstrip(" ")
                visible.add(part)
            index += 1
        return visible.text

    def _markup(self, start: int) -> int:
        """Read the markup at ``source[start] == "<"``; the position after it (``len`` when it never ends)."""
        source, lowered = self.source, self.lowered
        simple = _SIMPLE_TAG.match(lowered, start)
        if simple is not None:
            return self._tag(simple.group(2), simple.group(1) == "/", simple.end())
        following = source[start + 1 : start + 2]
        if source.startswith("<!--", start):
            self.in_text = False  # a comment node ends the text node
            end = self._find("-->", start + 4)
            return len(source) if end < 0 else end + 3
        if following in ("!", "?"):  # CDATA, processing instruction: a bogus comment; a doctype: ignored
            if not lowered.startswith("<!doctype", start):
                self.in_text = False
            end = self._find(">", start + 2)
            return len(source) if end < 0 else end + 1
        closing = following == "/"
        name = _TAG_NAME.match(lowered, start + 2 if closing else start + 1)
        if name is None:
            if closing:  # "</>" is dropped, "</ x>" is a bogus comment
                self.in_text = self.in_text and source.startswith("</>", start)
                end = self._find(">", start + 2)
                return len(source) if end < 0 else end + 1
            self._data("<")
            return start + 1
        return self._tag(name.group(), closing, self._tag_end(name.end()))

    def _tag(self, tag: str, closing: bool, end: int) -> int:
        """Handle the start or end tag *tag* that ends at *end*; the position to go on from."""
        if closing:
            self._end_tag(tag)
            return end
        shown = self._start_tag(tag)
        size = len(self.source)
        if tag == "plaintext":
            if shown:
                self._data(self.source[end:], decode=False)
            return size
        if tag in _RAW_TEXT_TAGS and end < size:
            content_end = self._find("</" + tag, end, self.lowered)  # its content is text up to its end tag
            stop = size if content_end < 0 else content_end
            if shown:
                self._data(self.source[end:stop], decode=tag in _ESCAPABLE_RAW_TEXT_TAGS)
            return stop
        return end

    def _tag_end(self, position: int) -> int:
        """The position after the ``>`` that ends a tag whose attributes start at *position*.

        Quotes count only for an attribute value (after ``=``), as in HTML; the next ``>`` and
        the next ``=`` are looked up once each and reused until passed.
        """
        source, size = self.source, len(self.source)
        next_gt = self._find(">", position)
        next_eq = self._find("=", position)
        while True:
            if next_gt < 0:
                return size
            if next_eq < 0 or next_gt < next_eq:
                return next_gt + 1
            value = next_eq + 1
            while value < size and source[value] in " \t\n\r\f":
                value += 1
            quote = source[value : value + 1]
            if quote in ("'", '"'):
                closing = self._find(quote, value + 1)
                if closing < 0:
                    return size
                value = closing + 1
            next_gt = self._find(">", value)
            next_eq = self._find("=", value)

    def _append(self, text: str, node: bool = False) -> None:
        """Add *text*: a separating space, or (*node*) text that continues the open text node."""
        visible = _visible_length(text) if node else 0
        if node and self.in_text:
            self.parts[-1].append(text)
            self.node_visible += visible
        else:
            self.node_visible = visible
            self.parts.append([text])
            self.ends.append(self.size)
            self.levels.append(self.stack[-1][1] if self.stack else 0)
            self.openings_before.append(self.openings)
        self.size += _utf8_size(text)
        self.ends[-1] = self.size
        self.after_space = text.endswith(" ")
        self.in_text = node

    def _space(self) -> None:
        self.in_text = False
        if not self.after_space:
            self._append(" ")

    def _pop_to(self, tag: str) -> None:
        """Close the innermost open *tag* and the elements opened inside it."""
        while True:
            name, _ = self.stack.pop()
            self.open[name] -= 1
            if name == tag:
                return

    def _skip(self, tag: str) -> bool:
        """Count the start tag *tag* inside a skipped element; whether it ends that element."""
        if tag in _IMPLIED_END.get(self.skipped or "", ()) or (
                self.skipped == "select" and tag in _TABLE_TAGS and self.open.get("table")):
            self.skipped = None
            return tag != "select"  # <select> in a select only ends it
        if tag == self.skipped and tag not in _VOID_TAGS:
            self.skip_depth += 1
        return False

    def _start_tag(self, tag: str) -> bool:
        """Count the start tag *tag*; whether its content may show."""
        if self.skipped is not None and not self._skip(tag):
            return False
        if not self.in_body and self.skipped is None:
            if tag in _BEFORE_BODY_TAGS:
                return False
            if tag in _HEAD_TAGS:  # in the head: dropped
                if tag == "template":
                    self.skipped, self.skip_depth = tag, 1
                return False
            self.in_body = True
            if tag == "body":
                return True
        if tag in _DOCUMENT_TAGS or (tag in _TABLE_TAGS and not self.open.get("table")):  # ignored here
            return True
        self.in_text = False
        if tag in _EXCLUDED_TAGS:
            if tag not in _VOID_TAGS:
                self.skipped, self.skip_depth = tag, 1
            return False
        if not self.after_space and tag not in _INLINE_TAGS:
            self._append(" ")
        if tag not in _VOID_TAGS:  # open it
            self.openings += 1
            self.stack.append((tag, self.openings))
            open_elements = self.open
            open_elements[tag] = open_elements.get(tag, 0) + 1
        return True

    def _end_tag(self, tag: str) -> None:
        if self.skipped is not None:
            if tag == self.skipped:
                self.skip_depth -= 1
                if not self.skip_depth:
                    self.skipped = None
                    self.in_text = False
            elif tag in _IMPLIED_END_BY_END_TAG.get(self.skipped, ()):
                self.skipped = None
                self.in_text = False
            return
        if not self.in_body:
            return
        if self.open.get(tag):
            self._pop_to(tag)
        elif tag not in ("p", "br"):  # </p> alone makes an empty <p>, </br> a <br>; others are ignored
            return
        self.in_text = False
        if tag not in _INLINE_TAGS:
            self._space()

    def _data(self, data: str, decode: bool = True) -> None:
        if self.skipped is not None or not data:
            return
        if not self.in_body:
            if not data.strip(_HTML_SPACE):
                return
            self.in_body = True
        text = _WHITESPACE.sub(" ", html.unescape(data) if decode else data)
        if self.after_space:
            text = text.lstrip(" ")
        if text:
            self._append(text, node=True)


class PlainTexts:
    """The plain texts of the values one event's excerpts read: each value is scanned at most once,
    however many subscriptions excerpt it and whatever their lengths."""

    def __init__(self) -> None:
        self._texts: dict[int, tuple[str, _PlainText]] = {}

    def of(self, value: str, length: int) -> str:
        """The text of *value* PocketBase collects for an excerpt of *length* characters (:meth:`_PlainText.text`)."""
        known = self._texts.get(id(value))
        if known is None:  # the entry holds the value, so its id stays its own
            known = self._texts[id(value)] = (value, _PlainText(value))
        return known[1].text(length + 2, length)


@dataclass(frozen=True)
class Excerpt:
    """The modifier with its arguments."""

    max_length: int
    with_ellipsis: bool = False

    @classmethod
    def from_args(cls, args: list[str]) -> "Excerpt":
        """Build it from the raw arguments of ``excerpt(...)``; raise :class:`FieldsSyntaxError` when they are wrong."""
        if not args:
            raise FieldsSyntaxError("excerpt needs a max length: excerpt(max, withEllipsis?)")
        if len(args) > 2:
            raise FieldsSyntaxError("too many arguments: excerpt(max, withEllipsis?)")
        try:
            max_length = int(args[0])
        except ValueError:
            max_length = 0
        if max_length <= 0:
            raise FieldsSyntaxError("the excerpt max length must be a whole number above 0")
        return cls(max_length, len(args) > 1 and args[1] in _TRUE)

    def apply(self, value: Any, texts: PlainTexts | None = None) -> Any:
        """The plain-text excerpt of a string value (read through *texts* when given); other values unchanged.

        As PocketBase's: the text is collected until it is past *max* + 2 UTF-8 bytes (room for
        a leading and a trailing space), trimmed of Unicode spaces, and cut to *max* characters.
        """
        if not isinstance(value, str):
            return value
        text = (texts or PlainTexts()).of(value, self.max_length).strip(_GO_SPACE)
        if len(text) <= self.max_length:
            return text
        return text[: self.max_length].strip(_GO_SPACE) + ("..." if self.with_ellipsis else "")
