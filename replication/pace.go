package replication

import (
	"fmt"
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
//
// Pausing alone does not keep the process asleep: Go's network poller is
// woken by every segment that arrives, whether or not a goroutine is
// reading, and the walsender sends a segment per change. So for the pause
// the socket's receive low-water mark is raised above what a pause
// collects (no wake-up until that much is queued) and put back to one byte
// before the next read. Under unthrottled pgbench that cut cdc's context
// switches about seven-fold and its CPU by half (docs/performance-history.md).
//
// With a receive buffer of a fixed size (CDC_PG_RECEIVE_BUFFER) the socket
// is read through a read-ahead buffer as large as the kernel granted, so a
// refill takes everything queued, and only a refill that did not fill it
// is followed by a pause. That is what lets the walsender's sends
// coalesce: the walsender sends and flushes every message (three per
// event), and while the reader keeps the window open each send is its own
// segment, whose delivery the walsender pays for in the kernel — on a
// backlog of small transactions most of its CPU. A reader that lets a
// bounded buffer fill can close the window, and the sends then queue
// behind it and leave in large segments, at half the walsender's CPU per
// event. Whether they do is the kernel's to decide, run by run; over this
// project's measurements the median many-transaction drain fell from 7.2
// to 5.7 s (docs/performance-history.md). A refill that fills the buffer
// means the walsender is ahead; the next refill follows at once, so a
// backlog is never slowed by the pause.
type pacedConn struct {
	net.Conn
	pause   atomic.Int64 // nanoseconds; 0 until streaming starts
	drained atomic.Bool
	sleep   func(time.Duration) // time.Sleep; tests record instead
	// lowWater sets SO_RCVLOWAT; nil where the socket has none to set.
	lowWater func(bytes int) error

	// ahead is the read-ahead buffer, nil when reads go straight to the
	// socket; ahead[r:w] is read and not yet handed out, and aheadErr the
	// error of the refill that read it, returned once it is handed out.
	// pgconn never reads from two goroutines at once, so no lock.
	ahead    []byte
	r, w     int
	aheadErr error
	// received counts the bytes read from the socket: a large message
	// arriving slowly over a thin link is no silence, though no whole
	// message comes for a while (stream.heardNothing).
	received int64
}

// quietLowWater is more than a pause ever collects (5 ms of a stream read
// at 60 MB/s is 300 KB), so nothing wakes the poller during one. With the
// kernel's autotuning Linux grows the socket's receive buffer to hold it
// (to about 2 MiB) and clamps the window to it: a bound on the stream the
// kernel holds for cdc, where a value near tcp_rmem's maximum would let it
// hold tens of MiB. With a fixed receive buffer Linux caps the mark at half
// the buffer's accounting, the setting itself, which a backlog can fill
// during a pause: a wake-up then, while the socket holds a buffer's worth.
const quietLowWater = 1 << 20

func (c *pacedConn) Read(p []byte) (int, error) {
	if c.r < c.w {
		n := copy(p, c.ahead[c.r:c.w])
		c.r += n
		return n, nil
	}
	if err := c.aheadErr; err != nil {
		c.aheadErr = nil
		return 0, err
	}
	if len(c.ahead) <= len(p) {
		return c.refill(p)
	}
	n, err := c.refill(c.ahead)
	k := copy(p, c.ahead[:n])
	c.r, c.w = k, n
	if k < n {
		c.aheadErr = err
		return k, nil
	}
	return k, err
}

// refill reads the socket into p, after a pause if the refill before it
// did not fill its buffer.
func (c *pacedConn) refill(p []byte) (int, error) {
	if c.drained.Load() {
		if d := time.Duration(c.pause.Load()); d > 0 {
			// Best effort: without it the pause still paces the reads.
			quiet := c.lowWater != nil && c.lowWater(quietLowWater) == nil
			c.sleep(d)
			// Not best effort: left raised, a read on an idle stream
			// would wait for a megabyte that may never come. Failing the
			// read ends the session, and the next one has a new socket.
			if quiet {
				if err := c.lowWater(1); err != nil {
					return 0, fmt.Errorf("restore the socket's receive low-water mark: %w", err)
				}
			}
		}
	}
	n, err := c.Conn.Read(p)
	c.received += int64(n)
	// A read larger than the read-ahead buffer (pgconn reading the rest
	// of a message of many MB) cannot be filled from a socket that holds
	// less: it is full when it took a read-ahead buffer's worth.
	full := len(p)
	if len(c.ahead) > 0 {
		full = min(full, len(c.ahead))
	}
	c.drained.Store(n < full)
	return n, err
}

// readPause is how long a drained stream on c waits: small against the
// flush interval, so it adds at most a few milliseconds to an event's
// latency. Only a TCP stream waits. A Unix socket holds what the
// walsender's send buffer holds — about 200 KiB by default, a few hundred
// changes, which the walsender fills in well under a pause and then
// blocks: paced, a 300,000-event drain over a socket took 10.8 s, and
// 3.6–4.2 s unpaced (3.4–3.6 s over TCP in the same runs;
// docs/performance-history.md). TCP buffers a pause's worth many times over.
func readPause(c net.Conn, flush time.Duration) time.Duration {
	if _, ok := c.(*net.TCPConn); !ok {
		return 0
	}
	return min(5*time.Millisecond, flush/20)
}

// receiveBuffer is the SO_RCVBUF a session sets: the one asked for, or 0
// (the kernel's autotuning and reads as they were) when net.core.rmem_max,
// if known, is smaller. A capped buffer helps no one: at Linux's default
// maximum, 208 KiB, the sends still coalesce on a backlog of small
// transactions, but a backlog of one large one drained 38 % slower than
// with the kernel's buffer (docs/performance-history.md, sixth session). An
// operator who asks for less than the maximum gets it.
func receiveBuffer(asked, rmemMax int) int {
	if rmemMax > 0 && rmemMax < asked {
		return 0
	}
	return asked
}
