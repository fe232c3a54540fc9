package backfill_test

import (
	"context"
	"errors"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/backfill"
	"github.com/eventcdc/cdc/deadletter"
	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/sink"
	ddl "github.com/eventcdc/cdc/sql"
)

// flakySink is the real ClickHouse sink behind a link that fails: the
// writes numbered in fail return an error (a network error, say) without
// reaching the server.
type flakySink struct {
	*sink.ClickHouse
	mu     sync.Mutex
	writes int
	fail   func(n int) bool
}

func (f *flakySink) Write(ctx context.Context, b *sink.Batch) ([]sink.Rejected, error) {
	f.mu.Lock()
	f.writes++
	n := f.writes
	f.mu.Unlock()
	if f.fail(n) {
		return nil, errors.New("write: connection reset by peer")
	}
	return f.ClickHouse.Write(ctx, b)
}

// thirtyEvents gives an outbox of 30 events a minute apart from
// 2026-01-01 00:00 UTC, its relation, and a ClickHouse sink with event_log.
func thirtyEvents(t *testing.T) (*pgxpool.Pool, *sink.ClickHouse, *decoder.Relation) {
	t.Helper()
	ctx := context.Background()
	pool := outbox(t)
	ch, err := sink.Open(testenv.Get(t).NewClickHouse(t), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	if err := ddl.MigrateClickHouse(ctx, ch.Conn()); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT 'e', 'test', '{}', '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 minute' FROM generate_series(0, 29) i`); err != nil {
		t.Fatal(err)
	}
	rel, err := backfill.LoadRelation(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	return pool, ch, rel
}

// A write that fails for another reason than a row's content is tried
// again after each of the retry waits; when the last try fails too, Ship
// says where to resume, and a backfill from there stores the rest.
func TestShip_RetriesAFailedWriteThenSaysWhereToResume(t *testing.T) {
	defer backfill.SetRetryWaits([]time.Duration{time.Millisecond, 2 * time.Millisecond})()
	ctx := context.Background()
	pool, ch, rel := thirtyEvents(t)
	stored := func() uint64 {
		var n uint64
		if err := ch.Conn().QueryRow(ctx, "SELECT count() FROM event_log FINAL").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Writes 2 and 3 fail: the second batch is stored at its third try.
	flaky := &flakySink{ClickHouse: ch, fail: func(n int) bool { return n == 2 || n == 3 }}
	var waits []time.Duration
	sc := backfill.NewScanner(pool, rel, time.Time{}, time.Time{}, 10, 0, true)
	res, err := backfill.Ship(ctx, sc, rel, flaky, deadletter.New(pool, "cdc_outbox"), 1<<20, nil, func(_ error, wait time.Duration) { waits = append(waits, wait) })
	if err != nil || res.Shipped != 30 || len(waits) != 2 || waits[0] != time.Millisecond || waits[1] != 2*time.Millisecond {
		t.Fatalf("ship through two failed writes: %+v, %v, waits %v; want 30 shipped after waits of 1ms and 2ms", res, err, waits)
	}
	if n := stored(); n != 30 {
		t.Fatalf("event_log holds %d events, want 30", n)
	}

	// From its second batch on, every write fails: the first tries and
	// its two retries. Resume is the time of the batch's first row.
	if err := ch.Conn().Exec(ctx, "TRUNCATE TABLE event_log"); err != nil {
		t.Fatal(err)
	}
	flaky = &flakySink{ClickHouse: ch, fail: func(n int) bool { return n >= 2 }}
	sc = backfill.NewScanner(pool, rel, time.Time{}, time.Time{}, 10, 0, true)
	res, err = backfill.Ship(ctx, sc, rel, flaky, deadletter.New(pool, "cdc_outbox"), 1<<20, nil, nil)
	want := time.Date(2026, 1, 1, 0, 10, 0, 0, time.UTC)
	if err == nil || res.Shipped != 10 || flaky.writes != 4 || !res.Resume.Valid || !res.Resume.Time.Equal(want) {
		t.Fatalf("ship with a link that stays down: %+v, %v, %d writes; want an error, 10 shipped, 4 writes, resume at %s", res, err, flaky.writes, want)
	}
	sc = backfill.NewScanner(pool, rel, res.Resume.Time, time.Time{}, 10, 0, true)
	if res, err := backfill.Ship(ctx, sc, rel, ch, deadletter.New(pool, "cdc_outbox"), 1<<20, nil, nil); err != nil || res.Shipped != 20 {
		t.Fatalf("ship from the resume point: %+v, %v; want the other 20 shipped", res, err)
	}
	if n := stored(); n != 30 {
		t.Fatalf("event_log holds %d events after resuming, want 30", n)
	}
}

// A write ClickHouse refuses at login (here: a database that does not
// exist) is not retried: the waits would only delay the exit that names
// the DSN's variable.
func TestShip_ARefusedLoginIsNotRetried(t *testing.T) {
	defer backfill.SetRetryWaits([]time.Duration{time.Hour})()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pool, _, rel := thirtyEvents(t)
	u, err := url.Parse(testenv.Get(t).CHDSN)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/no_such_database"
	noDB, err := sink.Open(u.String(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { noDB.Close() })
	counted := &flakySink{ClickHouse: noDB, fail: func(int) bool { return false }}
	sc := backfill.NewScanner(pool, rel, time.Time{}, time.Time{}, 10, 0, true)
	res, err := backfill.Ship(ctx, sc, rel, counted, deadletter.New(pool, "cdc_outbox"), 1<<20, nil, nil)
	if !sink.IsLoginError(err) || counted.writes != 1 || res.Shipped != 0 || ctx.Err() != nil {
		t.Fatalf("ship into a database that does not exist: %+v, %v, %d writes, context %v; want a login error after 1 write, nothing shipped, long before the retry's hour", res, err, counted.writes, ctx.Err())
	}
}

// A run that fails reading the outbox, not writing (here: interrupted
// after its second batch), says where to resume too: at the last row
// stored.
func TestShip_AFailedReadSaysWhereToResume(t *testing.T) {
	ctx := context.Background()
	pool, ch, rel := thirtyEvents(t)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sc := backfill.NewScanner(pool, rel, time.Time{}, time.Time{}, 10, 0, true)
	res, err := backfill.Ship(rctx, sc, rel, ch, deadletter.New(pool, "cdc_outbox"), 1<<20, func(r backfill.ShipResult) {
		if r.Shipped == 20 {
			cancel() // the third page's read fails
		}
	}, nil)
	want := time.Date(2026, 1, 1, 0, 19, 0, 0, time.UTC)
	if err == nil || res.Shipped != 20 || !res.Resume.Valid || !res.Resume.Time.Equal(want) {
		t.Fatalf("ship interrupted after two batches: %+v, %v; want an error, 20 shipped, resume at %s", res, err, want)
	}
	// Shipped, as it says: the first twenty are in event_log, the rest
	// are not, so resuming where it says loses none.
	var n uint64
	var newest time.Time
	if err := ch.Conn().QueryRow(ctx, "SELECT count(), max(event_date_time) FROM event_log FINAL").Scan(&n, &newest); err != nil {
		t.Fatal(err)
	}
	if n != 20 || !newest.Equal(want) {
		t.Fatalf("event_log holds %d events up to %s, want the 20 up to %s", n, newest, want)
	}
}

// A refused row whose event event_log holds already — its letter was
// repaired and replayed, while the outbox row keeps the bad value — is not
// set aside again: a backfill over it would otherwise bring the letter
// back after every repair. Refused rows of events not stored are set
// aside as before.
func TestShip_ARefusedEventStoredAlreadyIsNotSetAsideAgain(t *testing.T) {
	ctx := context.Background()
	pool, ch, rel := thirtyEvents(t)
	const repaired, refused = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (id, event_type, environment, event_context, event_date_time)
		VALUES ($1, 'inf', 'test', '{}', 'infinity'), ($2, 'inf', 'test', '{}', 'infinity')`, repaired, refused); err != nil {
		t.Fatal(err)
	}
	// The repaired letter's replay stored the event, with another time.
	values := make([]decoder.Value, len(rel.Columns))
	for col, v := range map[string]string{"id": repaired, "event_type": "inf", "event_date_time": "2026-12-01 22:30:00+00",
		"environment": "test", "event_context": "{}", "metadata_version": "1"} {
		values[rel.Index(col)] = decoder.Value{Kind: decoder.ValueText, Data: []byte(v)}
	}
	if rejected, err := ch.Write(ctx, &sink.Batch{Rows: []sink.Row{{Relation: rel, Values: values, Pos: sink.Position{CommitLSN: 0x1000, Seq: 1}}}}); err != nil || len(rejected) != 0 {
		t.Fatalf("store the repaired event: %v, %v", rejected, err)
	}
	dl := deadletter.New(pool, "cdc_outbox")
	sc := backfill.NewScanner(pool, rel, time.Time{}, time.Time{}, 100, 0, true)
	res, err := backfill.Ship(ctx, sc, rel, ch, dl, 1<<20, nil, nil)
	if err != nil || res.Read != 32 || res.Shipped != 30 || res.DeadLetters != 1 || res.Repaired != 1 {
		t.Fatalf("Ship = %+v, %v; want 32 read, 30 shipped, 1 set aside, 1 stored already", res, err)
	}
	letters, err := dl.List(ctx, 10, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 1 || letters[0].EventID == nil || *letters[0].EventID != refused {
		t.Fatalf("letters %+v, want one, of %s", letters, refused)
	}
}

// countingConn counts how often Ship asks which refused events event_log
// holds: each ask reads event_log's whole event_id column.
type countingConn struct {
	*sink.ClickHouse
	asked int
}

func (c *countingConn) Conn() driver.Conn {
	c.asked++
	return c.ClickHouse.Conn()
}

// Refused rows of many batches are set aside together, after one look in
// event_log for their events, not one look per batch.
func TestShip_RefusedRowsOfManyBatchesAreLookedUpOnce(t *testing.T) {
	ctx := context.Background()
	pool, ch, rel := thirtyEvents(t)
	// Five rows ClickHouse refuses (a negative UInt64), one in each of
	// five batches of ten.
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, metadata_version, event_date_time)
		SELECT 'bad', 'test', '{}', -1, '2026-01-01 00:00:30+00'::timestamptz + i * interval '10 minutes' FROM generate_series(0, 4) i`); err != nil {
		t.Fatal(err)
	}
	w := &countingConn{ClickHouse: ch}
	sc := backfill.NewScanner(pool, rel, time.Time{}, time.Time{}, 10, 0, true)
	res, err := backfill.Ship(ctx, sc, rel, w, deadletter.New(pool, "cdc_outbox"), 1<<20, nil, nil)
	if err != nil || res.Read != 35 || res.Shipped != 30 || res.DeadLetters != 5 || res.Repaired != 0 {
		t.Fatalf("Ship = %+v, %v; want 35 read, 30 shipped, 5 set aside", res, err)
	}
	if w.asked != 1 {
		t.Errorf("event_log asked %d times about refused events, want once", w.asked)
	}
	if n, err := deadletter.New(pool, "cdc_outbox").Count(ctx); err != nil || n != 5 {
		t.Errorf("%d dead letters (%v), want 5", n, err)
	}
}
