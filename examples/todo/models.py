"""The todo example's data: users and their todos, with PocketBase-style 15-character ids.

Plain Flask-SQLAlchemy models; the worker script uses them with a plain SQLAlchemy session.
"""

from __future__ import annotations

import datetime
import os
import secrets
import string
import tempfile

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Boolean, DateTime, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

db = SQLAlchemy()

DEFAULT_DATABASE = "sqlite:///" + os.path.join(tempfile.gettempdir(), "flask-rtbroker-todo.sqlite3")
"""Where the todos live unless ``TODO_DATABASE_URL`` says otherwise: one file every process shares."""

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_id() -> str:
    """A random id like PocketBase's: 15 characters of ``[a-z0-9]``."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(15))


def utcnow() -> datetime.datetime:
    """Now, in UTC, without a time zone (SQLite keeps none): one format before and after a reload."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class User(db.Model):  # type: ignore[name-defined,misc]
    """Someone who signed in with a name (the example has no passwords)."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(15), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(40), unique=True)


class Todo(db.Model):  # type: ignore[name-defined,misc]
    """A todo: its owner sees it; everyone sees it while it is shared."""

    __tablename__ = "todos"

    id: Mapped[str] = mapped_column(String(15), primary_key=True, default=new_id)
    title: Mapped[str] = mapped_column(String(200))
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    owner: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
