package replication

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/metrics"
	"github.com/eventcdc/cdc/sink"
)

// silentServer stands in for a walsender that sends nothing: it reads what
// the stream writes and counts its standby status updates.
func silentServer(c net.Conn, statuses chan<- struct{}) {
	be := pgproto3.NewBackend(c, c)
	for {
		msg, err := be.Receive()
		if err != nil {
			return
		}
		if cd, ok := msg.(*pgproto3.CopyData); ok && len(cd.Data) > 0 && cd.Data[0] == 'r' {
			select {
			case statuses <- struct{}{}:
			default:
			}
		}
	}
}

// A batch due by the flush interval, handed to a writer that takes it only
// after reporting an earlier batch stored: that ack makes a status due at
// once. The loop then goes on sending status and, on a server that stays
// silent, ends after CDC_PG_RECEIVE_TIMEOUT. Before, half the time it read
// with the zero time as deadline — none — and waited for ever, sending
// nothing.
func TestLoop_AnAckDuringAnIntervalHandoffLeavesTheReadBounded(t *testing.T) {
	for attempt := range 8 {
		client, server := net.Pipe()
		statuses := make(chan struct{}, 1000)
		go silentServer(server, statuses)
		conn := hijacked(t, client)
		r := New(Config{BatchMaxRows: 1000, BatchMaxBytes: 1 << 20, FlushInterval: 50 * time.Millisecond, StatusInterval: 100 * time.Millisecond},
			nil, nil, zap.NewNop(), metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() }))
		s := newStream(r, conn, 100, &sink.Positions{})
		s.receiveTimeout = 400 * time.Millisecond
		// An open batch already due, an earlier one in flight, status just sent.
		s.batch.Rows = append(s.batch.Rows, sink.Row{Relation: &decoder.Relation{Name: "outbox"}})
		s.track.Row()
		s.batchDeadline = time.Now().Add(-time.Second)
		s.track.Seal()
		s.inFlight = append(s.inFlight, 0)
		s.nextStatus = time.Now().Add(time.Hour)
		go func() { // the writer: busy, then reports the earlier batch and takes the next
			time.Sleep(20 * time.Millisecond)
			s.acks <- ack{end: 100}
			<-s.batches
		}()
		done := make(chan error, 1)
		go func() { done <- s.loop(context.Background()) }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrServerSilent) {
				t.Fatalf("attempt %d: loop ended with %v, want ErrServerSilent", attempt, err)
			}
			if len(statuses) == 0 {
				t.Fatalf("attempt %d: no status sent to a silent server", attempt)
			}
		case <-time.After(3 * time.Second):
			_ = client.SetReadDeadline(time.Now())
			<-done
			t.Fatalf("attempt %d: the loop still waited 3 s into a silent server (receive timeout 400ms), %d status updates sent", attempt, len(statuses))
		}
		client.Close()
		server.Close()
	}
}
