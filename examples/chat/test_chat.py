"""The chat's realtime behaviour, tested in process (``pytest`` in this folder)."""

from __future__ import annotations

from typing import Callable

from flask import Flask
from flask.testing import FlaskClient

from flask_rtbroker import RealtimeTestClient


def test_a_message_reaches_the_rooms_subscribers(
    rt: RealtimeTestClient, http: FlaskClient, sign_in: Callable[[str], str]
) -> None:
    assert rt.subscribe("room/general").status_code == 204  # guests may read public rooms
    posted = http.post("/api/rooms/general/messages", json={"text": "hi"}, headers={"Authorization": sign_in("alice")})
    assert posted.status_code == 201
    (event,) = rt.get_received()
    assert event.name == "room/general"
    assert event.data["action"] == "create"
    assert event.data["record"] == posted.json and posted.json["author"] == "alice"


def test_other_rooms_hear_nothing(rt: RealtimeTestClient, http: FlaskClient, sign_in: Callable[[str], str]) -> None:
    rt.subscribe("room/random")
    http.post("/api/rooms/general/messages", json={"text": "hi"}, headers={"Authorization": sign_in("alice")})
    assert rt.get_received() == []


def test_a_private_room_admits_only_its_members(
    app: Flask, rt: RealtimeTestClient, http: FlaskClient, sign_in: Callable[[str], str]
) -> None:
    refused = rt.subscribe("room/staff")
    assert refused.status_code == 403 and refused.json["message"] == "This room is private."
    rt.auth = sign_in("carol")  # not a member either
    assert rt.subscribe("room/staff").status_code == 403
    with RealtimeTestClient(app) as bob:
        bob.auth = sign_in("bob")  # sent with every POST, like the SDK's authStore
        assert bob.subscribe("room/staff").status_code == 204
        http.post("/api/rooms/staff/messages", json={"text": "psst"}, headers={"Authorization": sign_in("alice")})
        assert [event.data["record"]["text"] for event in bob.get_received()] == ["psst"]
        assert bob.unsubscribe("room/staff").status_code == 204
    assert rt.get_received() == []


def test_writing_needs_a_sign_in_and_a_room_that_admits_you(http: FlaskClient, sign_in: Callable[[str], str]) -> None:
    assert http.post("/api/rooms/general/messages", json={"text": "hi"}).status_code == 401
    carol = {"Authorization": sign_in("carol")}
    assert http.post("/api/rooms/staff/messages", json={"text": "hi"}, headers=carol).status_code == 403
    assert http.post("/api/rooms/nowhere/messages", json={"text": "hi"}, headers=carol).status_code == 404


def test_the_history_lists_a_rooms_messages(http: FlaskClient, sign_in: Callable[[str], str]) -> None:
    alice = {"Authorization": sign_in("alice")}
    for text in ("one", "two"):
        http.post("/api/rooms/general/messages", json={"text": text}, headers=alice)
    assert [item["text"] for item in http.get("/api/rooms/general/messages").json["items"]] == ["one", "two"]
    assert http.get("/api/rooms/staff/messages").status_code == 403
