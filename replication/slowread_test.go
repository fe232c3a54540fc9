package replication_test

import (
	"context"
	"maps"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/eventcdc/cdc/replication"
	"github.com/eventcdc/cdc/sink"
)

// slowReadSink answers Written only after delay, as ClickHouse does when it
// scans a large event_log for positions (cdc_commit_lsn is not in its key).
type slowReadSink struct {
	fakeSink
	delay time.Duration
	reads int
}

func (f *slowReadSink) Written(ctx context.Context, from, to pglogrepl.LSN) (*sink.Positions, error) {
	f.mu.Lock()
	f.reads++
	f.mu.Unlock()
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return f.fakeSink.Written(ctx, from, to)
}

// withServerOptions sets the replication connection's server settings.
func withServerOptions(t *testing.T, dsn, options string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("options", options)
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	return u.String()
}

// A read of the sink's positions that takes longer than the walsender's
// wal_sender_timeout does not end the session: the one at the session's
// start happens before START_REPLICATION, the one for a streamed
// transaction resumed mid-stream while standby status keeps flowing.
// Otherwise every session would time out in the same read, for ever.
func TestReplicator_SlowSinkReadOutlastsWalSenderTimeout(t *testing.T) {
	for _, tc := range []struct {
		name string
		// prepare leaves the WAL and the sink's rows the session starts
		// from, and returns the rows the sink must end with and the WAL
		// position the slot must reach.
		prepare func(h *harness) (stored []sink.Row, want int, after uint64)
		// minReads is how many position reads the session makes: at its
		// start, and for a streamed transaction partly stored before.
		minReads int
	}{
		{
			name: "at the session's start",
			prepare: func(h *harness) ([]sink.Row, int, uint64) {
				h.exec(`INSERT INTO outbox (event_type, environment, event_context) SELECT 'e', 'test', '{}' FROM generate_series(1, 10)`)
				return nil, 10, h.walLSN()
			},
			minReads: 1,
		},
		{
			name: "for a streamed transaction resumed",
			prepare: func(h *harness) ([]sink.Row, int, uint64) {
				_, after := h.commitBig(3000)
				first := h.storeFirstBatchOnly()
				return first.rows, 3000, after
			},
			minReads: 2,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := setup(t)
			h.dsn = withServerOptions(t, h.dsn, "-c logical_decoding_work_mem=64kB -c wal_sender_timeout=1s")
			stored, want, after := tc.prepare(h)

			s := &slowReadSink{fakeSink: fakeSink{rows: stored}, delay: 2500 * time.Millisecond}
			core, logs := observer.New(zapcore.InfoLevel)
			_, _, stop := h.start(s, nil, zap.New(core), func(*replication.Config) {})
			defer stop()
			eventually(t, "acknowledgement past the commit", func() bool { return uint64(h.confirmed()) >= after })
			eventually(t, "every row stored", func() bool { return s.count() == want })
			if n := logs.FilterMessageSnippet("interrupted").Len(); n != 0 {
				t.Errorf("the session was interrupted %d times: %v", n, logs.FilterMessageSnippet("interrupted").All()[0].Context)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.reads < tc.minReads {
				t.Errorf("%d position reads, want at least %d: the slow path was not taken", s.reads, tc.minReads)
			}
			if len(s.rows) != want {
				t.Errorf("%d rows stored, want %d", len(s.rows), want)
			}
		})
	}
}

// advancingSink moves the slot during its first position read, as another
// connector that took the slot, stored rows and let it go would.
type advancingSink struct {
	fakeSink
	h     *harness
	reads int
}

func (f *advancingSink) Written(ctx context.Context, from, to pglogrepl.LSN) (*sink.Positions, error) {
	f.mu.Lock()
	f.reads++
	first := f.reads == 1
	f.mu.Unlock()
	if first {
		f.h.exec(`SELECT pg_replication_slot_advance('slot', pg_current_wal_lsn())`)
	}
	return f.fakeSink.Written(ctx, from, to)
}

// A slot that moves while the session reads the sink's positions is read
// again from where it moved to before streaming starts.
func TestReplicator_SlotMovedDuringThePositionReadIsReadAgain(t *testing.T) {
	h := setup(t)
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) SELECT 'before', 'test', '{}' FROM generate_series(1, 5)`)
	s := &advancingSink{h: h}
	core, logs := observer.New(zapcore.InfoLevel)
	_, _, stop := h.start(s, nil, zap.New(core), func(*replication.Config) {})
	defer stop()
	eventually(t, "streaming", func() bool { return logs.FilterMessage("streaming").Len() == 1 })
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) SELECT 'after', 'test', '{}' FROM generate_series(1, 3)`)
	eventually(t, "the 3 rows after", func() bool { return s.count() == 3 })
	if n := logs.FilterMessageSnippet("the slot moved while the sink's stored positions were read").Len(); n != 1 {
		t.Errorf("logged the move %d times, want 1", n)
	}
	if got := s.types(); !maps.Equal(got, map[string]int{"after": 3}) {
		t.Errorf("stored %v, want only the 3 rows committed after the slot moved", got)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reads != 2 {
		t.Errorf("%d position reads, want 2 (the first, and again after the move)", s.reads)
	}
}
