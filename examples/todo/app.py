"""Shared todos with per-user visibility: SQLAlchemy record events, live in every page.

A todo is visible to its owner, and to everyone while it is *shared*. The page uses the official
PocketBase JS SDK exactly as against PocketBase, ``pb.collection("todos").subscribe("*", cb)``,
and redraws from the record events; the server side of that is one call::

    broker.watch(Todo, collection="todos", list_rule=can_see, view_rule=can_see,
                 serialize=todo_record, transitions=True)

With ``transitions``, a todo that stops being shared disappears from the other pages (they get
a ``delete``) and one that becomes shared appears (``create``).

Run it (from the repository root), then open ``/?user=alice`` and ``/?user=bob`` side by side::

    pip install -e '.[sqlalchemy,gunicorn]' Flask-SQLAlchemy
    npm ci --prefix examples/todo                 # the browser SDK, once
    gunicorn -c examples/todo/gunicorn.conf.py    # http://127.0.0.1:5000

On PostgreSQL (``TODO_DATABASE_URL=postgresql+psycopg://...``) the watch is
``capture="database"``: start-up creates the tables and installs the capture trigger on
``todos`` (idempotently, one process at a time), and every committed change to the table is an
event, whoever makes it. On SQLite the session path sees what SQLAlchemy sessions commit.
Writers besides the page, the pages follow both::

    flask --app examples.todo.app todo done-all --user alice   # one bulk UPDATE, an event per row
    psql "${TODO_DATABASE_URL/+psycopg/}" -c "UPDATE todos SET done = true WHERE shared"   # PostgreSQL

The flask command reaches the web server's pages through the trigger on PostgreSQL, and through
the backplane on SQLite (``RTBROKER_BACKPLANE=redis://...`` set for both processes).

Routes (JSON errors have PocketBase's shape, so ``pb.send`` rejects with them):

- ``GET /``                         the page
- ``GET /vendor/pocketbase.es.mjs`` the SDK (ES module) from ``examples/todo/node_modules``
- ``POST /api/login {"name"}``      ``{"token", "record"}``; creates the user (no passwords: an example)
- ``GET /api/todos``                the todos the caller may see, oldest first
- ``POST /api/todos {"title", "shared"?}``                   a new todo of the caller
- ``PATCH /api/todos/<id> {"title"?, "done"?, "shared"?}``   the owner only
- ``DELETE /api/todos/<id>``                                  the owner only
- ``GET|POST /api/realtime``        the realtime endpoint (flask_rtbroker)

Requests authenticate with ``Authorization: <token>`` (raw or ``Bearer``), as the SDK sends it.
Settings: ``TODO_DATABASE_URL`` (default: a SQLite file in the temp directory, so every process
on the host shares it), ``TODO_SECRET_KEY`` (signs tokens; without it a random key is
made once and kept, readable by this user only, in the temp directory next to the default
database, so the processes of one host share it and no published key can forge a token),
``TODO_POCKETBASE_DIST`` (the SDK's ``dist`` directory) and the ``RTBROKER_*`` variables. Several
processes need ``RTBROKER_BACKPLANE=redis://...`` (a subscription POST may reach another process
than its stream; on PostgreSQL the record events themselves do not go through it);
``python -m examples.todo.worker`` changes todos from outside the web app and the pages follow.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from typing import Any, Mapping, NoReturn

from flask import Flask, Request, Response, abort, jsonify, make_response, render_template, request, send_file
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import text

from flask_rtbroker import RealtimeBroker, load_env
from flask_rtbroker.records import install_triggers

from .cli import todo_cli
from .collection import COLLECTION, can_see, todo_record, user_record
from .models import DEFAULT_DATABASE, Todo, User, db

HERE = Path(__file__).resolve().parent
SDK_DIST = HERE / "node_modules" / "pocketbase" / "dist"
SDK_MODULE = "pocketbase.es.mjs"
INSTALL_COMMAND = "npm ci --prefix examples/todo"
SECRET_FILE = Path(tempfile.gettempdir()) / "flask-rtbroker-todo.secret"
SETUP_LOCK = 0x746F646F
"""The PostgreSQL advisory lock that lets one process at a time create the tables and trigger."""


def secret_key() -> str:
    """``TODO_SECRET_KEY``, else this host's generated key (made atomically on first use)."""
    configured = os.environ.get("TODO_SECRET_KEY")
    if configured:
        return configured
    if not SECRET_FILE.exists():
        draft = SECRET_FILE.with_name(f"{SECRET_FILE.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_urlsafe(32))
        try:
            os.link(draft, SECRET_FILE)  # fails if another process made it first: theirs is kept
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return SECRET_FILE.read_text()


def prepare_database() -> str:
    """Create the tables (in an app context); on PostgreSQL also (re)install the capture trigger
    on ``todos``. Returns the watch's capture: ``"database"`` on PostgreSQL, else ``"session"``."""
    engine = db.engine
    if engine.dialect.name != "postgresql":
        db.create_all()
        return "session"
    with engine.connect() as lock:  # several workers start at once: concurrent DDL would fail
        lock.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SETUP_LOCK})
        try:
            db.create_all()
            install_triggers(engine, Todo)
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SETUP_LOCK})
            lock.commit()
    return "database"


def fail(status: int, message: str) -> NoReturn:
    """Answer a PocketBase-style JSON error."""
    abort(make_response(jsonify({"data": {}, "message": message, "status": status}), status))


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the todo app: settings from the environment, then *config* on top."""
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ.get("TODO_DATABASE_URL") or DEFAULT_DATABASE,
        SECRET_KEY=secret_key(),
        TODO_POCKETBASE_DIST=os.environ.get("TODO_POCKETBASE_DIST") or str(SDK_DIST),
    )
    load_env(app.config)
    app.config.update(config or {})
    db.init_app(app)
    broker = RealtimeBroker(app)
    tokens = URLSafeSerializer(app.config["SECRET_KEY"], salt="todo-auth")
    with app.app_context():
        broker.watch(Todo, collection=COLLECTION, list_rule=can_see, view_rule=can_see,
                     serialize=todo_record, transitions=True, capture=prepare_database())
    app.cli.add_command(todo_cli)

    def signed_in(req: Request) -> User | None:
        token = req.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        try:
            user_id = tokens.loads(token) if token else None
        except BadSignature:
            return None
        return db.session.get(User, user_id) if isinstance(user_id, str) else None

    @broker.auth_loader
    def realtime_auth(req: Request) -> dict[str, Any] | None:
        """The subscriber's identity, what the rules get as ``auth``."""
        user = signed_in(req)
        return None if user is None else user_record(user)

    def me() -> User:
        user = signed_in(request)
        if user is None:
            fail(401, "Sign in first.")
        return user

    def own_todo(todo_id: str) -> Todo:
        todo = db.session.get(Todo, todo_id)
        if todo is None or todo.owner != me().id:
            fail(404, "No such todo of yours.")
        return todo

    def body() -> dict[str, Any]:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            fail(400, "Expected a JSON object.")
        return data

    def sdk_path() -> Path:
        return Path(app.config["TODO_POCKETBASE_DIST"]) / SDK_MODULE

    @app.get("/")
    def index() -> Any:
        """The page, or how to install the SDK it needs."""
        if not sdk_path().is_file():
            return render_template("missing_sdk.html", path=sdk_path(), command=INSTALL_COMMAND), 503
        return render_template("index.html", collection=COLLECTION)

    @app.get("/vendor/" + SDK_MODULE)
    def pocketbase_sdk() -> Any:
        """The official PocketBase JS SDK, ES module build (it exports ``BaseAuthStore`` too)."""
        if not sdk_path().is_file():
            return Response(f"// run `{INSTALL_COMMAND}`\n", status=404, mimetype="text/javascript")
        return send_file(sdk_path(), mimetype="text/javascript", max_age=3600)

    @app.post("/api/login")
    def login() -> Any:
        """Sign in by name (the user is created on first use); answers the SDK's auth store data."""
        name = str(body().get("name", "")).strip()
        if not name or len(name) > 40:
            fail(400, "A name of 1 to 40 characters, please.")
        user = db.session.query(User).filter_by(name=name).one_or_none()
        if user is None:
            user = User(name=name)
            db.session.add(user)
            db.session.commit()
        return jsonify({"token": tokens.dumps(user.id), "record": user_record(user)})

    @app.get("/api/todos")
    def list_todos() -> Any:
        """The todos the caller may see (a guest: the shared ones)."""
        user = signed_in(request)
        auth = None if user is None else user_record(user)
        todos = db.session.query(Todo).order_by(Todo.created, Todo.id)
        return jsonify([record for record in map(todo_record, todos) if can_see(record, auth, None)])

    @app.post("/api/todos")
    def add_todo() -> Any:
        """A new todo of the caller."""
        data = body()
        title = str(data.get("title", "")).strip()
        if not title:
            fail(400, "A todo needs a title.")
        todo = Todo(title=title[:200], shared=bool(data.get("shared")), owner=me().id)
        db.session.add(todo)
        db.session.commit()
        return jsonify(todo_record(todo))

    @app.patch("/api/todos/<todo_id>")
    def change_todo(todo_id: str) -> Any:
        """Change the title, done or shared flag of one of the caller's todos."""
        todo = own_todo(todo_id)
        data = body()
        if "title" in data:
            todo.title = str(data["title"]).strip()[:200] or todo.title
        for flag in ("done", "shared"):
            if flag in data:
                setattr(todo, flag, bool(data[flag]))
        db.session.commit()
        return jsonify(todo_record(todo))

    @app.delete("/api/todos/<todo_id>")
    def delete_todo(todo_id: str) -> Any:
        """Delete one of the caller's todos."""
        db.session.delete(own_todo(todo_id))
        db.session.commit()
        return Response(status=204)

    return app


app = create_app()

if __name__ == "__main__":
    # Development server (threads): python -m examples.todo.app
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")), threaded=True)
