"""Rejecting record subscriptions with an unsupported ``filter`` or malformed ``fields`` at POST time.

A ``before_request`` handler of the app looks at subscription POSTs once PocketBase's own
validation would pass: a key of a watched collection whose options cannot be used makes the
whole POST fail with PocketBase's 400 shape, the error keyed by the item's index::

    {"data":{"subscriptions":{"1":{"code":"validation_invalid_filter","message":"..."}}},
     "message":"Something went wrong while processing your request.","status":400}

Like every validation error it comes before the client lookup, and changes nothing.
"""

from __future__ import annotations

from typing import Any, Callable

from flask import Flask, request

from ..config import Settings
from ..http import bad_request
from ..subscription_request import validate
from ..views import read_subscription_request

REALTIME_ENDPOINT = "rtbroker.realtime"

SubscriptionErrors = Callable[[list[str]], dict[str, Any]]


def install_options_check(app: Flask, settings: Settings, subscription_errors: SubscriptionErrors) -> None:
    """Register the check on *app*; *subscription_errors* maps keys to errors by index."""

    @app.before_request
    def reject_unusable_record_options() -> None:
        if request.method != "POST" or request.endpoint != REALTIME_ENDPOINT:
            return
        submitted = read_subscription_request(settings.max_body_size)
        if validate(submitted):
            return  # the view answers with PocketBase's own field errors
        errors = subscription_errors(submitted.subscriptions)
        if errors:
            raise bad_request({"subscriptions": errors})
