package outboxtest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/outbox"
	"github.com/eventcdc/cdc/outbox/outboxtest"
	ddl "github.com/eventcdc/cdc/sql"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func connect(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testenv.Get(t).NewPostgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if err := ddl.MigratePostgres(ctx, conn, "cdc_outbox", io.Discard); err != nil {
		t.Fatal(err)
	}
	return conn
}

// events makes n events of every shape; where timed, each sets its Time,
// otherwise some leave it to the database. The times are not in UTC.
func events(n int, timed bool) []outbox.Event {
	at := time.Date(2024, 1, 2, 3, 4, 5, 678901234, time.FixedZone("UTC+5", 5*3600))
	out := make([]outbox.Event, n)
	for i := range out {
		e := outbox.Event{ID: uuid.New(), Type: fmt.Sprintf("type_%d", i%3), Context: map[string]any{"i": i, "s": "<é>"}}
		switch i % 4 {
		case 1:
			e.Context = json.RawMessage(fmt.Sprintf(` {"raw": %d} `, i))
			e.Environment = "override"
		case 2:
			e.Time = at.Add(time.Duration(i) * time.Minute)
			e.Traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		case 3:
			e.MetadataVersion = int64(i)
			e.Time = at
		}
		if timed && e.Time.IsZero() {
			e.Time = at.Add(-time.Duration(i) * time.Second)
		}
		out[i] = e
	}
	return out
}

// The Recorder records what the database stores, on both write paths,
// times in UTC as Published reads them.
func TestRecorder_RecordsWhatTheDatabaseStores(t *testing.T) {
	for _, tc := range []struct {
		name  string
		n     int
		timed bool
	}{
		{"insert", 5, false},
		{"insert_of_many_with_default_times", 150, false},
		{"copy", 150, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			conn := connect(t)
			pub := outbox.Publisher{Environment: "test"}
			n := tc.n
			evs := events(n, tc.timed)

			var rec outboxtest.Recorder
			if err := pub.Publish(ctx, &rec, evs...); err != nil {
				t.Fatal(err)
			}
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if err := pub.Publish(ctx, tx, evs...); err != nil {
				t.Fatal(err)
			}
			var now time.Time
			if err := tx.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
				t.Fatal(err)
			}
			db := outboxtest.Published(t, ctx, tx)
			recorded := rec.Events()
			if len(db) != n || len(recorded) != n {
				t.Fatalf("database has %d events, recorder %d; want %d", len(db), len(recorded), n)
			}
			for i := range db {
				r := recorded[i]
				if r.Time.IsZero() {
					r.Time = now.UTC() // the database's default
				}
				d := db[i]
				if d.ID != r.ID || d.Type != r.Type || d.Time != r.Time || d.Environment != r.Environment ||
					d.MetadataVersion != r.MetadataVersion || d.Traceparent != r.Traceparent ||
					!bytes.Equal(d.Context.(json.RawMessage), r.Context.(json.RawMessage)) {
					t.Fatalf("event %d:\ndatabase %+v %s\nrecorder %+v %s", i, d, d.Context, r, r.Context)
				}
			}
			if len(rec.Statements()) != 0 {
				t.Errorf("recorder saw other statements: %v", rec.Statements())
			}
		})
	}
}

func TestRecorder_OtherStatementsAndErrors(t *testing.T) {
	ctx := context.Background()
	var rec outboxtest.Recorder
	if _, err := rec.Exec(ctx, `INSERT INTO users (email) VALUES ($1)`, "a@b.c"); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Publish(ctx, &rec, outbox.Event{Type: "user_created", Environment: "e", Context: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	n, err := rec.CopyFrom(ctx, pgx.Identifier{"users"}, []string{"email"}, pgx.CopyFromRows([][]any{{"x@y.z"}, {"p@q.r"}}))
	if err != nil || n != 2 {
		t.Fatalf("CopyFrom = %d, %v", n, err)
	}
	if got := rec.Types(); len(got) != 1 || got[0] != "user_created" {
		t.Errorf("Types() = %v", got)
	}
	st := rec.Statements()
	if len(st) != 2 || st[0].SQL != `INSERT INTO users (email) VALUES ($1)` || st[0].Args[0] != "a@b.c" || st[1].SQL != `COPY "users" (email)` || len(st[1].Args) != 2 {
		t.Errorf("Statements() = %#v", st)
	}
	rec.Reset()
	if len(rec.Events())+len(rec.Statements()) != 0 {
		t.Error("Reset kept something")
	}

	boom := errors.New("database down")
	rec.Err = boom
	if err := outbox.Publish(ctx, &rec, outbox.Event{Type: "x", Environment: "e", Context: 1}); !errors.Is(err, boom) {
		t.Errorf("err = %v, want %v", err, boom)
	}
	if len(rec.Events()) != 0 {
		t.Error("recorded despite Err")
	}
}

// Published returns this transaction's events, those of its released
// savepoints included, and nobody else's.
func TestPublished_OnlyThisTransaction(t *testing.T) {
	ctx := context.Background()
	conn := connect(t)
	ev := func(typ string) outbox.Event {
		return outbox.Event{Type: typ, Environment: "e", Context: json.RawMessage(`{}`)}
	}
	// Committed earlier: not ours.
	if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return outbox.Publish(ctx, tx, ev("earlier")) }); err != nil {
		t.Fatal(err)
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if got := outboxtest.Published(t, ctx, tx); len(got) != 0 {
		t.Fatalf("before publishing: %d events", len(got))
	}

	// Another transaction commits while ours runs (read committed: we see it).
	other, err := pgx.Connect(ctx, conn.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)

	if err := outbox.Publish(ctx, tx, ev("first")); err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, other, func(otx pgx.Tx) error { return outbox.Publish(ctx, otx, ev("concurrent")) }); err != nil {
		t.Fatal(err)
	}
	// A released savepoint (pgx nested transaction) keeps its rows...
	if err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error { return outbox.Publish(ctx, sp, ev("in_savepoint")) }); err != nil {
		t.Fatal(err)
	}
	// ...a rolled-back one does not.
	sp, err := tx.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Publish(ctx, sp, ev("rolled_back")); err != nil {
		t.Fatal(err)
	}
	if err := sp.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Publish(ctx, tx, ev("last")); err != nil {
		t.Fatal(err)
	}

	var types []string
	for _, e := range outboxtest.Published(t, ctx, tx) {
		types = append(types, e.Type)
	}
	if fmt.Sprint(types) != "[first in_savepoint last]" {
		t.Errorf("Published = %v, want [first in_savepoint last]", types)
	}
	var all int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&all); err != nil || all != 5 {
		t.Errorf("outbox holds %d rows (%v), want 5 visible", all, err)
	}
}
