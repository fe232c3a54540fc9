package outbox

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// row is a validated event, ready to be written.
type row struct {
	id          uuid.UUID
	typ         string
	time        time.Time // zero: the database's now()
	env         string
	context     []byte
	version     int64
	traceparent string // empty: NULL
}

// prepare validates every event and fills in the defaults. It touches no
// database, so a bad event is reported before anything is written.

// PostgreSQL's timestamptz range: from Julian day 0, 24 November 4714 BC
// (year -4713 in Go's numbering), up to the year 294277.
var (
	minTimestamptz = time.Date(-4713, 11, 24, 0, 0, 0, 0, time.UTC)
	endTimestamptz = time.Date(294277, 1, 1, 0, 0, 0, 0, time.UTC)
)

func (p Publisher) prepare(events []Event) ([]row, error) {
	limit := p.MaxContextBytes
	if limit == 0 {
		limit = DefaultMaxContextBytes
	}
	rows := make([]row, len(events))
	var firstOf map[uuid.UUID]int // explicit ids: generated ones are unique
	for i, ev := range events {
		r, err := p.prepareOne(ev, limit)
		if err != nil {
			return nil, &EventError{Index: i, Type: ev.Type, Err: err}
		}
		if ev.ID != uuid.Nil {
			if firstOf == nil {
				firstOf = map[uuid.UUID]int{}
			}
			if first, seen := firstOf[ev.ID]; seen {
				// The INSERT would fail on the primary key and abort the
				// caller's transaction.
				return nil, &EventError{Index: i, Type: ev.Type, Err: fmt.Errorf("%w: %s is already event %d's", ErrDuplicateID, ev.ID, first)}
			}
			firstOf[ev.ID] = i
		}
		rows[i] = r
	}
	return rows, nil
}

func (p Publisher) prepareOne(ev Event, limit int) (row, error) {
	r := row{id: ev.ID, typ: ev.Type, time: ev.Time, env: ev.Environment,
		version: ev.MetadataVersion, traceparent: ev.Traceparent}
	if err := checkText("event type", r.typ, ErrInvalidType); err != nil {
		return row{}, err
	}
	if r.env == "" {
		r.env = p.Environment
	}
	if r.env == "" {
		return row{}, fmt.Errorf("%w: environment is empty: set Event.Environment or Publisher.Environment", ErrInvalidEnvironment)
	}
	if err := checkText("environment", r.env, ErrInvalidEnvironment); err != nil {
		return row{}, err
	}
	switch {
	case r.version == 0:
		r.version = 1
	case r.version < 1:
		return row{}, fmt.Errorf("%w: %d is below 1 (0 means the default, 1)", ErrInvalidMetadataVersion, r.version)
	}
	if r.traceparent != "" && !ValidTraceparent(r.traceparent) {
		return row{}, fmt.Errorf("%w: %q is not 00-<32 hex>-<16 hex>-<2 hex> in lowercase with non-zero ids", ErrInvalidTraceparent, clip(r.traceparent))
	}
	if !r.time.IsZero() {
		// PostgreSQL's timestamptz range; outside it the INSERT would fail
		// and abort the caller's transaction.
		if r.time.Before(minTimestamptz) || !r.time.Before(endTimestamptz) {
			return row{}, fmt.Errorf("%w: %s is outside PostgreSQL's timestamptz range", ErrInvalidTime, r.time)
		}
	}
	ctx, err := encodeContext(ev.Context, limit)
	if err != nil {
		return row{}, err
	}
	r.context = ctx
	if r.id == uuid.Nil {
		// UUIDv7 is time-ordered, so new ids land at the end of the primary
		// key index instead of all over it.
		if r.id, err = uuid.NewV7(); err != nil {
			return row{}, fmt.Errorf("generate event id: %w", err)
		}
	}
	return r, nil
}

// Types whose JSON encoding/json takes from the type itself: a
// json.Marshaler's output is copied as it is (and checked as bytes after
// encoding); an encoding.TextMarshaler's is written as a JSON string,
// whose invalid UTF-8 encoding/json would replace.
var (
	jsonMarshalerType = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// maxUTF8Depth bounds the walk of checkUTF8, in levels of JSON arrays
// and objects; encoding/json has already refused a cycle by then. A
// context nested deeper is refused: the walk could not vouch for it.
const maxUTF8Depth = 1000

var (
	errBadUTF8  = errors.New("holds a string or map key that is not valid UTF-8, whose bytes encoding/json would replace (two such keys would become one)")
	errTooDeep  = fmt.Errorf("nests deeper than %d levels", maxUTF8Depth)
	errBadText  = errors.New("holds a value whose MarshalText returns invalid UTF-8, which encoding/json would replace")
	errTextFail = errors.New("holds a value whose MarshalText fails")
)

// checkUTF8 reports whether v holds, where encoding/json writes text as a
// JSON string (a string value, a map key, an exported struct field, a
// TextMarshaler's output), text that is not valid UTF-8: the encoder
// would replace each bad byte with U+FFFD, altering the event, and two
// map keys could become one. json.Marshalers (json.RawMessage among them)
// are not looked into: their bytes are copied, and checked after encoding.
func checkUTF8(v reflect.Value, depth int) error {
	if !v.IsValid() {
		return nil
	}
	if depth > maxUTF8Depth {
		return errTooDeep
	}
	// An interface holds the value encoding/json writes, with its own
	// type's methods; nil, in an interface or a pointer, is null.
	switch v.Kind() {
	case reflect.Interface, reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		if v.Kind() == reflect.Interface {
			return checkUTF8(v.Elem(), depth)
		}
	}
	t := v.Type()
	if t.Implements(jsonMarshalerType) || v.CanAddr() && reflect.PointerTo(t).Implements(jsonMarshalerType) {
		return nil
	}
	if t.Implements(textMarshalerType) || v.CanAddr() && reflect.PointerTo(t).Implements(textMarshalerType) {
		return checkMarshaledText(v)
	}
	switch v.Kind() {
	case reflect.String:
		if !utf8.ValidString(v.String()) {
			return errBadUTF8
		}
	case reflect.Pointer:
		// Not a level of the JSON: depth counts arrays and objects. A
		// pointer cycle never gets here: encoding/json refused it.
		return checkUTF8(v.Elem(), depth)
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			if err := checkKey(it.Key()); err != nil {
				return err
			}
			if err := checkUTF8(it.Value(), depth+1); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return nil // []byte is written as base64
		}
		for i := range v.Len() {
			if err := checkUTF8(v.Index(i), depth+1); err != nil {
				return err
			}
		}
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			// As encoding/json: an unexported field is skipped, unless it
			// embeds a struct, whose exported fields are promoted.
			if !f.IsExported() && (!f.Anonymous || !embedsStruct(f.Type)) || f.Tag.Get("json") == "-" {
				continue
			}
			if err := checkUTF8(v.Field(i), depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// embedsStruct says whether an embedded field of type t is a struct, or a
// pointer to one.
func embedsStruct(t reflect.Type) bool {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct
}

// checkKey checks a map key as encoding/json writes it: a key of a string
// kind as the string, whatever methods its type has; any other through
// its MarshalText; integers as digits.
func checkKey(k reflect.Value) error {
	if k.Kind() == reflect.String {
		if !utf8.ValidString(k.String()) {
			return errBadUTF8
		}
		return nil
	}
	if k.Type().Implements(textMarshalerType) {
		return checkMarshaledText(k)
	}
	return nil
}

// checkMarshaledText checks what v's MarshalText returns (through a
// pointer when only *T has the method); a nil pointer encodes as null.
func checkMarshaledText(v reflect.Value) error {
	if (v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface) && v.IsNil() || !v.CanInterface() {
		return nil
	}
	m, ok := v.Interface().(encoding.TextMarshaler)
	if !ok && v.CanAddr() {
		m, ok = v.Addr().Interface().(encoding.TextMarshaler)
	}
	if !ok {
		return nil
	}
	b, err := m.MarshalText()
	if err != nil {
		return errTextFail // encoding/json has refused the context already
	}
	if !utf8.Valid(b) {
		return errBadText
	}
	return nil
}

// encodeContext returns the JSON text stored in event_context.
func encodeContext(v any, limit int) ([]byte, error) {
	var b []byte
	switch c := v.(type) {
	case nil:
		return nil, fmt.Errorf("%w: context is nil (use json.RawMessage(`{}`) for an empty object)", ErrInvalidContext)
	case json.RawMessage:
		b = c
	case []byte:
		b = c
	default:
		if rv := reflect.ValueOf(v); (rv.Kind() == reflect.Pointer || rv.Kind() == reflect.Map || rv.Kind() == reflect.Slice) && rv.IsNil() {
			return nil, fmt.Errorf("%w: context is a nil %T, which would be stored as null", ErrInvalidContext, v)
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			return nil, fmt.Errorf("%w: cannot marshal %T: %w", ErrInvalidContext, v, err)
		}
		b = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		if err := checkSize(b, limit); err != nil {
			return nil, err
		}
		if err := checkUTF8(reflect.ValueOf(v), 0); err != nil {
			return nil, fmt.Errorf("%w: context of type %T %w", ErrInvalidContext, v, err)
		}
		// encoding/json replaces invalid UTF-8 in strings it encodes, but
		// copies a json.RawMessage or a MarshalJSON result as it is: the
		// database would refuse the bytes and abort the caller's
		// transaction.
		if !utf8.Valid(b) {
			return nil, fmt.Errorf("%w: context of type %T marshals to invalid UTF-8", ErrInvalidContext, v)
		}
		return b, nil
	}
	// Pre-encoded JSON: checked, never re-encoded.
	if err := checkSize(b, limit); err != nil {
		return nil, err
	}
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%w: context is not valid UTF-8", ErrInvalidContext)
	}
	if !json.Valid(b) {
		var discard json.RawMessage
		err := json.Unmarshal(b, &discard)
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return nil, fmt.Errorf("%w: context is not valid JSON: %v (at byte %d)", ErrInvalidContext, syn, syn.Offset)
		}
		return nil, fmt.Errorf("%w: context is not valid JSON: %v", ErrInvalidContext, err)
	}
	return b, nil
}

func checkSize(b []byte, limit int) error {
	if limit > 0 && len(b) > limit {
		return fmt.Errorf("%w: %d bytes, the limit is %d (Publisher.MaxContextBytes)", ErrContextTooLarge, len(b), limit)
	}
	return nil
}

func checkText(what, s string, sentinel error) error {
	switch {
	case strings.TrimSpace(s) == "":
		return fmt.Errorf("%w: %s is empty", sentinel, what)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s %q is not valid UTF-8", sentinel, what, clip(s))
	case strings.IndexByte(s, 0) >= 0:
		return fmt.Errorf("%w: %s %q contains a NUL byte", sentinel, what, clip(s))
	}
	return nil
}

// ValidTraceparent reports whether s is a W3C trace context traceparent
// header value of version 00: 00-<32 hex trace id>-<16 hex parent id>-<2 hex
// flags>, lowercase, with neither id all zeros.
func ValidTraceparent(s string) bool {
	if len(s) != 55 || s[0] != '0' || s[1] != '0' || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	return lowerHex(s[3:35], true) && lowerHex(s[36:52], true) && lowerHex(s[53:55], false)
}

func lowerHex(s string, nonZero bool) bool {
	zero := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
		if c != '0' {
			zero = false
		}
	}
	return !nonZero || !zero
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
