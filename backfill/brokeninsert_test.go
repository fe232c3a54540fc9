package backfill_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/backfill"
	"github.com/eventcdc/cdc/deadletter"
	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/sink"
	ddl "github.com/eventcdc/cdc/sql"
)

// brokenEvents is how many events the broken-INSERT tests ship: three of
// the sink's blocks (8,192 rows), refusedVersion's in the third.
const (
	brokenEvents   = 20000
	refusedVersion = 17000
)

// numberedEvents gives an outbox of n events with metadata_version 1 to n,
// a second apart in that order (a scan's), and its relation.
func numberedEvents(t *testing.T, n int) (*pgxpool.Pool, *decoder.Relation) {
	t.Helper()
	ctx := context.Background()
	pool := outbox(t)
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, metadata_version, event_date_time)
		SELECT 'e', 'test', '{}', i, '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 second' FROM generate_series(1, $1) i`, n); err != nil {
		t.Fatal(err)
	}
	rel, err := backfill.LoadRelation(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	return pool, rel
}

// readBackCounter is the ClickHouse sink counting how often it is asked
// which rows of a broken INSERT event_log lacks.
type readBackCounter struct {
	*sink.ClickHouse
	mu    sync.Mutex
	asked int
}

func (c *readBackCounter) Unwritten(ctx context.Context, rows []sink.Row) ([]sink.Row, error) {
	c.mu.Lock()
	c.asked++
	c.mu.Unlock()
	return c.ClickHouse.Unwritten(ctx, rows)
}

// storingBlocksAsTheyCome gives a sink (and an admin connection) to an
// event_log that refuses the row of metadata_version refused (none if no
// event has it), on a server
// told to store each block of an INSERT as it comes: an INSERT refused in
// its third block has stored its first two. event_log is a plain
// MergeTree, so that raw duplicates stay to be counted.
func storingBlocksAsTheyCome(t *testing.T, refused int) (admin, ch *sink.ClickHouse) {
	t.Helper()
	ctx := context.Background()
	dsn := testenv.Get(t).NewClickHouse(t)
	open := func(dsn string) *sink.ClickHouse {
		s, err := sink.Open(dsn, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	admin = open(dsn)
	if err := ddl.MigrateClickHouse(ctx, admin.Conn()); err != nil {
		t.Fatal(err)
	}
	testenv.RefuseVersionInPlainEventLog(t, admin.Conn(), refused)
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return admin, open(dsn + sep + "min_insert_block_size_rows=1&min_insert_block_size_bytes=1")
}

// eachEventStored fails t unless event_log holds each of want events
// exactly times times, each at a position of its own.
func eachEventStored(t *testing.T, admin *sink.ClickHouse, want, times uint64) {
	t.Helper()
	var rows, events, positions, off uint64
	if err := admin.Conn().QueryRow(context.Background(), `SELECT count(), uniqExact(event_id), uniqExact(cdc_seq),
		(SELECT count() FROM (SELECT count() AS c FROM event_log GROUP BY event_id) WHERE c != ?) FROM event_log`, times).
		Scan(&rows, &events, &positions, &off); err != nil {
		t.Fatal(err)
	}
	if rows != times*want || events != want || positions != times*want || off != 0 {
		t.Fatalf("event_log holds %d rows of %d events at %d positions, %d events not %d times; want %d events %d times each at positions of their own",
			rows, events, positions, off, times, want, times)
	}
}

// A backfill INSERT refused in a later block, on a server that stores
// blocks as they come, had stored the blocks before: written again in
// halves to find the refused row, they were raw duplicates. Ship asks the
// sink which rows are stored and writes only the others, and a second
// run, broken the same way, stores its own rows once: its positions are
// not the first run's, which would pass for its own.
func TestShip_RowRefusedInALaterBlockLeavesTheBlocksBeforeStoredOnce(t *testing.T) {
	ctx := context.Background()
	pool, rel := numberedEvents(t, brokenEvents)
	admin, ch := storingBlocksAsTheyCome(t, refusedVersion)
	w := &readBackCounter{ClickHouse: ch}
	for run := uint64(1); run <= 2; run++ {
		w.asked = 0
		sc := backfill.NewScanner(pool, rel, time.Time{}, time.Time{}, brokenEvents, 0, true)
		res, err := backfill.Ship(ctx, sc, rel, w, deadletter.New(pool, "cdc_outbox"), 1<<30, nil, nil)
		if err != nil || res.Read != brokenEvents || res.Shipped != brokenEvents-1 || res.DeadLetters != 1 {
			t.Fatalf("run %d: Ship = %+v, %v; want %d read, %d shipped, 1 set aside", run, res, err, brokenEvents, brokenEvents-1)
		}
		eachEventStored(t, admin, brokenEvents-1, run)
		if w.asked == 0 {
			t.Fatalf("run %d: the sink was not asked which rows of the broken INSERT are stored", run)
		}
	}
}

// A replay INSERT refused in a later block stores the letters before it
// once, and settles them.
func TestReplay_RowRefusedInALaterBlockLeavesTheBlocksBeforeStoredOnce(t *testing.T) {
	ctx := context.Background()
	pool, rel := numberedEvents(t, brokenEvents)
	admin, ch := storingBlocksAsTheyCome(t, refusedVersion)
	// Every event a letter, in the order of their versions.
	sc := backfill.NewScanner(pool, rel, time.Time{}, time.Time{}, brokenEvents, 0, true)
	recs, err := sc.Next(ctx)
	if err != nil || len(recs) != brokenEvents {
		t.Fatalf("scanned %d rows, %v; want %d", len(recs), err, brokenEvents)
	}
	letters := make([]sink.Rejected, len(recs))
	for i, r := range recs {
		letters[i] = sink.Rejected{Row: sink.Row{Relation: rel, Values: r.Values, Pos: sink.Position{Seq: uint64(i + 1)}}, Err: errors.New("refused before")}
	}
	store := deadletter.New(pool, "cdc_outbox")
	if err := store.Put(ctx, letters); err != nil {
		t.Fatal(err)
	}
	w := &readBackCounter{ClickHouse: ch}
	res, err := backfill.Replay(ctx, store, w, rel, 0, brokenEvents, 1<<30)
	if err != nil || res.Replayed != brokenEvents-1 || res.Refused != 1 || res.Unsettled != 0 {
		t.Fatalf("Replay = %+v, %v; want %d replayed, 1 refused", res, err, brokenEvents-1)
	}
	eachEventStored(t, admin, brokenEvents-1, 1)
	if w.asked == 0 {
		t.Fatal("the sink was not asked which rows of the broken INSERT are stored")
	}
	var left int
	var version string
	if err := pool.QueryRow(ctx, "SELECT count(*), min(row_data->>'metadata_version') FROM cdc_dead_letter").Scan(&left, &version); err != nil {
		t.Fatal(err)
	}
	if left != 1 || version != "17000" {
		t.Fatalf("%d letters left, the first of version %s; want the one of version %d", left, version, refusedVersion)
	}
}

// lostReply is the ClickHouse sink behind a link that loses the reply of
// the writes numbered in lose: the rows are stored, and the write fails.
type lostReply struct {
	*sink.ClickHouse
	writes int
	lose   func(n int) bool
}

func (l *lostReply) Write(ctx context.Context, b *sink.Batch) ([]sink.Rejected, error) {
	l.writes++
	rejected, err := l.ClickHouse.Write(ctx, b)
	if err == nil && l.lose(l.writes) {
		return nil, errors.New("read: connection reset by peer")
	}
	return rejected, err
}

// A write whose reply was lost had stored its rows: tried again whole, it
// stored them twice. Ship tries again with the rows event_log lacks, here
// none, and goes on.
func TestShip_AWriteWhoseReplyWasLostIsNotWrittenAgain(t *testing.T) {
	defer backfill.SetRetryWaits([]time.Duration{time.Millisecond})()
	ctx := context.Background()
	pool, rel := numberedEvents(t, 30)
	admin, ch := storingBlocksAsTheyCome(t, 0)
	w := &lostReply{ClickHouse: ch, lose: func(n int) bool { return n == 2 }}
	var retried int
	sc := backfill.NewScanner(pool, rel, time.Time{}, time.Time{}, 10, 0, true)
	res, err := backfill.Ship(ctx, sc, rel, w, deadletter.New(pool, "cdc_outbox"), 1<<20, nil, func(error, time.Duration) { retried++ })
	if err != nil || res.Read != 30 || res.Shipped != 30 || retried != 1 || w.writes != 3 {
		t.Fatalf("Ship = %+v, %v after %d retries and %d writes; want 30 read and shipped after 1 retry, in 3 writes (none for the batch stored)", res, err, retried, w.writes)
	}
	eachEventStored(t, admin, 30, 1)
}
