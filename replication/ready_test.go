package replication_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/eventcdc/cdc/deadletter"
	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/replication"
	"github.com/eventcdc/cdc/retention"
	"github.com/eventcdc/cdc/sink"
)

// refusingSink fails every Write with failErr while it is set, and
// otherwise stores each batch, or refuses every row of it when
// rejectAll is set.
type refusingSink struct {
	fakeSink
	failErr   atomic.Pointer[error]
	rejectAll bool
}

func (f *refusingSink) Write(ctx context.Context, b *sink.Batch) ([]sink.Rejected, error) {
	if err := f.failErr.Load(); err != nil {
		return nil, *err
	}
	if !f.rejectAll {
		return f.fakeSink.Write(ctx, b)
	}
	out := make([]sink.Rejected, len(b.Rows))
	for i, r := range b.Rows {
		out[i] = sink.Rejected{Row: r, Err: errors.New("refused for the test")}
	}
	return out, nil
}

// unreadableSink cannot say what it holds while down is set, as a
// ClickHouse that is down.
type unreadableSink struct {
	fakeSink
	down atomic.Bool
}

func (f *unreadableSink) Written(ctx context.Context, from, to pglogrepl.LSN) (*sink.Positions, error) {
	if f.down.Load() {
		return nil, errors.New("clickhouse is down for the test")
	}
	return f.fakeSink.Written(ctx, from, to)
}

// A ClickHouse that is down while no batch is held (a reconnect to
// PostgreSQL during its outage ended the session that held them) keeps
// every session from starting: that is a failing store all the same — the
// gauge, the error counter and readiness say so — and sessions are tried
// again as often as a batch would be, not on the replication backoff.
func TestReplicator_SinkDownAtSessionStartIsAFailingStore(t *testing.T) {
	defer replication.SetSinkRetryMax(50 * time.Millisecond)()
	h := setup(t)
	s := &unreadableSink{}
	s.down.Store(true)
	core, logs := observer.New(zapcore.InfoLevel)
	rep, m, stop := h.start(s, deadletter.New(h.pool, "slot"), zap.New(core), func(*replication.Config) {})
	defer stop()

	eventually(t, "four failed starts", func() bool { return testutil.ToFloat64(m.SinkErrors) >= 4 })
	if n := testutil.ToFloat64(m.SinkFailing); n != 1 {
		t.Errorf("cdc_sink_failing_batches = %v while no session can start, want 1", n)
	}
	if err := rep.State().StoreError(); err == nil || !strings.Contains(err.Error(), "read what the sink already stored: clickhouse is down for the test") {
		t.Errorf("StoreError = %v, want the sink's failure", err)
	}
	// The replication backoff's first wait alone is 125 ms or more.
	retries := logs.FilterMessage("replication interrupted; reconnecting").All()
	if len(retries) < 3 {
		t.Fatalf("%d reconnects logged, want at least 3", len(retries))
	}
	for _, e := range retries {
		if d, _ := e.ContextMap()["retry_in"].(time.Duration); d <= 0 || d > 50*time.Millisecond {
			t.Errorf("reconnect after the sink's failure in %v, want at most the sink's retry cap, 50ms", e.ContextMap()["retry_in"])
		}
	}

	s.down.Store(false)
	eventually(t, "streaming", rep.State().Streaming)
	if n := testutil.ToFloat64(m.SinkFailing); n != 0 {
		t.Errorf("cdc_sink_failing_batches = %v once a session started, want 0", n)
	}
	if err := rep.State().StoreError(); err != nil {
		t.Errorf("StoreError = %v once a session started, want nil", err)
	}
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) SELECT 'e', 'test', '{}' FROM generate_series(1, 3)`)
	eventually(t, "the rows stored", func() bool { return s.count() == 3 })
}

// A batch that cannot be stored — its INSERT refused, or its refused rows
// not set aside — fails readiness and counts as a sink error until it is
// stored; nothing is acknowledged meanwhile.
func TestReplicator_StoreErrorWhileABatchIsRetried(t *testing.T) {
	for _, tc := range []struct {
		name string
		// breakStore makes storing fail; it returns what undoes it.
		breakStore func(h *harness, s *refusingSink) (mend func())
		wantErr    string
		stored     func(h *harness, s *refusingSink) int
	}{
		{
			name: "insert refused",
			breakStore: func(_ *harness, s *refusingSink) func() {
				err := errors.New("code: 60, message: Table default.event_log doesn't exist")
				s.failErr.Store(&err)
				return func() { s.failErr.Store(nil) }
			},
			wantErr: "store a batch of 3 rows: code: 60, message: Table default.event_log doesn't exist",
			stored:  func(_ *harness, s *refusingSink) int { return s.count() },
		},
		{
			name: "dead letters refused",
			breakStore: func(h *harness, s *refusingSink) func() {
				s.rejectAll = true
				h.exec(`ALTER TABLE cdc_dead_letter RENAME TO cdc_dead_letter_away`)
				return func() { h.exec(`ALTER TABLE cdc_dead_letter_away RENAME TO cdc_dead_letter`) }
			},
			wantErr: `set aside 3 refused rows in cdc_dead_letter: `,
			stored: func(h *harness, _ *refusingSink) int {
				var n int
				if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM cdc_dead_letter`).Scan(&n); err != nil {
					h.t.Fatal(err)
				}
				return n
			},
		},
		{
			// An ALTER of cdc_dead_letter queued behind a long reader
			// blocks every Put; an attempt gives up after
			// deadLetterTimeout and counts as failed.
			name: "dead letters waiting on a lock",
			breakStore: func(h *harness, s *refusingSink) func() {
				s.rejectAll = true
				tx, err := h.pool.Begin(context.Background())
				if err != nil {
					h.t.Fatal(err)
				}
				if _, err := tx.Exec(context.Background(), `LOCK TABLE cdc_dead_letter IN ACCESS EXCLUSIVE MODE`); err != nil {
					h.t.Fatal(err)
				}
				return func() {
					if err := tx.Rollback(context.Background()); err != nil {
						h.t.Fatal(err)
					}
				}
			},
			wantErr: `set aside 3 refused rows in cdc_dead_letter: no answer from PostgreSQL in 300ms (waiting on a lock on cdc_dead_letter`,
			stored: func(h *harness, _ *refusingSink) int {
				var n int
				if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM cdc_dead_letter`).Scan(&n); err != nil {
					h.t.Fatal(err)
				}
				return n
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer replication.SetDeadLetterTimeout(300 * time.Millisecond)()
			h := setup(t)
			s := &refusingSink{}
			rep, m, stop := h.start(s, deadletter.New(h.pool, "slot"), zap.NewNop(), func(*replication.Config) {})
			defer stop()
			eventually(t, "streaming", rep.State().Streaming)
			if err := rep.State().StoreError(); err != nil {
				t.Fatalf("StoreError before any batch = %v, want nil", err)
			}

			mend := tc.breakStore(h, s)
			h.exec(`INSERT INTO outbox (event_type, environment, event_context) SELECT 'e', 'test', '{}' FROM generate_series(1, 3)`)
			commitEnd := h.lsn(`SELECT pg_current_wal_lsn()::text`)
			eventually(t, "a store error", func() bool { return rep.State().StoreError() != nil })
			eventually(t, "two failed attempts", func() bool { return testutil.ToFloat64(m.SinkErrors) >= 2 })
			if n := testutil.ToFloat64(m.SinkFailing); n != 1 {
				t.Errorf("cdc_sink_failing_batches = %v while one batch is retried, want 1", n)
			}
			if err := rep.State().StoreError(); !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("StoreError = %q, want it to contain %q", err, tc.wantErr)
			}
			if c := h.confirmed(); c >= commitEnd {
				t.Errorf("confirmed_flush_lsn %s reached the unstored commit end %s", c, commitEnd)
			}

			mend()
			eventually(t, "the batch stored", func() bool { return tc.stored(h, s) == 3 })
			eventually(t, "no store error", func() bool { return rep.State().StoreError() == nil })
			if n := testutil.ToFloat64(m.SinkFailing); n != 0 {
				t.Errorf("cdc_sink_failing_batches = %v once the batch is stored, want 0", n)
			}
			eventually(t, "acknowledgement", func() bool { return h.confirmed() >= commitEnd })
			if n := tc.stored(h, s); n != 3 {
				t.Errorf("stored %d rows, want 3", n)
			}
		})
	}
}

// A process that had events pending when it lost the slot stops reporting
// their lag once another connector streams the slot, and keeps reporting it
// while the slot is held by its own last walsender, which PostgreSQL keeps
// after a link dies (up to wal_sender_timeout, here off) and which may
// never stream again.
func TestReplicator_StandbyStopsReportingItsOldLag(t *testing.T) {
	for _, tc := range []struct {
		name string
		// lose ends the replicator's session and leaves the slot held:
		// by another connector, or by the session's own walsender.
		lose    func(t *testing.T, h *harness, fz *testenv.Freezer)
		wantLag bool
	}{
		{
			name: "another connector took the slot",
			lose: func(t *testing.T, h *harness, _ *testenv.Freezer) {
				// End the walsender and stream from the slot here
				// before the replicator reconnects (it waits at least
				// 125 ms).
				ctx := context.Background()
				var squatter *pgconn.PgConn
				for attempt := 0; squatter == nil; attempt++ {
					if attempt == 5 {
						t.Fatal("the replicator took the slot back every time")
					}
					h.exec(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'slot' AND active_pid IS NOT NULL`)
					squatter = takeSlot(t, ctx, h.dsn, 2*time.Second)
				}
				t.Cleanup(func() { squatter.Close(ctx) })
			},
			wantLag: false,
		},
		{
			name: "its own walsender holds the slot",
			lose: func(_ *testing.T, _ *harness, fz *testenv.Freezer) {
				fz.FreezeOpen() // the session hears nothing for 2 s and ends
			},
			wantLag: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := setup(t)
			fz, dsn := h.throughFreezer("-c wal_sender_timeout=0")
			direct := h.dsn
			h.dsn = dsn
			s := &fakeSink{gate: make(chan struct{})} // nothing is ever stored
			core, logs := observer.New(zapcore.DebugLevel)
			rep, m, stop := h.start(s, nil, zap.New(core), func(c *replication.Config) { c.ReceiveTimeout = 2 * time.Second })
			defer stop()
			defer fz.Thaw()
			eventually(t, "streaming", rep.State().Streaming)
			h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('e', 'test', '{}')`)
			eventually(t, "lag and buffer reported", func() bool {
				return m.LagSecondsValue() > 0 && testutil.ToFloat64(m.BufferBytes) > 0
			})

			h.dsn = direct
			tc.lose(t, h, fz)
			eventually(t, "three attempts standing by", func() bool { return logs.FilterMessageSnippet("standing by").Len() >= 3 })
			if n := logs.FilterMessage("slot in use by another connector; standing by").Len(); n != 1 {
				t.Errorf("standing by logged at info %d times, want once: then at debug", n)
			}
			if lag := m.LagSecondsValue(); (lag > 0) != tc.wantLag {
				t.Errorf("lag %v s while standing by; want reported: %v", lag, tc.wantLag)
			}
			if b := testutil.ToFloat64(m.BufferBytes); b != 0 {
				t.Errorf("cdc_buffer_bytes = %v after the session ended, want 0", b)
			}
		})
	}
}

// A process that had events pending when its session ended, and could not
// stream again until the slot had moved past them — another connector
// took the slot over, stored and acknowledged them, and let it go while
// this process's sessions could not start — streams again with nothing of
// theirs to replay: their age is no longer its lag, however idle the
// outbox. Had the slot not moved, they come again, and their age stands
// until they are stored.
func TestReplicator_OldLagEndsWhenTheSlotIsPastIt(t *testing.T) {
	defer replication.SetSinkRetryMax(50 * time.Millisecond)()
	for _, tc := range []struct {
		name string
		// meanwhile runs while no session of the replicator can start.
		meanwhile func(h *harness)
		wantLag   bool
	}{
		{
			name: "another connector stored and acknowledged them",
			meanwhile: func(h *harness) {
				h.exec(`SELECT pg_replication_slot_advance('slot', pg_current_wal_lsn())`)
			},
			wantLag: false,
		},
		{
			name:      "the slot did not move",
			meanwhile: func(*harness) {},
			wantLag:   true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := setup(t)
			s := &unreadableSink{fakeSink: fakeSink{gate: make(chan struct{})}} // nothing is stored
			rep, m, stop := h.start(s, nil, zap.NewNop(), func(*replication.Config) {})
			defer stop()
			eventually(t, "streaming", rep.State().Streaming)
			h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('e', 'test', '{}')`)
			eventually(t, "lag reported", func() bool { return m.LagSecondsValue() > 0 })

			// ClickHouse cannot say what it holds: the sessions after
			// this one end before they take the slot.
			s.down.Store(true)
			h.exec(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'slot' AND active_pid IS NOT NULL`)
			eventually(t, "a session that could not start", func() bool { return testutil.ToFloat64(m.SinkErrors) >= 2 })
			eventually(t, "the slot let go", func() bool {
				var active bool
				err := h.pool.QueryRow(context.Background(), `SELECT active FROM pg_replication_slots WHERE slot_name = 'slot'`).Scan(&active)
				return err == nil && !active
			})
			tc.meanwhile(h)

			before := m.LagSecondsValue()
			s.down.Store(false)
			eventually(t, "streaming again", rep.State().Streaming)
			// Several status intervals and keepalives of an idle stream.
			time.Sleep(time.Second)
			switch lag := m.LagSecondsValue(); {
			case tc.wantLag && lag <= before:
				t.Errorf("lag %v s once streaming again, %v s before; want the event's age, growing", lag, before)
			case !tc.wantLag && lag != 0:
				t.Errorf("lag %v s once streaming again (%v s before) with the slot past the event; want 0", lag, before)
			}
			if tc.wantLag {
				close(s.gate)
				eventually(t, "the event stored and the lag 0", func() bool { return s.count() == 1 && m.LagSecondsValue() == 0 })
			}
		})
	}
}

// takeSlot streams from the slot on a connection of its own, trying for
// up to within; nil if the slot stayed busy.
func takeSlot(t *testing.T, ctx context.Context, dsn string, within time.Duration) *pgconn.PgConn {
	t.Helper()
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	var once sync.Once
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		conn, err := pgconn.Connect(ctx, dsn+sep+"replication=database")
		if err != nil {
			t.Fatal(err)
		}
		err = pglogrepl.StartReplication(ctx, conn, "slot", 0, pglogrepl.StartReplicationOptions{
			PluginArgs: []string{"proto_version '1'", "publication_names 'pub'"}})
		if err == nil {
			return conn
		}
		conn.Close(ctx)
		if !strings.Contains(err.Error(), "is active for PID") {
			once.Do(func() { t.Logf("start replication: %v", err) })
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// Horizon, what retention counts back from: unknown before the first
// transaction arrives, the oldest pending event's commit while one waits
// unstored, the last commit received once all are stored.
func TestState_HorizonFollowsWhatIsStored(t *testing.T) {
	h := setup(t)
	s := &fakeSink{gate: make(chan struct{})}
	rep, _, stop := h.start(s, nil, zap.NewNop(), func(*replication.Config) {})
	defer stop()
	if _, ok := rep.State().Horizon(); ok {
		t.Fatal("Horizon known before streaming")
	}
	eventually(t, "streaming", rep.State().Streaming)
	if hz, ok := rep.State().Horizon(); ok {
		t.Fatalf("Horizon %s known before any transaction was received", hz)
	}

	commitTime := func(typ string) time.Time {
		t.Helper()
		var at time.Time
		err := h.pool.QueryRow(context.Background(), `WITH i AS (
			INSERT INTO outbox (event_type, environment, event_context) VALUES ($1, 'test', '{}') RETURNING id)
			SELECT now() FROM i`, typ).Scan(&at)
		if err != nil {
			t.Fatal(err)
		}
		return at
	}
	// now() is the transaction's start, a little before its commit; the
	// commits are further apart than near allows, so each is told.
	near := func(got, want time.Time) bool { d := got.Sub(want); return d >= 0 && d < time.Second }

	first := commitTime("first")
	eventually(t, "the first event pending", func() bool { hz, ok := rep.State().Horizon(); return ok && near(hz, first) })
	time.Sleep(1500 * time.Millisecond)
	second := commitTime("second")
	eventually(t, "the second event received", func() bool { return near(rep.State().LastCommit(), second) })
	if hz, _ := rep.State().Horizon(); !near(hz, first) {
		t.Fatalf("Horizon %s with both events unstored, want the first's commit %s", hz, first)
	}
	close(s.gate)
	eventually(t, "both stored", func() bool { return s.count() == 2 })
	eventually(t, "the horizon at the last commit", func() bool { hz, ok := rep.State().Horizon(); return ok && near(hz, second) })
}

// A streamed transaction that committed long ago (a backlog) is batched
// with its arrival for a commit time until its commit arrives. While its
// first rows wait unstored, the horizon stays at the last commit
// received: the transactions after it in the WAL, not read yet, committed
// after that, but may be hours before now, and retention must keep them.
func TestState_HorizonWhileAStreamedTransactionWaits(t *testing.T) {
	h := setup(t)
	smallDecodingMemory(t, h)
	var first time.Time
	err := h.pool.QueryRow(context.Background(), `WITH i AS (
		INSERT INTO outbox (event_type, environment, event_context) VALUES ('first', 'test', '{}') RETURNING id)
		SELECT now() FROM i`).Scan(&first)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	// Some 400 kB in one transaction: streamed in blocks past 64 kB.
	h.exec(`INSERT INTO outbox (event_type, environment, event_context)
		SELECT 'big', 'test', json_build_object('pad', repeat('x', 200), 'n', g) FROM generate_series(1, 2000) g`)

	// One batch per row; the first (the small transaction's) is stored,
	// the rest wait.
	s := &fakeSink{gate: make(chan struct{}, 1)}
	s.gate <- struct{}{}
	rep, _, stop := h.start(s, nil, zap.NewNop(), func(c *replication.Config) { c.BatchMaxRows = 1 })
	defer func() {
		close(s.gate)
		stop()
	}()
	eventually(t, "the small transaction stored", func() bool { return s.count() == 1 })
	eventually(t, "a streamed row pending", func() bool {
		p := rep.State().OldestPending()
		return p.After(first.Add(time.Second))
	})
	hz, ok := rep.State().Horizon()
	if !ok || hz.Before(first) || hz.After(first.Add(time.Second)) {
		t.Fatalf("Horizon %v (known %v) while the streamed transaction's rows wait; want the small one's commit, %v", hz, ok, first)
	}
}

// A process that had to create its slot keeps the outbox rows from before
// it, which the new slot never streams: the outbox holds their only copy
// until `cdc backfill` ships them. With Config.HoldRetention holding
// retention in PostgreSQL (as cdc run's does) every sweeper, in any
// process, finds the hold; without a hook, or when the hook fails once
// the slot exists, the process knows no horizon for its life, and so
// deletes none of them. The hook is called ahead of the slot too, where
// failing costs nothing.
func TestState_TheProcessThatCreatedItsSlotKeepsTheGap(t *testing.T) {
	for _, tc := range []struct {
		name        string
		hook        func(h *harness, calls *[]bool) func(context.Context, bool) error
		inProcess   bool // the pause lives in this process (no horizon)
		heldInPG    bool // the hold exists in PostgreSQL
		sweepAfterN int  // rows a sweep deletes once the hold, if any, is dropped
	}{
		{"no hook", func(*harness, *[]bool) func(context.Context, bool) error { return nil }, true, false, 0},
		{"the hook fails", func(_ *harness, calls *[]bool) func(context.Context, bool) error {
			return func(_ context.Context, ahead bool) error {
				*calls = append(*calls, ahead)
				return errors.New("all replication slots are in use")
			}
		}, true, false, 0},
		{"the hook fails ahead only", func(h *harness, calls *[]bool) func(context.Context, bool) error {
			return func(ctx context.Context, ahead bool) error {
				*calls = append(*calls, ahead)
				if ahead {
					return errors.New("connection refused")
				}
				_, err := retention.HoldIfOutboxHasRows(ctx, h.pool, "slot")
				return err
			}
		}, false, true, 1},
		{"the hook holds retention", func(h *harness, calls *[]bool) func(context.Context, bool) error {
			return func(ctx context.Context, ahead bool) error {
				*calls = append(*calls, ahead)
				_, err := retention.HoldIfOutboxHasRows(ctx, h.pool, "slot")
				return err
			}
		}, false, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := setup(t)
			hold := retention.HoldName("slot")
			t.Cleanup(func() {
				_, _ = h.pool.Exec(context.Background(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, hold)
			})
			h.exec(`SELECT pg_drop_replication_slot('slot')`) // lost, as after a failover
			h.exec(`INSERT INTO outbox (event_type, environment, event_context, event_date_time)
				VALUES ('in_the_gap', 'test', '{}', now() - interval '1 hour')`)
			s := &fakeSink{}
			var calls []bool // only the replicator's goroutine appends, before streaming
			hook := tc.hook(h, &calls)
			rep, _, stop := h.start(s, nil, zap.NewNop(), func(c *replication.Config) { c.HoldRetention = hook })
			defer stop()
			eventually(t, "streaming", rep.State().Streaming)
			h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('after', 'test', '{}')`)
			eventually(t, "the new event stored", func() bool { return s.count() == 1 })
			if hook != nil && fmt.Sprint(calls) != "[true false]" {
				t.Fatalf("hook called with ahead %v, want before the slot and after", calls)
			}
			if got := rep.State().SlotCreated(); got != tc.inProcess {
				t.Fatalf("SlotCreated %v after the replicator created the missing slot, want %v", got, tc.inProcess)
			}
			hz, ok := rep.State().Horizon()
			if ok == tc.inProcess {
				t.Fatalf("Horizon %s known %v, want known %v", hz, ok, !tc.inProcess)
			}
			held, err := retention.Held(context.Background(), h.pool, "slot")
			if err != nil || held != tc.heldInPG {
				t.Fatalf("held in PostgreSQL %v (err %v), want %v", held, err, tc.heldInPG)
			}
			c := &retention.Cleaner{Pool: h.pool, Keep: time.Minute, BatchSize: 100, Log: zap.NewNop(), Horizon: rep.State().Horizon, Slot: "slot"}
			if n, err := c.Sweep(context.Background()); err != nil || n != 0 {
				t.Fatalf("retention deleted %d rows (err %v), want none", n, err)
			}
			var left int
			if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox WHERE event_type = 'in_the_gap'`).Scan(&left); err != nil || left != 1 {
				t.Fatalf("%d rows of the gap left (err %v), want 1", left, err)
			}
			// The operator lifts the hold once the gap is shipped; a
			// pause in the process stays until it restarts.
			h.exec(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '` + hold + `'`)
			if n, err := c.Sweep(context.Background()); err != nil || n != int64(tc.sweepAfterN) {
				t.Fatalf("retention deleted %d rows (err %v) with no hold, want %d", n, err, tc.sweepAfterN)
			}
		})
	}
}

// A session learns the last commit anew: the one an earlier session of the
// process received may be later than events the new one replays unstored,
// and retention's horizon must not pass them before they are received
// again. Here an earlier session's last commit is set, and the outbox is
// empty: the new session receives no transaction, so no horizon.
func TestState_NewSessionForgetsTheLastSessionsCommit(t *testing.T) {
	h := setup(t)
	rep, _ := h.replicator(&fakeSink{}, nil, zap.NewNop(), func(*replication.Config) {})
	rep.State().SetLastCommit(time.Now().Add(-time.Hour))
	stop := h.runReplicator(rep)
	defer stop()
	eventually(t, "streaming", rep.State().Streaming)
	if c := rep.State().LastCommit(); !c.IsZero() {
		t.Fatalf("LastCommit %s in a session that received no transaction", c)
	}
	if hz, ok := rep.State().Horizon(); ok {
		t.Fatalf("Horizon %s in a session that received no transaction", hz)
	}
}
