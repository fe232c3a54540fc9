package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultMaxContextBytes is the largest event_context a Publisher accepts
// unless its MaxContextBytes says otherwise.
const DefaultMaxContextBytes = 64 << 20

// Table is the outbox table events are written to (found on the
// connection's search_path).
const Table = "outbox"

// Tx is what Publish needs of a database handle: pgx.Tx, *pgx.Conn,
// *pgxpool.Pool and *pgxpool.Conn satisfy it. Pass a transaction so the
// events commit or roll back with the business change.
type Tx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error)
}

// When to switch from one INSERT to COPY.
//
// Most business transactions publish one event or a handful. For those the
// INSERT is the lighter call: one Parse/Bind/Execute of a statement
// prepared once per connection. pgx's COPY starts two goroutines and a pipe
// per call and first needs the table's column types, which it caches only
// in the default exec mode: with QueryExecModeExec or the simple protocol
// (pgbouncer setups) every COPY costs an extra round trip to describe them.
// Per event the two paths cost about the same on loopback from a few dozen
// events on (BenchmarkPublish: ~17 µs/event each at 64 events, ~12 µs at
// 512), so the count threshold is not about speed but about what the INSERT
// has to build: every context of the batch travels in one Bind message and
// PostgreSQL materialises each column as one array before unnesting it,
// whereas COPY streams rows in 64 KiB chunks. From copyMinEvents events,
// or copyMinBytes of context in total whatever the count, COPY is used; the
// byte bound also keeps the INSERT far below PostgreSQL's 1 GB limit on a
// message and on an array value.
const (
	copyMinEvents = 64
	copyMinBytes  = 4 << 20
)

// path forces the INSERT or the COPY path; tests use it to cover both.
type path int

const (
	pathAuto path = iota
	pathInsert
	pathCopy
)

// Publisher holds the settings shared by the events it publishes. The zero
// value is usable: events must then name their environment themselves.
type Publisher struct {
	// Environment is used for events whose Environment is empty.
	Environment string
	// MaxContextBytes caps the size of an event's JSON context: 0 means
	// DefaultMaxContextBytes, a negative value means no limit of ours
	// (PostgreSQL still refuses values above 1 GB).
	MaxContextBytes int

	path path
}

// Publish writes events to the outbox table in tx, see Publisher.Publish.
// Every event must set Environment.
func Publish(ctx context.Context, tx Tx, events ...Event) error {
	return Publisher{}.Publish(ctx, tx, events...)
}

// PublishIDs is Publish that also returns the events' ids, in order.
func PublishIDs(ctx context.Context, tx Tx, events ...Event) ([]uuid.UUID, error) {
	return Publisher{}.PublishIDs(ctx, tx, events...)
}

// Publish validates events, then writes them to the outbox table in tx, in
// order. Nothing is written if any event is invalid; the error is then an
// *EventError. A few events are written by one INSERT, many by COPY.
// Publishing no events does nothing.
func (p Publisher) Publish(ctx context.Context, tx Tx, events ...Event) error {
	_, err := p.PublishIDs(ctx, tx, events...)
	return err
}

// PublishIDs is Publish that also returns the events' ids, in order: the
// ones given, or the ones generated.
func (p Publisher) PublishIDs(ctx context.Context, tx Tx, events ...Event) ([]uuid.UUID, error) {
	if len(events) == 0 {
		return nil, nil
	}
	if tx == nil {
		return nil, fmt.Errorf("outbox: publish: nil Tx")
	}
	rows, err := p.prepare(events)
	if err != nil {
		return nil, err
	}
	if p.useCopy(rows) {
		err = copyRows(ctx, tx, rows)
	} else {
		err = insertRows(ctx, tx, rows)
	}
	if err != nil {
		return nil, err
	}
	ids := make([]uuid.UUID, len(rows))
	for i, r := range rows {
		ids[i] = r.id
	}
	return ids, nil
}

func (p Publisher) useCopy(rows []row) bool {
	switch p.path {
	case pathInsert:
		return false
	case pathCopy:
		return true
	}
	// COPY cannot ask for a column's default row by row: events that set
	// Time and events that leave it to now() would go in one COPY each,
	// and on a pool or a bare connection, where each statement commits
	// by itself, a failure after the first would leave it written and a
	// retry would write its events twice. One INSERT is one statement.
	for _, r := range rows[1:] {
		if r.time.IsZero() != rows[0].time.IsZero() {
			return false
		}
	}
	if len(rows) >= copyMinEvents {
		return true
	}
	n := 0
	for _, r := range rows {
		n += len(r.context)
	}
	return n >= copyMinBytes
}

// insertSQL is the statement of the INSERT path. Each parameter is an
// array holding one column, in the order of the column list, so the text
// is the same whatever the number of events: one prepared statement serves
// every batch, and there is no limit of 65535 parameters to run into.
// A NULL time stands for now(), an empty traceparent for NULL. Ids travel
// as text: pgx has no text encoding of []uuid.UUID for the simple protocol.
const insertSQL = `INSERT INTO outbox (id, event_type, event_date_time, environment, event_context, metadata_version, traceparent)
SELECT id::uuid, event_type, COALESCE(event_date_time, now()), environment, event_context::json, metadata_version, NULLIF(traceparent, '')
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::bigint[], $7::text[])
	WITH ORDINALITY AS e(id, event_type, event_date_time, environment, event_context, metadata_version, traceparent, n)
ORDER BY n`

func insertRows(ctx context.Context, tx Tx, rows []row) error {
	var (
		ids      = make([]string, len(rows))
		types    = make([]string, len(rows))
		times    = make([]*time.Time, len(rows))
		envs     = make([]string, len(rows))
		contexts = make([]string, len(rows))
		versions = make([]int64, len(rows))
		parents  = make([]string, len(rows))
	)
	for i := range rows {
		r := &rows[i]
		ids[i], types[i], envs[i] = r.id.String(), r.typ, r.env
		if !r.time.IsZero() {
			times[i] = &r.time
		}
		contexts[i], versions[i], parents[i] = string(r.context), r.version, r.traceparent
	}
	tag, err := tx.Exec(ctx, insertSQL, ids, types, times, envs, contexts, versions, parents)
	if err != nil {
		return fmt.Errorf("outbox: insert %d events: %w", len(rows), err)
	}
	if tag.RowsAffected() != int64(len(rows)) {
		return fmt.Errorf("outbox: insert %d events: %d rows inserted", len(rows), tag.RowsAffected())
	}
	return nil
}

// copyRows writes rows with COPY. COPY cannot ask for a column's default
// row by row, so events that leave Time unset (now()) and events that set
// it go in separate COPYs, one per run of consecutive events, which keeps
// their order. Left to choose, useCopy takes COPY only for events all
// alike, one run, so that a call is one statement.
func copyRows(ctx context.Context, tx Tx, rows []row) error {
	for start := 0; start < len(rows); {
		withTime := !rows[start].time.IsZero()
		end := start + 1
		for end < len(rows) && !rows[end].time.IsZero() == withTime {
			end++
		}
		if err := copyRun(ctx, tx, rows[start:end], withTime); err != nil {
			return err
		}
		start = end
	}
	return nil
}

func copyRun(ctx context.Context, tx Tx, rows []row, withTime bool) error {
	cols := []string{"id", "event_type", "environment", "event_context", "metadata_version", "traceparent"}
	if withTime {
		cols = append(cols, "event_date_time")
	}
	src := pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
		r := &rows[i]
		var parent any
		if r.traceparent != "" {
			parent = r.traceparent
		}
		vals := []any{r.id, r.typ, r.env, r.context, r.version, parent}
		if withTime {
			vals = append(vals, r.time)
		}
		return vals, nil
	})
	n, err := tx.CopyFrom(ctx, pgx.Identifier{Table}, cols, src)
	if err != nil {
		return fmt.Errorf("outbox: copy %d events: %w", len(rows), err)
	}
	if n != int64(len(rows)) {
		return fmt.Errorf("outbox: copy %d events: %d rows copied", len(rows), n)
	}
	return nil
}
