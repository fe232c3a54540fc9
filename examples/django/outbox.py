"""publish(), publish_many(): write events to the cdc outbox table, inside
the caller's transaction.

Copy this module into a Django project. The outbox table comes from
`cdc migrate`; this module only inserts into it, with the same rules as the
Go package github.com/eventcdc/cdc/outbox:

* event_type is required;
* context is any JSON-serialisable value (DjangoJSONEncoder: datetimes,
  UUIDs, Decimals...), or bytes holding JSON text, stored byte for byte.
  A str is a value like any other and becomes a JSON string: pass
  pre-encoded JSON as bytes;
* the environment defaults to settings.CDC_ENVIRONMENT;
* metadata_version defaults to 1, traceparent (W3C) to none, the event time
  to the transaction's now(), the id to a new UUID;
* bad input raises InvalidEvent before anything is sent to the database, so
  it never breaks the surrounding transaction.

publish_many() writes many events with a few multi-row INSERTs instead of
one round trip per event. It validates every event with publish()'s rules
before sending anything: one bad event and none is written.

Both refuse to run outside transaction.atomic(): in autocommit the events
would be committed on their own, whatever became of the business change.
"""

import collections
import collections.abc
import datetime
import json
import re
import uuid

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DEFAULT_DB_ALIAS, transaction

DEFAULT_MAX_CONTEXT_BYTES = 64 << 20
# outbox.metadata_version is a bigint: a larger value would fail the INSERT
# and abort the caller's transaction.
_MAX_BIGINT = (1 << 63) - 1

# publish_many() writes one INSERT per chunk of at most MAX_ROWS_PER_INSERT
# events and MAX_BYTES_PER_INSERT bytes of context (an event larger than that
# goes alone), so that tens of MB of context never make one giant statement
# (psycopg2 builds each statement as one string on the client) and the
# parameters stay far below the 65535 of psycopg 3's server-side binding.
MAX_ROWS_PER_INSERT = 1000
MAX_BYTES_PER_INSERT = 4 << 20

# What an event given to publish_many() may hold: publish()'s arguments.
_EVENT_KEYS = ("event_type", "context", "environment", "event_id", "event_time", "metadata_version", "traceparent")

_TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")

_INSERT = (
    "INSERT INTO outbox (id, event_type, event_date_time, environment, event_context, metadata_version, traceparent)"
    " VALUES "
)
# One row of the INSERT; a NULL time stands for now().
_VALUES = "(%s, %s, COALESCE(%s, now()), %s, %s::json, %s, %s)"


class InvalidEvent(ValueError):
    """The event was refused before touching the database.

    index is the event's position among those given to publish_many() (None
    from publish()), event_type its event_type as given, reason what was
    wrong with it.
    """

    index = None
    event_type = None
    reason = None


class TransactionRequired(RuntimeError):
    """publish() or publish_many() was called outside transaction.atomic()."""


def _refused(reason, event_type, index=None):
    where = repr(event_type) if index is None else f"{index} (type {event_type!r})"
    error = InvalidEvent(f"outbox event {where}: {reason}")
    error.index, error.event_type, error.reason = index, event_type, str(reason)
    return error


def _no_constants(name):
    raise InvalidEvent(f"context is not valid JSON: {name} is not a JSON value")


def _syntax_only(text):
    return 0


# Python's json module recurses once per level of nesting, up to the
# interpreter's recursion limit (about 1,000).
_TOO_DEEP = "context nests deeper than Python's json module can check (about 1,000 levels)"


def _encode_context(context, limit):
    if context is None:
        raise InvalidEvent("context is None (use {} for an empty object)")
    if isinstance(context, (bytes, bytearray, memoryview)):
        raw = bytes(context)
        if limit > 0 and len(raw) > limit:
            raise InvalidEvent(f"context too large: {len(raw)} bytes, the limit is {limit}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidEvent(f"context is not valid UTF-8: {e}") from None
        try:
            # Numbers are checked for syntax only, as PostgreSQL does: a
            # 5,000-digit integer is valid JSON, past Python's int limit.
            json.loads(text, parse_constant=_no_constants, parse_int=_syntax_only)
        except json.JSONDecodeError as e:
            raise InvalidEvent(f"context is not valid JSON: {e}") from None
        except RecursionError:
            raise InvalidEvent(_TOO_DEEP) from None
        if "\x00" in text:
            # PostgreSQL text cannot hold NUL; valid JSON only has it escaped.
            raise InvalidEvent("context contains a NUL byte")
        return text, len(raw)
    try:
        text = json.dumps(
            context, cls=DjangoJSONEncoder, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
    except (TypeError, ValueError) as e:
        raise InvalidEvent(f"context cannot be encoded as JSON: {e}") from None
    except RecursionError:
        raise InvalidEvent(_TOO_DEEP) from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:  # a lone surrogate, e.g. "\ud800"
        raise InvalidEvent(f"context is not valid UTF-8: {e}") from None
    if limit > 0 and size > limit:
        raise InvalidEvent(f"context too large: {size} bytes, the limit is {limit}")
    return text, size


def _check_text(what, value):
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent(f"{what} is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. "\ud800"
        raise InvalidEvent(f"{what} {value!r} is not valid UTF-8") from None
    if "\x00" in value:
        raise InvalidEvent(f"{what} {value!r} contains a NUL character")


def _context_limit():
    # 0 (or unset) is the default, as Publisher.MaxContextBytes is in Go.
    return getattr(settings, "CDC_OUTBOX_MAX_CONTEXT_BYTES", 0) or DEFAULT_MAX_CONTEXT_BYTES


# A validated event: its id, the parameters of its row in _VALUES order and
# the size of its context in bytes.
_Row = collections.namedtuple("_Row", "id params size")


def _prepare(event_type, context, environment, event_id, event_time, metadata_version, traceparent, limit):
    """Validate one event and fill in its defaults, touching no database.

    Raises InvalidEvent saying what is wrong, without naming the event: the
    callers do that.
    """
    _check_text("event type", event_type)
    environment = environment if environment is not None else getattr(settings, "CDC_ENVIRONMENT", "")
    _check_text("environment (set settings.CDC_ENVIRONMENT or pass environment=)", environment)
    if (
        isinstance(metadata_version, bool)
        or not isinstance(metadata_version, int)
        or not 1 <= metadata_version <= _MAX_BIGINT
    ):
        raise InvalidEvent(f"metadata_version {metadata_version!r} must be an int from 1 to {_MAX_BIGINT}")
    if traceparent is not None and not (isinstance(traceparent, str) and _TRACEPARENT.fullmatch(traceparent)):
        raise InvalidEvent(
            f"traceparent {traceparent!r} is not 00-<32 hex>-<16 hex>-<2 hex> in lowercase with non-zero ids"
        )
    if event_time is not None and (
        not isinstance(event_time, datetime.datetime) or event_time.utcoffset() is None
    ):
        raise InvalidEvent(f"event_time {event_time!r} must be a timezone-aware datetime")
    if event_id is None:
        event_id = uuid.uuid4()
    else:
        try:
            event_id = uuid.UUID(str(event_id))
        except ValueError as e:
            raise InvalidEvent(f"event_id: {e}") from None
    text, size = _encode_context(context, limit)
    return _Row(
        event_id, [str(event_id), event_type, event_time, environment, text, metadata_version, traceparent], size
    )


def _require_atomic(connection, name):
    if not connection.in_atomic_block:
        raise TransactionRequired(
            f"{name}() must run inside transaction.atomic(), in the transaction of the change it reports"
        )


def _insert(connection, rows):
    """Write rows with one INSERT statement."""
    with connection.cursor() as cursor:
        cursor.execute(_INSERT + ", ".join([_VALUES] * len(rows)), [p for row in rows for p in row.params])


def publish(
    event_type,
    context,
    *,
    environment=None,
    event_id=None,
    event_time=None,
    metadata_version=1,
    traceparent=None,
    using=DEFAULT_DB_ALIAS,
):
    """Write one event to the outbox in the current transaction; return its id.

    Must run inside transaction.atomic() on the `using` database.
    """
    try:
        row = _prepare(
            event_type,
            context,
            environment,
            event_id,
            event_time,
            metadata_version,
            traceparent,
            _context_limit(),
        )
    except InvalidEvent as e:
        raise _refused(e, event_type) from None

    connection = transaction.get_connection(using)
    _require_atomic(connection, "publish")
    _insert(connection, [row])
    return row.id


def publish_many(events, *, environment=None, using=DEFAULT_DB_ALIAS):
    """Write events to the outbox in the current transaction, in order;
    return their ids, in the same order.

    Each event is a mapping of publish()'s arguments: "event_type" and
    "context" are required; "environment", "event_id", "event_time",
    "metadata_version" and "traceparent" are optional, with publish()'s
    defaults, except that an event without an environment takes this call's
    `environment`, and without one either settings.CDC_ENVIRONMENT.

    Every event is validated first, with publish()'s rules, and two events
    may not share an event_id: the first bad event raises InvalidEvent, whose
    index says which one it is, and nothing is sent to the database. Then
    the events are written with one INSERT per chunk of at most
    MAX_ROWS_PER_INSERT events and MAX_BYTES_PER_INSERT bytes of context.

    Must run inside transaction.atomic() on the `using` database, even with
    no events; no events write nothing.
    """
    if isinstance(events, (collections.abc.Mapping, str, bytes)):
        raise TypeError(f"publish_many() takes an iterable of events, not a {type(events).__name__}")
    limit = _context_limit()
    rows = []
    first_of = {}  # event id -> index of the event that has it
    for index, event in enumerate(events):
        is_mapping = isinstance(event, collections.abc.Mapping)
        event_type = event.get("event_type") if is_mapping else None
        try:
            if not is_mapping:
                raise InvalidEvent(f"an event is a mapping of publish()'s arguments, not a {type(event).__name__}")
            unknown = [key for key in event if key not in _EVENT_KEYS]
            if unknown:
                raise InvalidEvent(
                    f"unknown key {unknown[0]!r}: an event takes {', '.join(_EVENT_KEYS)}"
                )
            for key in ("event_type", "context"):
                if key not in event:
                    raise InvalidEvent(f"{key} is missing")
            row = _prepare(
                event_type,
                event["context"],
                event.get("environment") if event.get("environment") is not None else environment,
                event.get("event_id"),
                event.get("event_time"),
                event.get("metadata_version", 1),
                event.get("traceparent"),
                limit,
            )
            first = first_of.setdefault(row.id, index)
            if first != index:
                # The INSERT would fail on the primary key and abort the
                # caller's transaction.
                raise InvalidEvent(f"event_id {row.id} is already event {first}'s")
        except InvalidEvent as e:
            raise _refused(e, event_type, index) from None
        rows.append(row)

    connection = transaction.get_connection(using)
    _require_atomic(connection, "publish_many")
    for chunk in _chunks(rows):
        _insert(connection, chunk)
    return [row.id for row in rows]


def _chunks(rows):
    """Split rows, in order, into the chunks publish_many() inserts."""
    chunk, size = [], 0
    for row in rows:
        if chunk and (len(chunk) >= MAX_ROWS_PER_INSERT or size + row.size > MAX_BYTES_PER_INSERT):
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += row.size
    if chunk:
        yield chunk
