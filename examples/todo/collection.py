"""The ``todos`` collection as clients see it: the record shape and who may see a record.

Shared by the web app (API answers, ``broker.watch``) and the worker (``emit_changes``), so the
records are the same whichever process commits.
"""

from __future__ import annotations

from typing import Any, Mapping

from .models import Todo, User

COLLECTION = "todos"


def todo_record(todo: Todo) -> dict[str, Any]:
    """A todo as the API and the record events show it (PocketBase's record shape)."""
    return {
        "collectionId": COLLECTION,
        "collectionName": COLLECTION,
        "created": todo.created.isoformat(sep=" ", timespec="milliseconds") + "Z",
        "done": todo.done,
        "id": todo.id,
        "owner": todo.owner,
        "shared": todo.shared,
        "title": todo.title,
    }


def user_record(user: User) -> dict[str, Any]:
    """A user as PocketBase's auth record (what the SDK keeps in its auth store)."""
    return {"collectionId": "users", "collectionName": "users", "id": user.id, "name": user.name}


def can_see(record: Mapping[str, Any], auth: Mapping[str, Any] | None, options: Any) -> bool:
    """The list and view rule: shared todos are everyone's, the others their owner's."""
    return bool(record["shared"]) or (auth is not None and record["owner"] == auth["id"])
