package outbox_test

import (
	"context"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventcdc/cdc/outbox"
	"github.com/eventcdc/cdc/outbox/outboxtest"
)

func TestSnakeCase(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"UserCreated", "user_created"},
		{"HTTPRequestFailed", "http_request_failed"},
		{"UserID", "user_id"},
		{"IDToken", "id_token"},
		{"S3ObjectPut", "s3_object_put"},
		{"Event2", "event2"},
		{"V2Event", "v2_event"},
		{"userCreated", "user_created"},
		{"User", "user"},
		{"URL", "url"},
		{"A", "a"},
		{"APIKeyRotated", "api_key_rotated"},
		{"Already_Snake", "already_snake"},
		{"user_created", "user_created"},
		{"ÜberEvent", "über_event"},
		{"", ""},
	} {
		if got := outbox.SnakeCase(tc.in); got != tc.want {
			t.Errorf("SnakeCase(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

type UserDeleted struct{ ID int }

type Renamed struct{}

func (Renamed) EventType() string { return "legacy_name" }

type Generic[T any] struct{ V T }

func ptr[T any](v T) *T { return &v }

// AccountCreated kept the name of the type it was renamed from, with a
// pointer receiver.
type AccountCreated struct{ ID int }

func (*AccountCreated) EventType() string { return "user_created" }

func TestTypeName(t *testing.T) {
	var nilPtr *UserDeleted
	for _, tc := range []struct {
		name string
		v    any
		want string
	}{
		{"struct", UserDeleted{}, "user_deleted"},
		{"pointer", &UserDeleted{}, "user_deleted"},
		{"nil pointer", nilPtr, "user_deleted"},
		{"acronym", HTTPRequestFailed{}, "http_request_failed"},
		{"Typer", Renamed{}, "legacy_name"},
		{"Typer through a pointer", &Renamed{}, "legacy_name"},
		{"nil pointer to a value-receiver Typer", (*Renamed)(nil), "renamed"},
		{"pointer-receiver Typer", &AccountCreated{}, "user_created"},
		{"pointer-receiver Typer passed by value", AccountCreated{ID: 1}, "user_created"},
		{"nil pointer to a pointer-receiver Typer", (*AccountCreated)(nil), "account_created"},
		{"generic", Generic[int]{}, "generic"},
		{"map", map[string]any{}, ""},
		{"anonymous struct", struct{ A int }{}, ""},
		{"nil", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := outbox.TypeName(tc.v); got != tc.want {
				t.Errorf("TypeName(%T) = %q, want %q", tc.v, got, tc.want)
			}
		})
	}
	ev := outbox.EventOf(UserDeleted{ID: 7})
	if ev.Type != "user_deleted" || ev.Context != (UserDeleted{ID: 7}) {
		t.Errorf("EventOf = %+v", ev)
	}
}

func TestValidTraceparent(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true},
		{"", false},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false}, // only version 00
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false}, // uppercase
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false}, // zero trace id
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false}, // zero parent id
		{"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", false},  // short trace id
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", false},
		{"00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", false},
	} {
		if got := outbox.ValidTraceparent(tc.in); got != tc.want {
			t.Errorf("ValidTraceparent(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

const goodTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func good() outbox.Event {
	return outbox.Event{Type: "user_created", Context: json.RawMessage(`{"a":1}`), Environment: "test"}
}

// badEvents lists invalid events with the sentinel each must be refused with.
func badEvents() []struct {
	name string
	pub  outbox.Publisher
	ev   outbox.Event
	want error
} {
	with := func(f func(*outbox.Event)) outbox.Event { e := good(); f(&e); return e }
	return []struct {
		name string
		pub  outbox.Publisher
		ev   outbox.Event
		want error
	}{
		{"empty type", outbox.Publisher{}, with(func(e *outbox.Event) { e.Type = "" }), outbox.ErrInvalidType},
		{"blank type", outbox.Publisher{}, with(func(e *outbox.Event) { e.Type = "  " }), outbox.ErrInvalidType},
		{"type with NUL", outbox.Publisher{}, with(func(e *outbox.Event) { e.Type = "a\x00b" }), outbox.ErrInvalidType},
		{"type not UTF-8", outbox.Publisher{}, with(func(e *outbox.Event) { e.Type = "a\xffb" }), outbox.ErrInvalidType},
		{"no environment", outbox.Publisher{}, with(func(e *outbox.Event) { e.Environment = "" }), outbox.ErrInvalidEnvironment},
		{"environment with NUL", outbox.Publisher{}, with(func(e *outbox.Event) { e.Environment = "p\x00" }), outbox.ErrInvalidEnvironment},
		{"nil context", outbox.Publisher{}, with(func(e *outbox.Event) { e.Context = nil }), outbox.ErrInvalidContext},
		{"raw context not JSON", outbox.Publisher{}, with(func(e *outbox.Event) { e.Context = json.RawMessage(`{"a":`) }), outbox.ErrInvalidContext},
		{"bytes context not JSON", outbox.Publisher{}, with(func(e *outbox.Event) { e.Context = []byte(`not json`) }), outbox.ErrInvalidContext},
		{"empty raw context", outbox.Publisher{}, with(func(e *outbox.Event) { e.Context = json.RawMessage{} }), outbox.ErrInvalidContext},
		{"context not UTF-8", outbox.Publisher{}, with(func(e *outbox.Event) { e.Context = []byte("\"\xff\"") }), outbox.ErrInvalidContext},
		{"marshaled context with raw invalid UTF-8", outbox.Publisher{}, with(func(e *outbox.Event) {
			e.Context = struct{ P json.RawMessage }{json.RawMessage("\"\xff\"")}
		}), outbox.ErrInvalidContext},
		{"context not marshalable", outbox.Publisher{}, with(func(e *outbox.Event) { e.Context = map[string]any{"f": func() {}} }), outbox.ErrInvalidContext},
		{"context NaN", outbox.Publisher{}, with(func(e *outbox.Event) { e.Context = math.NaN() }), outbox.ErrInvalidContext},
		{"nil pointer context", outbox.Publisher{}, with(func(e *outbox.Event) { e.Context = (*UserDeleted)(nil) }), outbox.ErrInvalidContext},
		{"nil map context", outbox.Publisher{}, with(func(e *outbox.Event) { e.Context = map[string]any(nil) }), outbox.ErrInvalidContext},
		{"nil slice context", outbox.Publisher{}, with(func(e *outbox.Event) { e.Context = []string(nil) }), outbox.ErrInvalidContext},
		{"string not UTF-8 in a marshaled context", outbox.Publisher{}, with(func(e *outbox.Event) { e.Context = map[string]any{"name": "caf\xe9"} }), outbox.ErrInvalidContext},
		{"key not UTF-8 in a marshaled context", outbox.Publisher{}, with(func(e *outbox.Event) { e.Context = map[string]int{"k\xff": 1, "k\xfe": 2} }), outbox.ErrInvalidContext},
		{"struct field not UTF-8", outbox.Publisher{}, with(func(e *outbox.Event) { e.Context = struct{ Name *string }{Name: ptr("caf\xe9")} }), outbox.ErrInvalidContext},
		{"string not UTF-8 in a slice", outbox.Publisher{}, with(func(e *outbox.Event) { e.Context = []any{"ok", []string{"\xff"}} }), outbox.ErrInvalidContext},
		{"MarshalText not UTF-8", outbox.Publisher{}, with(func(e *outbox.Event) { e.Context = map[string]any{"k": badText("\xffa")} }), outbox.ErrInvalidContext},
		{"MarshalText not UTF-8 through a pointer", outbox.Publisher{}, with(func(e *outbox.Event) { e.Context = &struct{ T ptrText }{ptrText("\xfe")} }), outbox.ErrInvalidContext},
		{"string key with a MarshalText, not UTF-8", outbox.Publisher{}, with(func(e *outbox.Event) { e.Context = map[textKey]int{"a\xff": 1, "a\xfe": 2} }), outbox.ErrInvalidContext},
		{"non-string key whose MarshalText is not UTF-8", outbox.Publisher{}, with(func(e *outbox.Event) { e.Context = map[structKey]int{{"\xff"}: 1} }), outbox.ErrInvalidContext},
		{"nested too deep", outbox.Publisher{}, with(func(e *outbox.Event) { e.Context = nest(1001, "fine") }), outbox.ErrInvalidContext},
		{"raw context too large", outbox.Publisher{MaxContextBytes: 8}, with(func(e *outbox.Event) { e.Context = json.RawMessage(`"123456789"`) }), outbox.ErrContextTooLarge},
		{"marshaled context too large", outbox.Publisher{MaxContextBytes: 8}, with(func(e *outbox.Event) { e.Context = "123456789" }), outbox.ErrContextTooLarge},
		{"bad traceparent", outbox.Publisher{}, with(func(e *outbox.Event) { e.Traceparent = "00-abc-def-01" }), outbox.ErrInvalidTraceparent},
		{"uppercase traceparent", outbox.Publisher{}, with(func(e *outbox.Event) { e.Traceparent = strings.ToUpper(goodTraceparent) }), outbox.ErrInvalidTraceparent},
		{"negative metadata version", outbox.Publisher{}, with(func(e *outbox.Event) { e.MetadataVersion = -1 }), outbox.ErrInvalidMetadataVersion},
		{"time out of range", outbox.Publisher{}, with(func(e *outbox.Event) { e.Time = time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC) }), outbox.ErrInvalidTime},
	}
}

// Without a database: every bad event is refused with its sentinel, names
// its index, and nothing reaches the Tx.
func TestPublish_RejectsBadInputWithoutTouchingTheTx(t *testing.T) {
	ctx := context.Background()
	for _, tc := range badEvents() {
		t.Run(tc.name, func(t *testing.T) {
			var rec outboxtest.Recorder
			err := tc.pub.Publish(ctx, &rec, good(), good(), tc.ev)
			checkEventError(t, err, 2, tc.want)
			if n := len(rec.Events()) + len(rec.Statements()); n != 0 {
				t.Errorf("%d calls reached the Tx", n)
			}
		})
	}
}

// Two events with the same explicit id would fail on the outbox's primary
// key and abort the caller's transaction: the second is refused before
// anything is written. Events that leave ID unset get ids of their own.
func TestPublish_RefusesADuplicateID(t *testing.T) {
	ctx := context.Background()
	id := uuid.MustParse("0190a3b2-7c4d-7e5f-8a6b-1c2d3e4f5a6b")
	withID := good()
	withID.ID = id
	var rec outboxtest.Recorder
	err := outbox.Publish(ctx, &rec, withID, good(), withID)
	checkEventError(t, err, 2, outbox.ErrDuplicateID)
	if !strings.Contains(err.Error(), id.String()+" is already event 0's") {
		t.Errorf("message %q does not name the id and the first event", err)
	}
	if n := len(rec.Events()) + len(rec.Statements()); n != 0 {
		t.Errorf("%d calls reached the Tx", n)
	}
	if err := outbox.Publish(ctx, &rec, withID, good(), good()); err != nil {
		t.Fatalf("one explicit id and two generated: %v", err)
	}
	if n := len(rec.Events()); n != 3 {
		t.Fatalf("%d events written, want 3", n)
	}
}

func checkEventError(t *testing.T, err error, index int, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
	if !errors.Is(err, outbox.ErrInvalidEvent) {
		t.Errorf("err = %v does not match ErrInvalidEvent", err)
	}
	var ee *outbox.EventError
	if !errors.As(err, &ee) || ee.Index != index {
		t.Fatalf("err = %#v, want *EventError with Index %d", err, index)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("event %d", index)) {
		t.Errorf("message %q does not name the event", err)
	}
	t.Log(err)
}

func TestPublish_Defaults(t *testing.T) {
	ctx := context.Background()
	var rec outboxtest.Recorder
	pub := outbox.Publisher{Environment: "prod"}
	id := uuid.MustParse("0190a8a3-7a9e-7b4c-9d2e-0123456789ab")
	ids, err := pub.PublishIDs(ctx, &rec,
		outbox.Event{Type: "a", Context: map[string]string{"html": "<b>&</b>"}},
		outbox.Event{Type: "b", Context: json.RawMessage(` { "x" : 1 } `), Environment: "dev", ID: id, MetadataVersion: 3},
	)
	if err != nil {
		t.Fatal(err)
	}
	got := rec.Events()
	if len(got) != 2 || len(ids) != 2 {
		t.Fatalf("got %d events, %d ids", len(got), len(ids))
	}
	if got[0].Environment != "prod" || got[1].Environment != "dev" {
		t.Errorf("environments %q, %q; want prod (Publisher's), dev (event's)", got[0].Environment, got[1].Environment)
	}
	if got[0].MetadataVersion != 1 || got[1].MetadataVersion != 3 {
		t.Errorf("metadata versions %d, %d; want 1, 3", got[0].MetadataVersion, got[1].MetadataVersion)
	}
	if ids[0] == uuid.Nil || ids[0].Version() != 7 || got[0].ID != ids[0] {
		t.Errorf("generated id %s (recorded %s), want a UUIDv7", ids[0], got[0].ID)
	}
	if ids[1] != id || got[1].ID != id {
		t.Errorf("given id: returned %s, recorded %s, want %s", ids[1], got[1].ID, id)
	}
	if s := string(got[0].Context.(json.RawMessage)); s != `{"html":"<b>&</b>"}` {
		t.Errorf("marshaled context %s: want compact JSON without HTML escaping", s)
	}
	if s := string(got[1].Context.(json.RawMessage)); s != ` { "x" : 1 } ` {
		t.Errorf("raw context %q re-encoded", s)
	}
	if !got[0].Time.IsZero() || got[0].Traceparent != "" {
		t.Errorf("unset time/traceparent recorded as %v/%q", got[0].Time, got[0].Traceparent)
	}

	// The package-level Publish has no default environment.
	err = outbox.Publish(ctx, &rec, outbox.Event{Type: "a", Context: 1})
	if !errors.Is(err, outbox.ErrInvalidEnvironment) {
		t.Errorf("Publish without environment: %v", err)
	}
	// Publishing nothing is fine and does nothing.
	rec.Reset()
	if err := outbox.Publish(ctx, &rec); err != nil || len(rec.Events()) != 0 {
		t.Errorf("Publish() = %v, recorded %d", err, len(rec.Events()))
	}
	// A negative limit lifts ours: a context past the default passes.
	past := json.RawMessage(`"` + strings.Repeat("x", outbox.DefaultMaxContextBytes) + `"`)
	if err := (outbox.Publisher{Environment: "p"}).Publish(ctx, &rec, outbox.Event{Type: "a", Context: past}); !errors.Is(err, outbox.ErrContextTooLarge) {
		t.Errorf("a context of %d bytes under the default limit: %v, want it refused", len(past), err)
	}
	if err := (outbox.Publisher{Environment: "p", MaxContextBytes: -1}).Publish(ctx, &rec, outbox.Event{Type: "a", Context: past}); err != nil {
		t.Errorf("a context of %d bytes with no limit: %v", len(past), err)
	}
}

func TestPublish_ReturnsTxErrors(t *testing.T) {
	boom := errors.New("boom")
	rec := &outboxtest.Recorder{Err: boom}
	if err := outbox.Publish(context.Background(), rec, good()); !errors.Is(err, boom) || errors.Is(err, outbox.ErrInvalidEvent) {
		t.Errorf("err = %v, want the Tx's error", err)
	}
}

// A context whose strings are valid UTF-8 passes unchanged, U+FFFD in
// whatever form it was written: as the character, as a \ufffd escape in
// pre-encoded JSON nested in a map or a struct, or as text.
func TestPublish_KeepsReplacementCharactersThatWereThere(t *testing.T) {
	type envelope struct {
		Payload json.RawMessage
		Hidden  string `json:"-"`
	}
	for _, tc := range []struct {
		name    string
		context any
		want    string
	}{
		{"the character and text", map[string]string{"char": "\ufffd", "text": `\ufffd`}, `{"char":"` + "\ufffd" + `","text":"\\ufffd"}`},
		{"an escape in nested raw JSON", map[string]any{"payload": json.RawMessage(`{"name":"Caf\ufffd"}`)}, `{"payload":{"name":"Caf\ufffd"}}`},
		{"an escape in a struct's raw JSON", envelope{Payload: json.RawMessage(`"\ufffd"`), Hidden: "\xff"}, `{"Payload":"\ufffd"}`},
		{"text marshalers that give UTF-8", map[string]any{"ip": net.ParseIP("192.0.2.1"), "keys": map[structKey]badText{{"é"}: "ü"}}, `{"ip":"192.0.2.1","keys":{"é":"ü"}}`},
		{"nested as deep as may be", nest(1000, "é"), strings.Repeat("[", 1000) + `"é"` + strings.Repeat("]", 1000)},
		{"marshalers that give UTF-8 from values that are not", map[string]any{"j": okJSON{S: "\xff"}, "t": okText("\xff")}, `{"j":"ok","t":"ok"}`},
		{"nil text marshalers in a struct and a map", map[string]any{"s": struct{ M encoding.TextMarshaler }{}, "m": map[string]encoding.TextMarshaler{"a": nil}}, `{"m":{"a":null},"s":{"M":null}}`},
		{"an unexported embedded slice of text marshalers", withTags{tags{net.ParseIP("192.0.2.1")}, "x"}, `{"Name":"x"}`},
		{"an unexported embedded struct's fields", withInner{inner{IP: net.ParseIP("192.0.2.2")}}, `{"IP":"192.0.2.2"}`},
		{"unexported fields that are not UTF-8", withWords{words{"\xff"}, "x", struct{ S string }{"\xfe"}}, `{"Name":"x"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rec outboxtest.Recorder
			ev := good()
			ev.Context = tc.context
			if err := outbox.Publish(context.Background(), &rec, ev); err != nil {
				t.Fatal(err)
			}
			events := rec.Events()
			if len(events) != 1 {
				t.Fatalf("%d events recorded, want 1", len(events))
			}
			if got := string(events[0].Context.(json.RawMessage)); got != tc.want {
				t.Errorf("context stored as %s, want %s", got, tc.want)
			}
		})
	}
}

// badText's MarshalText returns its bytes as they are.
type badText string

func (t badText) MarshalText() ([]byte, error) { return []byte(t), nil }

// okJSON and okText write "ok" whatever they hold: encoding/json writes
// their output, not their bytes, so invalid UTF-8 in them alters nothing.
type okJSON struct{ S string }

func (okJSON) MarshalJSON() ([]byte, error) { return []byte(`"ok"`), nil }

type okText string

func (okText) MarshalText() ([]byte, error) { return []byte("ok"), nil }

// ptrText has MarshalText on its pointer only.
type ptrText string

func (t *ptrText) MarshalText() ([]byte, error) { return []byte(*t), nil }

// textKey is a string-kind map key with a MarshalText that encoding/json
// does not call for a key: it writes the string.
type textKey string

func (k textKey) MarshalText() ([]byte, error) { return []byte("ok"), nil }

// structKey is a map key encoding/json writes through its MarshalText.
type structKey struct{ s string }

func (k structKey) MarshalText() ([]byte, error) { return []byte(k.s), nil }

// nest wraps v in depth one-element slices.
func nest(depth int, v any) any {
	for range depth {
		v = []any{v}
	}
	return v
}

// tags is a slice of text marshalers; embedded unexported, encoding/json
// leaves it out.
type tags []net.IP

type withTags struct {
	tags
	Name string
}

// inner's exported fields are promoted through an unexported embedding.
type inner struct{ IP net.IP }

type withInner struct{ inner }

// words, embedded unexported, and secret are left out by encoding/json:
// what they hold is never written.
type words []string

type withWords struct {
	words
	Name   string
	secret struct{ S string }
}

// The context's size limit: DefaultMaxContextBytes for a zero Publisher,
// a context exactly at MaxContextBytes passes, one byte more does not; a
// []byte field of a marshaled context is base64, never a UTF-8 question.
func TestPublish_ContextLimitAndBinaryFields(t *testing.T) {
	ctx := context.Background()
	publish := func(pub outbox.Publisher, c any) error {
		ev := good()
		ev.Context = c
		var rec outboxtest.Recorder
		return pub.Publish(ctx, &rec, ev)
	}
	big := json.RawMessage(`"` + strings.Repeat("x", outbox.DefaultMaxContextBytes-2) + `"`)
	if err := publish(outbox.Publisher{}, big); err != nil {
		t.Errorf("a context of DefaultMaxContextBytes: %v", err)
	}
	bigger := json.RawMessage(`"` + strings.Repeat("x", outbox.DefaultMaxContextBytes-1) + `"`)
	if err := publish(outbox.Publisher{}, bigger); !errors.Is(err, outbox.ErrContextTooLarge) {
		t.Errorf("a context one byte over DefaultMaxContextBytes: %v, want ErrContextTooLarge", err)
	}
	if err := publish(outbox.Publisher{MaxContextBytes: 9}, json.RawMessage(`"1234567"`)); err != nil {
		t.Errorf("a context of exactly MaxContextBytes: %v", err)
	}
	if err := publish(outbox.Publisher{}, struct{ Blob []byte }{[]byte{0xff, 0xfe, 0}}); err != nil {
		t.Errorf("a []byte field that is not UTF-8: %v, want it taken (base64)", err)
	}
}
