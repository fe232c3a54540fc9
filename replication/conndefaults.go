package replication

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// connectTimeout bounds establishing a connection, TLS and authentication
// included, where the DSN sets no connect_timeout: without one, a server
// or proxy that accepts and never answers holds a command for ever.
const connectTimeout = 10 * time.Second

// poolConns is the size of cdc's pools: the connector's monitor,
// retention and dead letters, or one operator command's work.
const poolConns = 4

// ConnDefaults fills in what the DSN left out of a connection's settings:
// application_name "cdc" (a DSN's own name is kept, so that connectors
// sharing a server tell apart in pg_stat_replication and
// pg_stat_activity), and connectTimeout. Every connection also asks for
// its text in UTF-8 (clientUTF8).
func ConnDefaults(cfg *pgconn.Config) {
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "cdc"
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = connectTimeout
	}
	after := cfg.AfterConnect
	cfg.AfterConnect = func(ctx context.Context, conn *pgconn.PgConn) error {
		if after != nil {
			if err := after(ctx, conn); err != nil {
				return err
			}
		}
		return clientUTF8(ctx, conn)
	}
}

// clientUTF8 makes the session send its text in UTF-8, which is all
// ClickHouse's Strings and event_context's JSON hold. A session takes
// the database's encoding unless it asks for another, so a LATIN1
// database sent its text as LATIN1 bytes, stored as they came: "café"
// reached event_log as "caf\xe9". PostgreSQL converts from any encoding
// but two, whose bytes go as they are, as before: SQL_ASCII, which is no
// encoding (an application's own bytes, UTF-8 or not; a session asking
// for UTF-8 there would be refused every byte that is not), and
// MULE_INTERNAL, which has no conversion to UTF-8: the SET is refused
// ("Conversion between UTF8 and MULE_INTERNAL is not supported"), and
// asked there it failed every connection of every command. Not a startup
// parameter: the database's encoding is known only once connected
// (server_encoding).
func clientUTF8(ctx context.Context, conn *pgconn.PgConn) error {
	server := conn.ParameterStatus("server_encoding")
	if server == "" || server == "SQL_ASCII" || server == "MULE_INTERNAL" || conn.ParameterStatus("client_encoding") == "UTF8" {
		return nil
	}
	if _, err := conn.Exec(ctx, "SET client_encoding TO 'UTF8'").ReadAll(); err != nil {
		return fmt.Errorf("ask for text in UTF-8 (SET client_encoding; the database's encoding is %s): %w", server, err)
	}
	return nil
}

// PoolDefaults is ConnDefaults for a pool parsed from dsn, and sizes the
// pool at poolConns connections unless dsn sets pool_max_conns (pgx's
// default grows with the host's cores, which says nothing of the work).
func PoolDefaults(dsn string, cfg *pgxpool.Config) {
	ConnDefaults(&cfg.ConnConfig.Config)
	// pgxpool.ParseConfig takes its own settings out of the parameters;
	// pgconn leaves every one in.
	if plain, err := pgconn.ParseConfig(dsn); err != nil || plain.RuntimeParams["pool_max_conns"] == "" {
		cfg.MaxConns = poolConns
	}
	// At least two, whatever the DSN says (an application's URL with
	// pool_max_conns=1): `cdc deadletter replay` holds one connection for
	// its lock while it reads and deletes letters on another, and waited
	// for ever on one.
	cfg.MaxConns = max(cfg.MaxConns, 2)
}

// ErrSilent is a read that got nothing from PostgreSQL for a whole
// silence bound (BoundSilence): a server or link that froze without a
// reset.
var ErrSilent = errors.New("postgres sent nothing")

// BoundSilence makes every read on cfg's connections fail with ErrSilent
// once PostgreSQL has sent nothing for limit while one waits. statement_timeout
// and lock_timeout are the server's bounds and need the server to answer;
// a frozen one (a SIGSTOPped backend, a paused VM, a pooler that stopped
// forwarding) keeps a client waiting for ever, since a live kernel still
// acknowledges TCP and keepalives never fail. Set limit above the
// session's statement_timeout so that a slow statement ends with the
// server's own error first. A read is only under way while an answer is
// awaited: an idle pooled connection is not cut. pgx's own deadlines (a
// context ended) are kept when earlier.
//
// While cdc's own message still leaves the host (a write hands the kernel
// more, or on Linux the socket's unacknowledged bytes drain) the server
// is not silent but receiving: the bound starts again. A read cut fails
// a write blocked on the frozen link too.
//
// Once one read was cut, the server is taken as frozen and no new
// connection is made: pgx sends a cancel request on a new connection
// before it closes the one cut, and would wait 15 s more for it.
func BoundSilence(cfg *pgconn.Config, limit time.Duration) {
	dial := cfg.DialFunc
	frozen := new(atomic.Bool)
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if frozen.Load() {
			return nil, fmt.Errorf("%w for %s on another connection: not connecting again", ErrSilent, limit)
		}
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &silenceConn{Conn: c, limit: limit, frozen: frozen, queued: queuedFunc(c)}, nil
	}
}

// silenceConn is a connection whose reads fail after limit without a
// byte; see BoundSilence.
type silenceConn struct {
	net.Conn
	limit  time.Duration
	frozen *atomic.Bool // shared by the connections of one BoundSilence
	// sent counts the bytes Write handed the kernel, and queued (nil where
	// it cannot be asked) reads how many of them the peer has not
	// acknowledged: while either moves, cdc's own message still travels
	// to the server, which has nothing to say until it has it all.
	sent   atomic.Int64
	queued func() int

	mu     sync.Mutex
	outer  time.Time // the read deadline pgconn set, if any
	broken error     // set once a read was cut: every later one fails with it
}

// writeChunk is how much of a write goes to the kernel at once, so that
// sent moves while a large message crawls over a thin link.
const writeChunk = 64 << 10

func (c *silenceConn) Read(p []byte) (int, error) {
	// The silence counts from the read's start, or from the last time
	// cdc's own bytes were seen leaving, looked at every eighth of the
	// limit: a cut comes within limit and an eighth of the last sign of
	// life.
	quietSince := time.Now()
	sent, queued := c.sent.Load(), c.queuedNow()
	for {
		// The deadline is set under the lock that SetDeadline and
		// SetReadDeadline take too: pgx interrupts a read by setting a
		// deadline in the past (a context ended), which a deadline of
		// this read's, set just after, would otherwise undo for a whole
		// limit.
		c.mu.Lock()
		outer, broken := c.outer, c.broken
		if broken != nil {
			c.mu.Unlock()
			// pgx drains a connection it closes, up to 15 s: from a
			// frozen server nothing more will come.
			return 0, broken
		}
		own := minTime(quietSince.Add(c.limit), time.Now().Add(c.limit/8))
		deadline := own
		if !outer.IsZero() && outer.Before(own) {
			deadline = outer
		}
		err := c.Conn.SetReadDeadline(deadline)
		c.mu.Unlock()
		if err != nil {
			return 0, err
		}
		n, err := c.Conn.Read(p)
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || !deadline.Equal(own) {
			return n, err
		}
		c.mu.Lock()
		ours := c.outer.Equal(outer) // not moved meanwhile by a context ending
		c.mu.Unlock()
		if !ours || n > 0 {
			return n, err
		}
		if s, q := c.sent.Load(), c.queuedNow(); s != sent || q < queued {
			// A message of cdc's (dead letters of many MB over a thin
			// link) still leaves: the server is silent because it is
			// still receiving it.
			quietSince, sent, queued = time.Now(), s, q
		}
		if time.Since(quietSince) < c.limit {
			continue
		}
		c.frozen.Store(true)
		err = fmt.Errorf("%w for %s while cdc waited for an answer: %w", ErrSilent, c.limit, err)
		c.mu.Lock()
		c.broken = err
		// A write blocked on the frozen link would wait for ever.
		_ = c.Conn.SetWriteDeadline(time.Now())
		c.mu.Unlock()
		return n, err
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// queuedNow is queued's reading, 0 where it cannot be asked.
func (c *silenceConn) queuedNow() int {
	if c.queued == nil {
		return 0
	}
	return max(c.queued(), 0)
}

func (c *silenceConn) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		c.mu.Lock()
		broken := c.broken
		c.mu.Unlock()
		if broken != nil {
			return written, broken
		}
		n, err := c.Conn.Write(p[written:min(len(p), written+writeChunk)])
		written += n
		c.sent.Add(int64(n))
		if err != nil {
			c.mu.Lock()
			if c.broken != nil {
				err = c.broken // the read's cut failed it: say why
			}
			c.mu.Unlock()
			return written, err
		}
	}
	return written, nil
}

func (c *silenceConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.outer = t
	return c.Conn.SetDeadline(t)
}

func (c *silenceConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.outer = t
	return c.Conn.SetReadDeadline(t)
}
