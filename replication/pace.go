package replication

import (
	"net"
	"sync/atomic"
	"time"
)

// pacedConn lets a drained socket fill a little before the next read.
// The walsender sends every change as its own message and flushes it, so
// at a few thousand events a second a reader that reads as soon as data is
// there wakes up for every few hundred bytes; most of cdc's CPU under
// steady traffic was those wake-ups (scheduler and runtime, not decoding).
// Waiting a few milliseconds after a read that emptied the socket turns
// them into one read per pause. A read that fills the buffer — a backlog —
// is followed by the next at once, so draining is never slowed.
type pacedConn struct {
	net.Conn
	pause   atomic.Int64 // nanoseconds; 0 until streaming starts
	drained atomic.Bool
	sleep   func(time.Duration) // time.Sleep; tests record instead
}

func (c *pacedConn) Read(p []byte) (int, error) {
	if c.drained.Load() {
		if d := time.Duration(c.pause.Load()); d > 0 {
			c.sleep(d)
		}
	}
	n, err := c.Conn.Read(p)
	c.drained.Store(n < len(p))
	return n, err
}

// readPause is how long a drained stream waits: small against the flush
// interval, so it adds at most a few milliseconds to an event's latency.
func readPause(flush time.Duration) time.Duration {
	return min(5*time.Millisecond, flush/20)
}
