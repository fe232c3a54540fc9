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
		if y := r.time.UTC().Year(); y < -4712 || y > 294275 {
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

// Types whose JSON encoding/json takes from the type itself: their output
// is copied as it is (and checked as bytes), not built from Go strings.
var (
	jsonMarshalerType = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// maxUTF8Depth bounds the walk of invalidUTF8; encoding/json has already
// refused a cycle by then.
const maxUTF8Depth = 1000

// invalidUTF8 reports whether v holds, where encoding/json writes a Go
// string as a JSON string (a string value, a map key, an exported struct
// field), a string that is not valid UTF-8: the encoder would replace each
// bad byte with U+FFFD, altering the event, and two map keys could become
// one. Values that marshal themselves (json.Marshaler, encoding.
// TextMarshaler, json.RawMessage) are not looked into: their bytes are
// copied, and checked as bytes after encoding.
func invalidUTF8(v reflect.Value, depth int) bool {
	if !v.IsValid() || depth > maxUTF8Depth {
		return false
	}
	t := v.Type()
	if t.Implements(jsonMarshalerType) || t.Implements(textMarshalerType) ||
		v.CanAddr() && (reflect.PointerTo(t).Implements(jsonMarshalerType) || reflect.PointerTo(t).Implements(textMarshalerType)) {
		return false
	}
	switch v.Kind() {
	case reflect.String:
		return !utf8.ValidString(v.String())
	case reflect.Pointer, reflect.Interface:
		return !v.IsNil() && invalidUTF8(v.Elem(), depth+1)
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			if k := it.Key(); k.Kind() == reflect.String && !k.Type().Implements(textMarshalerType) && !utf8.ValidString(k.String()) {
				return true
			}
			if invalidUTF8(it.Value(), depth+1) {
				return true
			}
		}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return false // []byte is written as base64
		}
		for i := range v.Len() {
			if invalidUTF8(v.Index(i), depth+1) {
				return true
			}
		}
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() && !f.Anonymous || f.Tag.Get("json") == "-" {
				continue
			}
			if invalidUTF8(v.Field(i), depth+1) {
				return true
			}
		}
	}
	return false
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
		if invalidUTF8(reflect.ValueOf(v), 0) {
			return nil, fmt.Errorf("%w: context of type %T holds a string or map key that is not valid UTF-8, whose bytes encoding/json would replace (two such keys would become one)", ErrInvalidContext, v)
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
