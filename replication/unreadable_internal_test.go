package replication

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/metrics"
	"github.com/eventcdc/cdc/sink"
)

// cutSink plays a ClickHouse whose link is cut right after it stored an
// INSERT: the first Write stores its rows and fails all the same, and the
// first reads of what it holds fail (readFails of them) — the server not
// back yet, or back for an INSERT but not yet for the read. It keeps every
// row written, duplicates included.
type cutSink struct {
	mu        sync.Mutex
	rows      []sink.Position
	writes    int
	reads     int
	readFails int
	readErr   error
}

func (s *cutSink) Write(_ context.Context, b *sink.Batch) ([]sink.Rejected, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	for _, r := range b.Rows {
		s.rows = append(s.rows, r.Pos)
	}
	if s.writes == 1 {
		return nil, errors.New("read: connection reset by peer")
	}
	return nil, nil
}

func (s *cutSink) Written(_ context.Context, from, to pglogrepl.LSN) (*sink.Positions, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	if s.reads <= s.readFails {
		return nil, s.readErr
	}
	stored := &sink.Positions{}
	for _, pos := range s.rows {
		if pos.CommitLSN >= from && pos.CommitLSN < to {
			stored.Add(pos)
		}
	}
	return stored, nil
}

// A batch whose INSERT failed after the server stored it is written again
// only once the sink has said what it holds: a read that fails — the
// server not back yet, or back for INSERTs while the read still fails (a
// restart ending between the two, a scan of event_log that times out) —
// is retried, not taken for "nothing stored". Before, the batch went
// again whole, and every row the failed INSERT had stored was stored
// twice (seen with ClickHouse killed under load: whole batches twice in
// event_log). More stored positions than a set may hold still mean
// "store it all again", as at a session's start.
func TestStore_RetryWaitsUntilTheSinkSaysWhatItHolds(t *testing.T) {
	defer SetSinkRetryMax(20 * time.Millisecond)()
	batch := &sink.Batch{}
	for seq := uint64(1); seq <= 3; seq++ {
		batch.Rows = append(batch.Rows, sink.Row{Pos: sink.Position{CommitLSN: 0x100, Seq: seq}})
	}
	for _, tc := range []struct {
		name       string
		readErr    error
		readFails  int
		wantRows   int // rows the sink ends up holding
		wantWrites int
	}{
		{"read fails once", errors.New("dial tcp 127.0.0.1:9000: connect: connection refused"), 1, 3, 1},
		{"read fails three times", errors.New("read event_log columns: read: EOF"), 3, 3, 1},
		{"more stored positions than a set may hold", &sink.TooManyPositions{Max: 0x100}, 1, 6, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &cutSink{readFails: tc.readFails, readErr: tc.readErr}
			r := New(Config{Slot: "cut"}, s, nil, zap.NewNop(), metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() }))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, stored := r.store(ctx, batch, &fence{}) // no walsender: no look at the slot
			s.mu.Lock()
			defer s.mu.Unlock()
			if !stored || len(s.rows) != tc.wantRows || s.writes != tc.wantWrites {
				t.Fatalf("stored %v; the sink holds %d rows after %d writes and %d reads, want %d rows after %d writes",
					stored, len(s.rows), s.writes, s.reads, tc.wantRows, tc.wantWrites)
			}
		})
	}
}
