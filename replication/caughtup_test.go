package replication_test

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/eventcdc/cdc/replication"
)

// cuts returns the "why" of every batch the replicator cut, in order, and
// the rows they held.
func cuts(logs *observer.ObservedLogs) (why []string, rows int64) {
	for _, e := range logs.FilterMessage("batch cut").All() {
		why = append(why, e.ContextMap()["why"].(string))
		rows += e.ContextMap()["rows"].(int64)
	}
	return why, rows
}

// The end of a backlog is handed to the sink as soon as the walsender has
// sent it, not a flush interval later: the keepalive that follows the
// backlog's last transaction says nothing else is queued, and its rows
// are overdue. Before, the last, partial batch of a drain waited out its
// flush deadline (a quarter interval after it arrived here, where the
// backlog is a little over one interval old; the whole interval when it
// was streamed before its commit).
func TestReplicator_BacklogEndIsHandedOverWhenCaughtUp(t *testing.T) {
	const interval = 2 * time.Second
	for _, tt := range []struct {
		name     string
		streamed bool
	}{
		{"sent at its commit", false},
		{"streamed before its commit", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := setup(t)
			if tt.streamed {
				smallDecodingMemory(t, h)
			}
			before, after := h.commitBig(1500) // 1,000-row batches: one full, then 500
			time.Sleep(interval + 200*time.Millisecond)

			s := &fakeSink{}
			core, logs := observer.New(zapcore.DebugLevel)
			stop := h.runWith(s, zap.New(core), func(c *replication.Config) { c.FlushInterval = interval })
			eventually(t, "1500 rows stored", func() bool { return s.count() == 1500 })
			stop()

			why, rows := cuts(logs)
			if len(why) != 2 || why[0] != "size" || why[1] != "caught up" || rows != 1500 {
				t.Fatalf("batches cut %q holding %d rows, want [size caught up] holding 1500", why, rows)
			}
			if tt.streamed {
				s.mu.Lock()
				defer s.mu.Unlock()
				checkStreamedPositions(t, s.rows, before, after)
			}
		})
	}
}

// Fresh rows are not handed over early: keepalives follow commits under
// steady traffic, and three transactions committed within a flush interval
// still make one batch.
func TestReplicator_FreshRowsGatherForTheirInterval(t *testing.T) {
	h := setup(t)
	s := &fakeSink{}
	core, logs := observer.New(zapcore.DebugLevel)
	stop := h.runWith(s, zap.New(core), func(c *replication.Config) { c.FlushInterval = 2 * time.Second })
	defer stop()
	for i := 0; i < 3; i++ {
		h.exec(`INSERT INTO outbox (event_type, environment, event_context) SELECT 'e', 'test', '{}' FROM generate_series(1, 5)`)
		time.Sleep(100 * time.Millisecond)
	}
	eventually(t, "15 rows stored", func() bool { return s.count() == 15 })
	why, rows := cuts(logs)
	if len(why) != 1 || rows != 15 {
		t.Fatalf("batches cut %q holding %d rows, want one batch of 15", why, rows)
	}
}
