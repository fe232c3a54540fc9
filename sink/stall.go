package sink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// ErrStalled is a connection to ClickHouse that took no byte of a write for
// as long as the read timeout: the link froze without a reset.
var ErrStalled = errors.New("clickhouse took nothing written for the whole read_timeout")

// stallChunk is how much of a write is given one deadline. Progress, not
// the whole write, is what is bounded: a chunk whose deadline passes with
// some of it taken goes on under a new one, so a large block over a slow
// link still goes, and a write fails only once a whole limit passed with
// nothing taken — found within twice the limit of the last byte taken.
const stallChunk = 256 << 10

// stallConn is a connection to ClickHouse whose writes fail once limit
// has passed with no byte taken. clickhouse-go bounds its reads (read_timeout) but
// not its writes: an INSERT larger than the sockets' buffers, sent into a
// link that froze without a reset — a dropped route, a paused VM — would
// wait until TCP gave up, some 15 minutes, or for ever if the peer's
// kernel still acknowledges, with the pipeline held behind it. After a
// stall the connection is broken: it is in the middle of a message, and
// every later read or write fails at once, so clickhouse-go drops it
// rather than wait again.
type stallConn struct {
	net.Conn
	limit time.Duration
	// live, nil in tests of the conn alone, lists the connection while a
	// Write is under way, and only then, so that it holds no connection
	// clickhouse-go is done with.
	live *liveConns

	mu      sync.Mutex
	outer   time.Time // the write deadline clickhouse-go set, if any
	broken  error
	writing int // Write calls under way
}

// liveConns is the sink's open connections, so that a Write whose context
// ends can interrupt the block clickhouse-go is writing: batch.Flush takes
// no context, and on a frozen link would hold a shutdown for read_timeout.
type liveConns struct {
	mu  sync.Mutex
	set map[*stallConn]struct{}
	// aborted, once abortWrites ran and until clearAbort, fails the next
	// write of any connection too: a Write whose context ended may be
	// between two writes when the abort comes (clickhouse-go encoding
	// its next block), and its next write would otherwise wait the whole
	// stall limit on a frozen link.
	aborted error
	// dials counts the connections opened, for tests.
	dials atomic.Int64
}

func (l *liveConns) add(c *stallConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.set == nil {
		l.set = map[*stallConn]struct{}{}
	}
	l.set[c] = struct{}{}
}

func (l *liveConns) remove(c *stallConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.set, c)
}

// abortWrites breaks every connection in the middle of a write, with why.
// Only the INSERTs write for long; a query or ping caught writing its few
// bytes fails once and is retried.
func (l *liveConns) abortWrites(why error) {
	l.mu.Lock()
	l.aborted = fmt.Errorf("clickhouse write abandoned: %w", why)
	conns := make([]*stallConn, 0, len(l.set))
	for c := range l.set {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.abortWrite(why)
	}
}

// abortedBy is the error of the abort in force, nil if none.
func (l *liveConns) abortedBy() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.aborted
}

// clearAbort ends the abort in force: no Write is left whose context
// ended, or one with a live context began.
func (l *liveConns) clearAbort() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.aborted = nil
}

func (c *stallConn) abortWrite(why error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writing == 0 || c.broken != nil {
		return
	}
	c.broken = fmt.Errorf("clickhouse write abandoned: %w", why)
	_ = c.Conn.SetWriteDeadline(time.Now())
}

func (c *stallConn) Close() error {
	if c.live != nil {
		c.live.remove(c)
	}
	return c.Conn.Close()
}

// Write writes p, and closes the socket when it fails: clickhouse-go
// gives up a connection whose block failed to go out — an INSERT
// abandoned as its context ended (abortWrite), stalled, or cut by the
// network — by marking it closed without closing it, and its Close then
// does nothing. The socket stayed open until the garbage collector found
// it, and ClickHouse, waiting for the rest of the block, kept the INSERT
// running meanwhile: a new session's read of what is stored waits for
// it (settle), up to read_timeout. A write that failed has left the
// connection in the middle of a message: nothing more can go over it.
// Closed, the server reads to the end of what the sockets hold and ends
// the INSERT within moments.
func (c *stallConn) Write(p []byte) (int, error) {
	n, err := c.write(p)
	if err != nil {
		_ = c.Conn.Close()
	}
	return n, err
}

func (c *stallConn) write(p []byte) (int, error) {
	c.mu.Lock()
	if c.writing++; c.writing == 1 && c.live != nil {
		c.live.add(c)
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.writing--; c.writing == 0 && c.live != nil {
			c.live.remove(c)
		}
		c.mu.Unlock()
	}()
	n := 0
	for n < len(p) {
		// The check and the deadline under one lock: an abort between
		// them would have its deadline overwritten.
		c.mu.Lock()
		if c.broken == nil && c.live != nil {
			// An abort that came while this connection was between
			// writes (Write's count 0, so not broken by it): the
			// connection may be in the middle of a message, broken too.
			c.broken = c.live.abortedBy()
		}
		broken, outer := c.broken, c.outer
		deadline := time.Now().Add(c.limit)
		if !outer.IsZero() && outer.Before(deadline) {
			deadline = outer
		}
		var err error
		if broken == nil {
			err = c.Conn.SetWriteDeadline(deadline)
		}
		c.mu.Unlock()
		if broken != nil {
			return n, broken
		}
		if err != nil {
			return n, err
		}
		m, err := c.Conn.Write(p[n:min(len(p), n+stallChunk)])
		n += m
		if err != nil {
			c.mu.Lock()
			broken = c.broken
			c.mu.Unlock()
			if broken != nil { // aborted meanwhile
				return n, broken
			}
			if errors.Is(err, os.ErrDeadlineExceeded) && deadline != outer && m > 0 {
				continue // slow, not stalled: some of the chunk was taken
			}
			if errors.Is(err, os.ErrDeadlineExceeded) && deadline != outer {
				err = fmt.Errorf("%w (%s): %w", ErrStalled, c.limit, err)
				c.mu.Lock()
				c.broken = err
				c.mu.Unlock()
			}
			return n, err
		}
	}
	return n, nil
}

func (c *stallConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	broken := c.broken
	c.mu.Unlock()
	if broken != nil {
		return 0, broken
	}
	return c.Conn.Read(p)
}

var _ syscall.Conn = (*stallConn)(nil)

// SyscallConn exposes the socket: clickhouse-go checks an idle pooled
// connection through it (connCheck) before handing it out, and without
// it would hand out connections the server has closed. A broken
// connection fails the check.
func (c *stallConn) SyscallConn() (syscall.RawConn, error) {
	c.mu.Lock()
	broken := c.broken
	c.mu.Unlock()
	if broken != nil {
		return nil, broken
	}
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("clickhouse connection %T has no socket to check", c.Conn)
	}
	return sc.SyscallConn()
}

func (c *stallConn) SetDeadline(t time.Time) error {
	c.setOuter(t)
	return c.Conn.SetDeadline(t)
}

func (c *stallConn) SetWriteDeadline(t time.Time) error {
	c.setOuter(t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *stallConn) setOuter(t time.Time) {
	c.mu.Lock()
	c.outer = t
	c.mu.Unlock()
}

// stallDialer dials as clickhouse-go does — TCP within timeout, then TLS
// when tlsConfig is set — with a stallConn under TLS, so what is bounded is
// bytes leaving the socket. Like clickhouse-go's own dial it gives every
// address its own timeout, whatever ctx says: ctx is the pool's, whose
// deadline started before any wait for a free connection and covers every
// address of a multi-host DSN.
func stallDialer(timeout, limit time.Duration, tlsConfig *tls.Config, live *liveConns) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		ctx = context.WithoutCancel(ctx)
		raw, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		live.dials.Add(1)
		sc := &stallConn{Conn: raw, limit: limit, live: live}
		conn := net.Conn(sc)
		if tlsConfig == nil {
			return conn, nil
		}
		cfg := tlsConfig.Clone()
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				host = addr
			}
			cfg.ServerName = host
		}
		tc := tls.Client(conn, cfg)
		hctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			_ = sc.Close()
			return nil, err
		}
		return tc, nil
	}
}

// closeFailedDials is clickhouse-go's dial strategy (the DSN's hosts in
// the order connection_open_strategy gives), which also closes the socket of a connection that failed
// after it was dialed: clickhouse-go drops a connection whose handshake
// failed — a login refused, a server that never answered the hello —
// without closing it, and its socket stayed open until the garbage
// collector found it. cdc retries such a failure (a password rotated
// while it ran, a server wedged): each attempt held one more descriptor,
// and a process that only retries makes little garbage. The socket is
// the one opts.DialContext returned for this attempt alone: the wrapper
// is made for each, in the copy of the options that connection keeps.
func closeFailedDials(ctx context.Context, connID int, opts *clickhouse.Options, dial clickhouse.Dial) (clickhouse.DialResult, error) {
	if opts.Protocol != clickhouse.Native || opts.DialContext == nil {
		// HTTP's transport keeps DialContext for its own connections,
		// and closes them itself.
		return clickhouse.DefaultDialStrategy(ctx, connID, opts, dial)
	}
	return clickhouse.DefaultDialStrategy(ctx, connID, opts, func(ctx context.Context, addr string, opts *clickhouse.Options) (clickhouse.DialResult, error) {
		var conn net.Conn
		own := *opts
		own.DialContext = func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := opts.DialContext(ctx, addr)
			conn = c
			return c, err
		}
		r, err := dial(ctx, addr, &own)
		if err != nil && conn != nil {
			_ = conn.Close()
		}
		return r, err
	})
}
