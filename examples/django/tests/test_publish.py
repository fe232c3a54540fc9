"""publish() writes one outbox row in the current transaction, exactly."""

import datetime
import decimal
import enum
import functools
import json
import uuid

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, models, transaction

import outbox
from outbox import InvalidEvent, TransactionRequired, publish, valid_traceparent

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
    {"context": b"[" * 10001 + b"]" * 10001},  # deeper than MAX_RAW_CONTEXT_DEPTH
    {"context": b"[" * 20000},  # too deep before it is invalid
    {"context": b"[" * 5000 + b"]" * 4999},  # invalid, deeper than json.loads() goes on some Pythons
    {"context": functools.reduce(lambda inner, _: [inner], range(1001), 1)},  # deeper than MAX_CONTEXT_DEPTH
    {"context": functools.reduce(lambda inner, _: [inner], range(5000), [])},
    {"event_type": "user_\ud800"},
    {"environment": "prod\udfff"},
    {"environment": "  "},  # blank is not empty: refused, as in Go
    {"metadata_version": 0},  # Go reads 0, its zero value, as 1; None is Python's "unset"
    {"metadata_version": -1},
    {"metadata_version": "2"},
    {"metadata_version": 2**63},  # past bigint: PostgreSQL would abort the transaction
    {"traceparent": "00-abc-def-01"},
    {"traceparent": TRACEPARENT.upper()},
    {"traceparent": " "},
    {"event_time": datetime.datetime(2024, 1, 1)},  # naive, with USE_TZ = True
    {"event_time": datetime.date(2024, 1, 1)},
    {"event_time": datetime.datetime.fromisoformat("2024-01-01T12:00:00+18:00")},  # an offset PostgreSQL refuses
    {"event_id": "not-a-uuid"},
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


def nest(levels, inner):
    """inner inside levels one-element lists."""
    return functools.reduce(lambda value, _: [value], range(levels), inner)


def test_empty_traceparent_is_stored_as_null(outbox_rows):
    # As the Go package, which stores an empty Traceparent as NULL.
    with transaction.atomic():
        empty = publish("traced", {}, traceparent="")
        unset = publish("traced", {}, traceparent=None)
    assert {r["id"]: r["traceparent"] for r in outbox_rows()} == {str(empty): None, str(unset): None}


def test_malformed_traceparent_is_refused_with_its_reason(outbox_rows):
    with transaction.atomic():
        with pytest.raises(InvalidEvent) as refused:
            publish("traced", {}, traceparent="00-abc-def-01")
    assert str(refused.value) == (
        "outbox event 'traced': traceparent '00-abc-def-01' is not "
        "00-<32 hex>-<16 hex>-<2 hex> in lowercase with non-zero ids"
    )
    assert outbox_rows() == []


@pytest.mark.parametrize(
    "value, valid",
    [
        (TRACEPARENT, True),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", True),
        ("", False),  # publish() takes it as "none", but it is not a traceparent
        (None, False),
        (TRACEPARENT.encode(), False),
        (TRACEPARENT.upper(), False),
        (TRACEPARENT + "\n", False),
        (" " + TRACEPARENT, False),
        ("01" + TRACEPARENT[2:], False),  # only version 00
        ("00-" + "0" * 32 + TRACEPARENT[35:], False),  # all-zero trace id
        (TRACEPARENT[:36] + "0" * 16 + TRACEPARENT[52:], False),  # all-zero parent id
        (TRACEPARENT[:-1], False),
        (TRACEPARENT.replace("-", "_"), False),
        ("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", False),
    ],
)
def test_valid_traceparent(value, valid):
    assert valid_traceparent(value) is valid


# Contexts at the nesting limits, which are the Go package's: a value may
# hold values inside at most MAX_CONTEXT_DEPTH arrays and objects, bytes may
# open at most MAX_RAW_CONTEXT_DEPTH inside one another. These hold
# whatever Python's recursion limit: the deepest accepted ones are past
# what json.dumps() and json.loads() reach on Python 3.11 and 3.12.
VALUE_TOO_DEEP = "context holds a value inside more than 1,000 arrays and objects"
RAW_TOO_DEEP = "context nests more than 10,000 arrays and objects inside one another"
INVALID_JSON = "context is not valid JSON"


@pytest.mark.parametrize(
    "context, stored",
    [
        pytest.param(nest(1000, 1), "[" * 1000 + "1" + "]" * 1000, id="1 in 1000 lists"),
        pytest.param(nest(1000, None), "[" * 1000 + "null" + "]" * 1000, id="None in 1000 lists"),
        pytest.param(nest(1000, []), "[" * 1001 + "]" * 1001, id="1001 lists, the innermost empty"),
        pytest.param(nest(1000, {}), "[" * 1000 + "{}" + "]" * 1000, id="empty dict in 1000 lists"),
        pytest.param(nest(999, {"k": "v"}), "[" * 999 + '{"k":"v"}' + "]" * 999, id="str in 999 lists, 1 dict"),
        pytest.param(
            functools.reduce(lambda value, _: {"k": value}, range(1000), decimal.Decimal("1.5")),
            '{"k":' * 1000 + '"1.5"' + "}" * 1000,  # DjangoJSONEncoder's string
            id="Decimal in 1000 dicts",
        ),
        pytest.param(
            [nest(999, 1), "[[[[[" * 500],
            "[" + "[" * 999 + "1" + "]" * 999 + ',"' + "[[[[[" * 500 + '"]',
            id="brackets in a string",
        ),
        pytest.param(b"[" * 10000 + b"]" * 10000, None, id="bytes: 10000 arrays"),
        pytest.param(b" [" * 9999 + b'{"a":1}' + b"] " * 9999, None, id="bytes: 9999 arrays, 1 object"),
        pytest.param(b'{"a":' * 9999 + b"[]" + b"}" * 9999, None, id="bytes: 9999 objects, 1 array"),
    ],
)
def test_deepest_contexts_accepted(outbox_rows, context, stored):
    with transaction.atomic():
        publish("deep", context)
    if stored is None:
        stored = context.decode()  # bytes: stored as given
    assert [r["event_context"] for r in outbox_rows()] == [stored]


@pytest.mark.parametrize(
    "context, reason",
    [
        pytest.param(nest(1001, 1), VALUE_TOO_DEEP, id="1 in 1001 lists"),
        pytest.param(nest(1001, None), VALUE_TOO_DEEP, id="None in 1001 lists"),
        pytest.param(nest(1001, []), VALUE_TOO_DEEP, id="1002 lists, the innermost empty"),
        pytest.param(nest(1000, [1]), VALUE_TOO_DEEP, id="1 in 1001 lists, the innermost its own"),
        pytest.param(nest(1000, {"k": 1}), VALUE_TOO_DEEP, id="1 in 1000 lists, 1 dict"),
        pytest.param({"a": nest(1000, 1)}, VALUE_TOO_DEEP, id="1 in 1 dict, 1000 lists"),
        pytest.param(
            functools.reduce(lambda value, _: {"k": value}, range(1001), "v"), VALUE_TOO_DEEP, id="str in 1001 dicts"
        ),
        pytest.param(  # tuples are lists
            functools.reduce(lambda value, _: (value,), range(1001), 1), VALUE_TOO_DEEP, id="1 in 1001 tuples"
        ),
        pytest.param(nest(100_000, 1), VALUE_TOO_DEEP, id="1 in 100000 lists"),
        pytest.param(b"[" * 10001 + b"]" * 10001, RAW_TOO_DEEP, id="bytes: 10001 arrays"),
        pytest.param(b'{"a":' * 10000 + b"[]" + b"}" * 10000, RAW_TOO_DEEP, id="bytes: 10000 objects, 1 array"),
        pytest.param(b" [" * 10001 + b"] " * 10001, RAW_TOO_DEEP, id="bytes: 10001 arrays, spaced"),
        # Malformed text is refused as such before its depth is counted:
        # Go says "exceeded max depth" here, Python "not valid JSON".
        pytest.param(b"[" * 1_000_000, INVALID_JSON, id="bytes: 1000000 unclosed arrays"),
        # Brackets in a string are not nesting; this string is not closed.
        pytest.param(b'["' + b"[" * 20000, INVALID_JSON, id="bytes: brackets in a string"),
        pytest.param(b"[" * 5000 + b"]" * 4999, INVALID_JSON, id="bytes: 5000 arrays, 4999 closed"),
    ],
)
def test_first_too_deep_contexts_refused(outbox_rows, context, reason):
    with transaction.atomic():
        with pytest.raises(InvalidEvent) as refused:
            publish("deep", context)
    if reason == INVALID_JSON:  # and what is wrong, in words that depend on the Python
        assert refused.value.reason.startswith(reason)
    else:
        assert refused.value.reason == reason
    assert outbox_rows() == []


# Malformed bytes are refused as such before their depth is counted:
# counting first took quadratic time on an unclosed string of escaped
# quotes (8.8 s for these 42 KB when measured, hours for a megabyte),
# while the caller's transaction waited.
def test_malformed_bytes_are_not_measured_for_depth(outbox_rows, monkeypatch):
    measured = []
    nests_deeper = outbox._nests_deeper
    monkeypatch.setattr(outbox, "_nests_deeper", lambda *args, **kwargs: measured.append(args) or nests_deeper(*args, **kwargs))
    with transaction.atomic():
        with pytest.raises(InvalidEvent) as refused:
            publish("deep", b"[" * 10001 + b'"' + b'\\"' * 16_000)
        assert refused.value.reason.startswith(INVALID_JSON)
        assert measured == []
        publish("fine", b'{"a": [1]}')  # the transaction is still usable
    assert len(measured) == 1  # valid JSON is measured
    assert [r["event_type"] for r in outbox_rows()] == ["fine"]


# Values json.dumps() and json.loads() handle when they do not run out of
# recursion; outbox encodes and checks them without recursion when they
# do. Both ways must agree.
ENCODED_ALIKE = [
    None,
    True,
    "é\x00\n\"\\\u2028\U0001f600",
    -(10**30),
    -0.0,
    1e300,
    2.5e-300,
    [],
    (),
    {},
    [[], {}, ()],
    (1, (2, [3.5, "x"])),
    {"a": 1, 2: [True], 2.5: None, True: "t", False: "f", None: "n", -7: {}, "é": {"x": ()}},
    {
        "when": datetime.datetime(2024, 2, 29, 12, 30, 45, 123456, tzinfo=datetime.timezone.utc),
        "day": datetime.date(2024, 2, 29),
        "at": datetime.time(1, 2, 3),
        "took": datetime.timedelta(seconds=90),
        "amount": decimal.Decimal("19.90"),
        "id": uuid.UUID(int=1),
    },
    nest(50, {"k": [1, {"j": "v"}]}),
]


@pytest.mark.parametrize("value", ENCODED_ALIKE, ids=repr)
def test_iterative_encoding_is_json_dumps(value):
    encoder = outbox._encoder()
    assert outbox._dumps_iteratively(value, encoder) == encoder.encode(value)


@pytest.mark.parametrize(
    "value, error",
    [
        (float("nan"), ValueError),
        ([1, float("inf")], ValueError),
        ({float("-inf"): 1}, ValueError),
        ({(1, 2): 1}, TypeError),
        ([object()], TypeError),
        ({1, 2}, TypeError),
    ],
    ids=repr,
)
def test_iterative_encoding_refuses_what_json_dumps_refuses(value, error):
    encoder = outbox._encoder()
    with pytest.raises(error):
        encoder.encode(value)
    with pytest.raises(error):
        outbox._dumps_iteratively(value, encoder)


def test_iterative_encoding_refuses_a_cycle(outbox_rows):
    cycle = {"a": [1]}
    cycle["a"].append(cycle)
    with pytest.raises(ValueError, match="Circular reference detected"):
        outbox._dumps_iteratively(cycle, outbox._encoder())
    with transaction.atomic():
        with pytest.raises(InvalidEvent, match="context cannot be encoded as JSON: Circular reference detected"):
            publish("cycle", cycle)
    assert outbox_rows() == []


@pytest.mark.parametrize(
    "text",
    [
        "1", " -0.5e+3 ", "\t\r\n[]", "{}", '{"a":[1,{"b":null}],"c":"\\u00e9\\n\\"\\/"}', '"\x7f é"', '[true,false]',
        "", " ", "[", "]", "[1,]", "[,1]", '{"a"}', '{"a":}', '{"a":1,}', "{1:2}", '{"a" 1}', "[1 2]", "[1]]", "[}",
        "01", "1.", ".5", "-", "1e", "+1", "NaN", "Infinity", "-Infinity", "tru", "nul", '"\x01"', '"\\x"', '"\\u12"',
        '"a', "[1]x", "1 2", "\ufeff1", "\x0b1", "1\x0c", "[\u00a0]", "\u0661",
    ],
    ids=repr,
)
def test_iterative_json_check_is_json_loads(text):
    try:
        json.loads(text, parse_constant=outbox._no_constants)
        loads = True
    except (ValueError, InvalidEvent):
        loads = False
    assert (outbox._json_error(text) is None) is loads


def test_naive_event_time_is_refused_under_use_tz(outbox_rows, settings):
    settings.USE_TZ = True
    with transaction.atomic():
        with pytest.raises(InvalidEvent) as refused:
            publish("timed", {}, event_time=datetime.datetime(2024, 1, 15, 12, 0))
    assert refused.value.reason == (
        "event_time datetime.datetime(2024, 1, 15, 12, 0) is naive: with settings.USE_TZ = True "
        "it must be timezone-aware, e.g. django.utils.timezone.now()"
    )
    assert outbox_rows() == []


def test_event_time_offsets_postgresql_reads_are_kept_and_a_fractional_second_one_refused(outbox_rows):
    # An offset of whole seconds (a zone's local mean time, +00:19:32)
    # PostgreSQL reads; one with microseconds, which datetime.timezone
    # allows, it refused with a DataError that aborted the transaction.
    lmt = datetime.timezone(datetime.timedelta(minutes=19, seconds=32))
    odd = datetime.timezone(datetime.timedelta(hours=1, microseconds=5))
    with transaction.atomic():
        kept = publish("timed", {}, event_time=datetime.datetime(1900, 1, 1, 12, 0, tzinfo=lmt))
        with pytest.raises(InvalidEvent) as refused:
            publish("timed", {}, event_time=datetime.datetime(2024, 1, 1, 12, 0, tzinfo=odd))
        after = publish("timed", {}, event_time=datetime.datetime(2024, 1, 1, 12, 0, tzinfo=datetime.timezone.utc))
    assert refused.value.reason.endswith("has a UTC offset with a fraction of a second, which PostgreSQL cannot read")
    utc = datetime.timezone.utc
    assert {r["id"]: r["event_date_time"] for r in outbox_rows()} == {
        str(kept): datetime.datetime(1900, 1, 1, 11, 40, 28, tzinfo=utc),
        str(after): datetime.datetime(2024, 1, 1, 12, 0, tzinfo=utc),
    }


UTC = datetime.timezone.utc
NOON = datetime.datetime(2024, 1, 1, 12, 0)


# PostgreSQL reads a UTC offset of up to 15:59:59 either way; datetime
# takes one up to 23:59:59, and datetime.fromisoformat() or Django's
# parse_datetime() makes one from a client's "+18:00". Such a literal was a
# DataError that aborted the caller's transaction.
@pytest.mark.parametrize(
    "event_time, stored",
    [
        pytest.param(
            NOON.replace(tzinfo=datetime.timezone(datetime.timedelta(hours=15, minutes=59, seconds=59))),
            datetime.datetime(2023, 12, 31, 20, 0, 1, tzinfo=UTC),
            id="+15:59:59",
        ),
        pytest.param(
            NOON.replace(tzinfo=datetime.timezone(-datetime.timedelta(hours=15, minutes=59, seconds=59))),
            datetime.datetime(2024, 1, 2, 3, 59, 59, tzinfo=UTC),
            id="-15:59:59",
        ),
        pytest.param(NOON.replace(tzinfo=datetime.timezone(datetime.timedelta(hours=16))), None, id="+16:00"),
        pytest.param(NOON.replace(tzinfo=datetime.timezone(-datetime.timedelta(hours=16))), None, id="-16:00"),
        pytest.param(datetime.datetime.fromisoformat("2024-01-01T12:00:00+18:00"), None, id="+18:00 parsed"),
        pytest.param(
            NOON.replace(tzinfo=datetime.timezone(datetime.timedelta(hours=23, minutes=59, seconds=59))),
            None,
            id="+23:59:59",
        ),
    ],
)
def test_event_time_offset_of_16_hours_or_more_is_refused(outbox_rows, event_time, stored):
    with transaction.atomic():
        if stored is None:
            with pytest.raises(InvalidEvent) as refused:
                publish("timed", {}, event_time=event_time)
            assert refused.value.reason == (
                f"event_time {event_time!r} has a UTC offset of 16 hours or more, which PostgreSQL cannot read"
            )
            kept = None
        else:
            kept = publish("timed", {}, event_time=event_time)
        after = publish("after", {}, event_time=NOON.replace(tzinfo=UTC))  # the transaction is still usable
    want = {str(after): NOON.replace(tzinfo=UTC)}
    if kept is not None:
        want[str(kept)] = stored
    assert {r["id"]: r["event_date_time"] for r in outbox_rows()} == want


def test_naive_event_time_is_in_time_zone_without_use_tz(outbox_rows, settings):
    settings.USE_TZ = False
    settings.TIME_ZONE = "Europe/Paris"
    aware = datetime.datetime(2024, 7, 1, 8, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))
    with transaction.atomic():
        naive_id = publish("timed", {}, event_time=datetime.datetime(2024, 1, 15, 12, 0))  # CET, UTC+1
        summer_id = publish("timed", {}, event_time=datetime.datetime(2024, 7, 15, 12, 0))  # CEST, UTC+2
        aware_id = publish("timed", {}, event_time=aware)  # kept as it is
    utc = datetime.timezone.utc
    assert {r["id"]: r["event_date_time"] for r in outbox_rows()} == {
        str(naive_id): datetime.datetime(2024, 1, 15, 11, 0, tzinfo=utc),
        str(summer_id): datetime.datetime(2024, 7, 15, 10, 0, tzinfo=utc),
        str(aware_id): datetime.datetime(2024, 7, 1, 13, 0, tzinfo=utc),
    }


@pytest.mark.parametrize(
    "local",
    [
        datetime.datetime(2024, 3, 31, 2, 30),  # skipped: clocks went from 02:00 to 03:00
        datetime.datetime(2024, 10, 27, 2, 30),  # repeated: 02:30 summer time, then 02:30 winter time
    ],
)
def test_naive_event_time_at_a_dst_change_is_read_as_a_datetimefield(outbox_rows, settings, local):
    settings.USE_TZ = False
    settings.TIME_ZONE = "Europe/Paris"
    with transaction.atomic():
        publish("timed", {}, event_time=local)
        # The business row beside it: what Django sends for a
        # DateTimeField holding the same value, read by the same connection.
        sent = models.DateTimeField().get_db_prep_save(local, connection)
        with connection.cursor() as cursor:
            cursor.execute("CREATE TEMPORARY TABLE business (at timestamptz) ON COMMIT DROP")
            cursor.execute("INSERT INTO business VALUES (%s) RETURNING at AT TIME ZONE 'UTC'", [sent])
            business = cursor.fetchone()[0]
    # PostgreSQL reads both as winter time, UTC+1: 01:30 UTC.
    want = local.replace(hour=1)
    assert business == want
    assert [r["event_date_time"] for r in outbox_rows()] == [want.replace(tzinfo=datetime.timezone.utc)]


@pytest.mark.parametrize("nil", [uuid.UUID(int=0), "00000000-0000-0000-0000-000000000000"])
def test_nil_event_id_means_a_new_one(outbox_rows, nil):
    # As uuid.Nil in Go: no id, so one is generated.
    with transaction.atomic():
        got = publish("no_id", {}, event_id=nil)
    assert isinstance(got, uuid.UUID) and got.int != 0 and got.version == 4
    assert [r["id"] for r in outbox_rows()] == [str(got)]


def test_none_and_empty_mean_the_defaults(outbox_rows, settings):
    settings.CDC_ENVIRONMENT = "from-settings"
    with transaction.atomic():
        got = publish("defaults", {}, environment="", metadata_version=None, traceparent="", event_id=None)
    [row] = outbox_rows()
    assert (row["id"], row["environment"], row["metadata_version"], row["traceparent"]) == (
        str(got),
        "from-settings",
        1,
        None,
    )


class Kind(enum.Enum):
    USER_CREATED = "user_created"


# An event type or environment that is not a str (an Enum member, bytes) is
# refused saying so: it was reported as empty.
@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"event_type": Kind.USER_CREATED}, "event type <Kind.USER_CREATED: 'user_created'> must be a str"),
        ({"event_type": b"user_created"}, "event type b'user_created' must be a str"),
        ({"event_type": 7}, "event type 7 must be a str"),
        (
            {"environment": Kind.USER_CREATED},
            "environment (set settings.CDC_ENVIRONMENT or pass environment=) <Kind.USER_CREATED: 'user_created'> "
            "must be a str",
        ),
    ],
    ids=["Enum event type", "bytes event type", "int event type", "Enum environment"],
)
def test_text_that_is_not_a_str_is_refused_as_such(outbox_rows, kwargs, reason):
    args = {"event_type": "user_created", "context": {}, **kwargs}
    with transaction.atomic():
        with pytest.raises(InvalidEvent) as refused:
            publish(**args)
        with pytest.raises(InvalidEvent) as many:
            outbox.publish_many([args])
    assert refused.value.reason == reason
    assert many.value.reason == reason
    assert outbox_rows() == []


@pytest.mark.parametrize("environment", [None, ""])
def test_no_environment_anywhere_is_refused(outbox_rows, settings, environment):
    settings.CDC_ENVIRONMENT = ""
    with transaction.atomic():
        with pytest.raises(InvalidEvent) as refused:
            publish("nowhere", {}, environment=environment)
    assert refused.value.reason == "environment (set settings.CDC_ENVIRONMENT or pass environment=) is empty"
    assert outbox_rows() == []


def test_metadata_version_zero_is_refused(outbox_rows):
    with transaction.atomic():
        with pytest.raises(InvalidEvent) as refused:
            publish("versioned", {}, metadata_version=0)
    assert refused.value.reason == f"metadata_version 0 must be an int from 1 to {2**63 - 1}"
    assert outbox_rows() == []


@pytest.mark.parametrize("limit", ["1000", 1000.0, None, True, [1000]])
def test_context_size_limit_must_be_an_int(outbox_rows, settings, limit):
    # As read from os.environ without int(): named at the first publish.
    settings.CDC_OUTBOX_MAX_CONTEXT_BYTES = limit
    with transaction.atomic():
        with pytest.raises(ImproperlyConfigured) as refused:
            publish("limited", {})
        with pytest.raises(ImproperlyConfigured):
            outbox.publish_many([{"event_type": "limited", "context": {}}])
    assert str(refused.value) == (
        "settings.CDC_OUTBOX_MAX_CONTEXT_BYTES must be an int (a number of bytes; 0 for the default, "
        f"67108864; negative for no limit), not {type(limit).__name__} {limit!r}"
    )
    assert outbox_rows() == []


def test_negative_context_size_limit_means_no_limit(outbox_rows, settings, monkeypatch):
    # As a negative Publisher.MaxContextBytes in Go.
    monkeypatch.setattr(outbox, "DEFAULT_MAX_CONTEXT_BYTES", 10)
    settings.CDC_OUTBOX_MAX_CONTEXT_BYTES = -1
    with transaction.atomic():
        publish("big", {"k": "0123456789"})
        outbox.publish_many([{"event_type": "big", "context": b'"0123456789"'}])
    assert [r["event_context"] for r in outbox_rows()] == ['{"k":"0123456789"}', '"0123456789"']
