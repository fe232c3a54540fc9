package replication

import (
	"context"
	"encoding/binary"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/metrics"
	"github.com/eventcdc/cdc/sink"
)

// slowSink stores every batch after d.
type slowSink struct {
	Sink
	d time.Duration
}

func (s slowSink) Write(ctx context.Context, _ *sink.Batch) ([]sink.Rejected, error) {
	select {
	case <-time.After(s.d):
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// While the shutdown waits for the writer to store the last batch, the
// stream goes on sending standby statuses: a walsender that hears nothing
// for wal_sender_timeout ends the session, and the final acknowledgement
// would find no one. A fake walsender on a pipe counts them; the last
// acknowledges the commit the batch held. (From the concurrency review:
// before, one status was sent, after the 1.5 s INSERT.)
func TestRun_ShutdownSendsStatusesWhileTheWriterStores(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	var statuses atomic.Int32
	var lastFlush atomic.Uint64
	go func() {
		be := pgproto3.NewBackend(server, server)
		for {
			msg, err := be.Receive()
			if err != nil {
				return
			}
			// 'r', then write, flush and apply positions, the clock and
			// reply-requested.
			if cd, ok := msg.(*pgproto3.CopyData); ok && len(cd.Data) == 34 && cd.Data[0] == 'r' {
				statuses.Add(1)
				lastFlush.Store(binary.BigEndian.Uint64(cd.Data[9:]))
			}
		}
	}()
	cfg, err := pgconn.ParseConfig("postgres://u@localhost/db")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgconn.Construct(&pgconn.HijackedConn{Conn: client, Frontend: pgproto3.NewFrontend(client, client),
		Config: cfg, ParameterStatuses: map[string]string{}, TxStatus: 'I'})
	if err != nil {
		t.Fatal(err)
	}
	r := New(Config{BatchMaxRows: 1000, BatchMaxBytes: 1 << 20, FlushInterval: time.Second, StatusInterval: 100 * time.Millisecond, ShutdownTimeout: 10 * time.Second},
		slowSink{d: 1500 * time.Millisecond}, nil, zap.NewNop(), metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() }))
	s := newStream(r, conn, 100, &sink.Positions{})
	s.batch.Rows = append(s.batch.Rows, sink.Row{Relation: &decoder.Relation{Name: "outbox"}, Pos: sink.Position{CommitLSN: 90, Seq: 1}})
	s.track.Row()
	s.track.Commit(120)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the shutdown has begun
	if err := s.run(ctx); err != nil {
		t.Fatal(err)
	}
	// net.Pipe is synchronous: the final status was read before run
	// returned, and counted just after.
	deadline := time.Now().Add(5 * time.Second)
	for pglogrepl.LSN(lastFlush.Load()) != 120 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := statuses.Load(); n < 5 || pglogrepl.LSN(lastFlush.Load()) != 120 {
		t.Fatalf("%d standby statuses during a 1.5 s shutdown with a 100 ms status interval, the last flushed to %s; want at least 5, the last at 0/78",
			n, pglogrepl.LSN(lastFlush.Load()))
	}
}
