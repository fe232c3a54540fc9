package replication_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/eventcdc/cdc/replication"
)

// A shutdown can land while the stream waits on PostgreSQL for something
// other than the next message: here a transaction status lookup, held on a
// frozen link while a large transaction's savepoint is still open. The
// rows batched before it are whole, and are stored like at any shutdown,
// within the shutdown budget, rather than left for the next start to
// replay.
func TestReplicator_ShutdownDuringAStatusLookupStoresTheBatch(t *testing.T) {
	h := setup(t)
	fz, dsn := h.throughFreezer("-c logical_decoding_work_mem=64kB")
	h.dsn = dsn
	ctx := context.Background()
	s := &fakeSink{}
	// A long flush interval: the rows wait in the open batch, and the
	// savepoint's rows are waited on for streamWait's 10 s at most.
	core, logs := observer.New(zapcore.DebugLevel)
	r, m, stop := h.start(s, nil, zap.New(core), func(c *replication.Config) {
		c.FlushInterval, c.ShutdownTimeout = time.Minute, 5*time.Second
	})
	stopped := false
	defer func() {
		if !stopped {
			fz.Thaw()
			stop()
		}
	}()
	for range 3 {
		h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('before', 'test', '{}')`)
	}
	eventually(t, "the rows batched", func() bool { return testutil.ToFloat64(m.BufferBytes) > 0 })

	tx := h.begin(ctx)
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SAVEPOINT sp"); err != nil {
		t.Fatal(err)
	}
	insertRows(t, ctx, tx, "open", 3000)
	h.exec(`SELECT pg_switch_wal()`) // the walsender reads only flushed WAL
	eventually(t, "a status lookup", func() bool {
		var n int
		err := h.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = 'cdc' AND query LIKE '%pg_xact_status%' AND pid <> pg_backend_pid()`).Scan(&n)
		return err == nil && n > 0
	})
	fz.Freeze()
	time.Sleep(300 * time.Millisecond) // the lookups poll every 50 ms: the next one hangs

	began := time.Now()
	stop()
	stopped = true
	if took := time.Since(began); took > 8*time.Second {
		t.Errorf("shutdown took %s; want it within the 5 s budget and the final acknowledgement's 2 s", took)
	}
	if got := s.types(); len(got) != 1 || got["before"] != 3 {
		t.Fatalf("stored %v at shutdown, want the 3 rows batched before the lookup", got)
	}
	if n := logs.FilterMessageSnippet("CDC_SHUTDOWN_TIMEOUT ran out").Len(); n != 0 || r.State().LeftUnstored() {
		t.Fatalf("a shutdown that stored everything within its budget warned %d times that it ran out (LeftUnstored %v)", n, r.State().LeftUnstored())
	}
	cut := logs.FilterMessage("shutdown interrupted the stream").All()
	if len(cut) != 1 || !strings.Contains(cut[0].ContextMap()["error"].(string), "look up status of transaction") {
		t.Fatalf("logged %v, want one interrupted status lookup", cut)
	}
	fz.Thaw()
}

// A shutdown whose budget runs out before the sink stores the batch in
// flight says so: nothing is lost (it is not acknowledged), but the next
// start replays it, which an operator should not have to infer from
// "stopped".
func TestReplicator_ShutdownPastItsBudgetSaysWhatIsReplayed(t *testing.T) {
	h := setup(t)
	s := &fakeSink{holdFirst: make(chan struct{})} // never stores
	core, logs := observer.New(zapcore.InfoLevel)
	r, _, stop := h.start(s, nil, zap.New(core), func(c *replication.Config) { c.ShutdownTimeout = 300 * time.Millisecond })
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('held', 'test', '{}')`)
	commitEnd := h.lsn(`SELECT pg_current_wal_lsn()::text`)
	eventually(t, "the write in flight", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.writes == 1
	})
	stop()
	warned := logs.FilterMessageSnippet("CDC_SHUTDOWN_TIMEOUT ran out before every batch was stored").All()
	if len(warned) != 1 || warned[0].ContextMap()["batches_in_flight"] != int64(1) {
		t.Fatalf("logged %v, want one warning naming the batch in flight", warned)
	}
	if !r.State().LeftUnstored() {
		t.Error("LeftUnstored is false after a shutdown that left a batch unstored: cdc run would say it shut down cleanly")
	}
	// Replayed, as it says: nothing past the held event was acknowledged,
	// not even its commit record's start.
	s.mu.Lock()
	commit := s.commits[0]
	s.mu.Unlock()
	if c := h.confirmed(); c > commit || c >= commitEnd {
		t.Fatalf("confirmed_flush_lsn %s passed the unstored event's commit at %s", c, commit)
	}
}

// A shutdown whose final acknowledgement cannot reach PostgreSQL (here its
// walsender was ended while the sink stored the last batch) says so: the
// rows are stored, but the slot was not told, and the next start is sent
// them again. cdc run must not call that shutdown clean.
func TestReplicator_ShutdownWhoseFinalAckFailsSaysSo(t *testing.T) {
	h := setup(t)
	s := &fakeSink{holdFirst: make(chan struct{})}
	core, logs := observer.New(zapcore.InfoLevel)
	r, _, stop := h.start(s, nil, zap.New(core), func(c *replication.Config) { c.ShutdownTimeout = 10 * time.Second })
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('held', 'test', '{}')`)
	eventually(t, "the write in flight", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.writes == 1
	})
	before := h.confirmed()
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	time.Sleep(300 * time.Millisecond) // the shutdown waits on the writer
	h.exec(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'slot' AND active_pid IS NOT NULL`)
	time.Sleep(500 * time.Millisecond) // the shutdown's statuses find the link closed
	close(s.holdFirst)
	<-stopped

	if got := s.types(); len(got) != 1 || got["held"] != 1 {
		t.Fatalf("stored %v, want the held row", got)
	}
	if n := logs.FilterMessageSnippet("final acknowledgement failed").Len(); n != 1 {
		t.Fatalf("warned %d times that the final acknowledgement failed, want 1", n)
	}
	if !r.State().LeftUnacknowledged() {
		t.Error("LeftUnacknowledged is false after a failed final acknowledgement: cdc run would say it shut down cleanly")
	}
	if r.State().LeftUnstored() {
		t.Error("LeftUnstored is true, but the sink stored every row")
	}
	if c := h.confirmed(); c != before {
		t.Errorf("confirmed_flush_lsn moved from %s to %s without an acknowledgement", before, c)
	}
}

// A shutdown that stores and acknowledges everything is clean.
func TestReplicator_ShutdownThatAcknowledgesIsClean(t *testing.T) {
	h := setup(t)
	s := &fakeSink{}
	r, _, stop := h.start(s, nil, zap.NewNop(), func(*replication.Config) {})
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('one', 'test', '{}')`)
	eventually(t, "the row stored", func() bool { return s.types()["one"] == 1 })
	stop()
	if r.State().LeftUnacknowledged() || r.State().LeftUnstored() {
		t.Errorf("LeftUnacknowledged %v, LeftUnstored %v after a shutdown that stored and acknowledged everything",
			r.State().LeftUnacknowledged(), r.State().LeftUnstored())
	}
}
