"""What the database capture's listener accepts from a notification, in process: references
only, within length caps; each stored change once, while recent; warnings rate-limited. The
same paths against a real PostgreSQL and a second role: tests/test_records_capture.py."""

from __future__ import annotations

import logging

import pytest

from flask_rtbroker.records.change_listener import REFERENCE_MAX, Reference, ReplayWindow, ThrottledWarning, parse_reference


@pytest.mark.parametrize("payload", [
    '{"schema": "public", "table": "posts", "action": "insert", "row": {}, "old": null}',  # the old inline form
    '{"schema": "public", "spilled": 3}', '{"schema": "public", "change": "3"}', '{"schema": 1, "change": 3}',
    '{"schema": "public", "change": 3, "more": 1}', '{"schema": "public", "change": 0}',
    '{"schema": "public", "change": true}', '{"schema": "public", "change": 3.0}',
    '{"schema": "public", "change": 9223372036854775808}', '{"schema": "public", "change": 1' + "0" * 5000 + "}",
    '{"schema": "' + "s" * REFERENCE_MAX + '", "change": 3}', "[1]", "3", "", "not json", '{"schema": "public"',
])
def test_anything_but_a_short_reference_is_refused(payload: str) -> None:
    assert parse_reference(payload) is None


def test_a_reference_is_a_schema_and_a_key() -> None:
    assert parse_reference('{"schema": "app", "change": 42}') == Reference("app", 42)
    assert parse_reference('{"change": 9223372036854775807, "schema": ""}') == Reference("", 2**63 - 1)


def test_each_change_is_admitted_once_and_only_while_recent() -> None:
    window = ReplayWindow(window=60.0, limit=1000)
    assert window.admit(1, created=1000.0, now=1001.0) == "new"
    assert window.admit(1, created=1000.0, now=1002.0) == "replayed"
    assert window.admit(2, created=930.0, now=1002.0) == "stale"  # committed more than 60 s ago
    assert window.admit(3, created=1050.0, now=1055.0) == "new"
    assert window.admit(1, created=1000.0, now=1055.0) == "replayed"  # still within the window
    assert window.admit(4, created=1100.0, now=1100.0) == "new"  # key 1 (1000.0) leaves the window...
    assert window.admit(1, created=1000.0, now=1100.0) == "stale"  # ...and is refused by its age
    window.raise_floor(1100.0)  # a skip or a reconnection: a gap covers what came before
    assert window.admit(5, created=1099.0, now=1101.0) == "stale"
    assert window.admit(6, created=1101.0, now=1101.0) == "new"


def test_the_kept_keys_are_bounded_and_evicted_ones_stay_refused() -> None:
    window = ReplayWindow(window=60.0, limit=3)
    for key in range(1, 6):
        assert window.admit(key, created=100.0 + key, now=106.0) == "new"
    assert len(window._seen) == 3
    assert window.admit(1, created=101.0, now=106.0) == "stale"  # evicted: the floor rose past it
    assert window.admit(2, created=102.0, now=106.0) == "stale"
    assert window.admit(5, created=105.0, now=106.0) == "replayed"


def test_warnings_are_rate_limited_and_count_what_was_held_back(caplog: pytest.LogCaptureFixture) -> None:
    warning = ThrottledWarning(interval=3600.0)
    with caplog.at_level(logging.WARNING, logger="flask_rtbroker.records"):
        for _ in range(1000):
            warning.warn(2, "dropped on %s", "chan")
        warning._last -= 3600.0
        warning.warn(1, "dropped on %s", "chan")
    assert [record.getMessage() for record in caplog.records] == [
        "dropped on chan (2 times since the last such warning)",
        "dropped on chan (1999 times since the last such warning)",
    ]
