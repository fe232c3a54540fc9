package replication

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

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
	go walsender(server, nil, &statuses, &lastFlush)
	conn := hijacked(t, client)
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

// countingSink stores every batch at once and counts them.
type countingSink struct {
	Sink
	n *atomic.Int32
}

func (c countingSink) Write(context.Context, *sink.Batch) ([]sink.Rejected, error) {
	c.n.Add(1)
	return nil, nil
}

// firstWrite is a connection that says when its first Write begins and
// when it returns.
type firstWrite struct {
	net.Conn
	once              sync.Once
	started, returned chan struct{}
}

func (w *firstWrite) Write(b []byte) (int, error) {
	first := false
	w.once.Do(func() { first = true; close(w.started) })
	n, err := w.Conn.Write(b)
	if first {
		close(w.returned)
	}
	return n, err
}

// A shutdown that comes while a status write of the stream is blocked (the
// server not reading) interrupts that write: the shutdown goes on as any
// other and stores the open batch, rather than read the interrupted write
// as the session failing (from the second concurrency review: the batch
// was not stored). The cut write may have sent part of its message, so
// nothing more is written on the connection: the batch is not
// acknowledged, and the next start replays it, skipping it as stored.
func TestRun_ShutdownDuringABlockedStatusWriteStoresTheBatch(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	reading := make(chan struct{})
	var statuses atomic.Int32
	var lastFlush atomic.Uint64
	go walsender(server, reading, &statuses, &lastFlush)
	wc := &firstWrite{Conn: client, started: make(chan struct{}), returned: make(chan struct{})}
	conn := hijacked(t, wc)
	var stored atomic.Int32
	core, logs := observer.New(zapcore.WarnLevel)
	r := New(Config{BatchMaxRows: 1000, BatchMaxBytes: 1 << 20, FlushInterval: time.Hour, StatusInterval: 100 * time.Millisecond, ShutdownTimeout: 5 * time.Second},
		countingSink{n: &stored}, nil, zap.New(core), metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() }))
	s := newStream(r, conn, 100, &sink.Positions{})
	s.batch.Rows = append(s.batch.Rows, sink.Row{Relation: &decoder.Relation{Name: "outbox"}, Pos: sink.Position{CommitLSN: 110, Seq: 1}})
	s.batchDeadline = time.Now().Add(time.Hour)
	s.track.Row()
	s.track.Commit(120)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	<-wc.started // the stream's first status: nobody reads it
	cancel()
	<-wc.returned // cut short by the interrupt, having written nothing
	close(reading)
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if stored.Load() != 1 {
		t.Fatalf("%d batches stored, want the open one", stored.Load())
	}
	warned := logs.FilterMessage("final acknowledgement failed; the slot will replay from the previous one").All()
	if len(warned) != 1 || !strings.Contains(fmt.Sprint(warned[0].ContextMap()["error"]), "a standby status write was cut short") {
		t.Fatalf("warnings %v; want the final acknowledgement refused for the cut status", logs.All())
	}
	time.Sleep(100 * time.Millisecond) // a status written after all would be read by now
	if n := statuses.Load(); n != 0 {
		t.Fatalf("%d statuses written after the cut one, want none", n)
	}
}

// walsender is the server end of a replication connection on a pipe: once
// start is closed (nil: at once) it reads what the client sends, counting
// standby statuses and keeping the flush position of the last.
func walsender(server net.Conn, start <-chan struct{}, statuses *atomic.Int32, lastFlush *atomic.Uint64) {
	if start != nil {
		<-start
	}
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
}

// hijacked is a PostgreSQL connection over c, as if past its start-up.
func hijacked(t *testing.T, c net.Conn) *pgconn.PgConn {
	t.Helper()
	cfg, err := pgconn.ParseConfig("postgres://u@localhost/db")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgconn.Construct(&pgconn.HijackedConn{Conn: c, Frontend: pgproto3.NewFrontend(c, c),
		Config: cfg, ParameterStatuses: map[string]string{}, TxStatus: 'I'})
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// A status write that its own deadline cut short (no shutdown involved)
// may have sent part of the message; a status written after it would be
// read by PostgreSQL from that part on, its flush position made of the
// next message's bytes. The server end of a pipe takes 14 of a status's
// 39 bytes, then stops reading; once the write fails, nothing more is
// written on the connection, and the next status fails with errStatusCut.
func TestSendStatus_AfterAWriteCutShortNoStatusIsWritten(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	type read struct {
		n   int
		err error
	}
	first, rest := make(chan read, 1), make(chan read, 1)
	resume := make(chan struct{})
	go func() {
		buf := make([]byte, 14)
		n, err := io.ReadFull(server, buf)
		first <- read{n, err}
		<-resume
		all, err := io.ReadAll(server)
		rest <- read{len(all), err}
	}()
	conn := hijacked(t, client)
	r := New(Config{BatchMaxRows: 1000, BatchMaxBytes: 1 << 20, FlushInterval: time.Second, StatusInterval: 100 * time.Millisecond},
		nil, nil, zap.NewNop(), metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() }))
	s := newStream(r, conn, 100, &sink.Positions{})

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := s.sendStatus(ctx)
	if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("status into a server that stopped reading: %v, want its deadline exceeded", err)
	}
	if got := <-first; got.n != 14 || got.err != nil {
		t.Fatalf("server read %d bytes (%v) of the first status, want 14", got.n, got.err)
	}
	close(resume) // the server reads again: anything written now reaches it
	if err := s.sendStatus(context.Background()); !errors.Is(err, errStatusCut) {
		t.Fatalf("status after a cut one: %v, want errStatusCut", err)
	}
	client.Close()
	if got := <-rest; got.n != 0 || got.err != nil {
		t.Fatalf("server read %d more bytes (%v) after the cut status, want 0", got.n, got.err)
	}
}
