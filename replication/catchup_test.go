package replication_test

import (
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/eventcdc/cdc/replication"
	"github.com/eventcdc/cdc/sink"
)

const caughtUpMsg = "caught up with the backlog; reconnecting with the server's logical_decoding_work_mem"

// sessionLimits lists, for each session started so far, the catch-up
// logical_decoding_work_mem it set (0: the server's own).
func sessionLimits(logs *observer.ObservedLogs) []int64 {
	var out []int64
	for _, e := range logs.FilterMessage("streaming").All() {
		out = append(out, e.ContextMap()["catch_up_work_mem_kb"].(int64))
	}
	return out
}

// checkCommitPositions asserts that the rows, in WAL order, are the 1st to
// the nth row of one transaction, each once, placed by its commit LSN, in
// the last quarter of the transaction's WAL: sent whole at its commit, not
// streamed.
func checkCommitPositions(t *testing.T, rows []sink.Row, walBefore, walAfter uint64) {
	t.Helper()
	rows = slices.Clone(rows)
	slices.SortFunc(rows, func(a, b sink.Row) int {
		if a.Pos.Less(b.Pos) {
			return -1
		}
		if b.Pos.Less(a.Pos) {
			return 1
		}
		return 0
	})
	at := rows[0].Pos.CommitLSN
	if uint64(at) < walAfter-(walAfter-walBefore)/4 || uint64(at) > walAfter {
		t.Fatalf("rows placed at %s, want the commit's LSN, just before %X (transaction's WAL begins at %X)", at, walAfter, walBefore)
	}
	for i, r := range rows {
		if r.Pos.CommitLSN != at || r.Pos.Seq != uint64(i+1) {
			t.Fatalf("row %d at %s, want %s#%d", i, r.Pos, at, i+1)
		}
	}
}

// A session that starts far behind lowers the walsender's decoding memory:
// the backlog's large transaction is streamed in blocks (PostgreSQL's
// default, 64 MB, would send these 3000 rows whole at their commit). Once
// caught up, the session stores and acknowledges everything and the next
// one keeps the server's limit, so a transaction of the same size committed
// after that is sent whole. Every row once, and the slot is not mistaken
// for another connector's while the first session's walsender exits.
func TestReplicator_CatchUpSessionEndsWhenCaughtUp(t *testing.T) {
	h := setup(t)
	before, after := h.commitBig(3000)

	core, logs := observer.New(zapcore.InfoLevel)
	s := &fakeSink{}
	stop := h.runWith(s, zap.New(core), func(c *replication.Config) {
		c.CatchUpWorkMem, c.CatchUpLag = 64<<10, 256<<10
	})
	defer stop()
	eventually(t, "3000 rows stored", func() bool { return s.count() == 3000 })
	eventually(t, "a second session", func() bool { return len(sessionLimits(logs)) == 2 })
	if got := sessionLimits(logs); !slices.Equal(got, []int64{64, 0}) {
		t.Fatalf("sessions set logical_decoding_work_mem %v kB, want [64 0] (catch-up, then the server's)", got)
	}
	if n := logs.FilterMessage(caughtUpMsg).Len(); n != 1 {
		t.Fatalf("%d catch-up ends logged, want 1", n)
	}
	if c := uint64(h.confirmed()); c < after {
		t.Fatalf("slot confirmed %X after the catch-up, want at least the backlog's end %X", c, after)
	}
	s.mu.Lock()
	checkStreamedPositions(t, s.rows, before, after)
	s.mu.Unlock()

	before2, after2 := h.commitBig(3000)
	eventually(t, "6000 rows stored", func() bool { return s.count() == 6000 })
	eventually(t, "acknowledgement past the second commit", func() bool { return uint64(h.confirmed()) >= after2 })
	s.mu.Lock()
	checkCommitPositions(t, s.rows[3000:], before2, after2)
	s.mu.Unlock()
	if got := sessionLimits(logs); len(got) != 2 {
		t.Fatalf("%d sessions, want 2", len(got))
	}
	if n := logs.FilterMessage("slot in use by another connector; standing by").Len(); n != 0 {
		t.Fatalf("stood by %d times for its own previous session's slot", n)
	}
}

// No catch-up session where it would not lower the limit or was not asked
// for: the backlog is then sent as PostgreSQL's own limit decides, in one
// session.
func TestReplicator_NoCatchUpSession(t *testing.T) {
	tests := []struct {
		name     string
		small    bool // the DSN already sets logical_decoding_work_mem=64kB
		workMem  int
		lag      int
		streamed bool
	}{
		{name: "backlog under the lag", workMem: 64 << 10, lag: 64 << 20},
		{name: "turned off", workMem: 0, lag: 256 << 10},
		{name: "server limit already lower", small: true, workMem: 4 << 20, lag: 256 << 10, streamed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := setup(t)
			if tt.small {
				smallDecodingMemory(t, h)
			}
			before, after := h.commitBig(3000)
			core, logs := observer.New(zapcore.InfoLevel)
			s := &fakeSink{}
			stop := h.runWith(s, zap.New(core), func(c *replication.Config) {
				c.CatchUpWorkMem, c.CatchUpLag = tt.workMem, tt.lag
			})
			defer stop()
			eventually(t, "3000 rows stored", func() bool { return s.count() == 3000 })
			eventually(t, "acknowledgement past the commit", func() bool { return uint64(h.confirmed()) >= after })
			if got := sessionLimits(logs); !slices.Equal(got, []int64{0}) {
				t.Fatalf("sessions set logical_decoding_work_mem %v kB, want [0]", got)
			}
			if n := logs.FilterMessage(caughtUpMsg).Len(); n != 0 {
				t.Fatalf("%d catch-up ends logged, want none", n)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if tt.streamed {
				checkStreamedPositions(t, s.rows, before, after)
			} else {
				checkCommitPositions(t, s.rows, before, after)
			}
		})
	}
}

// A session that starts far behind but replays rows already stored does
// not catch up: the transaction the previous session stored part of, sent
// whole then, must be sent whole again to be recognised. Streamed, its
// rows would be placed by the first row's LSN and the stored ones written
// twice.
func TestReplicator_NoCatchUpWhileReplaying(t *testing.T) {
	h := setup(t)
	before, after := h.commitBig(3000)

	first := &failingSink{n: 1000}
	stop := h.runWith(first, zap.NewNop(), func(c *replication.Config) {
		c.ShutdownTimeout, c.FlushInterval = 500*time.Millisecond, 3*time.Second
	})
	eventually(t, "the first 1000 rows stored", func() bool { return first.count() == 1000 })
	time.Sleep(300 * time.Millisecond) // a few failed writes of the next batch
	stop()

	core, logs := observer.New(zapcore.InfoLevel)
	second := &fakeSink{rows: append([]sink.Row(nil), first.rows...)}
	stop = h.runWith(second, zap.New(core), func(c *replication.Config) {
		c.CatchUpWorkMem, c.CatchUpLag = 64<<10, 256<<10
	})
	defer stop()
	eventually(t, "acknowledgement past the commit", func() bool { return uint64(h.confirmed()) >= after })
	if got := sessionLimits(logs); !slices.Equal(got, []int64{0}) {
		t.Fatalf("sessions set logical_decoding_work_mem %v kB, want [0]", got)
	}
	if n := logs.FilterMessage("replaying rows already stored: catching up with the server's logical_decoding_work_mem").Len(); n != 1 {
		t.Fatalf("the replay was logged %d times, want 1", n)
	}
	second.mu.Lock()
	defer second.mu.Unlock()
	if len(second.rows) != 3000 {
		t.Fatalf("%d rows stored, want 3000", len(second.rows))
	}
	checkCommitPositions(t, second.rows, before, after)
}
