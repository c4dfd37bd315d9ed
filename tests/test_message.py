"""Message framing: PocketBase's exact SSE bytes."""

from __future__ import annotations

import datetime
import decimal
import uuid
from dataclasses import dataclass

import pytest

from flask_rtbroker import Message

CID = "P4QwYJN9sWtvIKHGuDhWFqI9HPCojcGn1pcjED28"


def test_pb_connect_frame_matches_pocketbase_bytes() -> None:
    frame = Message("PB_CONNECT", {"clientId": CID}).frame(CID)
    assert frame == (
        b"id:" + CID.encode() + b"\nevent:PB_CONNECT\ndata:{\"clientId\":\"" + CID.encode() + b"\"}\n\n"
    )
    assert len(frame) == 0x7B  # the chunk size PocketBase sends for a 40-char id


@pytest.mark.parametrize(
    ("data", "encoded"),
    [
        ({"a": None, "hello": "world", "n": 1, "z": [1, 2]}, b'{"a":null,"hello":"world","n":1,"z":[1,2]}'),
        ("str", b'"str"'),
        ("line1\nline2", b'"line1\\nline2"'),
        (None, b"null"),
        (0, b"0"),
        ("wörld <b>&amp;</b> \u2028", '"wörld <b>&amp;</b> \u2028"'.encode()),
        ([1.5, True, False], b"[1.5,true,false]"),
    ],
)
def test_data_is_compact_utf8_json(data: object, encoded: bytes) -> None:
    message = Message("other", data)
    assert message.payload == encoded
    assert message.frame("abc") == b"id:abc\nevent:other\ndata:" + encoded + b"\n\n"


def test_extra_types_encode() -> None:
    @dataclass
    class Point:
        x: int
        y: int

    class Custom:
        def __json__(self) -> dict[str, str]:
            return {"custom": "yes"}

    value = {
        "d": decimal.Decimal("1.10"),
        "t": datetime.datetime(2026, 1, 2, 3, 4, 5),
        "u": uuid.UUID(int=1),
        "p": Point(1, 2),
        "c": Custom(),
    }
    assert Message("x", value).payload == (
        b'{"d":1.10,"t":"2026-01-02T03:04:05","u":"00000000-0000-0000-0000-000000000001",'
        b'"p":{"x":1,"y":2},"c":{"custom":"yes"}}'
    )


def test_unencodable_data_raises_type_error() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        Message("x", object())


@pytest.mark.parametrize("name", ["a\nb", "a\rb", "\n"])
def test_event_name_with_line_break_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        Message(name, 1)


def test_raw_payload_with_line_breaks_becomes_several_data_lines() -> None:
    message = Message.raw("multi", "one\ntwo\r\nthree")
    assert message.frame("c") == b"id:c\nevent:multi\ndata:one\ndata:two\ndata:three\n\n"


def test_renamed_shares_the_encoded_payload() -> None:
    message = Message("t", {"k": "v"})
    renamed = message.renamed("t?options=%7B%7D")
    assert renamed.payload is message.payload
    assert renamed.frame("c") == b'id:c\nevent:t?options=%7B%7D\ndata:{"k":"v"}\n\n'
    assert message.renamed("t") is message
