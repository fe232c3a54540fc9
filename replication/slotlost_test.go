package replication_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/eventcdc/cdc/replication"
	"github.com/eventcdc/cdc/sink"
)

// downSink is ClickHouse going away and coming back: while down, Write
// and Written fail as a refused connection does (each counted in
// failed); up, it stores as fakeSink does.
type downSink struct {
	fakeSink
	mu     sync.Mutex
	down   bool
	failed int
}

func (d *downSink) setDown(down bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = down
}

// isDown reports whether the sink is down, counting a failure if so.
func (d *downSink) isDown() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down {
		d.failed++
	}
	return d.down
}

func (d *downSink) failures() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.failed
}

var errRefused = errors.New("dial tcp 127.0.0.1:9000: connect: connection refused")

func (d *downSink) Write(ctx context.Context, b *sink.Batch) ([]sink.Rejected, error) {
	if d.isDown() {
		d.fakeSink.mu.Lock()
		d.fakeSink.writes++
		d.fakeSink.mu.Unlock()
		return nil, errRefused
	}
	return d.fakeSink.Write(ctx, b)
}

// holdUp has the session stream one event into s, takes s down, commits
// 99 more, and returns once the writers have failed five times (an
// INSERT, or the read of what a failed one stored, before its retry):
// both retry, and the stream, with a third batch waiting, reads nothing. It
// returns the walsender holding the slot and the WAL's end.
func holdUp(t *testing.T, h *harness, s *downSink) (walsender uint32, end pglogrepl.LSN) {
	t.Helper()
	insert := func(i int) {
		h.exec(fmt.Sprintf(`INSERT INTO outbox (event_type, event_date_time, environment, event_context, metadata_version)
			VALUES ('t', now(), 'test', '{"i":%d}', 1)`, i))
	}
	// The session streams (it reads what ClickHouse holds as it begins)
	// before ClickHouse goes.
	insert(0)
	eventually(t, "the first event stored", func() bool { return s.count() == 1 })
	s.setDown(true)
	for i := 1; i < 100; i++ {
		insert(i)
	}
	end = h.lsn("SELECT pg_current_wal_lsn()")
	eventually(t, "the writers to fail five times", func() bool { return s.failures() >= 5 })
	if err := h.pool.QueryRow(context.Background(), "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'slot'").Scan(&walsender); err != nil {
		t.Fatal(err)
	}
	return walsender, end
}

func (d *downSink) Written(ctx context.Context, from, to pglogrepl.LSN) (*sink.Positions, error) {
	if d.isDown() {
		return nil, errRefused
	}
	return d.fakeSink.Written(ctx, from, to)
}

// A walsender can let go of the slot and live on: a cancel (here
// pg_cancel_backend; an ERROR while decoding does the same) ends
// START_REPLICATION, and the walsender goes back to waiting for commands
// on the same connection, ignoring the standby statuses cdc still sends.
// A session held up by a down ClickHouse reads nothing meanwhile, so it
// would not see the end of the stream; its writers, which find the slot
// no longer theirs, must end it, or the pipeline waits for ever. Once
// ClickHouse is back the next session stores every event.
func TestReplicator_SessionWhoseWalsenderLetGoOfTheSlotEnds(t *testing.T) {
	h := setup(t)
	s := &downSink{}
	core, logs := observer.New(zapcore.InfoLevel)
	h.runWith(s, zap.New(core), func(c *replication.Config) { c.BatchMaxRows = 10 })
	const events = 100
	walsender, end := holdUp(t, h, s)
	h.exec(fmt.Sprintf("SELECT pg_cancel_backend(%d)", walsender))
	eventually(t, "the cancelled walsender to let go of the slot", func() bool {
		var active bool
		if err := h.pool.QueryRow(context.Background(), "SELECT active FROM pg_replication_slots WHERE slot_name = 'slot'").Scan(&active); err != nil {
			t.Fatal(err)
		}
		return !active
	})
	var alive int
	if err := h.pool.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", walsender).Scan(&alive); err != nil {
		t.Fatal(err)
	}
	t.Logf("walsender %d let go of the slot; still connected: %v", walsender, alive == 1)

	s.setDown(false)
	eventually(t, "every event stored and acknowledged after ClickHouse came back", func() bool {
		return s.count() >= events && h.confirmed() >= end
	})
	seen := map[sink.Position]int{}
	s.fakeSink.mu.Lock()
	for _, r := range s.rows {
		seen[r.Pos]++
	}
	s.fakeSink.mu.Unlock()
	if len(seen) != events {
		t.Fatalf("%d distinct positions stored, want %d", len(seen), events)
	}
	if n := logs.FilterMessage("this session's walsender no longer holds the slot; the session ends, and the next replays its batches").Len(); n == 0 {
		t.Errorf("no writer said its walsender had let go of the slot")
	}
	ended := 0
	for _, e := range logs.FilterMessage("replication interrupted; reconnecting").All() {
		if strings.Contains(fmt.Sprint(e.ContextMap()["error"]), "no longer holds the slot") {
			ended++
		}
	}
	if ended != 1 {
		t.Errorf("%d sessions ended because their walsender let go of the slot, want 1", ended)
	}
}

// A shutdown waits for its writers within CDC_SHUTDOWN_TIMEOUT; once one
// finds the slot no longer the session's, nothing more may be stored, and
// the wait ends there rather than at the budget. What was not stored is
// said to be left for the next start.
func TestReplicator_ShutdownEndsOnceTheSlotIsNoLongerTheSessions(t *testing.T) {
	h := setup(t)
	s := &downSink{}
	const budget = time.Minute
	r, _, stop := h.start(s, nil, zap.NewNop(), func(c *replication.Config) {
		c.BatchMaxRows = 10
		c.ShutdownTimeout = budget
	})
	walsender, _ := holdUp(t, h, s)

	start := time.Now()
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	time.Sleep(500 * time.Millisecond) // the shutdown waits for its writers
	select {
	case <-stopped:
		t.Fatal("the shutdown ended before the slot was lost, with ClickHouse down")
	default:
	}
	h.exec(fmt.Sprintf("SELECT pg_cancel_backend(%d)", walsender))
	select {
	case <-stopped:
	case <-time.After(budget / 2):
		t.Fatalf("the shutdown still waits %s after its walsender let go of the slot (budget %s)", time.Since(start).Round(time.Second), budget)
	}
	t.Logf("stopped %s after the shutdown began", time.Since(start).Round(time.Millisecond))
	if !r.State().LeftUnstored() {
		t.Error("the shutdown left batches unstored and did not say so")
	}
	if n := s.count(); n != 1 {
		t.Errorf("%d events stored with ClickHouse down; want the 1 stored before", n)
	}
}
