package sink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/decoder"
)

// Table is the ClickHouse table cdc writes.
const Table = "event_log"

// Columns cdc fills itself: where each row came from in the WAL.
const (
	colCommitLSN = "cdc_commit_lsn"
	colSeq       = "cdc_seq"
)

// colEventID is the event's identity, the outbox's id.
const colEventID = "event_id"

// renamed maps outbox columns to event_log columns of another name. Every
// other outbox column is carried to the event_log column of the same name,
// if there is one: adding a column on both sides is all it takes.
var renamed = map[string]string{"id": colEventID, "traceparent": "trace_id"}

// ClickHouse writes batches to event_log with one INSERT per batch.
type ClickHouse struct {
	conn driver.Conn
	// big is a second pool, for INSERTs of rows larger than a block: its
	// connections free their buffers when released (Open).
	big      driver.Conn
	database string
	// insertPrefix starts the query id of each of this sink's INSERTs:
	// insertQueryPrefix and a tag of the database its INSERTs go to
	// (settle); "" until idPrefix has asked the server. Guarded by mu.
	insertPrefix string
	log          *zap.Logger

	// Block size of an INSERT; see blockBytes.
	blockBytes, blockRows int
	// live is the connections the sink dialed (stall.go).
	live *liveConns
	// wmu guards the count of Writes in progress and of those whose
	// context has ended (watch).
	wmu           sync.Mutex
	writes, ended int
	endCause      error // why the context of the Write that ended last ended

	mu      sync.Mutex                 // guards what follows; never held during an INSERT
	columns []chColumn                 // event_log's columns an INSERT may name, in table order
	warned  map[*decoder.Relation]bool // relation versions seen since columns were loaded
	// computed maps each column ClickHouse computes (MATERIALIZED, ALIAS)
	// to its kind: never named in an INSERT.
	computed map[string]string
	// said is when each warning about columns not carried was last
	// logged, by message and list: kept across reloads, which happen
	// every 30 s while a column is not carried (perhaps on purpose), so
	// that the same list is warned of once an hour, not at each.
	said map[string]time.Time
	// unquotable holds the event_log columns whose names clickhouse-go
	// cannot carry in an INSERT: never named in one.
	unquotable map[string]bool
	// misread holds the event_log columns whose types clickhouse-go
	// misreads (escapedEnum): never named in an INSERT either.
	misread map[string]bool
	// unwritable holds the event_log columns of a type clickhouse-go
	// cannot build a column of (unwritableType): never named either.
	unwritable map[string]bool
	// read is event_log's columns as loadColumns last read them, every
	// one: refresh compares them with the columns before each Write.
	read []columnRead
	// types is what the server's version changes in the conversion.
	types serverTypes
	// uncarried is set when some outbox column has no event_log column it
	// may fill (none, or one ClickHouse computes).
	uncarried bool
	// insertSettings go with each INSERT: none, unless the user's
	// settings would have the server answer before the rows are written
	// (insertSettingsFor).
	insertSettings clickhouse.Settings
	loadedAt       time.Time

	// settle waits for running INSERTs up to settleFor (the DSN's
	// read_timeout), looking every settleEvery; settleBlind is set once
	// system.processes could not be read, said once.
	settleFor, settleEvery time.Duration
	settleBlind            atomic.Bool
}

// chColumn is an event_log column an INSERT may name: computed ones
// (MATERIALIZED, ALIAS) and those clickhouse-go cannot name or read are
// kept apart, in ClickHouse.computed, unquotable, misread and unwritable.
type chColumn struct{ name, typ string }

// Open prepares a client for the server at dsn (clickhouse://user:password@
// host:port/database, native protocol; ?secure=true for TLS). It does not
// connect: an unreachable server is a retried runtime condition, not a
// configuration error.
func Open(dsn string, log *zap.Logger) (*ClickHouse, error) {
	opts, err := clientOptions(dsn)
	if err != nil {
		return nil, err
	}
	live := &liveConns{}
	if opts.DialContext == nil {
		opts.DialContext = stallDialer(opts.DialTimeout, opts.ReadTimeout, opts.TLS, live)
	}
	opts.DialStrategy = closeFailedDials
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open clickhouse: %w", redactErr(err, dsn))
	}
	// A connection keeps the buffers it encoded and compressed its
	// largest block in, about twice the block, for as long as it lives:
	// after an event of tens of MB each idle connection held that much,
	// outside the writer's memory budget, for up to ConnMaxLifetime.
	// INSERTs of such rows go through connections that free their
	// buffers when released; the others keep theirs, which ordinary
	// blocks (blockBytes) fill again at every INSERT: freeing them at
	// each one doubled the client's CPU per INSERT.
	freeing := *opts
	freeing.FreeBufOnConnRelease = true
	big, err := clickhouse.Open(&freeing)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("open clickhouse: %w", redactErr(err, dsn))
	}
	return &ClickHouse{conn: conn, big: big, database: opts.Auth.Database, log: log, warned: map[*decoder.Relation]bool{}, live: live,
		blockBytes: blockBytes, blockRows: blockRows, settleFor: opts.ReadTimeout, settleEvery: 100 * time.Millisecond}, nil
}

// clientOptions is the client's options for dsn: what it says, and cdc's
// own where it says nothing.
func clientOptions(dsn string) (*clickhouse.Options, error) {
	opts, err := parseDSN(dsn)
	if err != nil {
		return nil, err
	}
	opts.DialTimeout = dialTimeout(dsn, opts.DialTimeout)
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = defaultReadTimeout
	}
	opts.MaxOpenConns = maxConns
	// Every connection released is kept, however many INSERTs are in
	// flight (CDC_INSERTS_IN_FLIGHT): a full idle pool closes the one
	// released, and with 2 kept each INSERT past the second opened a new
	// connection. Idle ones hold no more than the same ones did in use,
	// and only as many exist as were ever in use at once.
	opts.MaxIdleConns = maxConns
	if opts.ConnMaxLifetime == 0 { // not in the DSN
		opts.ConnMaxLifetime = 10 * time.Minute
	}
	if opts.Compression == nil { // compress not in the DSN
		opts.Compression = &clickhouse.Compression{Method: clickhouse.CompressionLZ4}
	}
	// clickhouse-go dials a host without a port as it is, which fails
	// every connection ("missing port in address"): cdc run would retry
	// for ever. The native protocol's ports, as clickhouse-client takes
	// them.
	port := "9000"
	if opts.TLS != nil {
		port = "9440"
	}
	for i, addr := range opts.Addr {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			opts.Addr[i] = net.JoinHostPort(strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]"), port)
		}
	}
	return opts, nil
}

// CheckDSN reports what Open would refuse in dsn, without opening anything:
// a setting to fix, found before a command connects anywhere.
func CheckDSN(dsn string) error {
	_, err := parseDSN(dsn)
	return err
}

func parseDSN(dsn string) (*clickhouse.Options, error) {
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse clickhouse dsn: %w", redactErr(err, dsn))
	}
	// A negative timeout would put every deadline in the past: each INSERT
	// would fail, and be retried, for ever.
	if opts.ReadTimeout < 0 {
		return nil, fmt.Errorf("read_timeout %s must be positive", opts.ReadTimeout)
	}
	if opts.DialTimeout < 0 {
		return nil, fmt.Errorf("dial_timeout %s must be positive", opts.DialTimeout)
	}
	params := url.Values{}
	if u, err := url.Parse(dsn); err == nil {
		params = u.Query()
	}
	// cdc sizes its pools itself (maxConns, room for the most
	// CDC_INSERTS_IN_FLIGHT allows, whatever it is set to); a size here
	// would be ignored.
	for _, name := range []string{"max_open_conns", "max_idle_conns"} {
		if params.Has(name) {
			return nil, fmt.Errorf("%s: cdc sizes its own connections (at most %d a pool, whatever CDC_INSERTS_IN_FLIGHT is): remove it", name, maxConns)
		}
	}
	// clickhouse-go leaves compression unset for compress=false and for a
	// value it does not know, which cdc would read as "not set" and
	// compress with LZ4 anyway; and it takes HTTP's methods, which the
	// native protocol refuses at every connect.
	if v := params.Get("compress"); v != "" {
		if on, err := strconv.ParseBool(v); err == nil {
			if !on {
				opts.Compression = &clickhouse.Compression{Method: clickhouse.CompressionNone}
			}
		} else if !slices.Contains([]string{"none", "lz4", "lz4hc", "zstd"}, v) {
			return nil, fmt.Errorf("compress: %q is not true, false, none, lz4, lz4hc or zstd (the native protocol's)", v)
		}
	}
	// 0 or less would expire every connection as it is released: each
	// INSERT would dial again.
	if params.Has("conn_max_lifetime") && opts.ConnMaxLifetime <= 0 {
		return nil, fmt.Errorf("conn_max_lifetime %s must be positive", opts.ConnMaxLifetime)
	}
	var typos []string
	for name := range opts.Settings {
		if option := nearOption(name); option != "" {
			typos = append(typos, fmt.Sprintf("%s (%s?)", name, option))
		}
	}
	if len(typos) > 0 {
		slices.Sort(typos)
		return nil, fmt.Errorf("%s: not an option of the ClickHouse client, which would send it to the server as a setting, refused by every query: a misspelling", strings.Join(typos, ", "))
	}
	return opts, nil
}

// dsnOptions are the DSN parameters clickhouse-go reads itself; it sends
// every other one to the server as a setting of each query.
var dsnOptions = []string{"hosts", "alt_hosts", "debug", "compress", "compress_level", "max_compression_buffer",
	"dial_timeout", "block_buffer_size", "read_timeout", "secure", "skip_verify", "tls_server_name",
	"connection_open_strategy", "max_open_conns", "max_idle_conns", "conn_max_lifetime", "username", "password",
	"database", "client_info_product", "http_proxy", "http_path"}

// nearOption returns the client option a DSN parameter is one edit away
// from — a letter left out, added, changed, or two swapped — or "":
// ?read_timout=2m is meant as read_timeout. Two edits would catch real
// settings (send_timeout is two from read_timeout).
func nearOption(name string) string {
	for _, option := range dsnOptions {
		if editDistance(name, option) == 1 {
			return option
		}
	}
	return ""
}

// editDistance is the optimal string alignment distance of a and b:
// Levenshtein's, with a swap of two neighbours as one edit. For short
// ASCII names.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// defaultDialTimeout replaces clickhouse-go's 30 s: a connect that takes
// longer is a dead server, and every retry of a batch waits it out.
const defaultDialTimeout = 5 * time.Second

// dialTimeout is the connect timeout to use: the DSN's dial_timeout when it
// sets one, else defaultDialTimeout. ParseDSN fills in its own default, so
// only the DSN's text tells an explicit 30s from none.
func dialTimeout(dsn string, parsed time.Duration) time.Duration {
	if u, err := url.Parse(dsn); err == nil && u.Query().Get("dial_timeout") != "" && parsed > 0 {
		return parsed
	}
	return defaultDialTimeout
}

// defaultReadTimeout is clickhouse-go's own default, made explicit because
// writes are bounded by it too (stallConn): how long cdc waits for
// ClickHouse to answer, or to take any of an INSERT's bytes, before it
// drops the connection and retries. The DSN's read_timeout sets it.
const defaultReadTimeout = 5 * time.Minute

// maxConns bounds the pool: room for the most INSERTs cdc keeps in flight
// (CDC_INSERTS_IN_FLIGHT, at most 16) and for the position reads and the
// readiness ping beside them, which would otherwise wait behind a draining
// backlog's INSERTs and time out. Connections open only as they are needed.
var maxConns = 16 + 4

// redactErr keeps a DSN's password out of an error message: URL parse
// errors quote the whole URL.
func redactErr(err error, dsn string) error {
	msg := err.Error()
	if u, perr := url.Parse(dsn); perr == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	if i := strings.Index(dsn, "://"); i >= 0 {
		if j := strings.LastIndex(dsn, "@"); j > i {
			msg = strings.ReplaceAll(msg, dsn[i+3:j], "xxxxx")
		}
	}
	return errors.New(msg)
}

// Close releases the connections.
func (c *ClickHouse) Close() error { return errors.Join(c.conn.Close(), c.big.Close()) }

// Ping checks that the server answers.
func (c *ClickHouse) Ping(ctx context.Context) error {
	if err := c.conn.Ping(ctx); err != nil {
		return fmt.Errorf("ping clickhouse: %w", err)
	}
	return nil
}

// Conn exposes the connection for administrative commands (migrate, verify).
func (c *ClickHouse) Conn() driver.Conn { return c.conn }

// Write stores the batch with one INSERT, or one per outbox shape when the
// batch spans an ALTER TABLE outbox ADD COLUMN: each INSERT names only the
// columns its rows carry, so ClickHouse gives the rows written before the
// ALTER the new column's DEFAULT, as it would any row that lacks it. Rows
// ClickHouse refuses for their content come back as rejected, and the rest
// are stored; any other failure (network, server down, missing table) is
// returned as an error and nothing may be assumed stored: the caller retries
// the whole batch. Write is safe for concurrent use: the pipeline keeps more
// than one INSERT in flight.
func (c *ClickHouse) Write(ctx context.Context, b *Batch) ([]Rejected, error) {
	if len(b.Rows) == 0 {
		return nil, nil
	}
	if err := c.refresh(ctx, b.Rows); err != nil {
		return nil, err
	}
	defer c.watch(ctx)()
	var rejected []Rejected
	for rows := b.Rows; len(rows) > 0; {
		n := 1
		for n < len(rows) && sameShape(rows[n].Relation, rows[0].Relation) {
			n++
		}
		r, err := c.write(ctx, rows[:n], true)
		if err != nil {
			return nil, err
		}
		rejected = append(rejected, r...)
		rows = rows[n:]
	}
	return rejected, nil
}

// sendGateKey is the context key of WithSendGate's gate.
type sendGateKey struct{}

// WithSendGate returns ctx with gate, which a Write under it calls right
// before each block of an INSERT goes to ClickHouse, the last with the end
// of the data (which commits it): an error aborts the INSERT there, and
// Write returns it wrapped. Blocks sent before stay stored, as when a
// later block fails. The replicator's gate says whether the process was
// frozen since it last made sure the slot was its own: woken, an INSERT
// it had prepared would store rows a standby may have stored meanwhile.
// A check at the send, not before the INSERT's preparation, converting
// and appending of its rows, leaves a freeze the least time to land
// unseen between the two.
func WithSendGate(ctx context.Context, gate func() error) context.Context {
	return context.WithValue(ctx, sendGateKey{}, gate)
}

// SendGate is the gate of ctx (WithSendGate) called: nil without one.
func SendGate(ctx context.Context) error {
	if gate, _ := ctx.Value(sendGateKey{}).(func() error); gate != nil {
		return gate()
	}
	return nil
}

// readBackKey is the context key of WithReadBack's function.
type readBackKey struct{}

// WithReadBack returns ctx with readBack, which a Write under it asks
// which rows ClickHouse lacks before it writes again rows of an INSERT
// that broke after some of its blocks went out: one refused in a later
// block (18.16 closes the connection at the next, and the rest is written
// in halves), or one whose row Append refused. ClickHouse writes an
// INSERT's blocks as they come once it squashed min_insert_block_size_rows
// or _bytes of them (1,048,576 rows or 256 MiB by default, less where a
// profile sets it lower), so the broken INSERT may have stored its first
// blocks, and written again they were raw duplicates. readBack returns
// the rows it is given without those stored; it may return them all when
// it cannot tell. The replicator's reads the positions stored, as for a
// failed INSERT it retries; without one, every row is written again.
func WithReadBack(ctx context.Context, readBack func(context.Context, []Row) ([]Row, error)) context.Context {
	return context.WithValue(ctx, readBackKey{}, readBack)
}

// ReadBack is the read-back of ctx (WithReadBack) asked about rows: rows
// themselves without one.
func ReadBack(ctx context.Context, rows []Row) ([]Row, error) {
	if readBack, _ := ctx.Value(readBackKey{}).(func(context.Context, []Row) ([]Row, error)); readBack != nil {
		return readBack(ctx, rows)
	}
	return rows, nil
}

// unstoredThen is the rows of a broken INSERT to write again: those of
// sent (its blocks that went out, and the one going) that ClickHouse
// lacks (ReadBack), then unsent. The read-back is not asked when the
// server cannot have stored any of sent (storedNone): a read-back may
// read a whole column of event_log.
func (c *ClickHouse) unstoredThen(ctx context.Context, sent, unsent []Row) ([]Row, error) {
	if c.storedNone(ctx, sent) {
		rest := make([]Row, 0, len(sent)+len(unsent))
		rest = append(rest, sent...)
		return append(rest, unsent...), nil
	}
	lacked, err := ReadBack(ctx, sent)
	if err != nil {
		return nil, fmt.Errorf("read which of the %d rows an INSERT sent before it broke are stored: %w", len(sent), err)
	}
	rest := make([]Row, 0, len(lacked)+len(unsent))
	rest = append(rest, lacked...)
	return append(rest, unsent...), nil
}

// sameShape reports whether two relation versions have the same columns by
// name: their rows go into the same INSERT. PostgreSQL sends an unchanged
// relation again (after a reconnect, in each streamed transaction), and
// each message is a version of its own.
func sameShape(a, b *decoder.Relation) bool {
	if a == b {
		return true
	}
	if len(a.Columns) != len(b.Columns) {
		return false
	}
	for i := range a.Columns {
		if a.Columns[i].Name != b.Columns[i].Name {
			return false
		}
	}
	return true
}

// watch counts a Write in progress until the function it returns is
// called. clickhouse-go's batch.Flush, which sends each block but the last,
// does not watch ctx: on a link that froze, a shutdown would wait for
// read_timeout. So once the context of every Write in progress has ended —
// the pipeline's writers share one — the connections in the middle of a
// write are broken (stall.go), and so is any whose next write starts
// before those Writes are over (one may be encoding its next block). A
// connection cannot be told from another (clickhouse-go picks them), so
// while any Write still has a live context, none is.
func (c *ClickHouse) watch(ctx context.Context) (done func()) {
	w := &watchedWrite{}
	c.wmu.Lock()
	c.writes++
	if ctx.Err() == nil {
		// A Write with a live context: the abort of those that ended
		// before it ends (stall.go, liveConns.aborted).
		c.live.clearAbort()
	}
	c.wmu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		if w.done {
			return // ended after its Write returned
		}
		w.ended = true
		c.ended++
		c.endCause = context.Cause(ctx)
		if c.ended == c.writes {
			c.live.abortWrites(c.endCause)
		}
	})
	return func() {
		stop()
		c.wmu.Lock()
		defer c.wmu.Unlock()
		w.done = true
		if w.ended {
			c.ended--
		}
		c.writes--
		// This Write may have been the last with a live context: the
		// others, ended already, wait on it no longer.
		if c.writes > 0 && c.ended == c.writes {
			c.live.abortWrites(c.endCause)
		}
		if c.writes == 0 {
			c.live.clearAbort()
		}
	}
}

type watchedWrite struct{ ended, done bool }

// refresh learns event_log's columns again when the rows may need it. A
// relation version not seen before means the outbox changed shape (ALTER
// TABLE outbox ADD COLUMN): event_log may have been given the matching
// column just before. So does an outbox column event_log lacked at the last
// look: the operator may have added it since (in the wrong order), and it
// should start flowing without a restart.
//
// Otherwise it reads event_log's columns and their types, and learns them
// again if they changed since: an event_log column given a type
// clickhouse-go panics on (escapedEnum) while cdc ran was named in the
// next INSERT, and clickhouse-go read the type from the server's header
// block in a goroutine of its own, where no recover reaches: the process
// died at every INSERT. A look costs one small query per batch; an ALTER
// in the moment between it and the INSERT still gets through.
func (c *ClickHouse) refresh(ctx context.Context, rows []Row) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	stale := c.columns == nil || (c.uncarried && time.Since(c.loadedAt) > 30*time.Second)
	var prev *decoder.Relation
	for i := range rows {
		if rel := rows[i].Relation; rel != prev {
			if _, seen := c.warned[rel]; !seen {
				stale = true
				break
			}
			prev = rel
		}
	}
	if !stale {
		read, err := c.readColumns(ctx)
		if err != nil {
			return err
		}
		if slices.Equal(read, c.read) {
			return nil
		}
	}
	return c.loadColumns(ctx)
}

// Blocks of one INSERT: the rows are sent as blocks of about this much
// payload (or this many rows), so clickhouse-go's column buffers hold one
// block (presized for it, presize.go) and are reused instead of growing to
// the whole batch, and the server starts on the first block while the rest
// is converted. It is still one INSERT: the server squashes the blocks into
// one part.
const (
	blockBytes = 2 << 20
	blockRows  = 8192
)

// write inserts rows; on a content error it bisects to find the rows the
// server refuses, so one bad row costs O(log n) extra inserts, not n.
func (c *ClickHouse) write(ctx context.Context, rows []Row, reloadOnSchemaError bool) ([]Rejected, error) {
	p := c.plan(rows)
	conn := c.conn
	if slices.ContainsFunc(rows, func(r Row) bool { return r.Size >= c.blockBytes }) {
		conn = c.big
	}
	prefix, err := c.idPrefix(ctx)
	if err != nil {
		return nil, err
	}
	batch, err := conn.PrepareBatch(c.insertContext(ctx, prefix), p.query)
	if err != nil {
		if reloadOnSchemaError && isSchemaError(err) {
			// event_log changed under us (a column dropped or renamed):
			// learn its columns again and try once more.
			if lerr := c.reload(ctx); lerr != nil {
				return nil, lerr
			}
			return c.write(ctx, rows, false)
		}
		return nil, fmt.Errorf("prepare insert into %s: %w", Table, err)
	}
	// Not a method value bound now: an aborted batch is dropped (nil)
	// before write starts again without a refused row, so its blocks are
	// not held while the next attempt fills its own.
	defer func() {
		if batch != nil {
			_ = batch.Close()
		}
	}()

	cols := batch.Columns()
	if err := p.presize(cols, rows, c.blockBytes, c.blockRows); err != nil {
		_ = batch.Abort()
		return nil, err
	}
	cells := p.cells(cols)

	// The rows appended so far, for a retry or a bisection: rows[:i] until
	// a row is refused, and only then a copy, so the common batch with no
	// refused row copies nothing.
	var rejected []Rejected
	var good []Row
	appended := func(i int) []Row {
		if rejected == nil {
			return rows[:i]
		}
		return good
	}
	blockSize, blockLen := 0, 0
	flushed := false // a block went out before the one being sent
	// sendBlock sends the block built so far, whose rows are those before
	// rows[next]. On a failure it returns write's result (stop): an
	// error, or what a bisection of the rows found.
	sendBlock := func(next int) (stop bool, rej []Rejected, err error) {
		if err := ctx.Err(); err != nil {
			_ = batch.Abort()
			batch = nil
			return true, nil, err
		}
		if err := SendGate(ctx); err != nil {
			_ = batch.Abort()
			batch = nil
			return true, nil, fmt.Errorf("send block of %d rows to %s: %w", blockLen, Table, err)
		}
		if err := batch.Flush(); err != nil {
			// Abort, not the deferred Close: Close sends the end of
			// the data, and the server would commit the blocks sent
			// before this one while the batch is reported unstored.
			_ = batch.Abort()
			batch = nil
			err = fmt.Errorf("send block of %d rows to %s: %w", blockLen, Table, err)
			if flushed && ctx.Err() == nil && closedByServer(err) {
				// Perhaps a block sent before was refused (closedByServer):
				// the rows are written in halves, as for a refused INSERT,
				// but for those the blocks sent before stored.
				rest, rerr := c.unstoredThen(ctx, appended(next), rows[next:])
				if rerr != nil {
					return true, nil, fmt.Errorf("%w; then %w", err, rerr)
				}
				if len(rest) > 1 {
					rej, err := c.bisect(ctx, rest, rejected, reloadOnSchemaError)
					return true, rej, err
				}
				if len(rest) == 1 {
					rej, err := c.write(ctx, rest, reloadOnSchemaError)
					if err != nil {
						return true, nil, err
					}
					return true, mergeRejected(rejected, rej), nil
				}
				return true, rejected, nil
			}
			return true, nil, err
		}
		blockSize, blockLen = 0, 0
		flushed = true
		return false, nil, nil
	}
	for i, r := range rows {
		vals, err := cells.convert(p, r)
		if err != nil {
			if rejected == nil {
				good = append(make([]Row, 0, len(rows)-1), rows[:i]...)
			}
			rejected = append(rejected, Rejected{Row: r, Err: err})
			continue
		}
		// A block is at most blockBytes, or one row larger than that
		// alone: the memory the writer budgets for an INSERT
		// (Batch.Footprint) counts three copies of the larger of the two.
		if blockLen > 0 && blockSize+r.Size > c.blockBytes {
			if stop, rej, err := sendBlock(i); stop {
				return rej, err
			}
		}
		if err := batch.Append(vals...); err != nil {
			// Conversion should make this impossible; if a type slipped
			// through, the batch is now unusable: set the row aside and
			// start again without it, and without the rows of blocks
			// sent before that the server stored.
			_ = batch.Abort()
			batch = nil
			var rest []Row
			if flushed {
				var rerr error
				if rest, rerr = c.unstoredThen(ctx, appended(i), rows[i+1:]); rerr != nil {
					return nil, rerr
				}
			} else {
				rest = make([]Row, 0, len(rows))
				rest = append(rest, appended(i)...)
				rest = append(rest, rows[i+1:]...)
			}
			more, err2 := c.write(ctx, rest, reloadOnSchemaError)
			if err2 != nil {
				return nil, err2
			}
			return mergeRejected(append(rejected, Rejected{Row: r, Err: fmt.Errorf("append: %w", err)}), more), nil
		}
		if rejected != nil {
			good = append(good, r)
		}
		blockSize += r.Size
		blockLen++
		if blockSize >= c.blockBytes || blockLen >= c.blockRows {
			if stop, rej, err := sendBlock(i + 1); stop {
				return rej, err
			}
		}
	}
	good = appended(len(rows))
	if len(good) == 0 {
		_ = batch.Abort()
		return rejected, nil
	}
	if err := SendGate(ctx); err != nil {
		_ = batch.Abort()
		batch = nil
		return nil, fmt.Errorf("insert %d rows into %s: %w", len(good), Table, err)
	}
	err = batch.Send()
	if err == nil {
		return rejected, nil
	}
	refused := IsRowError(err)
	// Written in halves: rows the server refuses, a block it may have
	// refused (closedByServer), and an INSERT over a memory limit, which
	// smaller ones may pass.
	smaller := refused || isMemoryLimit(err) || flushed && ctx.Err() == nil && closedByServer(err)
	if !smaller || len(good) == 1 && !refused {
		if isMemoryLimit(err) {
			return nil, fmt.Errorf("insert %d rows into %s: ClickHouse's memory for cdc's user or for all queries ran short (max_memory_usage_for_user, max_memory_usage_for_all_queries or max_server_memory_usage); retried: %w", len(good), Table, err)
		}
		return nil, fmt.Errorf("insert %d rows into %s: %w", len(good), Table, err)
	}
	if flushed && len(good) > 1 {
		// The blocks sent before the one that failed may be stored
		// (WithReadBack): only the rows ClickHouse lacks are written
		// again, in halves while none was stored.
		_ = batch.Close()
		batch = nil
		rest, rerr := c.unstoredThen(ctx, good, nil)
		if rerr != nil {
			return nil, fmt.Errorf("insert %d rows into %s: %w; then %w", len(good), Table, err, rerr)
		}
		switch {
		case len(rest) == 0:
			return rejected, nil
		case len(rest) == 1:
			// Alone, it is stored, or refused with its own error.
			more, err := c.write(ctx, rest, reloadOnSchemaError)
			if err != nil {
				return nil, err
			}
			return mergeRejected(rejected, more), nil
		case len(rest) < len(good):
			return c.bisect(ctx, rest, rejected, reloadOnSchemaError)
		}
	}
	if len(good) == 1 {
		if isMemoryLimit(err) {
			// An INSERT needs memory of its own whatever its rows (a
			// buffer of a MiB or so for each event_log column), and a
			// batch's rows are sent in blocks of blockBytes: a row
			// smaller than that refused alone says that the limit is
			// below what every INSERT needs, not that the row is too
			// large. Set aside, it made every event of the stream a
			// dead letter.
			if good[0].Size < c.blockBytes {
				return nil, fmt.Errorf("insert 1 rows into %s: ClickHouse's max_memory_usage for cdc's user is below what an INSERT into %s needs, however small its rows: raise it; retried: %w", Table, Table, err)
			}
			err = fmt.Errorf("the row alone needs more memory than ClickHouse lets one INSERT use: raise max_memory_usage for cdc's ClickHouse user, then replay it: %w", err)
		}
		return append(rejected, Rejected{Row: good[0], Err: err}), nil
	}
	// The sent batch keeps its block's columns until closed: close it
	// now, or every level of the bisection below holds its own.
	if batch != nil {
		_ = batch.Close()
		batch = nil
	}
	return c.bisect(ctx, good, rejected, reloadOnSchemaError)
}

// bisect writes good in two halves, each bisected in turn where the
// server refuses it, and returns what was refused with rejected.
func (c *ClickHouse) bisect(ctx context.Context, good []Row, rejected []Rejected, reloadOnSchemaError bool) ([]Rejected, error) {
	half := len(good) / 2
	left, err := c.write(ctx, good[:half], reloadOnSchemaError)
	if err != nil {
		return nil, err
	}
	right, err := c.write(ctx, good[half:], reloadOnSchemaError)
	if err != nil {
		return nil, err
	}
	return mergeRejected(rejected, append(left, right...)), nil
}

// closedByServer reports whether err is the connection closed by the
// server while an INSERT of several blocks was being sent or answered.
// That is how ClickHouse 18.16 refuses the content of a block when more
// follow: it sends its exception, then closes the connection at the next
// block, and the client, still writing, meets a reset and never reads the
// exception. So such an INSERT is written again in halves, as a refused
// one is: down to single blocks, whose refusal the client does read. A
// server that went away fails the halves too, with the error to retry.
func closedByServer(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// mergeRejected keeps rejected rows in WAL order, the order they are set
// aside in.
func mergeRejected(a, b []Rejected) []Rejected {
	out := append(a, b...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].Row.Pos.Less(out[j-1].Row.Pos); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// plan is the INSERT for rows of one outbox shape (Write splits a batch by
// shape): which event_log columns it names and, for each relation version
// among the rows, where each one's value comes from. An event_log column the
// rows do not carry is left out of the INSERT, so ClickHouse gives it its
// DEFAULT.
type plan struct {
	types   serverTypes
	query   string
	targets []string
	sources map[*decoder.Relation][]int // per target: index in Relation.Columns, or -1
}

const (
	srcNone = -1
	srcLSN  = -2
	srcSeq  = -3
)

func (c *ClickHouse) plan(rows []Row) *plan {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := &plan{types: c.types, sources: map[*decoder.Relation][]int{}}
	carried := map[string]bool{}
	for _, r := range rows {
		if _, ok := p.sources[r.Relation]; ok {
			continue
		}
		p.sources[r.Relation] = nil
		for _, col := range r.Relation.Columns {
			carried[targetName(col.Name)] = true
		}
		c.warnUncarried(r.Relation)
	}
	for _, col := range c.columns {
		if carried[col.name] || col.name == colCommitLSN || col.name == colSeq {
			p.targets = append(p.targets, col.name)
		}
	}
	for rel := range p.sources {
		src := make([]int, len(p.targets))
		for i, t := range p.targets {
			switch t {
			case colCommitLSN:
				src[i] = srcLSN
			case colSeq:
				src[i] = srcSeq
			default:
				src[i] = srcNone
				for j, col := range rel.Columns {
					if targetName(col.Name) == t {
						src[i] = j
					}
				}
			}
		}
		p.sources[rel] = src
	}
	quoted := make([]string, len(p.targets))
	for i, t := range p.targets {
		quoted[i] = quoteIdent(t)
	}
	p.query = "INSERT INTO " + Table + " (" + strings.Join(quoted, ", ") + ")"
	return p
}

// quoteIdent quotes a column name for ClickHouse: an outbox column may be
// named anything PostgreSQL allows ("Tenant Id", "user-id"), and unquoted
// such a name would make every INSERT a syntax error, retried for ever.
// Names that would need escaping are never named (loadColumns).
func quoteIdent(name string) string { return "`" + name + "`" }

// targetName is the event_log column an outbox column goes to; "" for an
// outbox column named like one a renamed column fills (event_id,
// trace_id), which is not carried: two sources for one column would have
// one win unseen, and trace_id would keep only what looks like a
// traceparent's trace id.
func targetName(outboxColumn string) string {
	if t, ok := renamed[outboxColumn]; ok {
		return t
	}
	for _, t := range renamed {
		if t == outboxColumn {
			return ""
		}
	}
	return outboxColumn
}

// warnUncarried says once per relation version which outbox columns have no
// event_log column to go to: adding a column to the outbox alone carries
// nothing, and an operator should hear about it.
func (c *ClickHouse) warnUncarried(rel *decoder.Relation) {
	if c.warned[rel] {
		return
	}
	c.warned[rel] = true
	have := map[string]bool{}
	for _, col := range c.columns {
		have[col.name] = true
	}
	var missing, computed, unquotable, misread, unwritable, shadowed []string
	for _, col := range rel.Columns {
		switch t := targetName(col.Name); {
		case t == "":
			shadowed = append(shadowed, col.Name)
		case have[t]:
		case c.computed[t] != "":
			computed = append(computed, col.Name+" ("+c.computed[t]+")")
		case c.unquotable[t]:
			unquotable = append(unquotable, col.Name)
		case c.misread[t]:
			misread = append(misread, col.Name)
		case c.unwritable[t]:
			unwritable = append(unwritable, col.Name)
		default:
			missing = append(missing, col.Name)
		}
	}
	if len(shadowed) > 0 {
		c.warnColumns("outbox columns named like the event_log column another outbox column fills (id fills event_id, traceparent trace_id) are not carried: rename them", shadowed, rel)
	}
	if len(unquotable) > 0 {
		c.warnColumns("outbox columns named with a backtick, a backslash or a parenthesis are not carried: clickhouse-go cannot name them in an INSERT; rename them on both sides", unquotable, rel)
	}
	if len(misread) > 0 {
		c.uncarried = true // the type fixed, a reload carries it
		c.warnColumns("outbox columns whose event_log column is an Enum with an escaped character in an element's name are not carried: clickhouse-go misreads such a type; rename the elements or make the column a String", misread, rel)
	}
	if len(unwritable) > 0 {
		c.uncarried = true // the type fixed, a reload carries it
		c.warnColumns("outbox columns whose event_log column is of a type clickhouse-go cannot write (Object('json'), AggregateFunction) are not carried: make the event_log column a String", unwritable, rel)
	}
	if len(missing) > 0 {
		c.uncarried = true
		c.warnColumns("outbox columns without an event_log column are not carried", missing, rel)
	}
	if len(computed) > 0 {
		// Uncarried too: an admin may make the column an ordinary one
		// again (MODIFY COLUMN … REMOVE MATERIALIZED), and a reload
		// carries it from then on.
		c.uncarried = true
		c.warnColumns("outbox columns whose event_log column ClickHouse computes itself (MATERIALIZED or ALIAS) are not carried", computed, rel)
	}
}

// warnColumns logs msg naming columns, unless the same list was warned of
// within the hour (then at debug level); the caller holds c.mu.
func (c *ClickHouse) warnColumns(msg string, columns []string, rel *decoder.Relation) {
	key := msg + "\x00" + strings.Join(columns, "\x00")
	fields := []zap.Field{zap.Strings("columns", columns), zap.String("relation", rel.Namespace+"."+rel.Name)}
	if at, ok := c.said[key]; ok && time.Since(at) < time.Hour {
		c.log.Debug(msg, fields...)
		return
	}
	if c.said == nil {
		c.said = map[string]time.Time{}
	}
	c.said[key] = time.Now()
	c.log.Warn(msg, fields...)
}

// rowCells converts one row at a time into the INSERT's columns. It is
// reused for every row of a write: vals points into the cells, so
// batch.Append(vals...) reads the row just converted.
type rowCells struct {
	cells    []cell // per target; nil for the WAL position columns
	lsn, seq uint64
	vals     []any
}

// cells prepares the conversion of a batch's rows for the columns
// PrepareBatch reported (in the plan's target order).
func (p *plan) cells(cols []column.Interface) *rowCells {
	rc := &rowCells{cells: make([]cell, len(p.targets)), vals: make([]any, len(p.targets))}
	for i, t := range p.targets {
		var typ string
		if i < len(cols) {
			typ = string(cols[i].Type())
		}
		switch t {
		case colCommitLSN, colSeq:
		case "trace_id":
			rc.cells[i] = &traceCell{byValue: typ != "String"}
		default:
			rc.cells[i] = p.types.cellFor(typ)
		}
	}
	return rc
}

var nullValue = decoder.Value{Kind: decoder.ValueNull}

// convert converts row r for the plan's targets and returns the values for
// batch.Append, valid until the next call.
func (rc *rowCells) convert(p *plan, r Row) ([]any, error) {
	for i, s := range p.sources[r.Relation] {
		var err error
		switch s {
		case srcLSN:
			rc.lsn = uint64(r.Pos.CommitLSN)
			rc.vals[i] = &rc.lsn
			continue
		case srcSeq:
			rc.seq = r.Pos.Seq
			rc.vals[i] = &rc.seq
			continue
		case srcNone:
			err = rc.cells[i].set(nullValue)
		default:
			if _, array := rc.cells[i].(*arrayCell); array && s < len(r.Relation.Columns) && r.Relation.Columns[s].TypeOID == boxArrayOID {
				err = errBoxArray
				break
			}
			err = rc.cells[i].set(r.Values[s])
		}
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", p.targets[i], err)
		}
		rc.vals[i] = rc.cells[i].value()
	}
	return rc.vals, nil
}

// readServerTypes asks the server how it reads the last day of Date's
// range: 23.8 prints 2149-06-06, 18.16 prints 1970-01-01 for every day
// after 2106-02-07, so there a Date ends then (serverTypes).
func (c *ClickHouse) readServerTypes(ctx context.Context) (serverTypes, error) {
	var last string
	if err := c.conn.QueryRow(ctx, "SELECT toString(toDate(toUInt16(65535)))").Scan(&last); err != nil {
		return serverTypes{}, fmt.Errorf("read how the server prints Date: %w", err)
	}
	if last == maxDate.AddDate(0, 0, -1).Format("2006-01-02") {
		return fullDates, nil
	}
	return serverTypes{dateEnd: maxDate1816}, nil
}

// unwritableType reports whether clickhouse-go cannot build a column of
// type typ, as it must for each column an INSERT names when it reads the
// server's header block: Object('json'), the experimental JSON of 22.3 to
// 24.x that clickhouse-go no longer supports, or AggregateFunction(…).
// PrepareBatch then fails with "unsupported column type" at every try,
// not a server exception: each INSERT naming such a column failed, and
// was retried, for ever, and no row of the outbox was stored.
func unwritableType(typ string) bool {
	_, err := column.Type(typ).Column("probe", &column.ServerContext{Timezone: time.UTC})
	return err != nil
}

// escapedEnum reports whether typ is, or holds, an Enum with an escaped
// character (\', \\) in an element's name. clickhouse-go (v2.50 and
// v2.51) reads such a type wrongly: it keeps the escapes of one element
// for the next, so it maps names to the wrong values ('okay' read as
// 'oky'), or panics in a goroutine of its own, where no recover reaches,
// when it reads an INSERT's header block: the process died at every
// INSERT that named the column.
func escapedEnum(typ string) bool {
	return strings.Contains(typ, "Enum") && strings.Contains(typ, `\`)
}

// reload learns event_log's columns again.
func (c *ClickHouse) reload(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loadColumns(ctx)
}

// loadColumns reads event_log's columns; the caller holds c.mu.
func (c *ClickHouse) loadColumns(ctx context.Context) error {
	read, err := c.readColumns(ctx)
	if err != nil {
		return err
	}
	var cols []chColumn
	computed, unquotable, misread, unwritable := map[string]string{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, r := range read {
		col, kind := chColumn{name: r.name, typ: r.typ}, r.kind
		// ClickHouse computes these and refuses an INSERT that names
		// them (code 44), which no retry would get past.
		if kind == "MATERIALIZED" || kind == "ALIAS" {
			if col.name == colEventID || col.name == colCommitLSN || col.name == colSeq {
				// What deduplication and the skip of rows already
				// stored rest on: cdc must write it.
				return fmt.Errorf("%s column %s is %s: cdc writes it, make it an ordinary column", Table, col.name, kind)
			}
			computed[col.name] = kind
			continue
		}
		if strings.ContainsAny(col.name, "`\\()") {
			// clickhouse-go reads the column list back out of the
			// INSERT's text, and these characters break its reading,
			// quoted or not: every INSERT naming one would fail.
			unquotable[col.name] = true
			continue
		}
		if escapedEnum(col.typ) {
			misread[col.name] = true
			continue
		}
		if unwritableType(col.typ) {
			if col.name == colEventID || col.name == colCommitLSN || col.name == colSeq {
				return fmt.Errorf("%s column %s is %s, a type clickhouse-go cannot write: cdc writes it, give it its type from `cdc migrate`", Table, col.name, col.typ)
			}
			unwritable[col.name] = true
			continue
		}
		cols = append(cols, col)
	}
	if len(cols) == 0 {
		return fmt.Errorf("table %s not found in ClickHouse database %q: run `cdc migrate`", Table, c.database)
	}
	settings, err := c.readInsertSettings(ctx)
	if err != nil {
		return err
	}
	types, err := c.readServerTypes(ctx)
	if err != nil {
		return err
	}
	c.insertSettings, c.types = settings, types
	c.columns, c.read = cols, read
	c.computed, c.unquotable, c.misread, c.unwritable = computed, unquotable, misread, unwritable
	c.warned = map[*decoder.Relation]bool{}
	c.uncarried = false
	c.loadedAt = time.Now()
	return nil
}

// readColumns reads event_log's columns as system.columns has them, in
// table order.
func (c *ClickHouse) readColumns(ctx context.Context) ([]columnRead, error) {
	rows, err := c.conn.Query(ctx, "SELECT name, type, default_kind FROM system.columns WHERE database = currentDatabase() AND table = '"+Table+"'")
	if err != nil {
		return nil, fmt.Errorf("read %s columns: %w", Table, err)
	}
	defer rows.Close()
	var read []columnRead
	for rows.Next() {
		var r columnRead
		if err := rows.Scan(&r.name, &r.typ, &r.kind); err != nil {
			return nil, fmt.Errorf("read %s columns: %w", Table, err)
		}
		read = append(read, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s columns: %w", Table, err)
	}
	return read, nil
}

// columnRead is an event_log column as system.columns has it.
type columnRead struct{ name, typ, kind string }

// Written returns the positions of the rows stored with a commit LSN in
// [from, to). After a crash PostgreSQL replays everything after the slot's
// confirmed position; skipping exactly these rows keeps the replay from
// writing raw duplicates. It is a set, not a maximum: an INSERT spanning
// partitions is not atomic, and a maximum could hide a row that never made
// it. A range holding more than a set may (Reader) gives a
// *TooManyPositions.
//
// It first waits for cdc's INSERTs that are still running (settle): one
// whose client gave up — a session that ended, a shutdown past its
// budget, another instance's — may still commit, and its rows would not
// be in the set.
func (c *ClickHouse) Written(ctx context.Context, from, to pglogrepl.LSN) (*Positions, error) {
	if has, err := c.hasPositions(ctx); err != nil || !has {
		return &Positions{}, err
	}
	if err := c.settle(ctx); err != nil {
		return nil, err
	}
	where := fmt.Sprintf("%s >= %d AND %s < %d", colCommitLSN, uint64(from), colCommitLSN, uint64(to))
	var r Reader
	// In order, so each position extends the set's last run (Positions.Add),
	// and in pages from the last position read, so that ClickHouse sorts
	// at most a page (cdc_commit_lsn is not in event_log's key). From it,
	// not after it: the page may have ended between two events stored at
	// that position, and the second is what tells two histories apart
	// (Reader). A page that ends where it began cannot go on.
	after := ""
	var prev *Position
	for {
		n, full, last, err := c.readPage(ctx, &r, where+after, prev)
		if err != nil {
			return nil, err
		}
		if n == readPageRows && prev != nil && last == *prev {
			full = true
		}
		if full {
			var maxLSN uint64
			if err := c.conn.QueryRow(ctx, fmt.Sprintf("SELECT max(%s) FROM %s WHERE %s", colCommitLSN, Table, where)).Scan(&maxLSN); err != nil {
				return nil, fmt.Errorf("read the greatest written position: %w", err)
			}
			return nil, &TooManyPositions{Max: pglogrepl.LSN(maxLSN)}
		}
		if n < readPageRows {
			return r.Set(), nil
		}
		after = fmt.Sprintf(" AND (%s > %d OR %s = %d AND %s >= %d)", colCommitLSN, uint64(last.CommitLSN), colCommitLSN, uint64(last.CommitLSN), colSeq, last.Seq)
		prev = &last
	}
}

// readPage reads one page of Written's positions into r: how many rows it
// read, whether r passed its bounds (the rest of the page is then not
// read), and the last position read. Rows at again, the last position of
// the page before, were read before (Reader.Again).
func (c *ClickHouse) readPage(ctx context.Context, r *Reader, where string, again *Position) (n int, full bool, last Position, err error) {
	qctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// With each position its event, which tells a row of another WAL
	// history at the same position (Positions.Match).
	rows, err := c.conn.Query(qctx, fmt.Sprintf("SELECT %s, %s, %s FROM %s WHERE %s ORDER BY %s, %s LIMIT %d",
		colCommitLSN, colSeq, colEventID, Table, where, colCommitLSN, colSeq, readPageRows))
	if err != nil {
		return 0, false, last, fmt.Errorf("read written positions: %w", err)
	}
	for !full && rows.Next() {
		var lsn, seq uint64
		var id uuid.UUID
		if err := rows.Scan(&lsn, &seq, &id); err != nil {
			rows.Close()
			return 0, false, last, fmt.Errorf("read written positions: %w", err)
		}
		n++
		last = Position{CommitLSN: pglogrepl.LSN(lsn), Seq: seq}
		if again != nil && last == *again {
			full = !r.Again(last, EventHash(id))
		} else {
			full = !r.Add(last, EventHash(id))
		}
	}
	if full {
		// The rest of the page is not wanted: cancelled, not drained.
		cancel()
		rows.Close()
		return n, true, last, nil
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, false, last, fmt.Errorf("read written positions: %w", err)
	}
	return n, false, last, nil
}

// hasPositions reads event_log's columns and reports whether it has the
// WAL position columns.
func (c *ClickHouse) hasPositions(ctx context.Context) (bool, error) {
	c.mu.Lock()
	err := c.loadColumns(ctx)
	has := 0
	for _, col := range c.columns {
		if col.name == colCommitLSN || col.name == colSeq {
			has++
		}
	}
	c.mu.Unlock()
	if err != nil {
		return false, err
	}
	if has != 2 {
		c.log.Warn("event_log has no cdc_commit_lsn/cdc_seq columns: a replay after a crash may write raw duplicates (FINAL still shows each event once)")
		return false, nil
	}
	return true, nil
}

// rowErrorCodes are ClickHouse exception codes that blame the data, not the
// server or the network: retrying the same rows cannot succeed.
var rowErrorCodes = map[int32]bool{
	6:   true, // CANNOT_PARSE_TEXT
	27:  true, // CANNOT_PARSE_INPUT_ASSERTION_FAILED
	38:  true, // CANNOT_PARSE_DATE
	41:  true, // CANNOT_PARSE_DATETIME
	53:  true, // TYPE_MISMATCH
	69:  true, // ARGUMENT_OUT_OF_BOUND
	70:  true, // CANNOT_CONVERT_TYPE
	72:  true, // CANNOT_PARSE_NUMBER
	117: true, // INCORRECT_DATA
	131: true, // TOO_LARGE_STRING_SIZE
	349: true, // CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
	376: true, // CANNOT_PARSE_UUID
	469: true, // VIOLATED_CONSTRAINT: a CHECK constraint on event_log
}

// IsRowError reports whether err is ClickHouse refusing the rows' content.
// TOO_MANY_PARTS (252) is one twice over: merges falling behind, which a
// retry outlives, and a block spanning more months than
// max_partitions_per_insert_block (100 by default on 23.8; 18.16 has no
// such limit), which only smaller INSERTs get past. Bisecting gets there,
// and a single row is in one partition, so it is never set aside for it.
//
// MEMORY_LIMIT_EXCEEDED (241) for the query — max_memory_usage, which
// bounds each query alone — is one too: an INSERT of many rows is written
// in halves until they fit, and a single row that needs more than the
// limit never passes while it stays, so it is set aside (write), unless
// it is smaller than a block: then the limit is short for any INSERT, and
// the batch is retried. Over the
// limit of the user or of the server (isMemoryLimit), which other queries
// share, a row is retried instead: it may pass once they end.
func IsRowError(err error) bool {
	var ex *clickhouse.Exception
	if !errors.As(err, &ex) {
		return false
	}
	return rowErrorCodes[ex.Code] || ex.Code == 252 && strings.Contains(ex.Message, "partitions for single INSERT block") ||
		ex.Code == 241 && (strings.Contains(ex.Message, "(for query)") || strings.Contains(ex.Message, "Query memory limit"))
}

// isMemoryLimit reports whether err is ClickHouse refusing a query for
// memory (MEMORY_LIMIT_EXCEEDED): the query's own limit, the user's, or
// the server's.
func isMemoryLimit(err error) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && ex.Code == 241
}

// loginErrorCodes are ClickHouse exception codes that refuse the login:
// the user, its password, the address it comes from, or the database.
var loginErrorCodes = map[int32]bool{
	81:  true, // UNKNOWN_DATABASE
	192: true, // UNKNOWN_USER
	193: true, // WRONG_PASSWORD
	194: true, // REQUIRED_PASSWORD
	195: true, // IP_ADDRESS_NOT_ALLOWED
	516: true, // AUTHENTICATION_FAILED (servers since 21.x say this for the four above)
}

// IsLoginError reports whether ClickHouse refused the DSN's login or
// database, or a setting the DSN sends with every query
// (IsSettingRefused).
func IsLoginError(err error) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && loginErrorCodes[ex.Code] || IsSettingRefused(err)
}

// IsTLSError reports whether the TLS handshake failed: the server does not
// speak TLS on that port (secure=true to the plain native port), its
// certificate is not trusted or names another host, or the server
// refused the client's. Until the DSN, the CA bundle or the server
// changes, every connection fails alike: a setting to fix, not an outage.
// It knows crypto/tls's and crypto/x509's errors, whichever driver
// returned them (pgx's too: replication.IsTLSError).
func IsTLSError(err error) bool {
	var (
		header   tls.RecordHeaderError
		verify   *tls.CertificateVerificationError
		alert    tls.AlertError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	return errors.As(err, &header) || errors.As(err, &verify) || errors.As(err, &alert) ||
		errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid)
}

// IsSettingRefused reports whether ClickHouse refused a setting of the
// query: one it does not have (UNKNOWN_SETTING, 115) or one the user's
// profile does not allow to be set so (SETTING_CONSTRAINT_VIOLATION, 452).
// clickhouse-go sends every DSN parameter that is not one of its options
// as a setting of every query, so one such parameter (?insert_quorom=2)
// fails them all: a setting to fix, not an outage to wait out. A refusal
// of the settings cdc adds to an INSERT itself (insertSettings, learnt
// from the server) is first met by learning them again and writing once
// more (isSchemaError).
func IsSettingRefused(err error) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && (ex.Code == 115 || ex.Code == 452)
}

// isSchemaError reports whether the INSERT names a column event_log no
// longer has.
func isSchemaError(err error) bool {
	var ex *clickhouse.Exception
	// NO_SUCH_COLUMN_IN_TABLE, UNKNOWN_IDENTIFIER; ILLEGAL_COLUMN: a
	// column made MATERIALIZED or ALIAS since it was read; UNKNOWN_SETTING:
	// a setting learnt from another server of the DSN's hosts (an older
	// one, in a rolling upgrade) is learnt again.
	return errors.As(err, &ex) && (ex.Code == 16 || ex.Code == 47 || ex.Code == 44 || ex.Code == 115)
}

// insertContext is ctx with what an INSERT must set (insertSettings); the
// other queries go without, so that one refused as unknown can still
// read the settings again.
// Each INSERT is named by a query id of its own that starts with
// prefix (idPrefix), which Written looks for in system.processes (settle).
func (c *ClickHouse) insertContext(ctx context.Context, prefix string) context.Context {
	c.mu.Lock()
	settings := c.insertSettings
	c.mu.Unlock()
	id := clickhouse.WithQueryID(prefix + uuid.NewString())
	if settings == nil {
		return clickhouse.Context(ctx, id)
	}
	return clickhouse.Context(ctx, id, clickhouse.WithSettings(settings))
}

// readInsertSettings asks the server how the user's INSERTs may behave
// and returns what each of cdc's must set (insertSettingsFor). A server
// without asynchronous inserts (before 21.11) lists neither setting, nor
// has system.settings.readonly.
func (c *ClickHouse) readInsertSettings(ctx context.Context) (clickhouse.Settings, error) {
	values, err := c.serverSettings(ctx, "insert settings", "value", "async_insert", "wait_for_async_insert")
	if err != nil || values["async_insert"] == "" {
		return nil, err
	}
	readonly, err := c.serverSettings(ctx, "insert settings", "readonly", "async_insert", "wait_for_async_insert")
	if err != nil {
		return nil, err
	}
	return insertSettingsFor(values, readonly)
}

// insertSettingsFor is what each INSERT sets on a server that has
// asynchronous inserts, given the user's values of async_insert and
// wait_for_async_insert and whether its profile fixes them (readonly).
// What the user may change is pinned whatever its value now: the settings
// are read when the schema is, and a profile changed to unwaited
// asynchronous inserts meanwhile would otherwise have cdc acknowledge WAL
// for rows a ClickHouse crash can still lose. Asynchronous inserts the
// user turned on are kept, and waited for; off, they are kept off.
func insertSettingsFor(values, readonly map[string]string) (clickhouse.Settings, error) {
	if values["async_insert"] == "" {
		return nil, nil
	}
	asyncFixed, waitFixed := readonly["async_insert"] != "0", readonly["wait_for_async_insert"] != "0"
	asyncOn, waitOn := values["async_insert"] != "0", values["wait_for_async_insert"] != "0"
	switch {
	case !waitFixed && (asyncOn || asyncFixed):
		return clickhouse.Settings{"wait_for_async_insert": 1}, nil
	case !asyncFixed && !(waitFixed && waitOn):
		return clickhouse.Settings{"async_insert": 0}, nil
	case unwaitedAsync(values["async_insert"], values["wait_for_async_insert"]):
		return nil, errors.New("the ClickHouse user's settings answer an INSERT before its rows are written (async_insert = 1, wait_for_async_insert = 0) and its profile lets cdc change neither: cdc would acknowledge WAL for rows a ClickHouse crash can lose; set wait_for_async_insert = 1 or async_insert = 0 for this user")
	}
	return nil, nil // safe, and fixed so
}

// serverSettings reads one column of system.settings, as text, for the
// settings names, as the sink's queries have them (the DSN's settings and
// the user's profile): no entry for a setting the server does not have.
// what names the settings in an error.
func (c *ClickHouse) serverSettings(ctx context.Context, what, column string, names ...string) (map[string]string, error) {
	rows, err := c.conn.Query(ctx, "SELECT name, toString("+column+") FROM system.settings WHERE name IN ('"+strings.Join(names, "', '")+"')")
	if err != nil {
		return nil, fmt.Errorf("read the server's %s: %w", what, err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name, v string
		if err := rows.Scan(&name, &v); err != nil {
			return nil, fmt.Errorf("read the server's %s: %w", what, err)
		}
		out[name] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the server's %s: %w", what, err)
	}
	return out, nil
}

// unwaitedAsync says whether an INSERT under these values of async_insert
// and wait_for_async_insert is answered before its rows are written: then
// cdc would acknowledge WAL for rows a ClickHouse crash can still lose.
func unwaitedAsync(async, wait string) bool {
	return async != "" && async != "0" && wait == "0"
}
