// Package outboxtest helps test code that publishes events with package
// outbox: Recorder stands in for the database and records the events,
// Published reads back what a real transaction has written to the outbox
// table. Both return the events as outbox.Event values whose Context is the
// stored JSON (json.RawMessage), so tests can compare either with the same
// code.
package outboxtest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/eventcdc/cdc/outbox"
)

// Recorder is an in-memory outbox.Tx: pass it where the code under test
// takes an outbox.Tx and it records the events published through it,
// as they would be stored and as Published reads them back (defaults
// filled in, Context as the JSON text, Time in UTC cut to microseconds;
// Time stays zero where the database's now() would apply). Statements
// other than outbox writes are recorded in Statements and succeed without
// effect. There is no transaction: nothing is ever rolled
// back. The zero value is ready; it is safe for concurrent use.
type Recorder struct {
	// Err, when set, is returned by every call instead of recording, to
	// test how the code under test handles a failing database.
	Err error

	mu     sync.Mutex
	events []outbox.Event
	stmts  []Statement
}

// Statement is a call to Exec or CopyFrom that did not write to the outbox.
type Statement struct {
	SQL  string // for CopyFrom: "COPY <table> (<columns>)"
	Args []any  // for CopyFrom: one []any per row
}

var _ outbox.Tx = (*Recorder)(nil)

// Events returns a copy of the events recorded so far, in publish order.
func (r *Recorder) Events() []outbox.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]outbox.Event(nil), r.events...)
}

// Types returns the types of the events recorded so far, in order.
func (r *Recorder) Types() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	types := make([]string, len(r.events))
	for i, e := range r.events {
		types[i] = e.Type
	}
	return types
}

// Statements returns the other statements executed so far.
func (r *Recorder) Statements() []Statement {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Statement(nil), r.stmts...)
}

// Reset forgets everything recorded.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events, r.stmts = nil, nil
}

const insertPrefix = "INSERT INTO " + outbox.Table + " ("

// Exec records an outbox INSERT as events and any other statement as is.
// The outbox INSERT passes one array per column, in the order of its column
// list.
func (r *Recorder) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if r.Err != nil {
		return pgconn.CommandTag{}, r.Err
	}
	if !strings.HasPrefix(sql, insertPrefix) {
		r.mu.Lock()
		r.stmts = append(r.stmts, Statement{SQL: sql, Args: args})
		r.mu.Unlock()
		return pgconn.NewCommandTag(""), nil
	}
	list, _, ok := strings.Cut(sql[len(insertPrefix):], ")")
	cols := strings.Split(list, ",")
	if !ok || len(cols) != len(args) {
		return pgconn.CommandTag{}, fmt.Errorf("outboxtest: unexpected outbox insert with %d args: %s", len(args), sql)
	}
	var events []outbox.Event
	for c, name := range cols {
		name = strings.TrimSpace(name)
		n, err := eachValue(args[c], func(i int, v any) error {
			if i == len(events) {
				events = append(events, outbox.Event{})
			}
			return setField(&events[i], name, v)
		})
		if err != nil {
			return pgconn.CommandTag{}, err
		}
		if n != len(events) {
			return pgconn.CommandTag{}, fmt.Errorf("outboxtest: column %s has %d values, want %d", name, n, len(events))
		}
	}
	r.record(events)
	return pgconn.NewCommandTag(fmt.Sprintf("INSERT 0 %d", len(events))), nil
}

// CopyFrom records a COPY into the outbox table as events and any other
// COPY as a Statement.
func (r *Recorder) CopyFrom(_ context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if r.Err != nil {
		return 0, r.Err
	}
	var events []outbox.Event
	var other []any
	isOutbox := len(table) > 0 && table[len(table)-1] == outbox.Table
	for src.Next() {
		vals, err := src.Values()
		if err != nil {
			return 0, err
		}
		if len(vals) != len(columns) {
			return 0, fmt.Errorf("outboxtest: copy row has %d values for %d columns", len(vals), len(columns))
		}
		if !isOutbox {
			other = append(other, append([]any(nil), vals...))
			continue
		}
		var e outbox.Event
		for c, name := range columns {
			if err := setField(&e, name, vals[c]); err != nil {
				return 0, err
			}
		}
		events = append(events, e)
	}
	if err := src.Err(); err != nil {
		return 0, err
	}
	if !isOutbox {
		r.mu.Lock()
		r.stmts = append(r.stmts, Statement{SQL: fmt.Sprintf("COPY %s (%s)", table.Sanitize(), strings.Join(columns, ", ")), Args: other})
		r.mu.Unlock()
		return int64(len(other)), nil
	}
	r.record(events)
	return int64(len(events)), nil
}

func (r *Recorder) record(events []outbox.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, events...)
}

// eachValue calls f for every element of the array argument v.
func eachValue(v any, f func(int, any) error) (int, error) {
	var n int
	var err error
	visit := func(i int, x any) {
		if err == nil {
			err = f(i, x)
		}
		n++
	}
	switch a := v.(type) {
	case []string:
		for i, x := range a {
			visit(i, x)
		}
	case []*time.Time:
		for i, x := range a {
			visit(i, x)
		}
	case []int64:
		for i, x := range a {
			visit(i, x)
		}
	default:
		return 0, fmt.Errorf("outboxtest: unexpected outbox insert argument of type %T", v)
	}
	return n, err
}

// setField stores a column value the way PostgreSQL would store it.
func setField(e *outbox.Event, column string, v any) error {
	ok := true
	switch column {
	case "id":
		switch id := v.(type) {
		case uuid.UUID:
			e.ID = id
		case string: // INSERT path
			var err error
			if e.ID, err = uuid.Parse(id); err != nil {
				return fmt.Errorf("outboxtest: outbox id %q: %w", id, err)
			}
		default:
			ok = false
		}
	case "event_type":
		e.Type, ok = v.(string)
	case "environment":
		e.Environment, ok = v.(string)
	case "event_context":
		switch c := v.(type) {
		case string:
			e.Context = json.RawMessage(c)
		case []byte:
			e.Context = json.RawMessage(append([]byte(nil), c...))
		default:
			ok = false
		}
	case "metadata_version":
		e.MetadataVersion, ok = v.(int64)
	case "traceparent":
		switch t := v.(type) {
		case nil:
		case string:
			e.Traceparent = t
		default:
			ok = false
		}
	case "event_date_time":
		switch t := v.(type) {
		case *time.Time: // INSERT path: nil means now()
			if t != nil {
				e.Time = t.UTC().Truncate(time.Microsecond)
			}
		case time.Time:
			e.Time = t.UTC().Truncate(time.Microsecond)
		default:
			ok = false
		}
	default:
		return fmt.Errorf("outboxtest: unexpected outbox column %q", column)
	}
	if !ok {
		return fmt.Errorf("outboxtest: unexpected %T value for outbox column %s", v, column)
	}
	return nil
}
