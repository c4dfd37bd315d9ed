"""Record events: SQLAlchemy models broadcast create/update/delete like PocketBase collections.

Needs the ``sqlalchemy`` extra (``pip install 'flask-rtbroker[sqlalchemy]'``)::

    broker.watch(Post, collection="posts", list_rule=lambda record, auth, options: ...)

Modules: :mod:`.watcher` (SQLAlchemy events -> committed RecordEvents), :mod:`.serialize`
(row -> record), :mod:`.collection` (names, rules), :mod:`.broadcast` (rules, filter, fields ->
messages per subscription), :mod:`.filter` and :mod:`.compare` (the filter subset),
:mod:`.fields` and :mod:`.excerpt` (the field picker), :mod:`.subscription` (compiled options),
:mod:`.validation` (400 at POST time), :mod:`.registry` (per app, backplane),
:mod:`.publisher` (workers without a broker), :mod:`.bulk` (ORM bulk statements row by row),
:mod:`.capture` (PostgreSQL triggers: every committed change, whoever makes it).
"""

from ..errors import MissingDependency

try:
    import sqlalchemy  # noqa: F401
except ImportError as exc:
    raise MissingDependency("record events need SQLAlchemy: pip install 'flask-rtbroker[sqlalchemy]'") from exc

from .capture import install_triggers
from .collection import Collection, Rule
from .event import KIND_RECORD, RecordEvent
from .fields import FieldPicker, FieldsSyntaxError, parse_fields
from .filter import Filter, FilterSyntaxError, parse_filter
from .publisher import emit_changes
from .registry import watch
from .watcher import ModelWatch

__all__ = [
    "KIND_RECORD",
    "Collection",
    "FieldPicker",
    "FieldsSyntaxError",
    "Filter",
    "FilterSyntaxError",
    "ModelWatch",
    "RecordEvent",
    "Rule",
    "emit_changes",
    "install_triggers",
    "parse_fields",
    "parse_filter",
    "watch",
]
