"""The notify example with the recipe topic rules replace: a ``before_subscribe`` hook that
refuses (403) a ``user/<id>`` topic to anyone but that user. Only for showing the SDK's traps
(tests/test_js_private_topics.py); never use it as a recipe.

    gunicorn -k gevent tests.refusing_app:app
"""

from __future__ import annotations

from typing import Any, cast

from examples.notify_app import create_app
from flask_rtbroker import ApiError, DefaultClient, RealtimeBroker

app = create_app()
broker = cast(RealtimeBroker, app.extensions["rtbroker"].hooks)  # the state's hooks are its extension


@broker.before_subscribe
def refuse_other_users_topics(client: DefaultClient, subscriptions: list[str], auth: Any) -> None:
    """Refuse the whole POST when it holds a ``user/<id>`` topic that is not the caller's."""
    for key in subscriptions:
        topic = key.partition("?")[0]
        if topic.startswith("user/") and (auth is None or topic != f"user/{auth['id']}"):
            raise ApiError(403, "You can only subscribe to your own user topic.")
