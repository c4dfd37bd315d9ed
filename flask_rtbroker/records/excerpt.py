"""The ``:excerpt(max, withEllipsis?)`` field modifier: plain text from HTML, cut to *max* characters.

Like PocketBase: tags are stripped (the content of scripts, styles, forms, media and the like is
dropped), block elements separate words, whitespace runs collapse to one space, the text is cut to
*max* characters and, when *withEllipsis* is true and something was cut, ``...`` is appended.
Values other than strings are left as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

_EXCLUDED_TAGS = frozenset({
    "head", "style", "script", "iframe", "embed", "applet", "object", "svg", "img", "picture",
    "dialog", "template", "button", "form", "textarea", "input", "select", "option",
})
_INLINE_TAGS = frozenset({
    "a", "abbr", "acronym", "b", "bdo", "big", "br", "button", "cite", "code", "em", "i", "label",
    "q", "small", "span", "strong", "strike", "sub", "sup", "time",
})
_VOID_TAGS = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr",
})
_WHITESPACE = re.compile(r"\s+")
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})


class _PlainText(HTMLParser):
    """Collects the visible text of an HTML fragment."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.after_space = False

    def _space(self) -> None:
        if not self.after_space:
            self.parts.append(" ")
            self.after_space = True

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if self.skipping or tag in _EXCLUDED_TAGS:
            if tag not in _VOID_TAGS:
                self.skipping += 1
        elif tag not in _INLINE_TAGS:
            self._space()

    def handle_endtag(self, tag: str) -> None:
        if self.skipping:
            if tag not in _VOID_TAGS:
                self.skipping -= 1
        elif tag not in _INLINE_TAGS and tag not in _EXCLUDED_TAGS:
            self._space()

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        text = _WHITESPACE.sub(" ", data)
        if self.after_space:
            text = text.lstrip(" ")
        if text:
            self.after_space = text.endswith(" ")
            self.parts.append(text)


@dataclass(frozen=True)
class Excerpt:
    """The modifier with its arguments."""

    max_length: int
    with_ellipsis: bool = False

    @classmethod
    def from_args(cls, args: list[str]) -> "Excerpt":
        """Build it from the raw arguments of ``excerpt(...)``; raise ValueError when they are wrong."""
        if not args:
            raise ValueError("excerpt needs a max length: excerpt(max, withEllipsis?)")
        if len(args) > 2:
            raise ValueError("too many arguments: excerpt(max, withEllipsis?)")
        try:
            max_length = int(args[0])
        except ValueError:
            max_length = 0
        if max_length <= 0:
            raise ValueError("the excerpt max length must be a whole number above 0")
        return cls(max_length, len(args) > 1 and args[1] in _TRUE)

    def apply(self, value: Any) -> Any:
        """The plain-text excerpt of a string value; other values unchanged."""
        if not isinstance(value, str):
            return value
        parser = _PlainText()
        parser.feed(value)
        parser.close()
        text = "".join(parser.parts).strip()
        if len(text) <= self.max_length:
            return text
        return text[: self.max_length].strip() + ("..." if self.with_ellipsis else "")
