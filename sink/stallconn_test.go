package sink

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// What is bounded is progress: a write whose reader takes some of every
// chunk in time goes through however long it takes in all, a whole chunk
// in time or not; a chunk nobody takes breaks the connection; a deadline of clickhouse-go's own that comes
// first is its error, not a stall.
func TestStallConn(t *testing.T) {
	const limit = 500 * time.Millisecond
	tests := []struct {
		name    string
		size    int
		read    func(c net.Conn) // the peer
		outer   time.Duration    // clickhouse-go's write deadline, if > 0
		wantN   int
		stalled bool
		expired bool
	}{
		{"taken at once", 3 * stallChunk, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) }, 0, 3 * stallChunk, false, false},
		{"taken slowly, each chunk in time", 3 * stallChunk, func(c net.Conn) {
			buf := make([]byte, stallChunk)
			for {
				time.Sleep(limit / 5)
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
			}
		}, 0, 3 * stallChunk, false, false},
		{"taken slowly, no chunk whole in time", 2 * stallChunk, func(c net.Conn) {
			buf := make([]byte, 4<<10)
			for {
				time.Sleep(limit / 50) // 4 KiB per 10 ms: a chunk takes 640 ms
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
			}
		}, 0, 2 * stallChunk, false, false},
		{"taken up to a point", 3 * stallChunk, func(c net.Conn) { _, _ = io.CopyN(io.Discard, c, stallChunk) }, 0, stallChunk, true, false},
		{"never taken, clickhouse-go's deadline first", stallChunk, func(net.Conn) {}, limit / 4, 0, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			go tt.read(b)
			c := &stallConn{Conn: a, limit: limit}
			if tt.outer > 0 {
				if err := c.SetDeadline(time.Now().Add(tt.outer)); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			n, err := c.Write(make([]byte, tt.size))
			if n != tt.wantN {
				t.Errorf("wrote %d bytes, want %d", n, tt.wantN)
			}
			if got := errors.Is(err, ErrStalled); got != tt.stalled {
				t.Fatalf("err %v: stalled %v, want %v", err, got, tt.stalled)
			}
			if got := errors.Is(err, os.ErrDeadlineExceeded); got != (tt.stalled || tt.expired) {
				t.Fatalf("err %v: a deadline %v, want %v", err, got, tt.stalled || tt.expired)
			}
			if tt.stalled && time.Since(start) < limit {
				t.Fatalf("stalled after %s, before the limit %s", time.Since(start), limit)
			}
			// A write that failed closed the socket, whatever failed it
			// (clickhouse-go would leave it open: Write); one that went
			// through did not.
			aerr := a.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			if aerr == nil {
				_, aerr = a.Read(make([]byte, 1))
			}
			if closed := errors.Is(aerr, io.ErrClosedPipe); closed != (err != nil) {
				t.Fatalf("after the write (%v) the socket reads %v; want it closed only if the write failed", err, aerr)
			}
			// A stalled connection is broken for good; an expired
			// deadline of clickhouse-go's is not a stall.
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			_, rerr := c.Read(make([]byte, 1))
			if _, werr := c.Write([]byte{1}); tt.stalled != (errors.Is(rerr, ErrStalled) && errors.Is(werr, ErrStalled)) {
				t.Fatalf("after the write: read %v, write %v; want both %v only when stalled", rerr, werr, ErrStalled)
			}
		})
	}
}

// clickhouse-go checks an idle pooled connection through its socket
// before handing it out: a stallConn must expose it, and a broken one
// must fail the check.
func TestStallConn_ExposesItsSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	c := &stallConn{Conn: raw, limit: time.Second}
	rc, err := c.SyscallConn()
	if err != nil || rc == nil {
		t.Fatalf("SyscallConn of a healthy connection: %v, %v", rc, err)
	}
	c.broken = ErrStalled
	if _, err := c.SyscallConn(); !errors.Is(err, ErrStalled) {
		t.Fatalf("SyscallConn of a broken connection: %v, want %v", err, ErrStalled)
	}
}

// The context of the last Write in progress ends while its connection is
// between two writes (clickhouse-go encoding the next block): the abort
// finds nothing writing, and the write that starts next on a frozen link
// still fails at once, not after the stall limit. A Write with a live
// context that begins after ends the abort.
func TestWatch_AbortCatchesAWriteThatStartsAfterIt(t *testing.T) {
	c := &ClickHouse{live: &liveConns{}}
	frozen, peer := net.Pipe() // nobody reads peer
	defer peer.Close()
	conn := &stallConn{Conn: frozen, limit: 5 * time.Second, live: c.live}
	defer conn.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := c.watch(ctx) // a Write in progress, between its writes
	cancel()
	for c.live.abortedBy() == nil { // the abort has run, finding nothing writing
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	_, err := conn.Write(make([]byte, 1<<10))
	if took := time.Since(start); err == nil || !strings.Contains(err.Error(), "clickhouse write abandoned: context canceled") || took > time.Second {
		t.Fatalf("the next write after the abort: %v after %s; want it abandoned at once, not after the 5 s stall limit", err, took.Round(time.Millisecond))
	}
	done()

	// Over: a later connection's write goes through.
	ok, okPeer := net.Pipe()
	defer okPeer.Close()
	go func() { _, _ = io.Copy(io.Discard, okPeer) }()
	next := &stallConn{Conn: ok, limit: 5 * time.Second, live: c.live}
	defer next.Close()
	live := c.watch(context.Background())
	defer live()
	if _, err := next.Write(make([]byte, 1<<10)); err != nil {
		t.Fatalf("a write once the ended Writes are over: %v", err)
	}
}

// A connection is listed for the abort only while a Write is under way:
// one clickhouse-go dropped without closing it — a handshake that failed
// — must not be held by the list, or its socket would never be closed.
func TestStallConn_ListedOnlyWhileWriting(t *testing.T) {
	live := &liveConns{}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &stallConn{Conn: a, limit: time.Minute, live: live}
	listed := func() int {
		live.mu.Lock()
		defer live.mu.Unlock()
		return len(live.set)
	}
	if n := listed(); n != 0 {
		t.Fatalf("%d connections listed before any write, want 0", n)
	}
	taken := make(chan []byte)
	go func() {
		buf := make([]byte, 3)
		_, _ = io.ReadFull(b, buf[:1])
		if n := listed(); n != 1 {
			t.Errorf("%d connections listed during a write, want 1", n)
		}
		_, _ = io.ReadFull(b, buf[1:])
		taken <- buf
	}()
	if n, err := c.Write([]byte("abc")); n != 3 || err != nil {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if got := string(<-taken); got != "abc" {
		t.Fatalf("peer took %q, want abc", got)
	}
	if n := listed(); n != 0 {
		t.Fatalf("%d connections listed after the write, want 0", n)
	}
}
