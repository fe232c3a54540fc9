"""publish() writes one outbox row in the current transaction, exactly."""

import datetime
import functools
import uuid

import pytest
from django.conf import settings
from django.db import connection, transaction

import outbox
from outbox import InvalidEvent, TransactionRequired, publish

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_every_field_is_stored(outbox_rows):
    event_id = uuid.uuid4()
    at = datetime.datetime(2024, 2, 29, 12, 30, 45, 123456, tzinfo=datetime.timezone.utc)
    raw = b'{"b": 1,  "a": [1.50, 2e3], "s": "caf\\u00e9 \xe2\x98\x95"}\n'
    with transaction.atomic():
        got = publish(
            "order_paid",
            raw,
            environment="prod",
            event_id=event_id,
            event_time=at,
            metadata_version=3,
            traceparent=TRACEPARENT,
        )
        publish("defaults", {"when": at, "id": event_id, "text": "<é>"})
    assert got == event_id
    first, second = sorted(outbox_rows(), key=lambda r: r["event_type"] != "order_paid")
    assert first == {
        "id": str(event_id),
        "event_type": "order_paid",
        "event_date_time": at,
        "environment": "prod",
        "event_context": raw.decode("utf-8"),  # byte for byte
        "metadata_version": 3,
        "traceparent": TRACEPARENT,
    }
    assert second["environment"] == settings.CDC_ENVIRONMENT
    assert second["event_context"] == (
        '{"when":"2024-02-29T12:30:45.123Z","id":"%s","text":"<é>"}' % event_id
    )
    assert second["metadata_version"] == 1 and second["traceparent"] is None


# Arguments publish() refuses, over a good event_type and context;
# test_publish_many checks that publish_many() refuses them alike.
BAD_INPUTS = [
    {"event_type": ""},
    {"event_type": "  "},
    {"context": None},
    {"context": b'{"a":'},
    {"context": b"\xff"},
    {"context": b"NaN"},
    {"context": float("nan")},
    {"context": object()},
    {"context": {"a": "\ud800"}},  # a lone surrogate: not UTF-8
    {"context": b"[" * 5000 + b"]" * 5000},  # deeper than Python's json module goes
    {"context": functools.reduce(lambda inner, _: [inner], range(5000), [])},
    {"event_type": "user_\ud800"},
    {"environment": "prod\udfff"},
    {"metadata_version": 0},
    {"metadata_version": "2"},
    {"metadata_version": 2**63},  # past bigint: PostgreSQL would abort the transaction
    {"traceparent": "00-abc-def-01"},
    {"traceparent": TRACEPARENT.upper()},
    {"event_time": datetime.datetime(2024, 1, 1)},  # naive
    {"event_id": "not-a-uuid"},
    {"environment": ""},
]


@pytest.mark.parametrize("kwargs", BAD_INPUTS)
def test_bad_input_is_refused_and_writes_nothing(outbox_rows, kwargs):
    args = {"event_type": "user_created", "context": {"a": 1}}
    args.update(kwargs)
    event_type, context = args.pop("event_type"), args.pop("context")
    with transaction.atomic():
        with pytest.raises(InvalidEvent):
            publish(event_type, context, **args)
        # Refused before reaching the database: the transaction still works.
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    assert outbox_rows() == []


def test_context_size_limit(outbox_rows, settings):  # pytest-django's settings fixture
    settings.CDC_OUTBOX_MAX_CONTEXT_BYTES = 10
    with transaction.atomic():
        with pytest.raises(InvalidEvent, match="too large"):
            publish("big", {"k": "0123456789"})
        publish("small", [1])
    assert [r["event_type"] for r in outbox_rows()] == ["small"]


def test_context_size_limit_zero_is_the_default(outbox_rows, settings, monkeypatch):
    monkeypatch.setattr(outbox, "DEFAULT_MAX_CONTEXT_BYTES", 10)
    settings.CDC_OUTBOX_MAX_CONTEXT_BYTES = 0  # as Publisher.MaxContextBytes in Go: not "no limit"
    with transaction.atomic():
        with pytest.raises(InvalidEvent, match="too large"):
            publish("big", {"k": "0123456789"})
    assert outbox_rows() == []


def test_publish_outside_atomic_is_refused(outbox_rows):
    with pytest.raises(TransactionRequired):
        publish("user_created", {"a": 1})
    assert outbox_rows() == []


def test_rolled_back_transaction_publishes_nothing(outbox_rows):
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic():
            publish("user_created", {"a": 1})
            1 / 0
    assert outbox_rows() == []


def test_lone_surrogate_in_context_is_reported_as_such(outbox_rows):
    with transaction.atomic():
        with pytest.raises(InvalidEvent, match=r"^outbox event 'user_created': context is not valid UTF-8"):
            publish("user_created", {"name": "\udc80"})
    assert outbox_rows() == []


def test_huge_integer_in_raw_context_is_stored_as_it_is(outbox_rows):
    # Valid JSON, which PostgreSQL's json stores; past Python's 4,300-digit
    # int conversion limit, so it is checked for syntax only.
    raw = b'{"n":' + b"7" * 5000 + b"}"
    with transaction.atomic():
        publish("big_number", raw)
    assert [r["event_context"] for r in outbox_rows()] == [raw.decode()]
