"""A chat with rooms, the app of docs/tutorial.rst: rooms are topics (``room/<name>``), a
message is a record saved with SQLAlchemy and announced on its room's topic after the commit,
as a PocketBase record event (``{"action": "create", "record": {...}}``).

    CHAT_SECRET_KEY=... RTBROKER_BACKPLANE=redis://127.0.0.1:6379/0 \\
        gunicorn -k gevent -w 2 --preload 'app:create_app()'
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any, Mapping, NoReturn

from flask import Flask, Request, abort, jsonify, make_response, request
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import ForeignKey, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from flask_rtbroker import ApiError, DefaultClient, RealtimeBroker, load_env

ROOMS = {"general": None, "random": None, "staff": "alice bob"}
"""The rooms made on first start: name -> members (space-separated user names), None = public."""


class Base(DeclarativeBase):
    pass


class Room(Base):
    __tablename__ = "rooms"
    name: Mapped[str] = mapped_column(primary_key=True)
    members: Mapped[str | None]  # a private room's members; None: a public room

    def admits(self, user: str | None) -> bool:
        """Whether *user* (None: a guest) may read and write here."""
        return self.members is None or (user is not None and user in self.members.split())


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(primary_key=True)
    room: Mapped[str] = mapped_column(ForeignKey("rooms.name"))
    author: Mapped[str]
    text: Mapped[str]
    created: Mapped[str]

    def record(self) -> dict[str, Any]:
        """The message as a PocketBase record of the ``messages`` collection."""
        return {"collectionName": "messages", "id": str(self.id), "room": self.room,
                "author": self.author, "text": self.text, "created": self.created}


def fail(status: int, message: str) -> NoReturn:
    """Answer with PocketBase's JSON error body."""
    abort(make_response(jsonify({"data": {}, "message": message, "status": status}), status))


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the chat app: settings from the environment, then *config* on top."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY=os.environ.get("CHAT_SECRET_KEY"),
                      CHAT_DATABASE_URL=os.environ.get("CHAT_DATABASE_URL", "sqlite:///chat.db"))
    load_env(app.config)  # RTBROKER_* environment variables, e.g. RTBROKER_BACKPLANE
    app.config.update(config or {})
    if not app.config["SECRET_KEY"]:
        raise RuntimeError("set CHAT_SECRET_KEY: it signs the users' tokens")
    engine = create_engine(app.config["CHAT_DATABASE_URL"])
    with Session(engine) as session:  # tables and rooms, once (--preload: before the workers fork)
        Base.metadata.create_all(engine)
        for name, members in ROOMS.items():
            session.merge(Room(name=name, members=members))
        session.commit()
    engine.dispose()  # no connection crosses gunicorn's fork
    tokens = URLSafeSerializer(app.config["SECRET_KEY"], salt="chat-auth")
    broker = RealtimeBroker(app)

    def signed_in_user(req: Request) -> str | None:
        """The user name in the request's token (``Authorization: <token>``, as the SDK sends it)."""
        token = req.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        try:
            return str(tokens.loads(token)) if token else None
        except BadSignature:
            return None

    @app.post("/api/login")
    def login() -> Any:
        """Sign in by name (no passwords: a tutorial); answer the token to send as ``Authorization``."""
        name = (request.get_json(silent=True) or {}).get("name")
        if not isinstance(name, str) or not name.isidentifier():
            fail(400, "A name of letters, digits and underscores is required.")
        return {"token": tokens.dumps(name), "user": name}

    @broker.auth_loader
    def load_user(req: Request) -> dict[str, str] | None:
        user = signed_in_user(req)
        return {"collectionName": "users", "id": user} if user else None

    @broker.before_subscribe
    def check_rooms(client: DefaultClient, subscriptions: list[str], auth: dict[str, str] | None) -> None:
        """``room/<name>``: the room must exist, and a private one admits only its members."""
        user = auth["id"] if auth else None
        with Session(engine) as session:
            for subscription in subscriptions:
                topic = subscription.partition("?")[0]
                if not topic.startswith("room/"):
                    continue
                room = session.get(Room, topic.removeprefix("room/"))
                if room is None:
                    raise ApiError(404, "No such room.", {"topic": subscription})
                if not room.admits(user):
                    raise ApiError(403, "This room is private.", {"topic": subscription})

    def readable_room(session: Session, name: str, user: str | None) -> Room:
        room = session.get(Room, name)
        if room is None:
            fail(404, "No such room.")
        if not room.admits(user):
            fail(403, "This room is private.")
        return room

    @app.get("/api/rooms/<name>/messages")
    def history(name: str) -> Any:
        """The room's last 50 messages, oldest first."""
        with Session(engine) as session:
            readable_room(session, name, signed_in_user(request))
            latest = select(Message).where(Message.room == name).order_by(Message.id.desc()).limit(50)
            return {"items": [message.record() for message in reversed(session.scalars(latest).all())]}

    @app.post("/api/rooms/<name>/messages")
    def post_message(name: str) -> Any:
        """Save a message, then tell the room: a record event on ``room/<name>`` after the commit."""
        user = signed_in_user(request)
        if user is None:
            fail(401, "Sign in to write.")
        text = (request.get_json(silent=True) or {}).get("text")
        if not isinstance(text, str) or not 0 < len(text) <= 2000:
            fail(400, "A text of 1 to 2000 characters is required.")
        with Session(engine) as session:
            readable_room(session, name, user)
            message = Message(room=name, author=user, text=text, created=datetime.now(timezone.utc).isoformat())
            session.add(message)
            session.commit()  # only what is committed is announced
            record = message.record()
        broker.notify(f"room/{name}", {"action": "create", "record": record})
        return record, 201

    return app
