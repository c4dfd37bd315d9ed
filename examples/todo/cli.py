"""The ``flask todo`` commands: change todos from a shell, with ORM bulk statements.

    flask --app examples.todo.app todo done-all --user alice

Each runs in its own process and commits through ``db.session``, so the open pages follow: on
PostgreSQL the web app's capture trigger reports every changed row; on SQLite the session path
does, and a page held by another process gets it through the backplane (``RTBROKER_BACKPLANE``
set as in the web app).
"""

from __future__ import annotations

from typing import Any, cast

import click
from flask.cli import AppGroup
from sqlalchemy import CursorResult, update

from .models import Todo, User, db

todo_cli = AppGroup("todo", help="Change todos from a shell (the open pages follow).")


@todo_cli.command("done-all")
@click.option("--user", "name", required=True, help="The user's name.")
def done_all(name: str) -> None:
    """Mark every open todo of a user done, in one UPDATE statement (an event per row)."""
    user = db.session.query(User).filter_by(name=name).one_or_none()
    if user is None:
        raise click.ClickException(f"no user named {name!r}")
    statement = update(Todo).where(Todo.owner == user.id, Todo.done.is_(False)).values(done=True)
    result = cast("CursorResult[Any]", db.session.execute(statement))
    db.session.commit()
    click.echo(f"{result.rowcount} todo(s) of {name} marked done")
