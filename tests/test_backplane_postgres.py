"""The PostgreSQL backplane beyond the contract: the NOTIFY size limit and its table, order,
two apps, reconnecting after the server ends the listener's session, and gevent's hub."""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import replace
from typing import Callable, Iterator

import psycopg
import pytest
from flask import Flask

from flask_rtbroker import RealtimeBroker
from flask_rtbroker.backplane import STATE_DOWN, STATE_UP, Backplane, from_url
from flask_rtbroker.backplane.base import ALL
from flask_rtbroker.backplane.envelope import Stamp
from flask_rtbroker.backplane.postgres import (
    MAX_CHANNEL_BYTES, MAX_NOTIFY_PAYLOAD, TABLE, PostgresBackplane, channel_name,
)
from flask_rtbroker.errors import ConfigurationError, MissingDependency
from flask_rtbroker.testing import parse_events
from tests.gevent_probe import probe
from tests.test_backplane_contract import Peer, libpq_url

Factory = Callable[..., Backplane]

MAX_INLINE = MAX_NOTIFY_PAYLOAD * 3 // 4 - 2
"""The longest payload sent inline: ``b:`` and its base64 fit in a NOTIFY (5997 bytes)."""


@pytest.fixture
def url(postgres_url: str) -> str:
    return libpq_url(postgres_url)


@pytest.fixture
def prefix() -> str:
    """A channel prefix of this test's own: the database is shared by the whole session."""
    return f"pgtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make(url: str, prefix: str) -> Iterator[Factory]:
    """Factory of backplanes on this test's channel, closed after the test."""
    created: list[Backplane] = []

    def factory(target: str | None = None, **kwargs) -> Backplane:
        backplane = PostgresBackplane(target or url, channel_prefix=prefix, **kwargs)
        created.append(backplane)
        return backplane

    yield factory
    for backplane in created:
        backplane.close()


def started(*backplanes: Backplane) -> list[Peer]:
    """Peers of *backplanes*, once those that listen are up."""
    peers = [Peer(backplane) for backplane in backplanes]
    for peer in peers:
        if not peer.backplane.write_only:
            peer.wait_state(STATE_UP)
    return peers


def sized(backplane: Backplane, size: int, **fields) -> bytes:
    """An envelope body that makes *backplane*'s payload exactly *size* bytes (for a stamp
    whose sequence has one digit: the first nine envelopes of a backplane)."""
    stamp = Stamp(ALL, 1, int(time.time() * 1000))
    header = len(replace(backplane.envelope("notify", fields), stamp=stamp).encode())
    return bytes(i % 251 for i in range(size - header))


def query(url: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute(sql, params).fetchall()


# -- without a server -------------------------------------------------------------------------


def test_both_schemes_and_passwords_never_shown() -> None:
    for url, shown in [
        ("postgres://u:s3cretPW@127.0.0.1:1/db", "postgres://u:***@127.0.0.1:1/db"),
        ("postgresql://u@[::1]:1/db?sslmode=disable&password=s3cretPW",
         "postgresql://u@[::1]:1/db?sslmode=disable&password=***"),
        ("postgresql://127.0.0.1/db", "postgresql://127.0.0.1/db"),
    ]:
        backplane = from_url(url)
        assert isinstance(backplane, PostgresBackplane) and backplane.channel == "flask_rtbroker"
        assert backplane.url == shown
    with pytest.raises(ConfigurationError, match="RTBROKER_BACKPLANE .* is not a valid PostgreSQL URL") as bad:
        from_url("postgresql://u:s3cretPW@[::1/db")
    assert "s3cretPW" not in str(bad.value)


def test_channel_names_fit_an_identifier() -> None:
    assert channel_name("flask_rtbroker") == "flask_rtbroker"
    for long in ["x" * 64, "é" * 40, "a:b\"c " * 20]:
        name = channel_name(long)
        assert len(name.encode()) <= MAX_CHANNEL_BYTES and name == channel_name(long)
    assert channel_name("x" * 64) != channel_name("x" * 65)
    for bad in ["", "a\x00b"]:
        with pytest.raises(ConfigurationError, match="channel prefix"):
            channel_name(bad)


def test_missing_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(MissingDependency, match=r"flask-rtbroker\[postgresql\]"):
        from_url("postgresql://127.0.0.1/db")


# -- on a real PostgreSQL ---------------------------------------------------------------------


def test_payloads_over_the_notify_limit_go_through_the_table(make: Factory, url: str, prefix: str) -> None:
    a, b = started(make(), make())
    with psycopg.connect(url, autocommit=True) as spy:
        spy.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel_name(prefix))))
        for size, kind in [(MAX_INLINE, "b"), (MAX_INLINE + 1, "k"), (100_000, "k"), (1_000_000, "k")]:
            body = sized(a.backplane, size)
            assert a.backplane.send(a.backplane.envelope("notify", {}, body))
            assert b.next().body == body
            (notify,) = spy.notifies(timeout=5, stop_after=1)
            assert notify.payload[:2] == f"{kind}:" and len(notify.payload) <= MAX_NOTIFY_PAYLOAD
            if size == MAX_INLINE:
                assert len(notify.payload) == MAX_NOTIFY_PAYLOAD - 1  # base64 comes in fours
    a.assert_nothing()


def test_stored_payloads_are_deleted_after_the_retention(make: Factory, url: str) -> None:
    a, b = started(make(retention=0.4), make())
    for i in range(5):
        a.backplane.send(a.backplane.envelope("notify", {"i": i}, sized(a.backplane, 20_000, i=i)))
        assert b.next().fields == {"i": i}
    assert query(url, f"SELECT count(*) FROM {TABLE}")[0][0] >= 5
    time.sleep(0.5)
    a.backplane.send(a.backplane.envelope("notify", {"i": 5}, sized(a.backplane, 20_000, i=5)))
    assert b.next().fields == {"i": 5}
    assert query(url, f"SELECT count(*) FROM {TABLE}")[0][0] == 1  # only the newest: the rest had expired


def test_notifies_that_are_not_payloads_are_dropped_and_counted(make: Factory, url: str, prefix: str) -> None:
    a, b = started(make(), make())
    for junk in ["junk", "b:not base64!", "k:999999999999", "k:"]:
        query(url, "SELECT pg_notify(%s, %s)", channel_name(prefix), junk)
    assert a.backplane.send(a.backplane.envelope("notify", {"after": True}))
    assert b.next().fields == {"after": True}
    assert b.backplane.rejected == 4


def test_a_stored_payload_is_read_only_with_its_token_and_never_twice(make: Factory, url: str, prefix: str) -> None:
    a, b = started(make(secret=b"postgres-test-secret-0123"), make(secret=b"postgres-test-secret-0123"))
    with psycopg.connect(url, autocommit=True) as spy:
        spy.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel_name(prefix))))
        body = sized(a.backplane, 7_000)
        assert a.backplane.send(a.backplane.envelope("notify", {}, body))
        assert b.next().body == body
        (notify,) = spy.notifies(timeout=5, stop_after=1)
    key, row_id, token = notify.payload.split(":")
    forged = [f"k:{row_id}", f"k:{row_id}:{'0' * len(token)}", f"k:{row_id}:{token.upper()}", f"k:{row_id}:{token}:"]
    for text in [*forged, notify.payload]:
        query(url, "SELECT pg_notify(%s, %s)", channel_name(prefix), text)
    assert a.backplane.send(a.backplane.envelope("notify", {"after": True}))
    assert b.next().fields == {"after": True}, "nothing delivered before it"
    assert (b.backplane.rejected, b.backplane.replayed) == (len(forged), 1), "the right token, but seen already"


@pytest.fixture
def role_url(url: str) -> Iterator[Callable[[str], str]]:
    """Factory: ``role_url(grants)`` creates a login role (trust auth) that may connect, as
    PUBLIC may, runs *grants* (``{role}`` is its name) and returns its URL; dropped afterwards."""
    names: list[str] = []

    def make(grants: str = "") -> str:
        name = f"rt_role_{uuid.uuid4().hex[:10]}"
        names.append(name)
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"CREATE ROLE {name} LOGIN")
            for statement in filter(None, grants.format(role=name).split(";")):
                admin.execute(statement)
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{name}@{rest.partition('@')[2]}"

    yield make
    with psycopg.connect(url, autocommit=True) as admin:
        for name in names:
            admin.execute(f"DROP OWNED BY {name}")
            admin.execute(f"DROP ROLE {name}")


def test_no_notify_of_a_role_without_privileges_ends_the_listener_or_loses_a_message(
    make: Factory, prefix: str, role_url: Callable[[str], str]
) -> None:
    a, b = started(make(write_only=True), make())
    hostile = ["k:" + "9" * 5_000, "k:" + "9" * 19 + ":" + "0" * 32, "k:\u00b2:" + "0" * 32, "b:" + "A" * 7_990 + "=",
               "b:\u00e9", "k:-1:" + "0" * 32, "k:1:" + "0" * 32, ""]
    with psycopg.connect(role_url(""), autocommit=True) as attacker:  # no privilege at all: CONNECT from PUBLIC
        for i in range(100):
            attacker.execute("SELECT pg_notify(%s, %s)", (channel_name(prefix), hostile[i % len(hostile)]))
            body = sized(a.backplane, 10_000, i=i) if i % 10 == 5 else b""  # some through the table
            a.backplane.send(a.backplane.envelope("notify", {"i": i}, body))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            attacker.execute(f"SELECT payload FROM {TABLE}")  # so it cannot learn a stored payload's token
    assert [b.next().fields["i"] for _ in range(100)] == list(range(100)), "all of them, in order"
    assert b.backplane.rejected == 100 and b.backplane.state == STATE_UP


def test_the_documented_grants_are_enough_for_the_app_role(make: Factory, url: str, role_url: Callable[[str], str]) -> None:
    installer = make(write_only=True)  # the role that may create the table (here: the superuser)
    assert installer.send(installer.envelope("notify", {}, b"x" * 10_000))
    app_role = role_url(f"GRANT SELECT, INSERT, DELETE ON {TABLE} TO {{role}}; "
                        f"GRANT USAGE ON SEQUENCE {TABLE}_id_seq TO {{role}}")
    a, b = started(make(app_role, retention=0.01), make(app_role))
    for i in range(3):
        body = sized(a.backplane, 10_000, i=i)
        assert a.backplane.send(a.backplane.envelope("notify", {"i": i}, body))
        assert b.next().body == body
        time.sleep(0.01)  # the next publish deletes the expired rows too
    assert a.backplane.rejected == b.backplane.rejected == 0


def test_a_thousand_messages_from_one_publisher_arrive_in_order(make: Factory) -> None:
    a, b = started(make(write_only=True), make())
    for i in range(1000):
        body = sized(a.backplane, 10_000, i=i) if i % 100 == 50 else b""  # a few through the table
        a.backplane.send(a.backplane.envelope("notify", {"i": i}, body))
    assert [b.next().fields["i"] for _ in range(1000)] == list(range(1000))


def test_a_notify_on_one_app_reaches_a_client_of_another(url: str, prefix: str) -> None:
    apps = []
    for _ in range(2):
        app = Flask(__name__)
        app.config.update(RTBROKER_CONCURRENCY="threading", RTBROKER_BACKPLANE=url, RTBROKER_CHANNEL_PREFIX=prefix)
        apps.append((app, RealtimeBroker(app)))
    (sender_app, sender), (receiver_app, receiver) = apps
    try:
        with receiver_app.app_context():
            client = receiver.state().new_client()
            receiver.subscriptions_broker.register(client)
            client.subscribe("t")
            receiver.state().cluster.ensure_started()
        big = "x" * 50_000
        with sender_app.app_context():
            assert sender.notify("t", {"n": 1}) == 0  # no subscriber here
            assert sender.notify("t", {"big": big}) == 0
        events = []
        deadline = time.monotonic() + 5
        while len(events) < 2 and time.monotonic() < deadline:
            events += parse_events(client.take())
            time.sleep(0.01)
        assert [(event.name, event.json()) for event in events] == [("t", {"n": 1}), ("t", {"big": big})]
    finally:
        for app, _ in apps:
            app.extensions["rtbroker"].close()


def test_a_listening_process_publishes_on_its_one_connection(make: Factory, url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    a, b = started(make(f"{url}?application_name=one-{tag}"), make(f"{url}?application_name=two-{tag}"))
    for n in range(3):
        assert a.backplane.send(a.backplane.envelope("notify", {"n": n}))
        assert b.backplane.send(b.backplane.envelope("notify", {"m": n}))
    assert [b.next().fields for _ in range(3)] == [{"n": n} for n in range(3)]
    assert [a.next().fields for _ in range(3)] == [{"m": n} for n in range(3)]
    sessions = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    assert [query(url, sessions, f"{name}-{tag}")[0][0] for name in ("one", "two")] == [1, 1]


def test_delivery_resumes_after_the_server_ends_both_sessions(make: Factory, url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    publisher, listener_url = f"{url}?application_name=pub-{tag}", f"{url}?application_name=sub-{tag}"
    a, b = started(make(publisher, write_only=True), make(listener_url))
    assert a.backplane.send(a.backplane.envelope("notify", {"n": 0}))
    assert b.next().fields == {"n": 0}
    sessions = "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
    (listener,) = query(url, sessions, f"sub-{tag}")
    query(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name IN (%s, %s)",
          f"pub-{tag}", f"sub-{tag}")
    began = time.monotonic()
    b.wait_state(STATE_DOWN, timeout=5)
    b.wait_state(STATE_UP, timeout=5)
    failed = 0
    while not a.backplane.send(a.backplane.envelope("notify", {"n": 1})):
        failed += 1  # the publisher learns of its lost session on its next publish, then reconnects
        assert failed <= 1
    assert b.next().fields == {"n": 1}
    assert time.monotonic() - began < 5
    assert query(url, sessions, f"sub-{tag}") not in ([], [listener])
    a.backplane.close()
    b.backplane.close()
    deadline = time.monotonic() + 2  # the listener notices within POLL_INTERVAL and ends its session
    while query(url, "SELECT pid FROM pg_stat_activity WHERE application_name IN (%s, %s)", f"pub-{tag}", f"sub-{tag}"):
        assert time.monotonic() < deadline, "close() left a session open"
        time.sleep(0.05)


GEVENT_SETUP = """
url, prefix, mode = sys.argv[1:]
from flask_rtbroker.backplane.postgres import PostgresBackplane
listener = PostgresBackplane(url, channel_prefix=prefix)
publisher = PostgresBackplane(url, channel_prefix=prefix, write_only=True)
listener.start(runtime, received.append, lambda state, error: None)
listener.wait_ready(10)
def publish():
    publisher.send(publisher.envelope("notify", {"n": 1}))
"""
PSYCOPG_FIRST = """
if sys.argv[3] == "psycopg-imported-first":
    import psycopg  # so psycopg picked its blocking C wait: the listener must still cooperate
"""


@pytest.mark.parametrize("mode", ["patched-first", "psycopg-imported-first"])
def test_waiting_for_notifications_under_gevent_leaves_the_hub_free(url: str, prefix: str, mode: str) -> None:
    report, stderr = probe(GEVENT_SETUP, url, prefix, mode, preamble=PSYCOPG_FIRST)
    assert report["state"] == STATE_UP and report["received"] == [{"n": 1}]
    assert report["ticks"] >= 50, report  # a greenlet ticking every 10 ms ran all along
    assert ("imported before gevent" in stderr) == (mode == "psycopg-imported-first")