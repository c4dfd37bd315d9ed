"""Change todos from outside the web app (a job, a script): the open pages follow.

    export RTBROKER_BACKPLANE=redis://127.0.0.1:6379/0      # the web app's (not needed on PostgreSQL)
    python -m examples.todo.worker add "Water the plants" --owner alice --shared
    python -m examples.todo.worker done <todo id>
    python -m examples.todo.worker delete <todo id>

No Flask app and no broker here: the models are used with a plain SQLAlchemy session on the
web app's database (``TODO_DATABASE_URL``), and ``emit_changes`` publishes what each commit
changed through an :class:`~flask_rtbroker.Emitter`. Every web process then applies the
collection's rules for its own pages. On PostgreSQL the web app captures every commit from the
database itself, so the worker just commits (no backplane needed, and nothing is published
twice). Prints the changed record as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import ExitStack
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from flask_rtbroker import Emitter, load_env
from flask_rtbroker.records import emit_changes

from .collection import COLLECTION, todo_record
from .models import DEFAULT_DATABASE, Todo, User


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.todo.worker", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add a todo for a user (created if new)")
    add.add_argument("title")
    add.add_argument("--owner", required=True, help="the user's name")
    add.add_argument("--shared", action="store_true")
    for name in ("done", "delete"):
        commands.add_parser(name, help=f"{name} a todo").add_argument("id")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, session: Session) -> dict[str, Any]:
    """Apply the command in *session* and commit; return the todo's record."""
    todo: Todo | None
    if args.command == "add":
        owner = session.query(User).filter_by(name=args.owner).one_or_none()
        if owner is None:
            owner = User(name=args.owner)
            session.add(owner)
            session.flush()
        todo = Todo(title=args.title, shared=args.shared, owner=owner.id)
        session.add(todo)
    elif (todo := session.get(Todo, args.id)) is None:
        raise SystemExit(f"no todo {args.id!r}")
    elif args.command == "done":
        todo.done = True
    else:
        session.delete(todo)
    session.flush()
    record = todo_record(todo)
    session.commit()
    return record


def publish_commits(cleanup: ExitStack) -> None:
    """Publish the events of Todo commits on the web app's backplane until *cleanup* closes."""
    config: dict[str, Any] = {}
    load_env(config)  # the web app's RTBROKER_BACKPLANE, and its prefix and secret when set
    if not config.get("RTBROKER_BACKPLANE"):
        raise SystemExit("set RTBROKER_BACKPLANE to the web app's backplane (redis://...)")
    emitter = Emitter.from_config(config)
    cleanup.callback(emitter.close)
    cleanup.callback(emit_changes(emitter, Todo, collection=COLLECTION, serialize=todo_record).close)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    engine = create_engine(os.environ.get("TODO_DATABASE_URL") or DEFAULT_DATABASE)
    with ExitStack() as cleanup:
        cleanup.callback(engine.dispose)
        if engine.dialect.name != "postgresql":  # on PostgreSQL the web app's trigger reports the commit
            publish_commits(cleanup)
        with Session(engine) as session:
            print(json.dumps(run(args, session)))


if __name__ == "__main__":
    main(sys.argv[1:])
