package outbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/outbox"
	"github.com/eventcdc/cdc/outbox/outboxtest"
	ddl "github.com/eventcdc/cdc/sql"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// connect returns a connection to a fresh database with the outbox table.
func connect(t testing.TB, opts ...func(*pgx.ConnConfig)) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(testenv.Get(t).NewPostgres(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(cfg)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if err := ddl.MigratePostgres(ctx, conn, "cdc_outbox", io.Discard); err != nil {
		t.Fatal(err)
	}
	return conn
}

// stored reads every outbox row, in insertion order.
func stored(t *testing.T, conn *pgx.Conn) []outbox.Event {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT id, event_type, event_date_time, environment,
		event_context::text, metadata_version, traceparent FROM outbox ORDER BY ctid`)
	if err != nil {
		t.Fatal(err)
	}
	var out []outbox.Event
	for rows.Next() {
		var e outbox.Event
		var text string
		var parent *string
		if err := rows.Scan(&e.ID, &e.Type, &e.Time, &e.Environment, &text, &e.MetadataVersion, &parent); err != nil {
			t.Fatal(err)
		}
		e.Context = json.RawMessage(text)
		if parent != nil {
			e.Traceparent = *parent
			if *parent == "" {
				t.Errorf("traceparent stored as '' rather than NULL")
			}
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func count(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// same compares two events field for field, the context byte for byte.
func same(t *testing.T, what string, got, want outbox.Event) {
	t.Helper()
	gc, wc := got.Context.(json.RawMessage), want.Context.(json.RawMessage)
	if got.ID != want.ID || got.Type != want.Type || !got.Time.Equal(want.Time) || got.Environment != want.Environment ||
		got.MetadataVersion != want.MetadataVersion || got.Traceparent != want.Traceparent || !bytes.Equal(gc, wc) {
		t.Errorf("%s:\n got %+v (context %.200s)\nwant %+v (context %.200s)", what, got, gc, want, wc)
	}
}

// paths runs f once for the INSERT path and once for the COPY path.
func paths(t *testing.T, f func(t *testing.T, p outbox.Publisher)) {
	t.Run("insert", func(t *testing.T) { f(t, outbox.Publisher{}.ForceInsert()) })
	t.Run("copy", func(t *testing.T) { f(t, outbox.Publisher{}.ForceCopy()) })
}

type Payload struct {
	Name  string         `json:"name"`
	Tags  []string       `json:"tags"`
	Extra map[string]int `json:"extra,omitempty"`
}

func TestPublish_StoresEveryFieldExactly(t *testing.T) {
	paths(t, func(t *testing.T, p outbox.Publisher) {
		ctx := context.Background()
		conn := connect(t)
		p.Environment = "staging"
		at := time.Date(2024, 2, 29, 23, 59, 58, 123456000, time.UTC)
		givenID := uuid.New()
		events := []outbox.Event{
			{ // every field set; raw JSON with odd spacing, key order and escapes kept as is
				ID: givenID, Type: "user_created", Environment: "prod", Time: at, MetadataVersion: 7, Traceparent: goodTraceparent,
				Context: json.RawMessage("{\"b\": 1,  \"a\": [1.50, 2e3], \"s\": \"caf\\u00e9 ☕ <&> \\\"q\\\"\", \"dup\": 1, \"dup\": 2}\n"),
			},
			{ // defaults: Publisher's environment, version 1, now(), no traceparent; marshaled struct
				Type: "order_paid", Context: Payload{Name: "x<y", Tags: []string{"a", "b"}},
			},
			{Type: "bytes_context", Context: []byte(`[null,true,"\u0000",{}]`), Time: at.Add(time.Hour)},
			{Type: "scalar", Context: 42},
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := p.PublishIDs(ctx, tx, events...)
		if err != nil {
			t.Fatal(err)
		}
		var now time.Time
		if err := tx.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
			t.Fatal(err)
		}
		inTx := outboxtest.Published(t, ctx, tx)
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}

		want := []outbox.Event{
			{ID: givenID, Type: "user_created", Environment: "prod", Time: at, MetadataVersion: 7, Traceparent: goodTraceparent, Context: events[0].Context},
			{ID: ids[1], Type: "order_paid", Environment: "staging", Time: now, MetadataVersion: 1, Context: json.RawMessage(`{"name":"x<y","tags":["a","b"]}`)},
			{ID: ids[2], Type: "bytes_context", Environment: "staging", Time: at.Add(time.Hour), MetadataVersion: 1, Context: json.RawMessage(`[null,true,"\u0000",{}]`)},
			{ID: ids[3], Type: "scalar", Environment: "staging", Time: now, MetadataVersion: 1, Context: json.RawMessage(`42`)},
		}
		if ids[0] != givenID {
			t.Errorf("ids[0] = %s, want the given %s", ids[0], givenID)
		}
		got := stored(t, conn)
		if len(got) != len(want) || len(inTx) != len(want) {
			t.Fatalf("stored %d rows, Published saw %d; want %d", len(got), len(inTx), len(want))
		}
		for i := range want {
			same(t, fmt.Sprintf("row %d", i), got[i], want[i])
			same(t, fmt.Sprintf("Published %d", i), inTx[i], want[i])
		}
	})
}

func TestPublish_ManyEventsGoThroughCopy(t *testing.T) {
	ctx := context.Background()
	conn := connect(t)
	const n = 1000
	events := make([]outbox.Event, n)
	for i := range events {
		events[i] = outbox.Event{Type: "tick", Environment: "test", Context: map[string]int{"i": i}}
	}
	// A spy around the Tx tells which path ran.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	spy := &spyTx{Tx: tx}
	ids, err := outbox.PublishIDs(ctx, spy, events...)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if spy.copies != 1 || spy.execs != 0 {
		t.Errorf("%d COPYs and %d Execs, want one COPY", spy.copies, spy.execs)
	}
	got := stored(t, conn)
	if len(got) != n {
		t.Fatalf("stored %d rows, want %d", len(got), n)
	}
	for i, e := range got {
		if e.ID != ids[i] || string(e.Context.(json.RawMessage)) != fmt.Sprintf(`{"i":%d}`, i) {
			t.Fatalf("row %d = %s %s, want id %s in publish order", i, e.ID, e.Context, ids[i])
		}
	}

	// And a few go through one INSERT.
	spy = &spyTx{Tx: conn}
	if err := outbox.Publish(ctx, spy, events[:outbox.CopyMinEvents-1]...); err != nil {
		t.Fatal(err)
	}
	if spy.copies != 0 || spy.execs != 1 {
		t.Errorf("%d COPYs and %d Execs for %d events, want one Exec", spy.copies, spy.execs, outbox.CopyMinEvents-1)
	}
	if c := count(t, conn); c != n+outbox.CopyMinEvents-1 {
		t.Errorf("count = %d, want %d", c, n+outbox.CopyMinEvents-1)
	}
}

type spyTx struct {
	outbox.Tx
	execs, copies int
}

func (s *spyTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	s.execs++
	return s.Tx.Exec(ctx, sql, args...)
}

func (s *spyTx) CopyFrom(ctx context.Context, table pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error) {
	s.copies++
	return s.Tx.CopyFrom(ctx, table, cols, src)
}

// COPY cannot default a column row by row: forced to COPY, events with and
// without a time go in separate COPYs, still in order.
func TestPublish_CopyMixesSetAndDefaultTimesInOrder(t *testing.T) {
	ctx := context.Background()
	conn := connect(t)
	at := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	var events []outbox.Event
	for i := 0; i < 300; i++ {
		e := outbox.Event{Type: "t", Environment: "test", Context: i}
		if (i/50)%2 == 1 {
			e.Time = at.Add(time.Duration(i) * time.Second)
		}
		events = append(events, e)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	spy := &spyTx{Tx: tx}
	if err := (outbox.Publisher{}).ForceCopy().Publish(ctx, spy, events...); err != nil {
		t.Fatal(err)
	}
	var now time.Time
	if err := tx.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if spy.copies != 6 {
		t.Errorf("%d COPYs, want 6 (one per run)", spy.copies)
	}
	got := stored(t, conn)
	if len(got) != len(events) {
		t.Fatalf("stored %d rows, want %d", len(got), len(events))
	}
	for i, e := range got {
		want := now
		if !events[i].Time.IsZero() {
			want = events[i].Time
		}
		if string(e.Context.(json.RawMessage)) != fmt.Sprint(i) || !e.Time.Equal(want) {
			t.Fatalf("row %d: context %s time %v, want %d %v", i, e.Context, e.Time, i, want)
		}
	}
}

// Left to choose, many events that mix set and default times go in one
// INSERT, not one COPY per run: on a bare connection, where each statement
// commits by itself, a failure in a later run would leave the earlier
// written, and a retry would write them twice.
func TestPublish_MixedTimesOnABareConnectionAreOneStatement(t *testing.T) {
	ctx := context.Background()
	conn := connect(t)
	taken := uuid.New()
	if err := outbox.Publish(ctx, conn, outbox.Event{ID: taken, Type: "t", Environment: "test", Context: 0}); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	events := make([]outbox.Event, 200)
	for i := range events {
		events[i] = outbox.Event{Type: "t", Environment: "test", Context: i}
		if i < 100 {
			events[i].Time = at
		}
	}
	events[150].ID = taken // fails the second run
	spy := &spyTx{Tx: conn}
	err := outbox.Publish(ctx, spy, events...)
	if err == nil || !strings.Contains(err.Error(), "outbox_pkey") {
		t.Fatalf("err = %v, want the unique violation", err)
	}
	if spy.execs != 1 || spy.copies != 0 {
		t.Errorf("%d Execs and %d COPYs, want one Exec", spy.execs, spy.copies)
	}
	if c := count(t, conn); c != 1 {
		t.Fatalf("%d outbox rows after the failed publish, want the 1 there was", c)
	}
}

func TestPublish_RolledBackTransactionPublishesNothing(t *testing.T) {
	paths(t, func(t *testing.T, p outbox.Publisher) {
		ctx := context.Background()
		conn := connect(t)
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Publish(ctx, tx, good(), good(), good()); err != nil {
			t.Fatal(err)
		}
		if got := len(outboxtest.Published(t, ctx, tx)); got != 3 {
			t.Fatalf("inside the transaction: %d events, want 3", got)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if c := count(t, conn); c != 0 {
			t.Errorf("after rollback: %d rows, want 0", c)
		}
	})
}

func TestPublish_TenMegabyteContextRoundTrips(t *testing.T) {
	// A 10 MB document with multi-byte characters, escapes and whitespace
	// that any re-encoding would change.
	var b strings.Builder
	b.WriteString("{\n  \"items\": [")
	for i := 0; b.Len() < 10<<20; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "{\"n\": %d, \"s\": \"ünïcødé \\u2603 \\\"%d\\\" <tag>\", \"f\": 1.0e0}", i, i)
	}
	b.WriteString("]\n}\n")
	big := json.RawMessage(b.String())
	if len(big) < 10<<20 {
		t.Fatal("document too small")
	}
	run := func(t *testing.T, p outbox.Publisher) {
		ctx := context.Background()
		conn := connect(t)
		if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			return p.Publish(ctx, tx, outbox.Event{Type: "big", Environment: "test", Context: big})
		}); err != nil {
			t.Fatal(err)
		}
		got := stored(t, conn)
		if len(got) != 1 || !bytes.Equal(got[0].Context.(json.RawMessage), big) {
			t.Fatalf("10 MB context did not round-trip byte for byte (%d rows)", len(got))
		}
	}
	t.Run("auto", func(t *testing.T) { run(t, outbox.Publisher{}) })
	paths(t, run)
}

// Each bad event is refused before anything reaches the database: the
// transaction stays usable (a failed statement would have aborted it) and
// commits no row.
func TestPublish_BadInputWritesNothing(t *testing.T) {
	ctx := context.Background()
	conn := connect(t)
	for _, tc := range badEvents() {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			err = tc.pub.Publish(ctx, tx, good(), good(), tc.ev)
			checkEventError(t, err, 2, tc.want)
			var one int
			if err := tx.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil {
				t.Fatalf("transaction unusable after a refused publish: %v", err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if c := count(t, conn); c != 0 {
				t.Fatalf("%d rows written", c)
			}
		})
	}
}

// The times at the edges of what Publish takes, and an explicit metadata
// version of 1, are stored as given: Publish refuses only what the INSERT
// would fail on (a time outside PostgreSQL's timestamptz range, a version
// below 1), and a time just past its lower or upper edge is refused before
// anything is written.
func TestPublish_EdgesOfTheTimeRangeAndVersionOneAreStored(t *testing.T) {
	paths(t, func(t *testing.T, p outbox.Publisher) {
		ctx := context.Background()
		conn := connect(t)
		p.Environment = "e"
		events := []outbox.Event{
			{Type: "earliest", Context: json.RawMessage(`1`), Time: time.Date(-4713, 11, 24, 0, 0, 0, 0, time.UTC), MetadataVersion: 1},
			{Type: "latest", Context: json.RawMessage(`2`), Time: time.Date(294276, 12, 31, 23, 59, 59, 999999000, time.UTC), MetadataVersion: 1},
		}
		ids, err := p.PublishIDs(ctx, conn, events...)
		if err != nil {
			t.Fatalf("publish at the edges of the range with version 1: %v", err)
		}
		got := stored(t, conn)
		if len(got) != len(events) {
			t.Fatalf("%d rows, want %d", len(got), len(events))
		}
		for i, want := range events {
			want.ID, want.Environment = ids[i], "e"
			same(t, want.Type, got[i], want)
		}
		// Julian day 0 (24 November 4714 BC) is PostgreSQL's first
		// timestamptz, 294277 its first year past the last.
		for _, at := range []time.Time{time.Date(-4713, 11, 23, 23, 59, 59, 999999999, time.UTC), time.Date(294277, 1, 1, 0, 0, 0, 0, time.UTC)} {
			err := p.Publish(ctx, conn, outbox.Event{Type: "past", Context: json.RawMessage(`3`), Time: at})
			if !errors.Is(err, outbox.ErrInvalidTime) {
				t.Errorf("publish at %s: %v, want ErrInvalidTime", at, err)
			}
		}
		if n := count(t, conn); n != len(events) {
			t.Fatalf("%d rows after the refused times, want %d", n, len(events))
		}
	})
}

// pgbouncer-style setups use the simple protocol; both paths must work.
func TestPublish_SimpleProtocol(t *testing.T) {
	ctx := context.Background()
	conn := connect(t, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol })
	at := time.Date(2023, 5, 6, 7, 8, 9, 10000, time.UTC)
	ev := outbox.Event{Type: "q", Environment: "e", Context: json.RawMessage(`{"quote":"it's \"x\"", "nl":"a\nb", "arr":"{1,2}"}`),
		Traceparent: goodTraceparent, Time: at}
	if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := (outbox.Publisher{}).ForceInsert().Publish(ctx, tx, ev, good()); err != nil {
			return err
		}
		return (outbox.Publisher{}).ForceCopy().Publish(ctx, tx, ev, good())
	}); err != nil {
		t.Fatal(err)
	}
	got := stored(t, conn)
	if len(got) != 4 {
		t.Fatalf("%d rows, want 4", len(got))
	}
	for _, i := range []int{0, 2} {
		ev.ID = got[i].ID
		ev.MetadataVersion = 1
		same(t, fmt.Sprintf("row %d", i), got[i], ev)
	}
}

// A database error comes back wrapped, not as a validation error.
func TestPublish_DatabaseErrorIsReturned(t *testing.T) {
	paths(t, func(t *testing.T, p outbox.Publisher) {
		ctx := context.Background()
		conn := connect(t)
		id := uuid.New()
		ev := good()
		ev.ID = id
		if err := p.Publish(ctx, conn, ev); err != nil {
			t.Fatal(err)
		}
		err := p.Publish(ctx, conn, ev) // duplicate primary key
		if err == nil || errors.Is(err, outbox.ErrInvalidEvent) || !strings.Contains(err.Error(), "outbox_pkey") {
			t.Errorf("err = %v, want the unique violation", err)
		}
	})
}
