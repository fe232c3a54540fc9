"""publish_many() writes many outbox rows in the current transaction, in a
few INSERTs, exactly; or none at all."""

import datetime
import uuid

import pytest
from django.db import connection, transaction

import outbox
from outbox import InvalidEvent, TransactionRequired, publish, publish_many
from test_publish import BAD_INPUTS, TRACEPARENT

AT = datetime.datetime(2024, 2, 29, 12, 30, 45, 123456, tzinfo=datetime.timezone.utc)
FIELDS = 7  # parameters per row of the INSERT


@pytest.fixture
def statements():
    """Every statement run on the default connection: (sql, params)."""
    seen = []

    def record(execute, sql, params, many, context):
        seen.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        yield seen


def inserted_ids(statements):
    """The ids written by each INSERT INTO outbox among statements."""
    return [
        [uuid.UUID(i) for i in params[0::FIELDS]]
        for sql, params in statements
        if sql.startswith("INSERT INTO outbox")
    ]


def test_every_field_is_stored_and_the_ids_come_back_in_order(outbox_rows, settings):
    settings.CDC_ENVIRONMENT = "from-settings"
    ids = [uuid.uuid4() for _ in range(3)]
    raw = b'{"b": 1,  "a": [1.50, 2e3], "s": "caf\\u00e9 \xe2\x98\x95"}\n'
    raw2 = b' [ "\\u0000 is escaped" , null ] '
    events = [
        {
            "event_type": "order_paid",
            "context": raw,
            "environment": "prod",
            "event_id": ids[0],
            "event_time": AT,
            "metadata_version": 3,
            "traceparent": TRACEPARENT,
        },
        {"event_type": "defaults", "context": {"when": AT, "id": ids[1], "text": "<é>"}, "event_id": str(ids[1])},
        {"event_type": "bytes_again", "context": raw2, "event_id": ids[2], "environment": None},
    ]
    with transaction.atomic():
        got = publish_many(events, environment="from-call")
        with connection.cursor() as cursor:
            cursor.execute("SELECT now()")
            (now,) = cursor.fetchone()
    assert got == ids
    assert all(isinstance(i, uuid.UUID) for i in got)
    rows = {r["id"]: r for r in outbox_rows()}
    assert rows == {
        str(ids[0]): {
            "id": str(ids[0]),
            "event_type": "order_paid",
            "event_date_time": AT,
            "environment": "prod",
            "event_context": raw.decode("utf-8"),  # byte for byte
            "metadata_version": 3,
            "traceparent": TRACEPARENT,
        },
        str(ids[1]): {
            "id": str(ids[1]),
            "event_type": "defaults",
            "event_date_time": now,  # the transaction's now()
            "environment": "from-call",
            "event_context": '{"when":"2024-02-29T12:30:45.123Z","id":"%s","text":"<é>"}' % ids[1],
            "metadata_version": 1,
            "traceparent": None,
        },
        str(ids[2]): {
            "id": str(ids[2]),
            "event_type": "bytes_again",
            "event_date_time": now,
            "environment": "from-call",  # None means unset, as in publish()
            "event_context": raw2.decode("utf-8"),
            "metadata_version": 1,
            "traceparent": None,
        },
    }


def test_environment_defaults_to_settings(outbox_rows, settings):
    settings.CDC_ENVIRONMENT = "from-settings"
    with transaction.atomic():
        publish_many([{"event_type": "a", "context": 1}, {"event_type": "b", "context": 2, "environment": "own"}])
    assert [(r["event_type"], r["environment"]) for r in outbox_rows()] == [("a", "from-settings"), ("b", "own")]


def test_generated_ids_are_returned_in_the_order_rows_are_stored(outbox_rows, statements):
    events = ({"event_type": f"e{i}", "context": {"i": i}} for i in range(10))  # any iterable
    with transaction.atomic():
        got = publish_many(events)
    assert len(got) == len(set(got)) == 10
    rows = outbox_rows()  # same event time: in the order they were inserted
    assert [r["id"] for r in rows] == [str(i) for i in got]
    assert [r["event_type"] for r in rows] == [f"e{i}" for i in range(10)]
    assert [r["event_context"] for r in rows] == ['{"i":%d}' % i for i in range(10)]
    assert inserted_ids(statements) == [got]  # one INSERT


def test_invalid_event_in_the_middle_names_its_index_and_writes_nothing(outbox_rows, statements):
    events = [{"event_type": "order_paid", "context": {"n": n}} for n in range(5)]
    events[2] = dict(events[2], traceparent="00-abc-def-01")
    with transaction.atomic():
        with pytest.raises(InvalidEvent) as refused:
            publish_many(events)
        assert statements == []  # nothing reached the database
        error = refused.value
        assert (error.index, error.event_type) == (2, "order_paid")
        assert str(error) == (
            "outbox event 2 (type 'order_paid'): traceparent '00-abc-def-01' is not "
            "00-<32 hex>-<16 hex>-<2 hex> in lowercase with non-zero ids"
        )
        # The caller's transaction still works, and commits.
        ok = publish_many([events[0], events[4]])
    assert [r["id"] for r in outbox_rows()] == [str(i) for i in ok]


@pytest.mark.parametrize("kwargs", BAD_INPUTS)
def test_an_event_is_refused_for_what_publish_refuses_with_the_same_reason(outbox_rows, statements, kwargs):
    bad = {"event_type": "user_created", "context": {"a": 1}}
    bad.update(kwargs)
    good = {"event_type": "user_created", "context": {"a": 1}}
    with transaction.atomic():
        with pytest.raises(InvalidEvent) as one:
            publish(**bad)
        with pytest.raises(InvalidEvent) as many:
            publish_many([good, bad, good])
        assert statements == []
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    assert one.value.index is None
    assert many.value.index == 1
    assert many.value.event_type == one.value.event_type == bad["event_type"]
    assert many.value.reason == one.value.reason
    assert str(one.value) == f"outbox event {bad['event_type']!r}: {one.value.reason}"
    assert str(many.value) == f"outbox event 1 (type {bad['event_type']!r}): {one.value.reason}"
    assert outbox_rows() == []


DUPLICATE = uuid.uuid4()


@pytest.mark.parametrize(
    "event, reason",
    [
        (("user_created", {"a": 1}), "an event is a mapping of publish()'s arguments, not a tuple"),
        ({"event_type": "user_created"}, "context is missing"),
        ({"context": {"a": 1}}, "event_type is missing"),
        (
            {"event_type": "user_created", "context": {}, "type": "x"},
            "unknown key 'type': an event takes event_type, context, environment, event_id, "
            "event_time, metadata_version, traceparent",
        ),
        (
            {"event_type": "user_created", "context": {}, "using": "default"},
            "unknown key 'using': an event takes event_type, context, environment, event_id, "
            "event_time, metadata_version, traceparent",
        ),
        # Would fail on the primary key and abort the transaction.
        (
            {"event_type": "user_created", "context": {}, "event_id": str(DUPLICATE)},
            f"event_id {DUPLICATE} is already event 0's",
        ),
    ],
)
def test_malformed_events_are_refused_by_index(outbox_rows, statements, event, reason):
    first = {"event_type": "first", "context": {}, "event_id": DUPLICATE}
    with transaction.atomic():
        with pytest.raises(InvalidEvent) as refused:
            publish_many([first, event])
        assert statements == []
    assert refused.value.index == 1
    assert refused.value.reason == reason
    assert outbox_rows() == []


def test_context_size_limit_applies_to_each_event(outbox_rows, settings):
    settings.CDC_OUTBOX_MAX_CONTEXT_BYTES = 10
    with transaction.atomic():
        with pytest.raises(InvalidEvent, match=r"^outbox event 1 \(type 'big'\): context too large: 11 bytes"):
            publish_many(
                [{"event_type": "small", "context": b"[12345678]"}, {"event_type": "big", "context": b"[123456789]"}]
            )
    assert outbox_rows() == []


@pytest.mark.parametrize("events", [{"event_type": "a", "context": {}}, "events", b"events"])
def test_one_event_instead_of_a_list_is_a_type_error(outbox_rows, events):
    with transaction.atomic():
        with pytest.raises(TypeError, match="takes an iterable of events"):
            publish_many(events)
    assert outbox_rows() == []


def test_rolled_back_transaction_publishes_nothing(outbox_rows):
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic():
            publish_many([{"event_type": "user_created", "context": {"a": i}} for i in range(3)])
            1 / 0
    assert outbox_rows() == []


@pytest.mark.parametrize("events", [[{"event_type": "user_created", "context": {"a": 1}}], []])
def test_outside_atomic_is_refused_even_with_no_events(outbox_rows, statements, events):
    with pytest.raises(TransactionRequired, match=r"^publish_many\(\) must run inside transaction.atomic\(\)"):
        publish_many(events)
    assert statements == []
    assert outbox_rows() == []


def test_no_events_is_a_no_op(outbox_rows, statements):
    with transaction.atomic():
        assert publish_many([]) == []
        assert publish_many(iter(())) == []
    assert statements == []
    assert outbox_rows() == []


def test_more_events_than_one_chunk(outbox_rows, statements):
    n = 2 * outbox.MAX_ROWS_PER_INSERT + 3
    with transaction.atomic():
        got = publish_many({"event_type": "bulk", "context": [i]} for i in range(n))
    chunk = outbox.MAX_ROWS_PER_INSERT
    assert inserted_ids(statements) == [got[:chunk], got[chunk : 2 * chunk], got[2 * chunk :]]
    rows = outbox_rows()
    assert len(rows) == n
    assert [r["id"] for r in rows] == [str(i) for i in got]
    assert [r["event_context"] for r in rows] == [f"[{i}]" for i in range(n)]


def test_chunk_bounded_by_rows(outbox_rows, statements, monkeypatch):
    monkeypatch.setattr(outbox, "MAX_ROWS_PER_INSERT", 3)
    with transaction.atomic():
        got = publish_many([{"event_type": "bulk", "context": i} for i in range(7)])
    assert inserted_ids(statements) == [got[0:3], got[3:6], got[6:7]]
    assert [r["id"] for r in outbox_rows()] == [str(i) for i in got]


def test_chunk_bounded_by_bytes_of_context(outbox_rows, statements, monkeypatch):
    monkeypatch.setattr(outbox, "MAX_BYTES_PER_INSERT", 10)
    contexts = [
        "é",  # '"é"': 4 bytes (UTF-8), 3 characters
        b'"\xc3\xa9\xc3\xa9"',  # 6 bytes: 10 in all, still one INSERT
        b"1",  # 11 would be too many: the next INSERT
        b'"' + b"x" * 18 + b'"',  # 20 bytes, past the bound: alone
        [],  # 2 bytes
    ]
    with transaction.atomic():
        got = publish_many([{"event_type": "sized", "context": c} for c in contexts])
    assert inserted_ids(statements) == [got[0:2], got[2:3], got[3:4], got[4:5]]
    rows = outbox_rows()
    assert [r["id"] for r in rows] == [str(i) for i in got]
    assert [r["event_context"] for r in rows] == ['"é"', '"éé"', "1", '"' + "x" * 18 + '"', "[]"]


def test_megabytes_of_context_are_split_at_the_default_bound(outbox_rows, statements):
    big = b'{"blob":"' + b"\xe2\x98\x95" * (outbox.MAX_BYTES_PER_INSERT // 3) + b'"}'  # > the bound
    half = b'"' + b"y" * (outbox.MAX_BYTES_PER_INSERT // 2) + b'"'  # two do not fit in one INSERT
    contexts = [b"{}", big, half, half, b"[]"]
    with transaction.atomic():
        got = publish_many([{"event_type": "large", "context": c} for c in contexts])
    assert inserted_ids(statements) == [got[0:1], got[1:2], got[2:3], got[3:5]]
    rows = outbox_rows()
    assert [r["id"] for r in rows] == [str(i) for i in got]
    assert [r["event_context"].encode("utf-8") for r in rows] == contexts


def test_none_and_empty_mean_the_defaults(outbox_rows, settings):
    settings.CDC_ENVIRONMENT = "from-settings"
    events = [
        {"event_type": "a", "context": 1, "metadata_version": None, "traceparent": "", "environment": ""},
        {"event_type": "b", "context": 2, "metadata_version": None, "traceparent": None, "environment": None},
        {"event_type": "c", "context": 3, "environment": "own", "traceparent": TRACEPARENT},
    ]
    with transaction.atomic():
        from_call = publish_many(events, environment="from-call")
        from_settings = publish_many(events, environment="")  # "" is no environment here too
    rows = {r["id"]: (r["environment"], r["metadata_version"], r["traceparent"]) for r in outbox_rows()}
    assert rows == {
        str(from_call[0]): ("from-call", 1, None),
        str(from_call[1]): ("from-call", 1, None),
        str(from_call[2]): ("own", 1, TRACEPARENT),
        str(from_settings[0]): ("from-settings", 1, None),
        str(from_settings[1]): ("from-settings", 1, None),
        str(from_settings[2]): ("own", 1, TRACEPARENT),
    }


def test_no_environment_anywhere_is_refused(outbox_rows, settings):
    settings.CDC_ENVIRONMENT = ""
    with transaction.atomic():
        with pytest.raises(InvalidEvent) as refused:
            publish_many([{"event_type": "a", "context": 1, "environment": ""}], environment="")
    assert str(refused.value) == (
        "outbox event 0 (type 'a'): environment (set settings.CDC_ENVIRONMENT or pass environment=) is empty"
    )
    assert outbox_rows() == []


def test_metadata_version_zero_is_refused(outbox_rows):
    with transaction.atomic():
        with pytest.raises(InvalidEvent) as refused:
            publish_many([{"event_type": "a", "context": 1, "metadata_version": 0}])
    assert str(refused.value) == f"outbox event 0 (type 'a'): metadata_version 0 must be an int from 1 to {2**63 - 1}"
    assert outbox_rows() == []


def test_nil_event_ids_mean_new_ones(outbox_rows):
    # As uuid.Nil in Go: two nil ids are no ids, not the same id twice.
    nil = uuid.UUID(int=0)
    with transaction.atomic():
        got = publish_many(
            [
                {"event_type": "a", "context": 1, "event_id": nil},
                {"event_type": "b", "context": 2, "event_id": str(nil)},
            ]
        )
    assert len(set(got)) == 2 and all(i.int != 0 and i.version == 4 for i in got)
    assert [r["id"] for r in outbox_rows()] == [str(i) for i in got]


def test_naive_event_time_is_in_time_zone_without_use_tz(outbox_rows, settings):
    settings.USE_TZ = False
    settings.TIME_ZONE = "America/New_York"
    with transaction.atomic():
        publish_many([{"event_type": "a", "context": 1, "event_time": datetime.datetime(2024, 1, 15, 12, 0)}])
    assert [r["event_date_time"] for r in outbox_rows()] == [
        datetime.datetime(2024, 1, 15, 17, 0, tzinfo=datetime.timezone.utc)
    ]
