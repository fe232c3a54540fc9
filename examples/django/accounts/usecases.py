"""Use cases of the accounts app."""

from django.contrib.auth import get_user_model
from django.db import transaction

from outbox import publish, valid_traceparent


def create_user(email, *, traceparent=None):
    """Create a user and publish user_created, atomically.

    The event is written to the outbox table in the same transaction as the
    user: it reaches ClickHouse if, and only if, the user is created.

    traceparent is the request's W3C traceparent header, as received: a
    malformed one is dropped (the event is published without it) rather
    than refused, since a client's bad header must not stop the sign-up.
    """
    User = get_user_model()
    email = User.objects.normalize_email(email.strip()).lower()
    with transaction.atomic():
        user = User.objects.create_user(username=email, email=email)
        publish(
            "user_created",
            {"user_id": user.pk, "email": user.email},
            traceparent=traceparent if valid_traceparent(traceparent) else "",
        )
    return user
