"""Worst-case record filters, excerpts and field pickers: how long one event's work takes.

    .venv/bin/python -m benchmarks.hostile_records [--repeat 5]

Each case is a client-controlled pattern or path against a record value someone may plant (the
cases that froze a worker for seconds to minutes before the linear matchers). Printed per case:
the best of *repeat* runs in milliseconds, and the ratio to one linear pass over the same value
(``str.lower`` then ``str.find``), the floor any matcher pays to read it. Saves the figures to
benchmarks/results/hostile_records.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable

from flask_rtbroker.records import parse_fields
from flask_rtbroker.records.excerpt import PlainTexts
from flask_rtbroker.records.filter import parse_filter

RESULTS = Path(__file__).resolve().parent / "results" / "hostile_records.json"


def _filter_case(source: str, value: str) -> tuple[Callable[[], Any], str]:
    flt = parse_filter(source)
    return (lambda: flt.matches({"title": value})), value


def _fields_case(source: str, record: dict[str, Any], value: str) -> tuple[Callable[[], Any], str]:
    picker = parse_fields(source)
    return (lambda: picker.pick(record)), value


def _many_excerpts_case(count: int, value: str) -> tuple[Callable[[], Any], str]:
    """*count* subscriptions with distinct excerpt lengths, one event: they share one scan of the value."""
    pickers = [parse_fields(f"t:excerpt({200 + i},true)") for i in range(count)]

    def one_event() -> None:
        texts = PlainTexts()
        for picker in pickers:
            picker.pick({"t": value}, texts)

    return one_event, value


def _html_parser_case(value: str) -> tuple[Callable[[], Any], str]:
    """The standard library's HTMLParser (the excerpt's old reader) on *value*: a reference row."""

    def read() -> None:
        parser = HTMLParser()
        parser.feed(value)
        parser.close()

    return read, value


def cases() -> dict[str, tuple[Callable[[], Any], str]]:
    """Name → (one event's work, the value it reads)."""
    nested: dict[str, Any] = {"v": 1}
    for _ in range(600):
        nested = {"a": nested}
    wide = {f"k{i}": i for i in range(20_000)}
    return {
        "filter ~ '%a%a%a%a%a%a%a%a%b', title 'a' x 50": _filter_case("title ~ '%a%a%a%a%a%a%a%a%b'", "a" * 50),
        "filter ~ 25 x '%a' + '%b', title 'a' x 3,000": _filter_case("title ~ '" + "%a" * 25 + "%b'", "a" * 3000),
        "filter ~ 50 x '%' + 'b', title 'a' x 3,000": _filter_case("title ~ '" + "%" * 50 + "b'", "a" * 3000),
        "filter ~ 500 x '_%', title 'a' x 3,000": _filter_case("title ~ '" + "_%" * 500 + "'", "a" * 3000),
        "filter ~ 200 x '%a_..b%' ORed, title 'a' x 100,000": _filter_case(
            " || ".join(["title ~ '%" + "a_" * 10 + "b%'"] * 200), "a" * 100_000
        ),
        "excerpt(200) of '<a ' x 100,000": _fields_case("t:excerpt(200,true)", {"t": "<a " * 100_000}, "<a " * 100_000),
        "excerpt(200) of '<p>' x 120,000": _fields_case("t:excerpt(200,true)", {"t": "<p>" * 120_000}, "<p>" * 120_000),
        "reference: html.parser reading '<p>' x 120,000": _html_parser_case("<p>" * 120_000),
        "200 distinct excerpt lengths of '<p>' x 120,000, one event": _many_excerpts_case(200, "<p>" * 120_000),
        "excerpt(200) of '<!--' x 80,000": _fields_case("t:excerpt(200,true)", {"t": "<!--" * 80_000}, "<!--" * 80_000),
        "fields x.* on 20,000 keys": _fields_case("x.*", {"x": wide}, "".join(wide)),
        "fields 32-deep path on a 600-deep value": _fields_case(".".join(["a"] * 32), nested, "a" * 600),
    }


def best_ms(work: Callable[[], Any], repeat: int) -> float:
    """The fastest of *repeat* runs, in milliseconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for name, (work, value) in cases().items():
        took = best_ms(work, args.repeat)
        floor = best_ms(lambda: value.lower().find("\0"), args.repeat)
        rows.append({"case": name, "ms": round(took, 3), "floor_ms": round(floor, 4), "ratio": round(took / floor, 1)})
        print(f"{took:9.3f} ms  {took / floor:8.1f} x one pass   {name}")
    worst = max(row["ms"] for row in rows if not row["case"].startswith("reference"))
    print(f"worst case: {worst:.1f} ms per event")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"python": platform.python_version(), "repeat": args.repeat, "cases": rows,
                                   "worst_ms": worst}, indent=2) + "\n")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
