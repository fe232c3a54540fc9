package replication_test

import (
	"context"
	"io"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/metrics"
	"github.com/eventcdc/cdc/replication"
	"github.com/eventcdc/cdc/sink"
	ddl "github.com/eventcdc/cdc/sql"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// fakeSink is a scripted sink: PostgreSQL stays real, the store is a
// slice, and a test can hold writes to see what gets acknowledged.
type fakeSink struct {
	mu      sync.Mutex
	rows    []sink.Row
	batches int
	gate    chan struct{} // when non-nil, each Write waits for a token
	// holdFirst, when non-nil, makes the first Write wait until it is
	// closed while later ones go through.
	holdFirst chan struct{}
	// heldCancelled is set when the held first Write's context ended
	// before holdFirst was closed.
	heldCancelled bool
	writes        int
	seqs          [][]uint64 // each stored batch's row sequence numbers
	// commits holds the commit LSN of each Write's first row, in the
	// order the Writes came, stored or not.
	commits []pglogrepl.LSN
}

var _ replication.Sink = (*fakeSink)(nil)

func (f *fakeSink) Write(ctx context.Context, b *sink.Batch) ([]sink.Rejected, error) {
	f.mu.Lock()
	f.writes++
	first := f.writes == 1
	f.commits = append(f.commits, b.Rows[0].Pos.CommitLSN)
	f.mu.Unlock()
	if first && f.holdFirst != nil {
		select {
		case <-f.holdFirst:
		case <-ctx.Done():
			f.mu.Lock()
			f.heldCancelled = true
			f.mu.Unlock()
			return nil, ctx.Err()
		}
	}
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rows = append(f.rows, b.Rows...)
	f.batches++
	var seqs []uint64
	for _, r := range b.Rows {
		seqs = append(seqs, r.Pos.Seq)
	}
	f.seqs = append(f.seqs, seqs)
	return nil, nil
}

// Written answers from what the fake stored, as ClickHouse would: each
// position with its event, in order.
func (f *fakeSink) Written(_ context.Context, from, to pglogrepl.LSN) (*sink.Positions, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out sink.Reader
	for _, r := range byPosition(f.rows) {
		if r.Pos.CommitLSN >= from && r.Pos.CommitLSN < to {
			out.Add(r.Pos, r.Event())
		}
	}
	return out.Set(), nil
}

func (f *fakeSink) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.rows)
}

type harness struct {
	t    *testing.T
	pool *pgxpool.Pool
	dsn  string
}

func setup(t *testing.T) *harness {
	t.Helper()
	return setupOn(t, testenv.Get(t).NewPostgres(t))
}

// setupOn is setup in the database of dsn.
func setupOn(t *testing.T, dsn string) *harness {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	ctx := context.Background()
	if err := ddl.MigratePostgres(ctx, pool, "pub", io.Discard); err != nil {
		t.Fatal(err)
	}
	if _, err := ddl.CreateSlot(ctx, pool, "slot"); err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, pool: pool, dsn: dsn}
}

func (h *harness) run(s replication.Sink) (stop func()) {
	return h.runWith(s, zap.NewNop(), func(*replication.Config) {})
}

// runWith is run with a logger and changes to the default config.
func (h *harness) runWith(s replication.Sink, log *zap.Logger, change func(*replication.Config)) (stop func()) {
	h.t.Helper()
	_, _, stop = h.start(s, nil, log, change)
	return stop
}

// start is runWith with a dead-letter store, returning the replicator and
// its metrics too.
func (h *harness) start(s replication.Sink, dead replication.DeadLetters, log *zap.Logger, change func(*replication.Config)) (*replication.Replicator, *metrics.Metrics, func()) {
	h.t.Helper()
	r, m := h.replicator(s, dead, log, change)
	return r, m, h.runReplicator(r)
}

// replicator is start without running the replicator.
func (h *harness) replicator(s replication.Sink, dead replication.DeadLetters, log *zap.Logger, change func(*replication.Config)) (*replication.Replicator, *metrics.Metrics) {
	reg := prometheus.NewRegistry()
	cfg := replication.Config{
		DSN: h.dsn, Slot: "slot", Publication: "pub",
		BatchMaxRows: 1000, BatchMaxBytes: 1 << 20, FlushInterval: 50 * time.Millisecond,
		StatusInterval: 100 * time.Millisecond, InsertsInFlight: 2,
		// Under Linux's default net.core.rmem_max (208 KiB), so that every
		// host runs the read-ahead path (the default, 512 KiB, may be
		// left to the kernel where the maximum is lower).
		ReceiveBuffer: 128 << 10,
	}
	change(&cfg)
	m := metrics.New(reg, func() int64 { return time.Now().UnixNano() })
	return replication.New(cfg, s, dead, log, m), m
}

// runReplicator runs r until the returned stop is called, or the test
// ends: a test that fails before its stop must not leave r reconnecting
// to a dropped database for the rest of the package's run.
func (h *harness) runReplicator(r *replication.Replicator) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("Run: %v", err)
		}
	})
	h.t.Cleanup(stop)
	return stop
}

func (h *harness) lsn(sql string) pglogrepl.LSN {
	h.t.Helper()
	var s string
	if err := h.pool.QueryRow(context.Background(), sql).Scan(&s); err != nil {
		h.t.Fatal(err)
	}
	l, err := pglogrepl.ParseLSN(s)
	if err != nil {
		h.t.Fatal(err)
	}
	return l
}

func (h *harness) confirmed() pglogrepl.LSN {
	return h.lsn(`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'slot'`)
}

func (h *harness) exec(sql string) {
	h.t.Helper()
	if _, err := h.pool.Exec(context.Background(), sql); err != nil {
		h.t.Fatal(err)
	}
}

// role creates role name with attrs (e.g. "LOGIN REPLICATION"), dropped
// when the test ends, once its sessions have.
func (h *harness) role(name, attrs string) string {
	h.t.Helper()
	h.exec(`CREATE ROLE ` + name + ` ` + attrs)
	h.t.Cleanup(func() {
		eventually(h.t, "the role's sessions ended", func() bool {
			var n int
			_ = h.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE usename = $1`, name).Scan(&n)
			return n == 0
		})
		h.exec(`DROP ROLE ` + name)
	})
	return name
}

// as points h.dsn, and the replicators made from now on, at user.
func (h *harness) as(user string) {
	h.t.Helper()
	u, err := url.Parse(h.dsn)
	if err != nil {
		h.t.Fatal(err)
	}
	u.User = url.User(user)
	h.dsn = u.String()
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestReplicator_AcknowledgesOnlyWhatTheSinkStored(t *testing.T) {
	h := setup(t)
	s := &fakeSink{gate: make(chan struct{})}
	stop := h.run(s)
	defer stop()

	before := h.confirmed()
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) SELECT 'e', 'test', '{}' FROM generate_series(1, 10)`)
	commitEnd := h.lsn(`SELECT pg_current_wal_lsn()::text`)

	// The batch is waiting at the gate: several status intervals pass and
	// the slot must not move past the unstored transaction: not even to
	// its commit record's start, which the batch's rows carry (the WAL
	// position read after the INSERT is only a bound above its end:
	// other databases on the server write WAL too).
	eventually(t, "the batch at the sink's gate", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.writes == 1
	})
	time.Sleep(500 * time.Millisecond)
	s.mu.Lock()
	commit := s.commits[0]
	s.mu.Unlock()
	if c := h.confirmed(); c > commit {
		t.Fatalf("confirmed_flush_lsn %s passed the unstored commit at %s (was %s)", c, commit, before)
	}
	close(s.gate) // store everything from now on
	eventually(t, "10 rows stored", func() bool { return s.count() == 10 })
	eventually(t, "acknowledgement of the stored commit", func() bool { return h.confirmed() >= commitEnd })
}

func TestReplicator_QuietOutboxStillReleasesWAL(t *testing.T) {
	h := setup(t)
	s := &fakeSink{}
	stop := h.run(s)
	defer stop()
	// Busy database, quiet outbox: writes to another table only.
	h.exec(`CREATE TABLE other (id int)`)
	h.exec(`INSERT INTO other SELECT generate_series(1, 1000)`)
	target := h.lsn(`SELECT pg_current_wal_lsn()::text`)
	// Keepalives carry the server's WAL end; with nothing buffered the
	// connector follows it so the slot does not pin WAL forever.
	h.exec(`SELECT pg_switch_wal()`)
	eventually(t, "slot to follow the server's WAL end", func() bool { return h.confirmed() >= target })
	if s.count() != 0 {
		t.Fatalf("sink got %d rows from a table outside the publication", s.count())
	}
}

func TestReplicator_RowsCarryTheirPositionInOrder(t *testing.T) {
	h := setup(t)
	s := &fakeSink{}
	stop := h.run(s)
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) SELECT 'a', 'test', '{}' FROM generate_series(1, 3)`)
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) SELECT 'b', 'test', '{}' FROM generate_series(1, 2)`)
	eventually(t, "5 rows", func() bool { return s.count() == 5 })
	stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	wantSeq := []uint64{1, 2, 3, 1, 2}
	for i, r := range s.rows {
		if r.Pos.Seq != wantSeq[i] {
			t.Errorf("row %d seq = %d, want %d", i, r.Pos.Seq, wantSeq[i])
		}
		if i > 0 && !s.rows[i-1].Pos.Less(r.Pos) {
			t.Errorf("row %d position %s not after %s", i, r.Pos, s.rows[i-1].Pos)
		}
	}
	if s.rows[0].Pos.CommitLSN == s.rows[3].Pos.CommitLSN {
		t.Errorf("two transactions share commit LSN %s", s.rows[0].Pos.CommitLSN)
	}
}

// With two INSERTs in flight a later batch can be stored first; the slot
// must still not move past the earlier, unstored one.
func TestReplicator_LaterBatchStoredFirstWaitsForTheEarlierOne(t *testing.T) {
	h := setup(t)
	s := &fakeSink{holdFirst: make(chan struct{})}
	stop := h.run(s)
	defer stop()

	h.exec(`INSERT INTO outbox (event_type, environment, event_context) SELECT 'first', 'test', '{}' FROM generate_series(1, 10)`)
	firstEnd := h.lsn(`SELECT pg_current_wal_lsn()::text`)
	eventually(t, "the first batch to reach the sink", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.writes == 1
	})
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) SELECT 'second', 'test', '{}' FROM generate_series(1, 5)`)
	secondEnd := h.lsn(`SELECT pg_current_wal_lsn()::text`)
	eventually(t, "the second batch stored while the first is held", func() bool { return s.count() == 5 })

	// Several status intervals with the second batch stored and the first
	// not: the acknowledgement must stay before the first commit.
	time.Sleep(500 * time.Millisecond)
	s.mu.Lock()
	first := s.commits[0]
	s.mu.Unlock()
	if c := h.confirmed(); c > first || c >= firstEnd {
		t.Fatalf("confirmed_flush_lsn %s passed the first, unstored commit at %s", c, first)
	}
	close(s.holdFirst)
	eventually(t, "15 rows stored", func() bool { return s.count() == 15 })
	eventually(t, "acknowledgement of both commits", func() bool { return h.confirmed() >= secondEnd })
	s.mu.Lock()
	defer s.mu.Unlock()
	if string(s.rows[0].Values[1].Data) != "second" || string(s.rows[5].Values[1].Data) != "first" {
		t.Fatalf("store order %q then %q, want the second batch stored first", string(s.rows[0].Values[1].Data), string(s.rows[5].Values[1].Data))
	}
}

// Events of several MB are held about four times over while inserted: two
// such batches do not fit the writer's budget together, so the second
// waits for the first instead of being inserted alongside it.
func TestReplicator_BatchesOfHugeEventsAreInsertedOneAtATime(t *testing.T) {
	h := setup(t)
	s := &fakeSink{holdFirst: make(chan struct{})}
	_, m, stop := h.start(s, nil, zap.NewNop(), func(*replication.Config) {})
	defer stop()

	// 5 MB each, over the 1 MiB batch limit: one event per batch.
	for i := 0; i < 2; i++ {
		h.exec(`INSERT INTO outbox (event_type, environment, event_context) SELECT 'huge', 'test', json_build_object('blob', repeat('x', 5000000))`)
	}
	eventually(t, "the first batch to reach the sink", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.writes == 1
	})
	// The second event received (each is cut into a batch of its own as
	// it arrives): only its write is left to hold back.
	eventually(t, "both huge events received", func() bool { return testutil.ToFloat64(m.BufferBytes) >= 2*5000000 })
	time.Sleep(500 * time.Millisecond)
	s.mu.Lock()
	writes := s.writes
	s.mu.Unlock()
	if writes != 1 {
		t.Fatalf("%d writes started while the first huge batch was held, want 1", writes)
	}
	close(s.holdFirst)
	eventually(t, "both huge events stored", func() bool { return s.count() == 2 })
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.batches != 2 {
		t.Fatalf("%d batches, want one per huge event", s.batches)
	}
}
