package sink

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// stuckWrite starts a write on a connection of c that nobody reads, and
// returns once it waits; the write's result comes on the channel.
func stuckWrite(t *testing.T, c *ClickHouse) <-chan error {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { b.Close() })
	conn := &stallConn{Conn: a, limit: time.Minute, live: c.live}
	t.Cleanup(func() { conn.Close() })
	written := make(chan error, 1)
	go func() {
		_, err := conn.Write(make([]byte, 1<<10))
		written <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		conn.mu.Lock()
		writing := conn.writing
		conn.mu.Unlock()
		if writing == 1 {
			return written
		}
		if time.Now().After(deadline) {
			t.Fatal("the write did not start")
		}
	}
}

// A connection in the middle of a write is broken only once the context of
// every Write in progress has ended, and not by a context that ends after
// its Write returned.
func TestWatch_AbandonsWritesOnceEveryWriteIsCancelled(t *testing.T) {
	c := &ClickHouse{live: &liveConns{}}
	written := stuckWrite(t, c)

	// A Write that returned before its context ended counts for nothing.
	early, cancelEarly := context.WithCancel(context.Background())
	c.watch(early)()
	cancelEarly()

	ctx1, cancel1 := context.WithCancel(context.Background())
	ctx2, cancel2 := context.WithCancel(context.Background())
	done1, done2 := c.watch(ctx1), c.watch(ctx2)
	cancel1()
	select {
	case err := <-written:
		t.Fatalf("the write ended while a Write's context was still live: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	cancel2()
	select {
	case err := <-written:
		if err == nil || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "clickhouse write abandoned") {
			t.Fatalf("write error %v, want it abandoned for the cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the write still waits after every Write's context ended")
	}
	done1()
	done2()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writes != 0 || c.ended != 0 {
		t.Fatalf("after the Writes returned: %d in progress, %d ended; want 0, 0", c.writes, c.ended)
	}
}

// The last Write with a live context may return rather than see its
// context end: the Writes left, whose contexts ended, then wait on it no
// longer, and their connections are broken as it returns.
func TestWatch_AbandonsWritesWhenTheLastLiveOneReturns(t *testing.T) {
	c := &ClickHouse{live: &liveConns{}}
	written := stuckWrite(t, c)
	stuck, cancelStuck := context.WithCancel(context.Background())
	other, cancelOther := context.WithCancel(context.Background())
	defer cancelOther()
	doneStuck, doneOther := c.watch(stuck), c.watch(other)
	cancelStuck() // the stuck Write's context ends while another's is live
	select {
	case err := <-written:
		t.Fatalf("the write ended while a Write's context was still live: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	doneOther() // that other Write returns, its context still live
	select {
	case err := <-written:
		if err == nil || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "clickhouse write abandoned") {
			t.Fatalf("write error %v, want it abandoned for the cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the write still waits after the only Write with a live context returned")
	}
	doneStuck()
}
