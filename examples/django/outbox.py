"""publish(), publish_many(): write events to the cdc outbox table, inside
the caller's transaction.

Copy this module into a Django project. The outbox table comes from
`cdc migrate`; this module only inserts into it, with the same rules as the
Go package github.com/eventcdc/cdc/outbox:

* event_type is required;
* context is any JSON-serialisable value (DjangoJSONEncoder: datetimes,
  UUIDs, Decimals...), or bytes holding JSON text, stored byte for byte.
  A str is a value like any other and becomes a JSON string: pass
  pre-encoded JSON as bytes. A value is refused when something in it is
  inside more than 1,000 arrays and objects (MAX_CONTEXT_DEPTH), bytes when
  they open more than 10,000 inside one another (MAX_RAW_CONTEXT_DEPTH):
  the Go package's limits, whatever Python's recursion limit;
* the environment defaults to settings.CDC_ENVIRONMENT (None or "" mean
  the default);
* metadata_version defaults to 1 (None too; unlike Go, where 0 is the
  unset value, 0 is refused), traceparent (W3C) to none (None or "" store
  NULL; a malformed value is refused, so check an untrusted header with
  valid_traceparent() first), the event time to the transaction's now(),
  the id to a new UUID (as does the nil UUID);
* event_time must be timezone-aware when settings.USE_TZ is True; with
  USE_TZ False a naive one is read by PostgreSQL in settings.TIME_ZONE,
  exactly as a DateTimeField holding it is (at a DST change too);
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
import itertools
import json
import math
import re
import uuid

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DEFAULT_DB_ALIAS, transaction

DEFAULT_MAX_CONTEXT_BYTES = 64 << 20
# outbox.metadata_version is a bigint: a larger value would fail the INSERT
# and abort the caller's transaction.
_MAX_BIGINT = (1 << 63) - 1
# PostgreSQL reads a UTC offset of at most 15:59:59 either way in a
# timestamptz literal; datetime.timezone takes one up to 23:59:59.
_MAX_UTC_OFFSET = datetime.timedelta(hours=15, minutes=59, seconds=59)

# The Go package's nesting limits, counted here without recursion, so that
# they hold whatever Python's version and recursion limit.
#
# A context given as a value is refused when some value in it (an array, an
# object, a string, a number, null) is inside more than MAX_CONTEXT_DEPTH
# arrays and objects: the context itself is inside none, an element or a
# member one more than its array or object (Go walks the value with this
# limit, maxUTF8Depth). So 1,000 lists around a number pass, 1,001 do not;
# 1,001 lists inside one another pass when the innermost is empty.
#
# Pre-encoded JSON (bytes) is refused when it opens more than
# MAX_RAW_CONTEXT_DEPTH arrays and objects inside one another, whatever is
# in the innermost (Go checks it with encoding/json's json.Valid).
MAX_CONTEXT_DEPTH = 1000
MAX_RAW_CONTEXT_DEPTH = 10000

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


def valid_traceparent(value):
    """Whether value is a W3C trace context traceparent of version 00:
    00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, lowercase, with
    neither id all zeros; as Go's outbox.ValidTraceparent.

    publish() refuses a malformed traceparent. An application passing on an
    incoming header it does not control checks it here first and passes ""
    (no traceparent) when it is not valid, so that a bad header never blocks
    the event.
    """
    return isinstance(value, str) and _TRACEPARENT.fullmatch(value) is not None


def _refused(reason, event_type, index=None):
    where = repr(event_type) if index is None else f"{index} (type {event_type!r})"
    error = InvalidEvent(f"outbox event {where}: {reason}")
    error.index, error.event_type, error.reason = index, event_type, str(reason)
    return error


def _no_constants(name):
    raise InvalidEvent(f"context is not valid JSON: {name} is not a JSON value")


def _syntax_only(text):
    return 0


# _nests_deeper() reduces JSON text to its shape: its brackets, and an x
# for each run of anything else (strings, which may hold brackets, numbers,
# commas...) between two of them.
_NOT_A_BRACKET = re.compile(r'(?:[^"\[\]{}]+|"[^"\\]*(?:\\.[^"\\]*)*")+', re.DOTALL)
_DEPTH_CHANGE = {"[": 1, "{": 1, "]": -1, "}": -1, "x": 0}.__getitem__


def _nests_deeper(text, limit, values):
    """Whether JSON text nests deeper than limit, by the Go package's rules.

    values=False, pre-encoded JSON: more than limit arrays and objects are
    open inside one another somewhere. values=True, the encoding of a
    value: some value is inside more than limit arrays and objects, that
    is, more than limit + 1 are open somewhere, or limit + 1 are around
    something else than another array or object. Counted without recursion
    (and without a Python loop over the text).
    """
    if text.count("[") + text.count("{") <= limit:
        return False  # not that many brackets at all, in strings or not
    shape = _NOT_A_BRACKET.sub("x", text)
    if '"' in shape:
        return False  # an unterminated string: not JSON, refused as such
    deepest = max(itertools.accumulate(map(_DEPTH_CHANGE, shape)))
    if not values or deepest != limit + 1:
        return deepest > (limit + 1 if values else limit)
    # limit + 1 arrays or objects open: only an empty one may be innermost,
    # no value may be inside them.
    depths = itertools.accumulate(map(_DEPTH_CHANGE, shape))
    return max(itertools.compress(depths, map("x".__eq__, shape)), default=0) > limit


# One JSON token after optional whitespace, for _json_error().
_JSON_TOKEN = re.compile(
    r"""[ \t\n\r]*(?:
        (?P<open>[\[{])
      | (?P<close>[\]}])
      | (?P<comma>,)
      | (?P<colon>:)
      | (?P<string>"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*")
      | (?P<scalar>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null)
    )""",
    re.VERBOSE,
)
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _json_error(text):
    """None when text is one JSON value as json.loads() judges it (strict,
    NaN and Infinity refused), else where it goes wrong: checked without
    recursion, for JSON nested deeper than json.loads() goes here."""
    closers = []  # the closing bracket of each array or object open
    # What may come next: "value"; "first" (a value or "]"); "key"; "first
    # key" (a key or "}"); "colon"; "next" ("," or the closing bracket); "end".
    expect = "value"
    pos = 0
    while True:
        m = _JSON_TOKEN.match(text, pos)
        if m is None:
            pos = _JSON_SPACE.match(text, pos).end()
            return None if expect == "end" and pos == len(text) else pos
        pos, kind, token = m.end(), m.lastgroup, m.group(m.lastgroup)
        if kind == "open":
            if expect not in ("value", "first"):
                return m.start(kind)
            closers.append("]" if token == "[" else "}")
            expect = "first" if token == "[" else "first key"
        elif kind == "close":
            if expect not in ("first", "first key", "next") or closers[-1] != token:
                return m.start(kind)
            closers.pop()
            expect = "next" if closers else "end"
        elif kind == "comma":
            if expect != "next":
                return m.start(kind)
            expect = "value" if closers[-1] == "]" else "key"
        elif kind == "colon":
            if expect != "colon":
                return m.start(kind)
            expect = "value"
        elif kind == "string" and expect in ("key", "first key"):
            expect = "colon"
        elif expect in ("value", "first"):  # a string or a scalar
            expect = "next" if closers else "end"
        else:
            return m.start(kind)


def _float_json(f):
    if not math.isfinite(f):
        raise ValueError(f"Out of range float values are not JSON compliant: {f!r}")
    return float.__repr__(f)


def _key_json(key):
    """A dict key as json.dumps() writes it."""
    if isinstance(key, str):
        text = key
    elif isinstance(key, float):
        text = _float_json(key)
    elif key is True or key is False or key is None:
        text = {True: "true", False: "false", None: "null"}[key]
    elif isinstance(key, int):
        text = int.__repr__(key)
    else:
        raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")
    return json.encoder.encode_basestring(text)


_DONE = object()


def _dumps_iteratively(value, encoder):
    """encoder.encode(value) without recursion, for a value nested deeper
    than this interpreter lets json.dumps() go: the same text, or the same
    TypeError or ValueError. Only for an encoder made as _encode_context()
    makes it (ensure_ascii=False, allow_nan=False, compact separators)."""
    out = []
    open_ids = set()  # the lists and dicts being written: meeting one again is a cycle
    stack = []  # per list or dict being written: [its items, closing bracket, id, is a dict, first item]
    pending = value
    while True:
        if pending is not _DONE:
            o, pending, defaulted = pending, _DONE, set()
            while True:
                if o is None or o is True or o is False:
                    out.append({None: "null", True: "true", False: "false"}[o])
                elif isinstance(o, str):
                    out.append(json.encoder.encode_basestring(o))
                elif isinstance(o, int):
                    out.append(int.__repr__(o))
                elif isinstance(o, float):
                    out.append(_float_json(o))
                elif isinstance(o, (list, tuple, dict)):
                    is_dict = isinstance(o, dict)
                    if not o:
                        out.append("{}" if is_dict else "[]")
                    else:
                        if id(o) in open_ids:
                            raise ValueError("Circular reference detected")
                        open_ids.add(id(o))
                        out.append("{" if is_dict else "[")
                        stack.append([iter(o.items() if is_dict else o), "}" if is_dict else "]", id(o), is_dict, True])
                else:
                    # What the encoder makes of it (DjangoJSONEncoder: a
                    # string), or its TypeError.
                    if id(o) in defaulted:
                        raise ValueError("Circular reference detected")
                    defaulted.add(id(o))
                    o = encoder.default(o)
                    continue
                break
        if not stack:
            return "".join(out)
        frame = stack[-1]
        item = next(frame[0], _DONE)
        if item is _DONE:
            out.append(frame[1])
            open_ids.discard(frame[2])
            stack.pop()
            continue
        if not frame[4]:
            out.append(",")
        frame[4] = False
        if frame[3]:
            key, item = item
            out.append(_key_json(key))
            out.append(":")
        pending = item


def _encoder():
    return DjangoJSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


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
            # Deeper than json.loads() goes here, not deeper than the limit.
            at = _json_error(text)
            if at is not None:
                raise InvalidEvent(f"context is not valid JSON (at char {at})") from None
        # Only once the text is known to be JSON: the shape's pattern reads
        # an unterminated string from each of its quotes to the end, which
        # on malformed text of many escaped quotes takes quadratic time.
        if _nests_deeper(text, MAX_RAW_CONTEXT_DEPTH, values=False):
            raise InvalidEvent(
                f"context nests more than {MAX_RAW_CONTEXT_DEPTH:,} arrays and objects inside one another"
            )
        if "\x00" in text:
            # PostgreSQL text cannot hold NUL; valid JSON only has it escaped.
            raise InvalidEvent("context contains a NUL byte")
        return text, len(raw)
    encoder = _encoder()
    try:
        try:
            text = encoder.encode(context)
        except RecursionError:
            # Deeper than json.dumps() goes here: the limit is checked below.
            text = _dumps_iteratively(context, encoder)
    except (TypeError, ValueError) as e:
        raise InvalidEvent(f"context cannot be encoded as JSON: {e}") from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:  # a lone surrogate, e.g. "\ud800"
        raise InvalidEvent(f"context is not valid UTF-8: {e}") from None
    if limit > 0 and size > limit:
        raise InvalidEvent(f"context too large: {size} bytes, the limit is {limit}")
    if _nests_deeper(text, MAX_CONTEXT_DEPTH, values=True):
        raise InvalidEvent(f"context holds a value inside more than {MAX_CONTEXT_DEPTH:,} arrays and objects")
    return text, size


def _check_text(what, value):
    if value is None or isinstance(value, str) and not value.strip():
        raise InvalidEvent(f"{what} is empty")
    if not isinstance(value, str):
        # An Enum member or bytes is not empty: say what it is.
        raise InvalidEvent(f"{what} {value!r} must be a str")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. "\ud800"
        raise InvalidEvent(f"{what} {value!r} is not valid UTF-8") from None
    if "\x00" in value:
        raise InvalidEvent(f"{what} {value!r} contains a NUL character")


def _context_limit():
    """settings.CDC_OUTBOX_MAX_CONTEXT_BYTES, as Publisher.MaxContextBytes in
    Go: 0 (or unset) means DEFAULT_MAX_CONTEXT_BYTES, a negative value no
    limit of ours (PostgreSQL still refuses a value over 1 GB)."""
    limit = getattr(settings, "CDC_OUTBOX_MAX_CONTEXT_BYTES", 0)
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ImproperlyConfigured(
            f"settings.CDC_OUTBOX_MAX_CONTEXT_BYTES must be an int (a number of bytes; 0 for the default, "
            f"{DEFAULT_MAX_CONTEXT_BYTES}; negative for no limit), not {type(limit).__name__} {limit!r}"
        )
    return limit or DEFAULT_MAX_CONTEXT_BYTES


def _event_time(event_time):
    """event_time as it goes to the database, or None for the transaction's
    now(). A naive one (USE_TZ = False) goes as it is: PostgreSQL reads it
    in the connection's time zone, which Django sets to TIME_ZONE then,
    exactly as it reads the same value in a DateTimeField."""
    if event_time is None:
        return None
    if not isinstance(event_time, datetime.datetime):
        raise InvalidEvent(f"event_time {event_time!r} must be a datetime")
    offset = event_time.utcoffset()
    if offset is not None:
        # datetime.timezone takes an offset with microseconds (Python
        # 3.7+); psycopg2 writes it as it is, and PostgreSQL refuses that
        # literal, aborting the caller's transaction.
        if offset.microseconds:
            raise InvalidEvent(
                f"event_time {event_time!r} has a UTC offset with a fraction of a second, which PostgreSQL cannot read"
            )
        # Likewise an offset of 16 hours or more, which no zone has but
        # datetime.fromisoformat() reads from a client's "+18:00".
        if abs(offset) > _MAX_UTC_OFFSET:
            raise InvalidEvent(
                f"event_time {event_time!r} has a UTC offset of 16 hours or more, which PostgreSQL cannot read"
            )
        return event_time
    if settings.USE_TZ:
        raise InvalidEvent(
            f"event_time {event_time!r} is naive: with settings.USE_TZ = True it must be timezone-aware, "
            "e.g. django.utils.timezone.now()"
        )
    # Not made aware here: zoneinfo (Django 4+) takes the earlier of a
    # repeated time, PostgreSQL the later one, and pytz (Django 3.2)
    # refuses both a repeated and a skipped time; a business row's
    # DateTimeField and its event would then disagree by an hour.
    return event_time


def _is_unset(value):
    return value is None or (isinstance(value, str) and value == "")


# A validated event: its id, the parameters of its row in _VALUES order and
# the size of its context in bytes.
_Row = collections.namedtuple("_Row", "id params size")


def _prepare(
    event_type, context, environment, event_id, event_time, metadata_version, traceparent, limit, default_environment=None
):
    """Validate one event and fill in its defaults, touching no database.

    None means the default for every optional argument; so does "" for the
    environment (the next one of environment, default_environment and
    settings.CDC_ENVIRONMENT) and the traceparent (NULL), as the Go
    package's empty strings do.

    Raises InvalidEvent saying what is wrong, without naming the event: the
    callers do that.
    """
    _check_text("event type", event_type)
    for environment in (environment, default_environment, getattr(settings, "CDC_ENVIRONMENT", "")):
        if not _is_unset(environment):
            break
    _check_text("environment (set settings.CDC_ENVIRONMENT or pass environment=)", environment)
    if metadata_version is None:
        metadata_version = 1
    if (
        isinstance(metadata_version, bool)
        or not isinstance(metadata_version, int)
        or not 1 <= metadata_version <= _MAX_BIGINT
    ):
        raise InvalidEvent(f"metadata_version {metadata_version!r} must be an int from 1 to {_MAX_BIGINT}")
    if _is_unset(traceparent):
        traceparent = None
    elif not valid_traceparent(traceparent):
        raise InvalidEvent(
            f"traceparent {traceparent!r} is not 00-<32 hex>-<16 hex>-<2 hex> in lowercase with non-zero ids"
        )
    event_time = _event_time(event_time)
    if event_id is not None:
        try:
            event_id = uuid.UUID(str(event_id))
        except ValueError as e:
            raise InvalidEvent(f"event_id: {e}") from None
    if event_id is None or event_id.int == 0:
        # The nil UUID is no id, as uuid.Nil in Go: a new one.
        event_id = uuid.uuid4()
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

    None means the default for every keyword argument; "" does too for
    environment (settings.CDC_ENVIRONMENT) and traceparent (none).

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
    defaults (a missing key is as None), except that an event without an
    environment (None or "") takes this call's `environment`, and without
    one either settings.CDC_ENVIRONMENT.

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
                event.get("environment"),
                event.get("event_id"),
                event.get("event_time"),
                event.get("metadata_version"),
                event.get("traceparent"),
                limit,
                default_environment=environment,
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
