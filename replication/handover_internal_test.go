package replication

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/metrics"
	"github.com/eventcdc/cdc/sink"
)

// storesAll stores every batch at once.
type storesAll struct{ Sink }

func (storesAll) Write(context.Context, *sink.Batch) ([]sink.Rejected, error) { return nil, nil }

// At shutdown the last batch goes to a writer that may first need its
// acks read: with six INSERTs in flight, five stored batches fill the ack
// channel (four) and hold their memory until their acks are taken, and a
// batch of one 20 MiB event waits for that memory before the writer takes
// another. Before, the shutdown read no ack while it waited, and lost its
// whole budget, and the last batch, to it.
func TestHandOver_AppliesAcksWhileTheWriterIsBusy(t *testing.T) {
	r := New(Config{BatchMaxRows: 1000, BatchMaxBytes: 1 << 20, InsertsInFlight: 6},
		storesAll{}, nil, zap.NewNop(), metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() }))
	s := newStream(r, nil, 0, &sink.Positions{})
	s.statusFailed = true // no connection to send statuses on
	batch := func(size int, end pglogrepl.LSN) *sink.Batch {
		return &sink.Batch{Rows: []sink.Row{{Size: size, Pos: sink.Position{CommitLSN: end, Seq: 1}}}, Bytes: size, End: end}
	}
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		defer close(s.acks)
		r.writeLoop(wctx, s.batches, s.acks, &s.fence)
	}()
	for i := 1; i <= 5; i++ {
		s.batches <- batch(1000, pglogrepl.LSN(i))
	}
	s.batches <- batch(20<<20, 6)
	time.Sleep(100 * time.Millisecond) // the five stored, their acks waiting
	s.unsent = batch(1000, 7)
	hctx, hcancel := context.WithTimeout(wctx, 3*time.Second)
	defer hcancel()
	start := time.Now()
	s.handOver(hctx)
	if s.unsent != nil {
		t.Fatalf("the writer did not take the last batch within %s", time.Since(start).Round(time.Millisecond))
	}
	s.drain(true)
	<-writerDone
	if got := s.track.FlushedLSN(); got != 7 {
		t.Errorf("flushed up to %s after the shutdown, want 0/7: every batch stored and acknowledged", got)
	}
}
