package outbox

import (
	"reflect"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"
)

// Event is one row of the outbox table. Only Type, Context and an
// environment (here or on the Publisher) are required; see the package
// documentation for each field's default.
type Event struct {
	// ID is the event's id; the zero UUID means "generate one" (UUIDv7).
	ID uuid.UUID
	// Type names the event, e.g. "user_created". Required.
	Type string
	// Context is the event's payload: json.RawMessage or []byte holding
	// JSON (stored byte for byte), or any value encoding/json marshals (with
	// HTML escaping off). A Go string is marshaled as a JSON string; wrap
	// pre-encoded JSON text in json.RawMessage instead. Required: nil, and
	// a nil pointer, map or slice (JSON null), are refused, and so is a
	// string, map key or MarshalText result that is not valid UTF-8
	// (encoding/json would replace its bytes), and a value nested deeper
	// than 1,000 arrays and objects.
	Context any
	// Environment, e.g. "prod"; empty means the Publisher's Environment.
	Environment string
	// Time is when the event happened; zero means the database's now().
	Time time.Time
	// MetadataVersion versions the shape of Context; 0 means 1.
	MetadataVersion int64
	// Traceparent is a W3C trace context header value, or empty for none.
	Traceparent string
}

// Typer lets a Go type choose its event type instead of the derived one,
// for example to keep an established name after renaming the type.
type Typer interface {
	EventType() string
}

var typerType = reflect.TypeFor[Typer]()

// EventOf returns an event whose Context is v and whose Type is
// TypeName(v). Set the other fields on the result as needed.
func EventOf(v any) Event {
	return Event{Type: TypeName(v), Context: v}
}

// TypeName returns the event type for a value: v.EventType() when v
// implements Typer, otherwise the name of v's type (pointers followed) in
// snake_case. Runs of capitals are kept together as one word:
//
//	UserCreated       → user_created
//	HTTPRequestFailed → http_request_failed
//	UserID            → user_id
//	S3ObjectPut       → s3_object_put
//
// An EventType method with a pointer receiver counts for a value too, so
// that EventOf(AccountCreated{…}) keeps the name the method gives; a nil
// pointer's method is not called. Unnamed types (maps, anonymous structs)
// and nil give "", which Publish rejects. Type arguments of a generic
// type are dropped.
func TypeName(v any) string {
	if v == nil {
		return ""
	}
	rv := reflect.ValueOf(v)
	switch {
	case rv.Kind() == reflect.Pointer && rv.IsNil():
		// A value receiver would panic; the event is refused anyway
		// (nil context), under the type's derived name.
	case rv.Kind() != reflect.Pointer && reflect.PointerTo(rv.Type()).Implements(typerType):
		p := reflect.New(rv.Type())
		p.Elem().Set(rv)
		return p.Interface().(Typer).EventType()
	default:
		if t, ok := v.(Typer); ok {
			return t.EventType()
		}
	}
	t := rv.Type()
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	name := t.Name()
	if i := strings.IndexByte(name, '['); i >= 0 {
		name = name[:i]
	}
	return snakeCase(name)
}

// snakeCase converts a Go identifier to snake_case the way TypeName does.
func snakeCase(name string) string {
	rs := []rune(name)
	var b strings.Builder
	b.Grow(len(name) + 4)
	for i, r := range rs {
		if r == '_' {
			if b.Len() > 0 && !strings.HasSuffix(b.String(), "_") {
				b.WriteByte('_')
			}
			continue
		}
		if unicode.IsUpper(r) && i > 0 {
			prev := rs[i-1]
			nextLower := i+1 < len(rs) && unicode.IsLower(rs[i+1])
			// A word starts at a capital that follows a lowercase letter or a
			// digit (userCreated, s3Object), or that ends a run of capitals
			// and begins a lowercase word (HTTPRequest → HTTP|Request).
			if unicode.IsLower(prev) || unicode.IsDigit(prev) || (unicode.IsUpper(prev) && nextLower) {
				if !strings.HasSuffix(b.String(), "_") {
					b.WriteByte('_')
				}
			}
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return strings.TrimSuffix(b.String(), "_")
}
