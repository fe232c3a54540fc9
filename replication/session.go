package replication

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/checkpoint"
	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/sink"
	ddl "github.com/eventcdc/cdc/sql"
)

// session is one replication connection's life: connect, find the slot,
// stream until an error or shutdown.
func (r *Replicator) session(ctx context.Context) error {
	rcvbuf, most := r.cfg.ReceiveBuffer, receiveBufferMax(r.cfg.ReceiveBuffer)
	if receiveBuffer(rcvbuf, most) != rcvbuf {
		rcvbuf = 0
	}
	conn, paced, err := connect(ctx, r.cfg.DSN, rcvbuf)
	if err != nil {
		return err
	}
	r.pgLoggedIn = true
	// Said once, and only of TCP: a Unix socket has no buffer to set.
	if _, tcp := paced.Conn.(*net.TCPConn); tcp && rcvbuf != r.cfg.ReceiveBuffer && !r.rcvbufNoted {
		r.log.Info("net.core.rmem_max is below CDC_PG_RECEIVE_BUFFER: the replication socket's receive buffer is left to the kernel; raise net.core.rmem_max to use it, or set CDC_PG_RECEIVE_BUFFER=0",
			zap.Int("asked", r.cfg.ReceiveBuffer), zap.Int("rmem_max", most))
		r.rcvbufNoted = true
	}
	if got := len(paced.ahead); got > 0 && got < rcvbuf && !r.rcvbufNoted {
		r.rcvbufNoted = true
		r.log.Warn("the kernel granted a smaller receive buffer than CDC_PG_RECEIVE_BUFFER asks for; raise net.core.rmem_max",
			zap.Int("asked", rcvbuf), zap.Int("granted", got))
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()

	confirmed, err := r.prepareSlot(ctx, conn)
	if err != nil {
		return err
	}
	var sys pglogrepl.IdentifySystemResult
	err = setupStep(ctx, func(ctx context.Context) (err error) {
		sys, err = pglogrepl.IdentifySystem(ctx, conn)
		return err
	})
	if err != nil {
		return wrapf(err, "identify system")
	}
	args, streaming := r.streamingArgs(conn)
	binaryValues := r.binaryValues(ctx, conn)
	if binaryValues {
		args = append(args, "binary 'true'")
	}
	asked, err := r.receiveTimeout(ctx, conn)
	if err != nil {
		return err
	}
	limit := silenceLimit(asked, streaming, serverMajor(conn))
	if limit != asked {
		r.log.Info("CDC_PG_RECEIVE_TIMEOUT does not apply to this session: it reads without streaming from PostgreSQL before 16, whose walsender may rightly stay silent for as long as it replays a large transaction of rows it does not publish",
			zap.Duration("receive_timeout", asked))
	}
	// The slot resumes at its confirmed position, but the sink may already
	// hold rows past it (stored, then the process died before the
	// acknowledgement). Ask the sink itself what it has — it is the truth —
	// and skip those rows in the replay instead of writing them twice.
	// Asked before START_REPLICATION: the sink scans its table for them,
	// which may take longer than wal_sender_timeout, and a walsender that
	// streams ends a session silent that long. Another connector may
	// take the slot meanwhile, store rows and let it go again: the slot
	// is looked up once more after the read, and the read done again if
	// it moved.
	var skip *sink.Positions
	var tooMany *sink.TooManyPositions
	for {
		skip, err = r.readWritten(ctx, confirmed, sink.LastLSN)
		if tooMany = nil; errors.As(err, &tooMany) {
			skip, err = &sink.Positions{}, nil
		}
		if err != nil {
			return err
		}
		r.chLoggedIn = true
		r.startAttempts.done()
		now, err := r.prepareSlot(ctx, conn)
		if err != nil {
			return err
		}
		if now == confirmed {
			break
		}
		r.log.Info("the slot moved while the sink's stored positions were read; reading them again",
			zap.Stringer("was", confirmed), zap.Stringer("now", now))
		confirmed = now
	}
	r.forgetPartials(r.restartLSN)
	if err := r.checkHistory(ctx, conn, confirmed, skip.MaxLSN(), tooMany); err != nil {
		return err
	}
	if r.noSkip.Load() {
		skip = &sink.Positions{}
	}
	// The walsender's pid as the server knows it, which pg_replication_slots
	// shows as the slot's active_pid: a pooler in between may give the
	// client another (conn.PID()).
	var walsender uint32
	err = setupStep(ctx, func(ctx context.Context) error {
		rows, err := queryRows(ctx, conn, "SELECT pg_backend_pid()")
		if err != nil {
			return wrapf(err, "read the replication connection's backend pid")
		}
		if len(rows) != 1 || len(rows[0]) != 1 {
			return fmt.Errorf("read the replication connection's backend pid: unexpected result %q", rows)
		}
		pid, err := strconv.ParseUint(rows[0][0], 10, 32)
		if err != nil {
			return wrapf(err, "read the replication connection's backend pid")
		}
		walsender = uint32(pid)
		return nil
	})
	if err != nil {
		return err
	}
	err = setupStep(ctx, func(ctx context.Context) error {
		return pglogrepl.StartReplication(ctx, conn, r.cfg.Slot, confirmed, pglogrepl.StartReplicationOptions{
			PluginArgs: append(args, "publication_names '"+r.cfg.Publication+"'"),
		})
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55006" { // object_in_use
			return fmt.Errorf("%w: %s", ErrSlotBusy, pgErr.Message)
		}
		return wrapf(err, "start replication on slot %s", r.cfg.Slot)
	}

	r.walsender = walsender
	if r.pendingEnd != 0 && confirmed >= r.pendingEnd && !r.state.OldestPending().IsZero() {
		// The events an earlier session left unstored lie before where
		// the slot now starts: another connector stored and
		// acknowledged them while this process could not stream (or
		// the slot was made anew). None of them comes again to end the
		// age it kept reporting, which on an idle outbox would grow
		// for ever and page as CDCReplicationLagHigh.
		r.setOldestPending(0)
	}
	r.log.Info("streaming", zap.String("slot", r.cfg.Slot), zap.Stringer("from", confirmed), zap.Int("already_stored", skip.Len()),
		zap.Bool("large_transactions_streamed", streaming), zap.Bool("binary_values", binaryValues), zap.Int("read_ahead_bytes", len(paced.ahead)),
		zap.Duration("receive_timeout", limit))
	// The last commit received is this session's to learn: the one the
	// last session received may be later than rows this one replays
	// unstored, and retention's horizon must not pass them (Horizon).
	r.state.received.Store(0)
	r.state.setStreaming(true)
	r.metrics.Streaming.Set(1)
	r.state.touch(time.Now())

	paced.pause.Store(int64(readPause(paced.Conn, r.cfg.FlushInterval)))
	s := newStream(r, conn, confirmed, skip)
	s.streaming, s.startWAL = streaming, sys.XLogPos
	s.receiveTimeout, s.paced = limit, paced
	defer s.xacts.close()
	defer s.rememberPartials()
	defer s.notePendingEnd()
	return s.run(ctx)
}

// TextParams are the session settings that fix the text form of values,
// which pgoutput sends and the sink parses, whatever the role or database
// sets: timestamps in UTC and ISO form, floats with every digit
// (extra_float_digits 0 or less would round a double to 15), intervals and
// bytea in PostgreSQL's default forms. backfill's sessions use them too, so
// that a value read there is byte for byte what pgoutput sends.
func TextParams() map[string]string {
	return map[string]string{
		"TimeZone":           "UTC",
		"DateStyle":          "ISO",
		"extra_float_digits": "3",
		"IntervalStyle":      "postgres",
		"bytea_output":       "hex",
	}
}

// SetTextParams sets TextParams in a connection's startup parameters,
// first dropping any other spelling of their names: PostgreSQL takes
// setting names in any case and applies the last of two, and pgconn keeps
// PGTZ as "timezone" and a DSN's ?datestyle= as written, beside cdc's
// "TimeZone" and "DateStyle", in a map sent in no fixed order. A session
// that took DateStyle=German would print timestamps the sink refuses.
func SetTextParams(params map[string]string) {
	for name, value := range TextParams() {
		for k := range params {
			if strings.EqualFold(k, name) {
				delete(params, k)
			}
		}
		params[name] = value
	}
}

// Connect opens a logical replication connection, with TextParams.
func Connect(ctx context.Context, dsn string) (*pgconn.PgConn, error) {
	conn, _, err := connect(ctx, dsn, 0)
	return conn, err
}

// connect is Connect, also returning the socket under the connection (and
// under TLS, if any) so the stream can pace its reads. receiveBuffer > 0
// fixes a TCP socket's receive buffer at that many bytes and reads it
// through a read-ahead buffer of the size granted (pacedConn); 0 leaves
// the buffer to the kernel and reads straight from the socket.
func connect(ctx context.Context, dsn string, receiveBuffer int) (*pgconn.PgConn, *pacedConn, error) {
	cfg, err := pgconn.ParseConfig(withReplication(dsn))
	if err != nil {
		return nil, nil, wrapf(err, "parse postgres dsn")
	}
	var paced *pacedConn
	dial := cfg.DialFunc
	if receiveBuffer > 0 {
		// pgconn's own dialer is a zero net.Dialer (connect_timeout
		// reaches it through ctx, see below), plus this Control.
		dial = (&net.Dialer{Control: receiveBufferControl(receiveBuffer)}).DialContext
	}
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		// The last dialled is the one used: pgconn may try several
		// (hosts, sslmode=prefer) and keeps the first that works.
		paced = &pacedConn{Conn: c, sleep: time.Sleep, lowWater: lowWaterFunc(c)}
		if receiveBuffer > 0 {
			if n := grantedReceiveBuffer(c); n > 0 {
				paced.ahead = make([]byte, n)
			}
		}
		return paced, nil
	}
	SetTextParams(cfg.RuntimeParams)
	ConnDefaults(cfg)
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, nil, wrapf(err, "connect to postgres for replication")
	}
	return conn, paced, nil
}

// setupTimeout bounds each step of a session's set-up on the replication
// connection — a catalog lookup, IDENTIFY_SYSTEM, SHOW, START_REPLICATION —
// and the dead letters' positions read before streaming. Each takes
// milliseconds on a healthy server; without a bound, a link that froze
// after the connection was made (a dropped route, a paused VM: no reset)
// would hold the session before it streams, retrying nothing, until TCP
// gave up. Creating the slot is not bounded: it rightly waits for the
// transactions in progress to end (prepareSlot).
var setupTimeout = 30 * time.Second

// errSetupTimeout marks a set-up step that had no answer in setupTimeout.
var errSetupTimeout = errors.New("no answer from postgres")

// setupStep runs one set-up step under setupTimeout. A step cut short by
// it, and not by ctx, says so: pgconn's own error is a bare "timeout".
func setupStep(ctx context.Context, step func(context.Context) error) error {
	sctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	err := step(sctx)
	if err != nil && ctx.Err() == nil && sctx.Err() != nil {
		return fmt.Errorf("%w in %s: %w", errSetupTimeout, setupTimeout, err)
	}
	return err
}

// checkPublicationTables refuses a publication that does not publish one
// outbox table alone: every row it sends would be shipped into event_log
// as an event. Migrate creates one of the outbox alone, but
// CDC_PUBLICATION may name one made otherwise (FOR ALL TABLES would send
// even cdc_dead_letter's rows, and another schema's outbox). It records
// the outbox (its oid and schema, outboxTable): rows of any other table
// that are sent all the same — one added while cdc runs, or rows from
// before a fix — are left out (stream.add).
func (r *Replicator) checkPublicationTables(ctx context.Context, conn *pgconn.PgConn) error {
	const shown = 5
	var tables [][]string
	err := setupStep(ctx, func(ctx context.Context) (err error) {
		// The outbox first — of several schemas', the one the search
		// path finds, as the application does — then the others in
		// name order. Its oid from the catalogs, not by a cast to
		// regclass, which needs USAGE on the schema of every table
		// the publication publishes.
		tables, err = queryRows(ctx, conn, fmt.Sprintf(
			"SELECT schemaname, format('%%I.%%I', schemaname, tablename), tablename, c.oid FROM pg_publication_tables t JOIN pg_namespace n ON n.nspname = t.schemaname JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename WHERE pubname = '%s' ORDER BY tablename <> '%s', array_position(current_schemas(false), schemaname) NULLS LAST, 2 LIMIT %d",
			r.cfg.Publication, ddl.OutboxTable, shown+2))
		return err
	})
	if err != nil {
		return wrapf(err, "look up the tables of publication %s", r.cfg.Publication)
	}
	if len(tables) == 0 || tables[0][2] != ddl.OutboxTable {
		return fmt.Errorf("publication %q does not publish the %s table: %w", r.cfg.Publication, ddl.OutboxTable, ErrPublicationTables)
	}
	oid, err := strconv.ParseUint(tables[0][3], 10, 32)
	if err != nil {
		return fmt.Errorf("read the oid of %s: %w", tables[0][1], err)
	}
	r.outbox = outboxTable{oid: uint32(oid), schema: tables[0][0]}
	others := tables[1:]
	if len(others) == 0 {
		return r.notePublicationSubset(ctx, conn, uint32(oid))
	}
	var names []string
	for _, row := range others[:min(len(others), shown)] {
		names = append(names, row[1])
	}
	slices.Sort(names)
	if len(others) > shown {
		names = append(names, "…")
	}
	return fmt.Errorf("publication %q publishes %s besides %s: %w", r.cfg.Publication, strings.Join(names, ", "), tables[0][1], ErrPublicationTables)
}

// notePublicationSubset warns, once for each new finding, when the
// publication sends the outbox only in part (PostgreSQL 15 and later): a
// column list leaves columns out, whose event_log columns then get their
// defaults, and a row filter leaves rows out, which never reach
// event_log. Either may be meant (a column kept from ClickHouse, events
// of one environment), so neither is refused; unsaid, either would look
// like a loss. A failed look says nothing: the session goes on.
func (r *Replicator) notePublicationSubset(ctx context.Context, conn *pgconn.PgConn, outbox uint32) error {
	if serverMajor(conn) < 15 {
		return nil
	}
	var rows [][]string
	err := setupStep(ctx, func(ctx context.Context) (err error) {
		rows, err = queryRows(ctx, conn, fmt.Sprintf(
			"SELECT array_to_string(ARRAY(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = %d AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> ALL (t.attnames) ORDER BY a.attnum), ', '), coalesce(t.rowfilter, '') FROM pg_publication_tables t JOIN pg_namespace n ON n.nspname = t.schemaname JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename WHERE t.pubname = '%s' AND c.oid = %d",
			outbox, r.cfg.Publication, outbox))
		return err
	})
	if err != nil || len(rows) != 1 {
		if err != nil && ctx.Err() == nil {
			r.log.Debug("could not look at the publication's column list and row filter", zap.Error(err))
		}
		return nil
	}
	left, filter := rows[0][0], rows[0][1]
	if seen := left + "\x00" + filter; seen != r.subsetNoted {
		r.subsetNoted = seen
		if left != "" {
			r.log.Warn("the publication leaves columns of the outbox out (a column list): event_log gets their columns' defaults",
				zap.String("publication", r.cfg.Publication), zap.String("columns_left_out", left))
		}
		if filter != "" {
			r.log.Warn("the publication sends only the outbox rows its row filter passes: the others never reach event_log, and cdc backfill and cdc verify leave them out too",
				zap.String("publication", r.cfg.Publication), zap.String("row_filter", filter))
		}
	}
	return nil
}

// binaryValues decides whether the session asks pgoutput for binary
// values: on PostgreSQL 14 and later, when the decoder prints every type
// of the outbox's columns (decoder.ReadsBinary), and until a session met
// a binary value it could not print (binaryOff). The walsender then skips
// the types' output functions — timestamptz_out above all — for every
// row (docs/performance-history.md measures what that saves). A column
// added later of
// another type ends the session that meets it, and the next asks for
// text. When the types cannot be read, text it is: it is always right.
func (r *Replicator) binaryValues(ctx context.Context, conn *pgconn.PgConn) bool {
	if r.binaryOff || serverMajor(conn) < 14 {
		return false
	}
	var types [][]string
	err := setupStep(ctx, func(ctx context.Context) (err error) {
		types, err = queryRows(ctx, conn, fmt.Sprintf(
			"SELECT DISTINCT a.atttypid FROM pg_publication_tables p JOIN pg_namespace n ON n.nspname = p.schemaname JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped WHERE p.pubname = '%s'",
			r.cfg.Publication))
		return err
	})
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("could not read the types of the outbox's columns; asking for their values as text", zap.Error(err))
		}
		return false
	}
	if len(types) == 0 {
		return false // no columns read: nothing says binary would do
	}
	for _, row := range types {
		oid, err := strconv.ParseUint(row[0], 10, 32)
		if err != nil || !decoder.ReadsBinary(uint32(oid)) {
			return false
		}
	}
	return true
}

func withReplication(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		q := u.Query()
		q.Set("replication", "database")
		// Encode writes a space as '+', which libpq's URI syntax (and
		// pgconn's) keeps as a plus: options=-c%20x would become "-c+x".
		// A literal '+' is encoded as %2B, so every '+' left is a space.
		u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
		return u.String()
	}
	return strings.TrimSpace(dsn) + " replication=database"
}

// prepareSlot creates the slot if it is missing and returns its confirmed
// flush position: where streaming must start so that nothing committed
// while cdc was down is skipped.
func (r *Replicator) prepareSlot(ctx context.Context, conn *pgconn.PgConn) (pglogrepl.LSN, error) {
	r.slotHolder = 0
	var pub [][]string
	err := setupStep(ctx, func(ctx context.Context) (err error) {
		// pubtruncate from to_jsonb: PostgreSQL 10 has no such column.
		pub, err = queryRows(ctx, conn, "SELECT pubinsert, concat_ws(', ', CASE WHEN pubupdate THEN 'update' END, CASE WHEN pubdelete THEN 'delete' END, CASE WHEN (to_jsonb(p)->>'pubtruncate')::boolean THEN 'truncate' END) FROM pg_publication p WHERE pubname = '"+r.cfg.Publication+"'")
		return err
	})
	if err != nil {
		return 0, wrapf(err, "look up publication %s", r.cfg.Publication)
	}
	if len(pub) == 0 {
		return 0, fmt.Errorf("%w (publication %q)", ErrPublicationMissing, r.cfg.Publication)
	}
	// Without inserts (publish = 'update', or altered since migrate made
	// it) the slot would pass every event unseen, and confirm past them.
	if pub[0][0] != "t" {
		return 0, fmt.Errorf("%w (publication %q)", ErrPublicationInserts, r.cfg.Publication)
	}
	// Other changes are not wrong, only wasted: each is decoded by the
	// walsender, sent, and dropped here (stream.handleWAL) — retention's
	// DELETEs as many as the events themselves. Said once for each new
	// finding, as a publication made by hand is said to be meant.
	if also := pub[0][1]; also != r.opsNoted {
		r.opsNoted = also
		if also != "" {
			r.log.Warn("the publication publishes other changes of the outbox besides inserts: cdc ships only inserts, so PostgreSQL decodes and sends these for nothing (outbox retention's DELETEs among them); publish inserts alone (ALTER PUBLICATION … SET (publish = 'insert'))",
				zap.String("publication", r.cfg.Publication), zap.String("also_published", also))
		}
	}
	if err := r.checkPublicationTables(ctx, conn); err != nil {
		return 0, err
	}
	for attempt := 0; ; attempt++ {
		var rows [][]string
		err := setupStep(ctx, func(ctx context.Context) (err error) {
			rows, err = queryRows(ctx, conn, "SELECT confirmed_flush_lsn, active, coalesce(active_pid, 0), coalesce(wal_status, ''), "+slotPluginColumn+", coalesce(database, ''), current_database(), coalesce(restart_lsn, '0/0') FROM pg_replication_slots WHERE slot_name = '"+r.cfg.Slot+"'")
			return err
		})
		if err != nil {
			return 0, wrapf(err, "look up slot %s", r.cfg.Slot)
		}
		if len(rows) == 0 {
			if attempt > 0 {
				return 0, fmt.Errorf("slot %s vanished right after it was created", r.cfg.Slot)
			}
			// Before the retention hold: a physical slot can be made on
			// a standby, and one made there held retention for a gap
			// that does not exist yet, said so at warn, while the
			// slot's creation failed at each retry.
			if err := r.checkNotInRecovery(ctx, conn); err != nil {
				return 0, err
			}
			// Not bounded by setupTimeout: a logical slot is consistent
			// only once every transaction in progress has ended, which
			// may rightly take as long as the longest of them.
			r.log.Info("creating the replication slot: this waits for the transactions in progress on the server to end",
				zap.String("slot", r.cfg.Slot))
			if err := r.holdRetention(ctx, true); err != nil {
				r.log.Warn("could not hold outbox retention before creating the slot; trying again once it exists", zap.Error(err))
			}
			res, err := pglogrepl.CreateReplicationSlot(ctx, conn, r.cfg.Slot, "pgoutput",
				pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
			if err != nil {
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) && pgErr.Code == "42710" { // duplicate_object: a standby won the race
					continue
				}
				return 0, wrapf(err, "create slot %s", r.cfg.Slot)
			}
			// `cdc migrate` creates the slot; reaching this means it was never
			// run, or the slot was dropped (a failover, an operator). Either
			// way events committed before this moment are not in the slot.
			// Until they are shipped the outbox holds their only copy:
			// HoldRetention holds retention on every instance, and if it
			// cannot, retention waits for the life of this process
			// (Horizon).
			r.log.Warn("replication slot did not exist and was created: events committed before now will not be streamed; if this is not the first start, recover them with `cdc backfill --since` the oldest event the outbox holds (cdc run names it next), not the time of the loss: events cdc had not acknowledged before it are in the gap too",
				zap.String("slot", r.cfg.Slot), zap.String("consistent_point", res.ConsistentPoint))
			if r.cfg.HoldRetention == nil {
				r.state.slotCreated.Store(true)
			} else if err := r.holdRetention(ctx, false); err != nil {
				r.state.slotCreated.Store(true)
				r.log.Warn("outbox retention is paused until this process restarts, in this process only (a hot standby that takes the slot over is not paused): keep CDC_OUTBOX_RETENTION=0 on every instance until `cdc verify` finds nothing missing",
					zap.Error(err))
			}
			continue
		}
		row := rows[0]
		if row[5] == "" {
			// A physical slot has no database: a standby's or a backup's.
			return 0, fmt.Errorf("%w (slot %s is a physical replication slot, a standby's or a base backup's: choose another CDC_SLOT_NAME)", ErrSlotElsewhere, r.cfg.Slot)
		}
		if row[5] != row[6] {
			return 0, fmt.Errorf("%w (slot %s belongs to database %q, this is %q: choose another CDC_SLOT_NAME)", ErrSlotElsewhere, r.cfg.Slot, row[5], row[6])
		}
		if row[4] == "" {
			// Being made by another session (a replica started beside
			// this one, a migrate): PostgreSQL lists a logical slot a
			// moment before it names its plugin. Taken for another
			// plugin's slot, it ended cdc run (exit 1). Stand by and look
			// again.
			return 0, fmt.Errorf("%w (slot %s being made, pid %s)", ErrSlotBusy, r.cfg.Slot, row[2])
		}
		if row[4] != "pgoutput" {
			return 0, fmt.Errorf("%w (slot %s uses %q)", ErrWrongPlugin, r.cfg.Slot, row[4])
		}
		if row[3] == "lost" {
			return 0, fmt.Errorf("%w (slot %s)", ErrSlotLost, r.cfg.Slot)
		}
		if row[1] == "t" {
			if pid, err := strconv.ParseUint(row[2], 10, 32); err == nil {
				r.slotHolder = uint32(pid)
			}
			return 0, fmt.Errorf("%w (slot %s, pid %s)", ErrSlotBusy, r.cfg.Slot, row[2])
		}
		lsn, err := pglogrepl.ParseLSN(row[0])
		if err != nil {
			return 0, wrapf(err, "parse confirmed_flush_lsn of slot %s", r.cfg.Slot)
		}
		if r.restartLSN, err = pglogrepl.ParseLSN(row[7]); err != nil {
			return 0, wrapf(err, "parse restart_lsn of slot %s", r.cfg.Slot)
		}
		return lsn, nil
	}
}

// checkNotInRecovery returns ErrInRecovery when the server is a standby in
// recovery and older than PostgreSQL 16, where CREATE_REPLICATION_SLOT
// fails ("logical decoding cannot be used while in recovery"). From 16 on a
// standby may make and decode a logical slot, and is left to try. So is a
// server whose pg_is_in_recovery() the role may not execute (REVOKE …
// FROM PUBLIC): the refusal failed every session, and the slot was never
// made; a standby refuses the slot with its own error.
func (r *Replicator) checkNotInRecovery(ctx context.Context, conn *pgconn.PgConn) error {
	if serverMajor(conn) >= 16 {
		return nil
	}
	var rows [][]string
	err := setupStep(ctx, func(ctx context.Context) (err error) {
		rows, err = queryRows(ctx, conn, "SELECT pg_is_in_recovery()")
		return err
	})
	if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == "42501" {
		return nil
	}
	if err != nil {
		return wrapf(err, "ask whether the server is in recovery")
	}
	if len(rows) == 1 && rows[0][0] == "t" {
		return fmt.Errorf("%w (slot %s does not exist on it)", ErrInRecovery, r.cfg.Slot)
	}
	return nil
}

// holdRetention calls Config.HoldRetention, if any, to its end even when
// ctx ends meanwhile: a shutdown that arrives just after the slot was
// created must not leave the gap unheld.
func (r *Replicator) holdRetention(ctx context.Context, ahead bool) error {
	if r.cfg.HoldRetention == nil {
		return nil
	}
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), setupTimeout)
	defer cancel()
	return r.cfg.HoldRetention(hctx, ahead)
}

// receiveTimeout is how long the session waits on a silent server before
// taking the link as dead: Config.ReceiveTimeout, but at least 1.5 times
// the server's wal_sender_timeout. A walsender busy replaying a large
// transaction of rows it does not publish reads cdc's messages — the ping
// among them — only once half its own timeout has passed since it last
// did, so it may answer up to half of wal_sender_timeout after the ping,
// sent halfway to the limit; below that bound a healthy server would be
// dropped, and the next session would start that replay over. Some replays
// report no progress at all before PostgreSQL 16: silenceLimit.
//
// A server that does not answer at all fails the session (setupTimeout).
func (r *Replicator) receiveTimeout(ctx context.Context, conn *pgconn.PgConn) (time.Duration, error) {
	limit := r.cfg.ReceiveTimeout
	if limit <= 0 {
		return 0, nil
	}
	var rows [][]string
	err := setupStep(ctx, func(ctx context.Context) (err error) {
		rows, err = queryRows(ctx, conn, "SHOW wal_sender_timeout")
		return err
	})
	if errors.Is(err, errSetupTimeout) {
		return 0, wrapf(err, "read wal_sender_timeout")
	}
	if err != nil || len(rows) != 1 || len(rows[0]) != 1 {
		r.log.Warn("could not read wal_sender_timeout; using CDC_PG_RECEIVE_TIMEOUT as it is", zap.Error(err))
		return limit, nil
	}
	wst, ok := parseServerDuration(rows[0][0])
	if !ok {
		r.log.Warn("could not parse wal_sender_timeout; using CDC_PG_RECEIVE_TIMEOUT as it is", zap.String("wal_sender_timeout", rows[0][0]))
		return limit, nil
	}
	return effectiveReceiveTimeout(limit, wst), nil
}

// effectiveReceiveTimeout is limit raised to 1.5 × wst (see receiveTimeout);
// a wst of 0 (off) leaves limit as it is: such a walsender reads replies at
// every progress update.
func effectiveReceiveTimeout(limit, wst time.Duration) time.Duration {
	if limit <= 0 {
		return 0
	}
	return max(limit, wst+wst/2)
}

// silenceLimit is the receive timeout a session applies: limit, except in
// a session that reads without streaming from a server before 16. There
// PostgreSQL hands pgoutput no change of a table being rewritten (ALTER
// TABLE … TYPE, a rewrite's new heap) nor of the catalog, and before 16
// nothing else reports progress while it skips them: replaying such a
// transaction at its commit, the walsender reads no ping and sends
// nothing, for as long as the replay takes (about 1.4 s per million rows
// rewritten, measured on 15). Ending the session then would start the
// replay over in the next one, again and again. With streaming, a large
// transaction is sent in blocks as it is decoded, and the blocks go out
// even when every change in them is skipped.
func silenceLimit(limit time.Duration, streaming bool, major int) time.Duration {
	if !streaming && major < 16 {
		return 0
	}
	return limit
}

// serverMajor is the server's major version, 0 when unknown.
func serverMajor(conn *pgconn.PgConn) int {
	major, _ := strconv.Atoi(strings.SplitN(conn.ParameterStatus("server_version"), ".", 2)[0])
	return major
}

// parseServerDuration reads a time setting as SHOW prints it: a number
// with one of PostgreSQL's units (ms, s, min, h, d), or a bare number of
// milliseconds.
func parseServerDuration(v string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	i := 0
	for i < len(v) && v[i] >= '0' && v[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:i], 10, 64)
	if err != nil {
		return 0, false
	}
	units := map[string]time.Duration{"": time.Millisecond, "ms": time.Millisecond, "s": time.Second,
		"min": time.Minute, "h": time.Hour, "d": 24 * time.Hour}
	unit, ok := units[strings.TrimSpace(v[i:])]
	if !ok {
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// slotPluginColumn is the slot's plugin in the session's look at its
// slot; a test shows it as it is while another session makes the slot.
var slotPluginColumn = "plugin"

func queryRows(ctx context.Context, conn *pgconn.PgConn, sql string) ([][]string, error) {
	results, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	var out [][]string
	for _, res := range results {
		for _, row := range res.Rows {
			vals := make([]string, len(row))
			for i, v := range row {
				vals[i] = string(v)
			}
			out = append(out, vals)
		}
	}
	return out, nil
}

// written is the union of what the sink and the dead-letter table hold
// with a commit LSN in [from, to): both count as settled.
// More than a set may hold is read as nothing: those rows are stored again,
// which FINAL shows once.
func (r *Replicator) written(ctx context.Context, from, to pglogrepl.LSN) (*sink.Positions, error) {
	if r.noSkip.Load() {
		return &sink.Positions{}, nil
	}
	stored, err := r.readWritten(ctx, from, to)
	var tooMany *sink.TooManyPositions
	if errors.As(err, &tooMany) {
		r.log.Warn("too many positions stored in a range to hold as a set; its rows will be stored again (SELECT … FINAL shows each once)",
			zap.Stringer("from", from), zap.Stringer("to", to), zap.Error(err))
		return &sink.Positions{}, nil
	}
	return stored, err
}

// sinkUnavailable is a failure of the sink to say what it holds: a
// session cannot start without it, and Run retries it as the writers
// retry a batch (sinkRetryMax), counted as a sink failure.
type sinkUnavailable struct{ err error }

func (e *sinkUnavailable) Error() string { return e.err.Error() }
func (e *sinkUnavailable) Unwrap() error { return e.err }

// readWritten is written whatever checkHistory found.
func (r *Replicator) readWritten(ctx context.Context, from, to pglogrepl.LSN) (*sink.Positions, error) {
	stored, err := r.sink.Written(ctx, from, to)
	if err != nil {
		err = wrapf(err, "read what the sink already stored")
		if tooMany := (*sink.TooManyPositions)(nil); !errors.As(err, &tooMany) {
			err = &sinkUnavailable{err}
		}
		return nil, err
	}
	if stored == nil {
		stored = &sink.Positions{}
	}
	if r.dead != nil {
		var dead *sink.Positions
		err := setupStep(ctx, func(ctx context.Context) (err error) {
			dead, err = r.dead.Written(ctx, from, to)
			return err
		})
		if err != nil {
			return nil, wrapf(err, "read dead letters")
		}
		stored.AddAll(dead)
	}
	return stored, nil
}

// checkHistory sets r.noSkip when the positions stored past the slot's
// cannot be used to skip rows: they are more than a set may hold (tooMany,
// from the read of them), or the sink or the dead letters may hold rows
// of another WAL history than the server's. Positions are offsets in one
// server's WAL history, and no row of that history can lie past the WAL
// flushed so far, since a row is decoded only from flushed WAL; one that
// does came from another history: the database moved to a new cluster (a
// dump and restore, an upgrade through logical replication) or failed over
// to a standby that had not received everything. Such a history's
// positions say nothing of this one's rows, and skipping a replayed row
// because an old row had its commit LSN and ordinal would lose it. So
// nothing is skipped until the slot has confirmed past the greatest such
// position (while this process runs: a restart forgets it once the
// server's WAL has passed them). last is the greatest position stored at
// or past confirmed, read before the server's WAL end is, so rows another
// connector stored meanwhile are no false alarm; a replay meanwhile may
// store rows twice, which FINAL shows once.
func (r *Replicator) checkHistory(ctx context.Context, conn *pgconn.PgConn, confirmed, last pglogrepl.LSN, tooMany *sink.TooManyPositions) error {
	var sys pglogrepl.IdentifySystemResult
	err := setupStep(ctx, func(ctx context.Context) (err error) {
		sys, err = pglogrepl.IdentifySystem(ctx, conn)
		return err
	})
	if err != nil {
		return wrapf(err, "identify system")
	}
	if tooMany != nil {
		last = tooMany.Max
	}
	was := r.noSkip.Load()
	var noSkip bool
	r.noSkipUpTo, noSkip = noSkipRule(r.noSkipUpTo, confirmed, last, sys.XLogPos, tooMany != nil)
	switch {
	case tooMany != nil && last > sys.XLogPos || noSkip && !was && tooMany == nil:
		r.log.Warn("the sink holds positions past this server's WAL, from another WAL history (a database moved to a new cluster, or a failover to a standby that lagged); until the slot passes them no row is skipped as already stored, so a replay may store rows twice (SELECT … FINAL shows each once)",
			zap.Stringer("last_stored", r.noSkipUpTo), zap.Stringer("server_wal_end", sys.XLogPos))
	case tooMany != nil:
		r.log.Warn("the sink holds more positions past the slot's than cdc keeps in memory to skip a replay's stored rows, likely rows of another WAL history (a database moved to a new cluster); until the slot passes them no row is skipped as already stored, so a replay may store rows twice (SELECT … FINAL shows each once)",
			zap.Stringer("confirmed", confirmed), zap.Stringer("last_stored", r.noSkipUpTo), zap.Stringer("server_wal_end", sys.XLogPos), zap.Error(tooMany))
	case !noSkip && was:
		r.log.Info("the slot has passed every position that could not be used; replays skip what is stored again",
			zap.Stringer("confirmed", confirmed))
	}
	r.noSkip.Store(noSkip)
	return nil
}

// noSkipRule is checkHistory's rule: given the greatest position not to
// skip by so far (0: none), the slot's confirmed position, the greatest
// position stored at or past it, the server's WAL end and whether the
// stored positions were too many to hold, it returns the greatest position
// not to skip by and whether rows may be skipped by position meanwhile.
func noSkipRule(upTo, confirmed, last, walEnd pglogrepl.LSN, tooMany bool) (pglogrepl.LSN, bool) {
	if last > walEnd || tooMany {
		upTo = max(upTo, last)
	}
	if upTo == 0 || confirmed > upTo {
		return 0, false
	}
	return upTo, true
}

// stream is the state of one streaming session, owned by one goroutine.
type stream struct {
	r     *Replicator
	conn  *pgconn.PgConn
	dec   *decoder.Decoder
	track *checkpoint.Tracker
	// fence is the writer's (writeLoop); run marks it ending.
	fence fence

	// statusFailed is set when a status sent while the shutdown waits for
	// the writer failed (shutdownStatus).
	statusFailed bool
	// intr orders the connection's deadlines between sendStatus and
	// receive and the shutdown's interrupt (run): interrupted is set by
	// the interrupt, and no status write starts, nor read deadline is
	// set, while it is. statusCut is set when a status write failed,
	// whatever cut it: it may have left part of a message on the
	// connection, so no status is written on it again.
	intr        sync.Mutex
	interrupted bool
	statusCut   bool

	skip    *sink.Positions // nil once the stream is past them
	skipMax pglogrepl.LSN
	// placed is the LSNs that place the rows stored past the session's
	// start (skip's), in order, for the whole session: a whole
	// transaction's commit LSN or a streamed one's first row's, looked up
	// by placedAt (findStreamed). Only the LSNs: skip's set, with its
	// runs and the events it keeps, is let go once the stream is past it.
	placed []pglogrepl.LSN

	tx struct {
		lsn        pglogrepl.LSN
		seq        uint64
		commitTime time.Time
		waited     bool // the transaction a session without streaming waits out
		xid        uint32
		stored     *sink.Positions // its rows an earlier, streaming session stored, all at first
		first      pglogrepl.LSN   // its first row's LSN when it has such rows, else 0: rows are placed by it
	}

	// Transactions sent before their commit (streamed.go).
	streaming bool                   // this session asked for them
	startWAL  pglogrepl.LSN          // the server's WAL position when the session began
	start     pglogrepl.LSN          // where the session began: the slot's confirmed position
	streams   map[uint32]*streamedTx // by xid, until their StreamCommit or StreamAbort
	cur       *streamedTx            // the one between StreamStart and StreamStop
	xacts     xactLookup
	waitedEnd pglogrepl.LSN // without streaming: end LSN of the transaction waited out, once received
	// resume, once set, ends the session at the next transaction
	// boundary so that the next one streams (resumeStreaming).
	resume error
	// otherEventSeen is set once a replayed row's position was found
	// holding another event (storedIn), which is logged once a session.
	otherEventSeen bool
	// otherTables holds the relation ids of tables other than the outbox
	// whose rows arrived this session (notOutbox).
	otherTables map[uint32]bool
	// pubChanged is set by watch, like restart below: the stream's only
	// fields another goroutine writes.
	pubChanged atomic.Bool

	batch         *sink.Batch
	batchDeadline time.Time
	batchCost     int     // payload plus per-row overhead: what the byte limit bounds
	batchFirst    int64   // commit time (Unix nanos) of the open batch's first row
	inFlight      []int64 // the same for each batch handed to the writer, oldest first
	unsent        *sink.Batch
	bufferBytes   int
	insertTime    time.Duration // recent INSERTs' duration, smoothed
	// reported is set once the session set the oldest pending commit
	// time (setPending): from then on what is pending is this session's.
	reported bool

	batches chan *sink.Batch
	acks    chan ack

	nextStatus   time.Time
	readDeadline time.Time
	// stored is the end of the last batch the writer stored this
	// session (applyAck): what of a status's flush position the session
	// acknowledged of its own work (Replicator.acked). Past it, an idle
	// stream's flush follows the server's WAL end, which moves with any
	// other table's writes.
	stored pglogrepl.LSN
	// restart is the slot's restart_lsn as watch last read it; forgotTo
	// is what sendStatus last forgot partials up to.
	restart  atomic.Uint64
	forgotTo pglogrepl.LSN
	// quiet is how long the stream has waited on the server since its
	// last message, counting only time spent in receive: a loop held up
	// by the writer must not take a healthy, idle server for a dead one.
	// pinged is set once a status asking for a reply has gone out.
	quiet          time.Duration
	pinged         bool
	receiveTimeout time.Duration // Replicator.receiveTimeout, through silenceLimit
	paced          *pacedConn    // its received count tells a slow message from silence
	heardBytes     int64         // paced.received when the stream last heard something
}

// ack is the writer's report that a batch is stored.
type ack struct {
	end    pglogrepl.LSN
	bytes  int
	insert time.Duration // how long its INSERT took
}

func newStream(r *Replicator, conn *pgconn.PgConn, confirmed pglogrepl.LSN, skip *sink.Positions) *stream {
	s := &stream{
		r:     r,
		conn:  conn,
		dec:   decoder.New(),
		track: checkpoint.New(confirmed),
		// Unbuffered: at most InsertsInFlight + 1 batches live at once,
		// the open one and those being written; decoding overlaps the
		// inserts, and a full writer stops the stream reading.
		batches: make(chan *sink.Batch),
		acks:    make(chan ack, 4),
		streams: map[uint32]*streamedTx{},
		xacts:   xactLookup{dsn: r.cfg.DSN, log: r.log},
	}
	s.fence.gone = make(chan struct{})
	if skip.Len() > 0 {
		s.skip, s.placed, s.skipMax = skip, skip.LSNs(), skip.MaxLSN()
	}
	s.start = confirmed
	s.batch = s.newBatch()
	return s
}

// newBatch sizes the next batch like the last one: a backlog fills batches
// of the same size again and again, and growing the slice each time would
// copy it a dozen times per batch.
func (s *stream) newBatch() *sink.Batch {
	capacity := 64
	if s.batch != nil {
		capacity = max(capacity, min(len(s.batch.Rows), s.r.cfg.BatchMaxRows))
	}
	return &sink.Batch{Rows: make([]sink.Row, 0, capacity)}
}

// run streams until ctx ends (then flushes and acknowledges) or an error.
func (s *stream) run(ctx context.Context) error {
	// The writer lives exactly as long as this session. On shutdown it gets
	// the shutdown budget to store what is buffered; on an error it stops
	// at once, since the next session replays whatever it had not stored.
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		defer close(s.acks)
		s.r.writeLoop(wctx, s.batches, s.acks, &s.fence)
	}()
	// Interrupt a blocking read when ctx ends, and a status write blocked
	// on a full socket (a link frozen without a reset), which would
	// otherwise hold the shutdown up to statusWriteTimeout before its
	// budget starts. The shutdown's own statuses set their deadlines anew.
	interruptDone := make(chan struct{})
	stopInterrupt := context.AfterFunc(ctx, func() {
		defer close(interruptDone)
		s.intr.Lock()
		defer s.intr.Unlock()
		s.interrupted = true
		_ = s.conn.Conn().SetReadDeadline(time.Now())
		_ = s.conn.Conn().SetWriteDeadline(time.Now())
	})
	defer stopInterrupt()
	pctx, pcancel := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		s.watch(pctx)
	}()
	defer func() {
		pcancel()
		<-watchDone
	}()

	err := s.loop(ctx)
	if !stopInterrupt() {
		// The interrupt ran, or runs still: it must be over before the
		// shutdown's statuses set their deadlines, or its "now" would
		// fail the first of them, and with it every later one.
		<-interruptDone
	}
	s.intr.Lock()
	s.interrupted = false // the shutdown's statuses may go, unless one was cut
	s.intr.Unlock()
	// Four errors are no failure, and end the session as a shutdown does,
	// storing and acknowledging what it holds, for the next to go on from
	// there: the switches to streaming and away from it (streamed.go), a
	// binary value the decoder cannot print (the next session reads text),
	// and a publication that lost the outbox (the next session looks at
	// it). Cancelling the INSERTs in flight instead could leave
	// ClickHouse committing one after the next session read what is
	// stored, and that session would store its rows again.
	var binErr *decoder.BinaryError
	toText := errors.As(err, &binErr)
	toStreaming := errors.Is(err, errResumeStreaming)
	resume := toStreaming || toText || errors.Is(err, errStreamInProgress) || errors.Is(err, errPublicationChanged)
	if resume {
		s.r.log.Debug("session ends to read otherwise; storing what it holds first", zap.Error(err))
	}
	if err != nil && !resume && !shutdownCut(ctx, err) {
		wcancel()
		s.drain(false)
		<-writerDone
		return err
	}
	if err != nil && !resume {
		// The shutdown cut short a status lookup or a position read: every row
		// batched is whole, so they are stored as at any shutdown.
		s.r.log.Debug("shutdown interrupted the stream", zap.Error(err))
	}

	// Shutdown: hand over what is buffered, wait for the writer within the
	// budget, and acknowledge what it stored. The session's walsender may
	// be gone by now (terminated as the session decided to end, its link
	// dead), and a standby streaming what it had not acknowledged: every
	// INSERT from here on looks at the slot first.
	s.fence.ending.Store(true)
	budget := time.AfterFunc(s.r.cfg.ShutdownTimeout, wcancel)
	defer budget.Stop()
	// A writer that finds the slot no longer this session's stores
	// nothing more: the wait for the writer ends then, not at the budget.
	go func() {
		select {
		case <-s.fence.gone:
			wcancel()
		case <-writerDone:
		}
	}()
	if s.unsent == nil && len(s.batch.Rows) > 0 {
		s.unsent = s.seal(cutShutdown)
	}
	s.handOver(wctx)
	s.drain(true)
	<-writerDone
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	acked := true
	if err := s.sendStatus(sctx); err != nil {
		acked = false
		if ctx.Err() != nil {
			s.r.state.unackedAtStop.Store(true)
		}
		s.r.log.Warn("final acknowledgement failed; the slot will replay from the previous one", zap.Error(err))
	}
	w, f := s.track.Positions()
	ranOut := !budget.Stop()
	if (ranOut || s.notHolder()) && (s.track.InFlight() > 0 || s.track.Buffered() > 0) && ctx.Err() != nil {
		s.r.state.unstoredAtStop.Store(true)
	}
	if ranOut && (s.track.InFlight() > 0 || s.track.Buffered() > 0) {
		// Nothing is lost (what was not stored was not acknowledged),
		// but the next start replays it: say so, rather than only
		// "stopped". (A slot found not this session's said so itself.)
		s.r.log.Warn("CDC_SHUTDOWN_TIMEOUT ran out before every batch was stored (its rows in ClickHouse, its refused rows' dead letters in PostgreSQL): the next start replays them from the last acknowledged position",
			zap.Duration("shutdown_timeout", s.r.cfg.ShutdownTimeout), zap.Int("batches_in_flight", s.track.InFlight()), zap.Int("rows_unsent", s.track.Buffered()), zap.Stringer("flushed", f))
	}
	if toStreaming {
		// Between transactions: once all it received is stored and
		// acknowledged, the next session is sent none of it again and
		// may stream (but for what PostgreSQL streams again and
		// forgets at its commit: sentBefore). Otherwise (the sink too slow for the shutdown
		// budget, the acknowledgement lost) it would be sent some of it
		// again, perhaps in blocks, and place rows this one stored by
		// commit differently: it reads without streaming and decides anew.
		if s.track.Idle() && acked {
			s.r.waitOut = 0
		}
		s.r.log.Debug("session ends to stream again", zap.Stringer("received", w), zap.Stringer("flushed", f),
			zap.Bool("all_stored", s.r.waitOut == 0))
		return err
	}
	if resume {
		s.r.log.Debug("session ended to read otherwise", zap.Error(err), zap.Stringer("received", w), zap.Stringer("flushed", f))
		return err
	}
	s.r.log.Info("stopped", zap.Stringer("received", w), zap.Stringer("flushed", f))
	return nil
}

// shutdownCut reports whether err is the shutdown (ctx ending) cutting
// short something the stream waited on besides the next message — a
// transaction status lookup or a position read — and nothing
// else: any other error ends the session without storing what it holds.
func shutdownCut(ctx context.Context, err error) bool {
	return ctx.Err() != nil && errors.Is(err, context.Canceled)
}

// handOver gives the writer the last batch, s.unsent if any, until wctx
// ends. Acks are applied meanwhile: a writer that finished a batch blocks
// on its ack until it is read, and may hold memory that a larger batch
// ahead of the last one waits for. Statuses go on as in the stream
// (shutdownStatus).
func (s *stream) handOver(wctx context.Context) {
	if s.unsent == nil {
		return
	}
	for {
		tick, stop := s.statusTimer(true)
		select {
		case s.batches <- s.unsent:
			stop()
			s.unsent = nil
			return
		case a, ok := <-s.acks:
			stop()
			if !ok {
				return // the writer stopped
			}
			s.applyAck(a)
		case <-tick:
			s.shutdownStatus()
		case <-wctx.Done():
			stop()
			return
		}
	}
}

// drain closes the batch channel and applies every acknowledgement the
// writer still sends; with statuses, sending statuses meanwhile.
func (s *stream) drain(statuses bool) {
	close(s.batches)
	for {
		tick, stop := s.statusTimer(statuses)
		select {
		case a, ok := <-s.acks:
			stop()
			if !ok {
				return
			}
			s.applyAck(a)
		case <-tick:
			s.shutdownStatus()
		}
	}
}

// statusTimer fires when the next status is due, if on and the statuses
// of this shutdown have not failed; a nil channel otherwise.
func (s *stream) statusTimer(on bool) (<-chan time.Time, func()) {
	if !on || s.statusFailed {
		return nil, func() {}
	}
	t := time.NewTimer(max(time.Until(s.nextStatus), 0))
	return t.C, func() { t.Stop() }
}

// shutdownStatus sends a status while the shutdown waits for the writer,
// which may take up to CDC_SHUTDOWN_TIMEOUT: a walsender that heard
// nothing for wal_sender_timeout would end the session, and the final
// acknowledgement would find no one. Acks that arrive meanwhile are
// acknowledged as they come, as in the stream. A status that fails ends
// them for this shutdown rather than hold it up again and again.
func (s *stream) shutdownStatus() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.sendStatus(ctx); err != nil {
		s.statusFailed = true
		s.r.log.Debug("status during shutdown failed", zap.Error(err))
	}
}

var errWriterStopped = errors.New("batch writer stopped")

// errNotHolder ends a session whose walsender a writer found no longer
// holding the slot (awaitSlot): its stream is over, whether or not its
// connection says so.
var errNotHolder = errors.New("this session's walsender no longer holds the slot (its START_REPLICATION was cancelled or failed, or it ended)")

// notHolder reports whether a writer found the slot no longer held by
// this session's walsender.
func (s *stream) notHolder() bool {
	select {
	case <-s.fence.gone:
		return true
	default:
		return false
	}
}

func (s *stream) loop(ctx context.Context) error {
	for {
		if ctx.Err() != nil {
			return nil
		}
		if s.resume == nil && s.pubChanged.Load() {
			s.resume = errPublicationChanged
		}
		if s.resume != nil && !s.track.InTx() {
			return s.resume
		}
		if s.notHolder() {
			return errNotHolder
		}
		if err := s.absorbAcks(); err != nil {
			return err
		}
		now := time.Now()
		if !now.Before(s.nextStatus) {
			if err := s.sendStatus(ctx); err != nil {
				return err
			}
			if ctx.Err() != nil {
				return nil // the shutdown: its status was not sent, or was cut
			}
			if err := s.resumeStreaming(ctx); err != nil {
				return err
			}
			now = time.Now() // heardNothing counts from the read
		}
		if len(s.batch.Rows) > 0 && !now.Before(s.batchDeadline) {
			if err := s.handoff(ctx, cutInterval); err != nil || s.unsent != nil {
				return err
			}
			// From the top: an ack that came while the writer held the
			// handoff up made a status due now (nextStatus zero), which
			// as a read deadline would mean none at all.
			continue
		}
		deadline := s.nextStatus
		if len(s.batch.Rows) > 0 && s.batchDeadline.Before(deadline) {
			deadline = s.batchDeadline
		}
		msg, err := s.receive(deadline)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if pgconn.Timeout(err) {
				if s.paced != nil && s.paced.received != s.heardBytes {
					// Part of a message came: a large row over a thin
					// link, not silence.
					s.heardBytes = s.paced.received
					s.quiet, s.pinged = 0, false
					continue
				}
				if err := s.heardNothing(time.Since(now)); err != nil {
					return err
				}
				continue
			}
			return wrapf(err, "receive from slot %s", s.r.cfg.Slot)
		}
		s.quiet, s.pinged = 0, false
		if s.paced != nil {
			s.heardBytes = s.paced.received
		}
		if err := s.handle(ctx, msg); err != nil {
			return err
		}
		if s.unsent != nil { // shutdown arrived while handing off a batch
			return nil
		}
	}
}

// heardNothing counts a read that timed out after waited. Halfway to
// ReceiveTimeout it asks the server for a reply — an idle walsender whose
// client has acknowledged everything sends nothing on its own — and at
// the timeout it ends the session, as PostgreSQL's own walreceiver does
// with wal_receiver_timeout. Without it a link that dies without a reset
// (a dropped route, a frozen VM, a firewall forgetting the flow) keeps
// cdc "streaming" and ready until TCP gives up, about 15 minutes later.
func (s *stream) heardNothing(waited time.Duration) error {
	limit := s.receiveTimeout
	if limit <= 0 {
		return nil
	}
	s.quiet += waited
	if s.quiet >= limit {
		return fmt.Errorf("%w for %s of waiting (CDC_PG_RECEIVE_TIMEOUT); taking the connection as dead", ErrServerSilent, s.quiet.Round(time.Millisecond))
	}
	if !s.pinged && s.quiet >= limit/2 {
		s.pinged = true
		s.nextStatus = time.Time{}
	}
	return nil
}

func (s *stream) absorbAcks() error {
	for {
		select {
		case a, ok := <-s.acks:
			if !ok {
				return errWriterStopped
			}
			s.applyAck(a)
		default:
			return nil
		}
	}
}

// receive reads one message, waiting at most until deadline. The deadline
// is set on the socket rather than through a context: a context per
// message would cost a goroutine per message on the hot path.
func (s *stream) receive(deadline time.Time) (pgproto3.BackendMessage, error) {
	if deadline.IsZero() {
		// The zero time is no deadline to the socket: a read that waits
		// for ever on a quiet server, with no status sent meanwhile.
		deadline = time.Now()
	}
	if !deadline.Equal(s.readDeadline) {
		// Under intr: set after the shutdown's interrupt, it would undo
		// the interrupt's "now" and hold the shutdown up until it.
		s.intr.Lock()
		var err error
		if !s.interrupted {
			err = s.conn.Conn().SetReadDeadline(deadline)
		}
		s.intr.Unlock()
		if err != nil {
			return nil, err
		}
		s.readDeadline = deadline
	}
	return s.conn.ReceiveMessage(context.Background())
}

func (s *stream) handle(ctx context.Context, msg pgproto3.BackendMessage) error {
	switch m := msg.(type) {
	case *pgproto3.CopyData:
		s.r.state.touch(time.Now())
		if len(m.Data) == 0 {
			return nil
		}
		switch m.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
			if err != nil {
				return wrapf(err, "parse keepalive")
			}
			s.track.ServerEnd(pkm.ServerWALEnd)
			if pkm.ReplyRequested {
				s.nextStatus = time.Time{}
			}
			if len(s.batch.Rows) > 0 && dueWhenCaughtUp(pkm.ServerTime, time.Unix(0, s.batchFirst), s.r.cfg.FlushInterval, s.insertTime) {
				return s.handoff(ctx, cutCaughtUp)
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(m.Data[1:])
			if err != nil {
				return wrapf(err, "parse xlogdata")
			}
			return s.handleWAL(ctx, xld.WALStart, xld.WALData)
		}
	case *pgproto3.ErrorResponse:
		pgErr := pgconn.ErrorResponseToPgError(m)
		// pgoutput looks the publication up as the catalog was at each
		// change: one dropped after the slot was made, even if made
		// again since, fails the change there at every session, and
		// only a new slot goes past it.
		if pgErr.Code == "42704" && pgErr.Message == fmt.Sprintf("publication %q does not exist", s.r.cfg.Publication) {
			return fmt.Errorf("%w: cdc cannot stream from this slot again; stop every cdc run for it, drop it (SELECT pg_drop_replication_slot('%s')) and run `cdc migrate`, "+
				"then ship what was committed since the publication was dropped with `cdc backfill` (docs/operations.md, Slot invalidated, steps 2 to 7) (publication %q): %w",
				ErrPublicationGap, s.r.cfg.Slot, s.r.cfg.Publication, pgErr)
		}
		return wrapf(pgErr, "replication stream")
	case *pgproto3.CopyDone:
		return errors.New("server ended the replication stream")
	}
	return nil
}

func (s *stream) handleWAL(ctx context.Context, at pglogrepl.LSN, data []byte) error {
	msg, err := s.dec.Decode(data)
	if err != nil {
		return wrapf(err, "decode WAL at %s", at)
	}
	switch msg.Kind {
	case decoder.KindBegin:
		s.track.Begin()
		s.tx.lsn, s.tx.seq, s.tx.commitTime = msg.LSN, 0, msg.CommitTime
		s.tx.waited = !s.streaming && msg.Xid == s.r.waitOut
		s.tx.xid, s.tx.stored, s.tx.first = msg.Xid, nil, 0
	case decoder.KindInsert:
		if t := s.cur; t != nil {
			if s.sentBefore(t, at) {
				return nil
			}
			keep, err := s.keep(ctx, t, msg.Xid)
			if err != nil || !keep {
				return err
			}
			pos, done, err := s.streamedRow(ctx, t, at, msg)
			if err != nil || done {
				return err
			}
			// Its commit time is not known until its commit arrives; the
			// row is batched only once its transaction has committed, so
			// that time is no later than now, and committed lowers it to
			// the commit's. The time of the last transaction received
			// would be no later either, but may be hours old after a
			// quiet spell: the lag would read those hours while a large
			// transaction drains.
			return s.add(ctx, msg, pos, time.Now())
		}
		s.tx.seq++
		if s.tx.seq == 1 {
			if err := s.findStreamed(ctx, at); err != nil {
				return err
			}
		}
		pos := sink.Position{CommitLSN: s.tx.lsn, Seq: s.tx.seq}
		if s.tx.first != 0 {
			pos.CommitLSN = s.tx.first
		}
		if s.storedIn(s.tx.stored, pos, msg) || s.storedIn(s.skip, pos, msg) {
			return nil
		}
		return s.add(ctx, msg, pos, s.tx.commitTime)
	case decoder.KindCommit:
		s.committed(s.tx.xid, msg)
		if s.tx.waited {
			s.waitedEnd = msg.EndLSN
			s.r.rememberSentWhole(s.tx.xid, msg.EndLSN)
		}
	case decoder.KindStreamStart:
		t := s.streams[msg.Xid]
		if t == nil {
			t = &streamedTx{xid: msg.Xid}
			s.streams[msg.Xid] = t
		}
		s.cur = t
	case decoder.KindStreamStop:
		s.cur = nil
	case decoder.KindStreamCommit:
		if t := s.streams[msg.Xid]; t != nil && t.first != 0 && !t.byCommit {
			// Until its end is stored, a next session may be sent it
			// whole; the rows batched so far are found by xid there
			// (findStreamed), as for one whose commit never came.
			s.r.rememberPartial(msg.Xid)
		}
		delete(s.streams, msg.Xid)
		s.committed(msg.Xid, msg)
	case decoder.KindStreamAbort:
		if msg.SubXid == msg.Xid {
			if t := s.streams[msg.Xid]; t != nil && t.seq > 0 {
				if at != 0 && at < s.start {
					// Not a rollback: PostgreSQL forgets a transaction
					// whose commit lies before where the session began
					// (sentBefore), which an earlier session stored.
					s.r.log.Info("PostgreSQL streamed again a transaction committed before the session's start, and forgot it at its commit; its rows were stored before",
						zap.Uint32("xid", msg.Xid), zap.Stringer("commit", at), zap.Stringer("start", s.start))
				} else {
					// keep batched them because PostgreSQL said the
					// transaction committed: the two cannot both be true.
					return fmt.Errorf("streamed transaction %d rolled back after pg_xact_status reported it committed", msg.Xid)
				}
			}
			delete(s.streams, msg.Xid)
			delete(s.r.partial, msg.Xid)
		} else if t := s.streams[msg.Xid]; t != nil {
			t.ended.forget(msg.SubXid)
		}
	}
	return nil
}

// storedIn reports whether set holds the replayed row msg at pos: its
// position, with the same event (sink.Positions.Match). The first
// position found holding another event — a row of another WAL history —
// is logged.
func (s *stream) storedIn(set *sink.Positions, pos sink.Position, msg decoder.Message) bool {
	if !set.Has(pos) {
		return false
	}
	row := sink.Row{Relation: msg.Relation, Values: msg.Values}
	if set.Match(pos, row.Event()) {
		return true
	}
	if !s.otherEventSeen {
		s.otherEventSeen = true
		s.r.log.Warn("the sink holds another event at a replayed row's position, a row of another WAL history (a database moved to a new cluster, or a failover), or one that cannot be told; the replayed row is stored (SELECT … FINAL shows each event once)",
			zap.Stringer("position", pos))
	}
	return false
}

// committed records the commit of transaction xid, sent whole (Commit) or
// in blocks (StreamCommit).
func (s *stream) committed(xid uint32, msg decoder.Message) {
	s.track.Commit(msg.EndLSN)
	s.r.state.received.Store(msg.CommitTime.UnixNano())
	// Rows streamed before their commit were batched with their arrival
	// time for a commit time; the commit says how old they really are,
	// which the lag metric and dueWhenCaughtUp need. Every other row
	// batched so far committed before this one, so the minimum is exact,
	// except for rows of a transaction still open, whose time is a guess
	// anyway.
	if !msg.CommitTime.IsZero() {
		c := msg.CommitTime.UnixNano()
		if len(s.batch.Rows) > 0 {
			s.batchFirst = min(s.batchFirst, c)
		}
		for i := range s.inFlight {
			s.inFlight[i] = min(s.inFlight[i], c)
		}
		s.reportOldestPending()
	}
	s.committedPartial(xid, msg.EndLSN)
	if s.skip != nil && msg.LSN >= s.skipMax {
		s.skip = nil // past the replay window
	}
}

// placedAt reports whether rows stored past the session's start are
// placed at lsn (placed).
func (s *stream) placedAt(lsn pglogrepl.LSN) bool {
	_, found := slices.BinarySearch(s.placed, lsn)
	return found
}

// add puts one row into the open batch, handing the batch to the writer
// first when the row would take it over the byte limit and after when it
// reached a limit.
func (s *stream) add(ctx context.Context, msg decoder.Message, pos sink.Position, commitTime time.Time) error {
	if !s.r.outbox.is(msg.Relation) {
		// Not an event: a table the session's start did not see in the
		// publication (checkPublicationTables). Its row still took its
		// ordinal, so the outbox rows' positions do not depend on it.
		s.notOutbox(msg.Relation)
		return nil
	}
	// A row that would take the batch over the byte limit starts the
	// next batch instead, so a batch exceeds the limit only when one
	// row alone does.
	cost := rowCost(msg)
	if len(s.batch.Rows) > 0 && s.batchCost+cost > s.r.cfg.BatchMaxBytes {
		if err := s.handoff(ctx, cutSize); err != nil || s.unsent != nil {
			return err
		}
	}
	if len(s.batch.Rows) == 0 {
		s.batchDeadline = flushDeadline(time.Now(), commitTime, s.r.cfg.FlushInterval, s.insertTime)
		s.batchFirst = commitTime.UnixNano()
		if len(s.inFlight) == 0 {
			s.setPending(s.batchFirst)
		}
	}
	s.batch.Rows = append(s.batch.Rows, sink.Row{
		Relation: msg.Relation, Values: msg.Values, Pos: pos, CommitTime: commitTime, Size: msg.Size,
	})
	s.batch.Bytes += msg.Size
	s.batchCost += cost
	s.bufferBytes += msg.Size
	s.r.metrics.BufferBytes.Set(float64(s.bufferBytes))
	s.track.Row()
	// Byte and row limits cut a batch even inside a transaction: memory
	// stays bounded however large the transaction, and the checkpoint
	// holds the acknowledgement until the transaction's last row is stored.
	if len(s.batch.Rows) >= s.r.cfg.BatchMaxRows || s.batchCost >= s.r.cfg.BatchMaxBytes {
		return s.handoff(ctx, cutSize)
	}
	return nil
}

// flushDeadline is when a batch whose first row committed at commit and
// arrived at now must be handed to the writer: so that it is stored about
// interval after the commit. CDC_FLUSH_INTERVAL then bounds how long an
// event waits in total, not just after it reached cdc — when the stream is
// behind, the row has already waited — and the recent INSERTs' duration
// (insert, counted up to half the interval) is taken off. It is never later
// than interval after arrival (a server clock ahead of ours) nor sooner
// than a quarter of it (a stream behind, slow INSERTs, or a clock behind
// ours): a batch keeps gathering rows for at least that long, so catching
// up is not paid for with a flood of small INSERTs. A row more than
// backlogAge intervals old means a backlog, where latency is lost anyway:
// the batch gets the whole interval, to be cut by size like any backlog.
func flushDeadline(now, commit time.Time, interval, insert time.Duration) time.Time {
	if now.Sub(commit) > backlogAge*interval {
		return now.Add(interval)
	}
	d := commit.Add(interval - min(insert, interval/2))
	if earliest := now.Add(interval / 4); d.Before(earliest) {
		return earliest
	}
	if latest := now.Add(interval); d.After(latest) {
		return latest
	}
	return d
}

// backlogAge, in flush intervals, is how old a row must be for cdc to
// consider itself draining a backlog rather than following the primary.
const backlogAge = 4

// Why a batch was handed to the writer, for the debug log.
const (
	cutSize     = "size"      // CDC_BATCH_MAX_BYTES or CDC_BATCH_MAX_ROWS reached
	cutInterval = "interval"  // its flushDeadline passed
	cutCaughtUp = "caught up" // dueWhenCaughtUp
	cutShutdown = "shutdown"
)

// dueWhenCaughtUp reports whether a batch whose oldest row committed at
// first is due when a keepalive stamped serverNow arrives. The walsender
// sends a keepalive when it has sent everything up to the WAL flushed so
// far and waits for more, so nothing else is queued behind the batch's
// rows. flushDeadline holds a batch of late rows for at least a quarter
// interval after they arrived, or a backlog's for the whole interval, so
// that a stream catching up fills large INSERTs instead of a flood of
// small ones; once the walsender has caught up that wait gains no rows and
// only delays the end of the backlog, so a batch whose rows are due by
// their commit time goes now. Fresh rows are not due: under steady
// traffic keepalives follow most commits, and the batch still gathers for
// its interval. Both times are the server's clock, so a skewed clock here
// changes nothing (a streamed row's guessed time, which may be ours, is
// corrected at its commit, before the keepalive that follows it).
func dueWhenCaughtUp(serverNow, first time.Time, interval, insert time.Duration) bool {
	return !serverNow.Before(first.Add(interval - min(insert, interval/2)))
}

// Memory a row costs beyond its payload: the Row and its Value headers
// here, and the fixed-width column slots and string offsets in the sink's
// column buffers. Counting it makes CDC_BATCH_MAX_BYTES bound memory for
// small events too, not only for large ones.
const (
	rowOverhead   = 128
	valueOverhead = 48
)

func rowCost(m decoder.Message) int { return m.Size + rowOverhead + valueOverhead*len(m.Values) }

// seal closes the open batch and starts a new one.
func (s *stream) seal(why string) *sink.Batch {
	s.batchCost = 0
	b := s.batch
	b.End = s.track.Seal()
	if ce := s.r.log.Check(zap.DebugLevel, "batch cut"); ce != nil {
		ce.Write(zap.Int("rows", len(b.Rows)), zap.Int("bytes", b.Bytes), zap.String("why", why),
			zap.Stringer("first", b.Rows[0].Pos), zap.Stringer("last", b.Rows[len(b.Rows)-1].Pos))
	}
	s.inFlight = append(s.inFlight, s.batchFirst)
	s.batch = s.newBatch()
	return b
}

// handoff gives the open batch to the writer. While the writer is busy it
// blocks — that is the backpressure: the socket is not read, TCP holds the
// walsender — but it keeps acknowledging stored batches and sending status
// so the server does not time the connection out.
func (s *stream) handoff(ctx context.Context, why string) error {
	b := s.seal(why)
	sent, err := s.await(ctx, s.batches, b, nil)
	if err == nil && !sent {
		s.unsent = b // shutdown: run hands it over within the budget
	}
	return err
}

// await serves the connection while the stream does not read it: it applies
// the writer's acknowledgements and sends standby status on time until b is
// taken on send, until fires, or ctx ends, and reports whether b was sent.
// A nil send or until never fires (pause has no batch, handoff no timer).
func (s *stream) await(ctx context.Context, send chan<- *sink.Batch, b *sink.Batch, until <-chan time.Time) (bool, error) {
	for {
		status := time.NewTimer(max(time.Until(s.nextStatus), 0))
		select {
		case send <- b:
			status.Stop()
			return true, nil
		case <-until:
			status.Stop()
			return false, nil
		case a, ok := <-s.acks:
			status.Stop()
			if !ok {
				return false, errWriterStopped
			}
			s.applyAck(a)
		case <-status.C:
			if err := s.sendStatus(ctx); err != nil {
				return false, err
			}
			if ctx.Err() != nil {
				// The shutdown: its status was not sent, or was cut.
				return false, nil
			}
		case <-ctx.Done():
			status.Stop()
			return false, nil
		case <-s.fence.gone:
			status.Stop()
			return false, errNotHolder
		}
	}
}

// notOutbox says, once a session for each table, that rows of a table
// other than the outbox arrived and are not shipped.
func (s *stream) notOutbox(rel *decoder.Relation) {
	if s.otherTables[rel.ID] {
		return
	}
	if s.otherTables == nil {
		s.otherTables = map[uint32]bool{}
	}
	s.otherTables[rel.ID] = true
	s.r.log.Warn("the publication sends rows of a table other than the outbox; they are not events and are not shipped: publish the outbox alone",
		zap.String("publication", s.r.cfg.Publication), zap.String("table", rel.Namespace+"."+rel.Name))
}

// reportOldestPending sets the lag metric's commit time: that of the oldest
// batch in flight, else of the open batch, else none.
func (s *stream) reportOldestPending() {
	switch {
	case len(s.inFlight) > 0:
		s.setPending(s.inFlight[0])
	case len(s.batch.Rows) > 0:
		s.setPending(s.batchFirst)
	default:
		s.setPending(0)
	}
}

// setPending sets the oldest pending commit time as this session's.
func (s *stream) setPending(nanos int64) {
	s.reported = true
	s.r.setOldestPending(nanos)
}

// notePendingEnd records, as the session ends, where in the WAL the
// events it leaves unstored end (Replicator.pendingEnd): the end of the
// last transaction it received in full, when every row it holds is of
// such a transaction. Unknown (0) while it holds rows of one whose commit
// has not come (sent whole, or streamed before its commit). A session
// that set no pending time leaves what an earlier one recorded.
func (s *stream) notePendingEnd() {
	if !s.reported {
		return
	}
	s.r.pendingEnd = s.track.Received()
	if s.track.InTx() {
		s.r.pendingEnd = 0
	}
	for _, t := range s.streams {
		if t.seq > 0 {
			s.r.pendingEnd = 0
		}
	}
}

func (s *stream) applyAck(a ack) {
	s.track.Flushed(a.end)
	s.stored = max(s.stored, a.end)
	s.insertTime = (3*s.insertTime + a.insert) / 4
	s.bufferBytes -= a.bytes
	s.r.metrics.BufferBytes.Set(float64(s.bufferBytes))
	if len(s.inFlight) > 0 {
		s.inFlight = s.inFlight[1:]
	}
	s.reportOldestPending()
	// Acknowledge promptly: the sooner PostgreSQL knows, the smaller the
	// window a crash would replay.
	s.nextStatus = time.Time{}
}

// statusWriteTimeout bounds the write of a status update. pglogrepl
// writes it to the socket without heeding ctx, and into a link that died
// without a reset, once its buffers are full, that write would block
// until TCP gives up. A server that is busy and not reading takes some 39
// bytes a second from cdc, hours before any buffer fills.
const statusWriteTimeout = 30 * time.Second

// errStatusCut is a status not sent because an earlier one was cut short.
var errStatusCut = errors.New("a standby status write was cut short and may have left part of a message on the connection: no status is sent on it again, and the next start replays from the last acknowledged position")

// sendStatus sends a standby status. Once the shutdown's interrupt has
// run (run), a status of the stream's is not started, and one it cut
// short is no error: the caller sees ctx ended and returns, and the
// shutdown stores what the session holds — an error would have it cancel
// the INSERTs in flight and drop the batch being handed over. Such a cut
// write may have sent part of its message, after which PostgreSQL would
// read the next status from the middle of this one: none is sent again
// (errStatusCut), and nothing is acknowledged.
func (s *stream) sendStatus(ctx context.Context) error {
	if s.statusCut {
		return errStatusCut
	}
	w, f := s.track.Positions()
	deadline := time.Now().Add(statusWriteTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	s.intr.Lock()
	if s.interrupted {
		s.intr.Unlock()
		return nil
	}
	err := s.conn.Conn().SetWriteDeadline(deadline)
	s.intr.Unlock()
	if err != nil {
		return wrapf(err, "send standby status")
	}
	err = pglogrepl.SendStandbyStatusUpdate(ctx, s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: w,
		WALFlushPosition: f,
		WALApplyPosition: f,
		ClientTime:       time.Now(),
		ReplyRequested:   s.pinged,
	})
	if err != nil {
		// Whatever cut it — the interrupt, its own deadline, a broken
		// link — the write may have sent part of the message, and a
		// status written after it would be read from that part on: its
		// flush position made of the next one's bytes, which PostgreSQL
		// would confirm as it came. None is written on this connection
		// again.
		s.statusCut = true
		s.intr.Lock()
		cut := s.interrupted
		s.intr.Unlock()
		if cut {
			return nil
		}
		return wrapf(err, "send standby status")
	}
	s.nextStatus = time.Now().Add(s.r.cfg.StatusInterval)
	// Only what the sink stored: a flush moved by a keepalive alone (the
	// server's WAL end, on a database whose other tables write) says
	// nothing of the session's health.
	s.r.acked = max(s.r.acked, min(f, s.stored))
	if d := pglogrepl.LSN(s.restart.Load()); d > s.forgotTo {
		// The slot's restart_lsn moved (watch): a long session forgets
		// the streamed transactions no server can send again.
		s.forgotTo = d
		if n := s.r.forgetPartials(d); n > 0 {
			s.r.log.Debug("forgot the streamed transactions before the slot's restart_lsn", zap.Int("transactions", n), zap.Stringer("restart_lsn", d))
		}
	}
	return nil
}
