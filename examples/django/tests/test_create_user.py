"""The create_user use case publishes user_created with the user, or not at all."""

import json

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError

import outbox
from accounts import usecases

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_committed_use_case_writes_exactly_one_outbox_row(outbox_rows):
    user = usecases.create_user(" Ada@Example.com ", traceparent=TRACEPARENT)

    rows = outbox_rows()  # read over another connection: committed
    assert len(rows) == 1
    row = rows[0]
    assert row["event_type"] == "user_created"
    assert row["environment"] == settings.CDC_ENVIRONMENT
    assert json.loads(row["event_context"]) == {"user_id": user.pk, "email": "ada@example.com"}
    assert row["metadata_version"] == 1
    assert row["traceparent"] == TRACEPARENT
    assert row["id"] is not None and row["event_date_time"] is not None
    assert get_user_model().objects.filter(pk=user.pk, email="ada@example.com").exists()


def test_use_case_that_raises_after_publishing_publishes_nothing(outbox_rows, monkeypatch):
    published = []

    def publish_then_fail(*args, **kwargs):
        published.append(outbox.publish(*args, **kwargs))
        raise RuntimeError("failed after publishing")

    monkeypatch.setattr(usecases, "publish", publish_then_fail)
    with pytest.raises(RuntimeError, match="failed after publishing"):
        usecases.create_user("bob@example.com")

    assert len(published) == 1  # the event was written, then rolled back
    assert outbox_rows() == []
    assert not get_user_model().objects.filter(email="bob@example.com").exists()


def test_duplicate_user_publishes_nothing_more(outbox_rows):
    usecases.create_user("carol@example.com")
    with pytest.raises(IntegrityError):
        usecases.create_user("carol@example.com")
    assert [r["event_type"] for r in outbox_rows()] == ["user_created"]


@pytest.mark.parametrize("header", ["", None, "garbage", TRACEPARENT.upper(), "00-" + "0" * 32 + "-00f067aa0ba902b7-01"])
def test_malformed_or_missing_traceparent_header_never_blocks_the_event(outbox_rows, header):
    user = usecases.create_user("dan@example.com", traceparent=header)

    [row] = outbox_rows()
    assert json.loads(row["event_context"]) == {"user_id": user.pk, "email": "dan@example.com"}
    assert row["traceparent"] is None  # stored with an empty trace_id
