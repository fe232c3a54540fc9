package replication

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/sink"
)

// Streamed transactions.
//
// With protocol version 1 PostgreSQL sends nothing of a transaction until
// it has decoded its commit record; a transaction larger than
// logical_decoding_work_mem is first spilled to disk in full, then read back
// and sent. A backlog committed in one large transaction therefore reaches
// cdc only after PostgreSQL has decoded all of it, and is then sent as a
// second pass. With version 2 and streaming on (PostgreSQL 14+), such a
// transaction is sent in blocks as it is decoded, before its commit.
//
// A block may belong to a transaction that will still roll back, and rows
// of a rolled-back transaction must never reach the sink; holding every
// block until the commit instead would break the memory bound. So cdc asks
// PostgreSQL, on a second, ordinary connection, how each streamed
// (sub)transaction ended (pg_xact_status). Committed: its rows are batched
// at once, like any other. Rolled back: its rows are dropped. Still in
// progress — a live transaction larger than logical_decoding_work_mem — cdc
// waits up to streamWait for it to end, then reconnects without streaming
// until it has: PostgreSQL then spills it on its side as with version 1,
// and the rest of the outbox keeps flowing meanwhile.
//
// A streamed row's commit LSN is not known when it is stored, so its
// position is (LSN of the transaction's first outbox row, ordinal): as
// stable across a replay as (commit LSN, ordinal) and distinct from every
// commit LSN. A transaction whose first row lies before the session began
// may have been partly stored by an earlier session; its stored ordinals
// are read from the sink before the rest is batched.

// streamedTx is a transaction PostgreSQL is sending before its commit.
type streamedTx struct {
	xid   uint32
	first pglogrepl.LSN // WAL position of its first row kept; 0 until then
	seq   uint64        // rows kept so far
	ended endedXacts    // how the (sub)transactions seen ended
	// durable is set once one of its (sub)transactions was seen committed
	// with the commit flushed: they all commit by the same commit record.
	durable bool
	// committedBy is the WAL insert position read just after one of its
	// (sub)transactions was first seen committed: its commit record ends
	// at or before it, so the commit is flushed once the WAL is flushed
	// that far. 0 until then.
	committedBy pglogrepl.LSN
	stored      *sink.Positions // its rows an earlier session stored, all at first
	// byCommit is set when its rows are placed by its commit LSN, found
	// stored that way (storedWhole): a session sent it whole places them
	// the same, with nothing to look up by xid.
	byCommit bool
	// sentBefore is set once its rows are known stored before the
	// session began (stream.sentBefore): none is kept.
	sentBefore bool
}

// endedXacts remembers how the (sub)transactions of one streamed
// transaction ended, so that each costs one lookup. A transaction that
// opens a savepoint per row (a Django atomic() per item inside an outer
// one, a PL/pgSQL loop with an EXCEPTION block) has millions of them, and
// remembering every one would grow with the transaction, past the memory
// bound. So the committed ones are forgotten every maxCommittedXacts: one
// seen again after that is looked up again, which a subtransaction whose
// rows span that many others rarely is. An aborted one is kept until
// PostgreSQL streams its abort (its rows come before that, and are
// dropped), so a transaction that rolls back a savepoint per row holds
// none of them for long.
type endedXacts struct {
	m         map[uint32]bool // xid → committed
	committed int             // committed entries in m
}

const maxCommittedXacts = 1 << 16

func (e *endedXacts) get(xid uint32) (committed, ok bool) {
	committed, ok = e.m[xid]
	return committed, ok
}

func (e *endedXacts) put(xid uint32, committed bool) {
	if e.m == nil {
		e.m = map[uint32]bool{}
	}
	if committed && e.committed >= maxCommittedXacts {
		// A new map: Go's maps keep their buckets after deletes.
		aborted := map[uint32]bool{}
		for x, c := range e.m {
			if !c {
				aborted[x] = false
			}
		}
		e.m, e.committed = aborted, 0
	}
	if old, had := e.m[xid]; had && old {
		e.committed--
	}
	e.m[xid] = committed
	if committed {
		e.committed++
	}
}

// forget drops xid, a subtransaction whose abort was streamed: no row of
// it comes after that.
func (e *endedXacts) forget(xid uint32) {
	if c, had := e.m[xid]; had {
		if c {
			e.committed--
		}
		delete(e.m, xid)
	}
}

// pg_xact_status's answers.
const (
	xactCommitted  = "committed"
	xactAborted    = "aborted"
	xactInProgress = "in progress"
)

// streamWait is how long a row of a streamed transaction still in progress
// may hold up the stream before cdc reconnects without streaming. Short:
// every other transaction waits behind it.
func streamWait(flush time.Duration) time.Duration {
	return min(max(flush, time.Second), 10*time.Second)
}

// Errors that end a session so the next one streams differently; Run
// starts the next one at once.
var (
	errStreamInProgress = errors.New("a transaction streamed before its commit is still in progress")
	errResumeStreaming  = errors.New("the transaction that stopped streaming has ended")
)

// xactLookup asks PostgreSQL how transactions ended, over an ordinary
// connection of its own: a replication connection cannot run queries while
// it streams. It connects on first use.
type xactLookup struct {
	dsn  string
	conn *pgconn.PgConn
	log  *zap.Logger
}

// statusAt returns pg_xact_status of xid — committed, aborted, in
// progress, or "" when PostgreSQL no longer knows (its commit log was
// truncated) — and the server's WAL insert and flush positions read after
// it: if xid had ended, its commit or abort record lies before insert, and
// is durable once flushed has passed there. The stream carries 32-bit xids;
// the epoch is found from the snapshot's xmax (below).
// lookupTimeout bounds a transaction status lookup, connection included.
// The stream's loop waits on it: without a bound, a link that died without
// a reset would hold the loop — and keep cdc "streaming" — until TCP gives
// up, some 15 minutes later. The query itself takes milliseconds.
var lookupTimeout = 30 * time.Second

func (x *xactLookup) statusAt(ctx context.Context, xid uint32) (status string, insert, flushed pglogrepl.LSN, err error) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	var rows [][]string
	for retried := false; ; retried = true {
		kept := x.conn != nil
		if rows, err = x.queryStatus(ctx, xid); err == nil {
			break
		}
		// A connection kept since the last lookup, which may be hours
		// ago, may have been closed by the server meanwhile
		// (idle_session_timeout, a pooler, a restart): once more on a
		// new one before the session gives up.
		if !kept || retried || ctx.Err() != nil {
			return "", 0, 0, err
		}
		x.log.Debug("the kept transaction-status connection failed; trying a new one", zap.Error(err))
	}
	if len(rows) != 2 || len(rows[0]) != 1 || len(rows[1]) != 4 {
		return "", 0, 0, fmt.Errorf("look up status of transaction %d: unexpected result %q", xid, rows)
	}
	var block, segment uint64
	if insert, err = pglogrepl.ParseLSN(rows[1][0]); err == nil {
		if flushed, err = pglogrepl.ParseLSN(rows[1][1]); err == nil {
			if block, err = strconv.ParseUint(rows[1][2], 10, 32); err == nil {
				segment, err = strconv.ParseUint(rows[1][3], 10, 64)
			}
		}
	}
	if err != nil {
		return "", 0, 0, fmt.Errorf("look up status of transaction %d: %w", xid, err)
	}
	return rows[0][0], recordEnd(insert, block, segment), flushed, nil
}

// queryStatus runs statusAt's query, connecting first if need be; a
// connection the query failed on is closed.
func (x *xactLookup) queryStatus(ctx context.Context, xid uint32) ([][]string, error) {
	if x.conn == nil {
		cfg, err := pgconn.ParseConfig(x.dsn)
		if err != nil {
			return nil, wrapf(err, "parse postgres dsn")
		}
		ConnDefaults(cfg)
		if x.conn, err = pgconn.ConnectConfig(ctx, cfg); err != nil {
			return nil, wrapf(err, "connect to postgres for transaction status")
		}
	}
	// n is the snapshot's xmax: the last completed xid + 1, not the next
	// to be assigned, so an xid in progress — a subtransaction's, or one
	// assigned after an older transaction that is still open — can lie
	// ahead of it. The 64-bit xid is the one nearest n: every xid still in
	// the commit log is within 2^31 of it. The WAL positions come from a
	// second statement, so they are read after the status.
	q := fmt.Sprintf(`SELECT coalesce(pg_xact_status((n + ((%d - (n & 4294967295) + 2147483648) %% 4294967296 + 4294967296) %% 4294967296 - 2147483648)::text::xid8), '')
		FROM (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS n) s;
		SELECT pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn()::text, current_setting('wal_block_size'),
			(SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')`, xid)
	rows, err := queryRows(ctx, x.conn, q)
	if err != nil {
		x.close()
		return nil, wrapf(err, "look up status of transaction %d", xid)
	}
	return rows, nil
}

// recordEnd is the WAL insert position pos as the end of the record before
// it. At a page boundary PostgreSQL reports the insert position past the
// next page's header (24 bytes, 40 at a segment's start), where no flush
// stops until another record is written: the flush position ends at the
// boundary. Nothing ends 24 bytes into a page (the rest of a record that
// began on the page before is at least 8 bytes), nor 40 bytes into a
// segment; 40 bytes into another page may be the end of such a rest.
func recordEnd(pos pglogrepl.LSN, block, segment uint64) pglogrepl.LSN {
	if block == 0 || segment == 0 {
		return pos
	}
	switch {
	case uint64(pos)%block == shortPageHeader:
		return pos - shortPageHeader
	case uint64(pos)%segment == longPageHeader:
		return pos - longPageHeader
	}
	return pos
}

// The sizes of a WAL page's header, short and at a segment's start.
const shortPageHeader, longPageHeader = 24, 40

// flush makes PostgreSQL flush its WAL up to now: a transaction that
// writes WAL and takes an xid commits synchronously (locally), and such a
// commit flushes the WAL up to its record, everything inserted before
// included. What it writes is a transactional logical decoding message
// (allowed to every role; pgoutput sends messages only to a subscriber
// that asks for them, which cdc does not) and its commit record. A
// transaction that writes no WAL of its own commits asynchronously, even
// with an xid.
func (x *xactLookup) flush(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	if x.conn == nil {
		return errors.New("flush the WAL: no connection") // statusAt connects first
	}
	_, err := queryRows(ctx, x.conn, "BEGIN READ WRITE; SET LOCAL synchronous_commit = local; SELECT pg_logical_emit_message(true, 'cdc', ''); COMMIT")
	if err != nil {
		x.close()
		return wrapf(err, "flush the WAL")
	}
	return nil
}

func (x *xactLookup) close() {
	if x.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = x.conn.Close(ctx)
	x.conn = nil
}

// keep reports whether a row the (sub)transaction xid made inside the
// streamed transaction t belongs to the sink: true once xid committed and
// its commit is flushed, false once it rolled back. While it is in
// progress it waits, acknowledging what the writer stores meanwhile; past
// streamWait it returns errStreamInProgress and marks t's transaction for
// the next session to read without streaming.
//
// Committed is not enough: with synchronous_commit off, PostgreSQL reports
// a transaction committed before its commit record is flushed, and a crash
// meanwhile undoes it. Its rows would then be events of a transaction that
// never happened. So when the WAL is not flushed up to where it was
// inserted when the answer came, cdc flushes it (xactLookup.flush) before
// it keeps the rows. Waiting for the WAL writer instead could wait for
// ever on a quiet server: it flushes asynchronous commits, not other WAL
// (a vacuum's) inserted after them. Where PostgreSQL refuses that flush,
// cdc does wait, up to streamWait, and then reads the transaction
// without streaming (sent at its commit, which is flushed by then).
func (s *stream) keep(ctx context.Context, t *streamedTx, xid uint32) (bool, error) {
	if committed, ok := t.ended.get(xid); ok {
		return committed, nil
	}
	deadline := time.Now().Add(streamWait(s.r.cfg.FlushInterval))
	for {
		st, insert, flushed, err := s.xacts.statusAt(ctx, xid)
		if err != nil {
			return false, err
		}
		switch st {
		case xactCommitted:
			// Against where the WAL was when the commit was first seen,
			// not where it is now: on a busy server the flush position
			// trails the insert position at every look, and a wait for
			// it to catch up (the flush refused) would last the whole
			// stream wait and end the session.
			if t.committedBy == 0 {
				t.committedBy = insert
			}
			durable := t.durable || flushed >= t.committedBy
			if !durable && !s.r.flushRefused {
				s.r.log.Debug("streamed transaction committed, its commit perhaps not flushed yet: flushing the WAL",
					zap.Uint32("xid", xid), zap.Stringer("flushed", flushed), zap.Stringer("inserted", insert))
				// The lookup and the flush may each take up to
				// lookupTimeout, together as long as the default
				// wal_sender_timeout: a status between them if one is due.
				if !time.Now().Before(s.nextStatus) {
					if err := s.sendStatus(ctx); err != nil {
						return false, err
					}
					if ctx.Err() != nil {
						return false, ctx.Err() // the shutdown (run: shutdownCut)
					}
				}
				err := s.xacts.flush(ctx)
				var pgErr *pgconn.PgError
				switch {
				case err == nil:
					durable = true
				case errors.As(err, &pgErr):
					// Refused (a role without EXECUTE on
					// pg_logical_emit_message, a standby): the WAL writer's
					// flush is waited for, up to the stream wait, as for a
					// transaction in progress.
					s.r.flushRefused = true
					s.r.log.Warn("PostgreSQL refused the flush of its WAL that makes the rows of an asynchronously committed streamed transaction safe to keep; cdc waits for the WAL writer's instead, and reads such a transaction without streaming when it takes longer",
						zap.Error(err))
				default:
					return false, err
				}
			}
			if durable {
				// One commit record commits every (sub)transaction of t.
				t.durable = true
				t.ended.put(xid, true)
				return true, nil
			}
		case xactAborted:
			t.ended.put(xid, false)
			return false, nil
		case xactInProgress:
		default:
			// Its outcome is gone from the commit log: only PostgreSQL's
			// own replay at the commit can tell, so stop streaming for
			// the life of this process.
			s.r.streamingOff = true
			return false, fmt.Errorf("%w (xid %d: status unknown)", errStreamInProgress, xid)
		}
		if time.Now().After(deadline) {
			s.r.waitOut = t.xid
			return false, fmt.Errorf("%w (xid %d)", errStreamInProgress, t.xid)
		}
		if err := s.pause(ctx, 50*time.Millisecond); err != nil {
			return false, err
		}
		if ctx.Err() != nil {
			return false, nil
		}
	}
}

// pause waits d, acknowledging stored batches and keeping the standby
// status flowing.
func (s *stream) pause(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	_, err := s.await(ctx, nil, nil, timer.C)
	return err
}

// streamedRow returns the position of the next row of the streamed
// transaction t, first read at WAL position at, and whether an earlier
// session stored it already: one that began before this session's start,
// or one the skip set places rows at (another connector streamed it while
// this session set up, after the server's WAL position it read first).
func (s *stream) streamedRow(ctx context.Context, t *streamedTx, at pglogrepl.LSN, msg decoder.Message) (sink.Position, bool, error) {
	if t.first == 0 {
		t.first = at
		if lsn, ok := s.storedWhole(at, msg); ok {
			t.first, t.stored, t.byCommit = lsn, s.skip.At(lsn), true
			s.r.log.Info("streamed transaction stored, in part or whole, by an earlier session that was sent it at its commit; skipping those rows",
				zap.Uint32("xid", t.xid), zap.Stringer("commit", lsn), zap.Int("stored", t.stored.Len()))
		} else if at < s.startWAL || s.placedAt(at) {
			if err := s.loadStored(ctx, t); err != nil {
				return sink.Position{}, false, err
			}
			if t.stored.Len() == 0 && at < s.start {
				lsn, stored, err := s.storedBefore(ctx, at, msg)
				if err != nil {
					return sink.Position{}, false, err
				}
				if stored != nil {
					t.first, t.stored, t.byCommit = lsn, stored, true
					s.r.log.Info("streamed transaction stored by an earlier process that was sent it at its commit, before this session's start; skipping those rows",
						zap.Uint32("xid", t.xid), zap.Stringer("commit", lsn), zap.Int("stored", stored.Len()))
				}
			}
		}
	}
	t.seq++
	pos := sink.Position{CommitLSN: t.first, Seq: t.seq}
	return pos, s.storedIn(t.stored, pos, msg), nil
}

// storedWhole finds whether an earlier session stored, sent whole at its
// commit, the transaction whose first row, msg at WAL position at, is
// streamed now, and returns the commit LSN that placed its rows. Sent
// whole and stored in part or all, then sent again streamed: after cdc
// waited out an open transaction and read it without streaming, a kill
// before the acknowledgement, or a server crash before the slot's position
// reached disk, sends it once more, and the session streaming it would
// place its rows by their first row and store them all again. Such a
// transaction committed before this session began, and its commit lies in
// the replay window the skip set covers: a run there that begins at the
// first ordinal, past at, with this row's event is its stored part. The
// rest of it is then placed by that commit LSN too, as a session sent it
// whole would.
func (s *stream) storedWhole(at pglogrepl.LSN, msg decoder.Message) (pglogrepl.LSN, bool) {
	if at >= s.startWAL || s.skip.Len() == 0 {
		return 0, false
	}
	row := sink.Row{Relation: msg.Relation, Values: msg.Values}
	return s.skip.FirstRunOf(at, row.Event())
}

// storedBefore is storedWhole for a transaction whose commit lies before
// the session's start, outside the skip set: one cdc waited out and
// stored whole, placed by its commit, which PostgreSQL streams again while
// the slot's restart_lsn lies before it, with a catalog change in it
// (sentBefore), and forgets at its commit. The process that stored it
// drops those rows (sentBefore); a new one (a restart, a standby taking
// over) remembers nothing of it, and stored them all again, placed by
// their first row. It reads the positions stored from the row up to the
// session's start, a scan of the sink's like the session's first read,
// for a streamed transaction whose first row lies before the session's
// start and that has no row placed by it: PostgreSQL streams such a
// transaction again only with a catalog change in it. More positions
// than a set may hold are read as none (written): its rows are stored
// again, which FINAL shows once. It returns the commit LSN that placed
// the rows and those stored, or a nil set.
func (s *stream) storedBefore(ctx context.Context, at pglogrepl.LSN, msg decoder.Message) (pglogrepl.LSN, *sink.Positions, error) {
	row := sink.Row{Relation: msg.Relation, Values: msg.Values}
	event := row.Event()
	if event == 0 {
		return 0, nil, nil
	}
	var stored *sink.Positions
	err := s.statusFlowing(ctx, func(ctx context.Context) (err error) {
		stored, err = s.r.written(ctx, at+1, s.start)
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	lsn, ok := stored.FirstRunOf(at, event)
	if !ok {
		return 0, nil, nil
	}
	placed := stored.At(lsn)
	placed.TrimEvents(streamedEvents)
	return lsn, placed, nil
}

// findStreamed is called at the first row, at WAL position at, of a
// transaction sent whole: it finds out whether an earlier session stored
// rows of it streamed, placed by this row's LSN. PostgreSQL decides in each
// session whether to stream a transaction — by its size against
// logical_decoding_work_mem, counted with whatever else it is decoding at
// the time, which depends on where the session began — so a session that
// stopped halfway through a streamed transaction may be followed by one
// that is sent it whole, at its commit. The rows stored are then skipped
// and the rest placed the same way, by the first row's LSN: every row once,
// and a further replay, streamed or not, finds them all.
//
// The sink is asked only about a transaction known to have such rows: one
// the process remembers (Replicator.partial), or one whose first row's LSN
// places rows stored past the session's start (read at the start, in the
// skip set). One that began before the session's start and is not
// remembered by a new process is not looked for: every transaction open
// at a restart would cost a scan of the sink's positions, and the part
// stored is then stored again (FINAL shows each event once).
func (s *stream) findStreamed(ctx context.Context, at pglogrepl.LSN) error {
	// A transaction whose first row lies past the remembered one's commit
	// is another that took its xid after wraparound.
	end, remembered := s.r.partial[s.tx.xid]
	remembered = remembered && (end == 0 || at < end)
	if !remembered && !s.placedAt(at) {
		return nil
	}
	stored, err := s.storedOrdinals(ctx, s.tx.xid, at)
	if err != nil {
		return err
	}
	if stored.Len() > 0 {
		s.tx.first, s.tx.stored = at, stored
	}
	return nil
}

// loadStored reads which of t's rows the sink and the dead letters hold.
// The set lives until t's commit, beside those of every other streamed
// transaction open at the session's start, whose blocks PostgreSQL sends
// interleaved: it keeps the events of its last streamedEvents positions
// only, not of up to 512 Ki (16 MiB), so that their number does not
// multiply that.
func (s *stream) loadStored(ctx context.Context, t *streamedTx) error {
	stored, err := s.storedOrdinals(ctx, t.xid, t.first)
	stored.TrimEvents(streamedEvents)
	t.stored = stored
	return err
}

// streamedEvents is how many of a streamed transaction's stored positions
// keep their events (128 KiB): rows before them are told by their run's
// first event (sink.Positions.Match).
const streamedEvents = 4 << 10

// storedOrdinals returns the positions of the rows of streamed transaction
// xid, first row at first, that the sink and the dead letters hold. Only
// that LSN is read: everything stored since a long transaction's first row
// could be hours of events.
func (s *stream) storedOrdinals(ctx context.Context, xid uint32, first pglogrepl.LSN) (*sink.Positions, error) {
	var stored *sink.Positions
	err := s.statusFlowing(ctx, func(ctx context.Context) (err error) {
		stored, err = s.r.written(ctx, first, first+1)
		return err
	})
	if err != nil {
		return nil, err
	}
	if stored.Len() > 0 {
		s.r.log.Info("streamed transaction partly stored by an earlier session; skipping those rows",
			zap.Uint32("xid", xid), zap.Stringer("first", first), zap.Int("stored", stored.Len()))
	}
	return stored, nil
}

// statusFlowing runs read on a goroutine of its own while this one goes
// on acknowledging stored batches and sending standby status. The sink
// finds positions by scanning its table (cdc_commit_lsn is not in
// event_log's key), which on a large table may take longer than the
// walsender's wal_sender_timeout: without status it would end the session,
// and the next would read again.
func (s *stream) statusFlowing(ctx context.Context, read func(context.Context) error) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	finished := make(chan time.Time)
	go func() {
		errc <- read(rctx)
		close(finished)
	}()
	_, err := s.await(ctx, nil, nil, finished)
	cancel() // a read still running stops
	if rerr := <-errc; err == nil {
		// The read finished, or ctx ended and the read says so.
		err = rerr
	}
	return err
}

// committedPartial notes that the commit of xid, ending at end, arrived;
// if xid is in Replicator.partial it is forgotten once the slot has
// confirmed past it (forgetPartials); meanwhile a transaction that takes
// its xid again after wraparound lies past end (findStreamed).
func (s *stream) committedPartial(xid uint32, end pglogrepl.LSN) {
	if _, ok := s.r.partial[xid]; ok {
		s.r.partial[xid] = end
	}
}

// forgetPartials forgets the transactions of Replicator.partial, and of
// Replicator.sentWhole, whose commit was received and lies before durable,
// the slot's restart_lsn:
// PostgreSQL decodes nothing before it again, and writes it to disk as it
// moves, so not even a server crash sends them again. Not the confirmed
// position: PostgreSQL 15 keeps that in memory until the slot is next
// written, which a long transaction holding restart_lsn back may put off
// for hours, and a crash meanwhile sends again what it passed. It returns
// how many it forgot.
func (r *Replicator) forgetPartials(durable pglogrepl.LSN) int {
	n := 0
	for xid, end := range r.partial {
		if end != 0 && end <= durable {
			delete(r.partial, xid)
			n++
		}
	}
	for xid, end := range r.sentWhole {
		if end <= durable {
			delete(r.sentWhole, xid)
			n++
		}
	}
	return n
}

// rememberPartials records, when a session ends, the streamed transactions
// it stored rows of without receiving their commit. A next session that
// streams is sent them again and finds those rows by their first row's
// LSN (loadStored); one without streaming is sent them whole at their
// commit and asks the same by xid (Begin in handleWAL), since it places
// rows by commit LSN and would not recognise them otherwise.
func (s *stream) rememberPartials() {
	for xid, t := range s.streams {
		if t.first != 0 && !t.byCommit {
			s.r.rememberPartial(xid)
		}
	}
}

// rememberPartial records that rows of streamed transaction xid may be
// stored while its end is not.
func (r *Replicator) rememberPartial(xid uint32) {
	if r.partial == nil {
		r.partial = map[uint32]pglogrepl.LSN{}
	}
	if _, ok := r.partial[xid]; !ok {
		r.partial[xid] = 0
	}
}

// rememberSentWhole records that a session without streaming received
// whole the transaction xid it waited out, its commit ending at end.
func (r *Replicator) rememberSentWhole(xid uint32, end pglogrepl.LSN) {
	if r.sentWhole == nil {
		r.sentWhole = map[uint32]pglogrepl.LSN{}
	}
	r.sentWhole[xid] = end
}

// sentBefore reports whether t, whose row at WAL position at is being
// streamed, is a transaction waited out that an earlier session received
// whole and stored, its commit before where this session began: its rows
// are then dropped. Once cdc has stored such a transaction it streams
// again (resumeStreaming), and while the slot's restart_lsn still lies
// before the transaction (another transaction open since before it holds
// it back), PostgreSQL decodes it again. PostgreSQL 14 and 15 may then
// stream it — they did with an ALTER TABLE in it — and forget it at its
// commit with a Stream Abort. Its rows, placed by their first row, would
// be stored a second time beside those placed by its commit.
func (s *stream) sentBefore(t *streamedTx, at pglogrepl.LSN) bool {
	if t.sentBefore {
		return true
	}
	end, ok := s.r.sentWhole[t.xid]
	// A row past its commit is of another transaction that took its xid
	// after wraparound.
	if !ok || at >= end || end > s.start {
		return false
	}
	t.sentBefore = true
	s.r.log.Info("PostgreSQL streams again a transaction an earlier session received whole and stored; its rows are not stored again",
		zap.Uint32("xid", t.xid), zap.Stringer("end", end), zap.Stringer("start", s.start))
	return true
}

// streams reports whether the next session asks for large transactions to
// be streamed, the server permitting.
func (r *Replicator) streams() bool { return !r.streamingOff && r.waitOut == 0 }

// streamingArgs are the pgoutput options for a session: protocol 2 with
// streaming where the server has it (14+) and no transaction is being
// waited out, else protocol 1.
func (r *Replicator) streamingArgs(conn *pgconn.PgConn) (args []string, streaming bool) {
	if serverMajor(conn) >= 14 && r.streams() {
		return []string{"proto_version '2'", "streaming 'on'"}, true
	}
	return []string{"proto_version '1'"}, false
}

// resumeStreaming decides, for a session that reads without streaming,
// that it ends once the transaction it waits out has ended and, if it
// committed, is stored: a session with streaming would place its rows
// differently (by their first row rather than their commit), so switching
// halfway through it would store some of them twice. So would switching
// halfway through any other transaction sent whole, which a session with
// streaming may be streamed again: the session ends between transactions
// (loop), once what it received is stored (run).
func (s *stream) resumeStreaming(ctx context.Context) error {
	xid := s.r.waitOut
	if s.streaming || xid == 0 || s.resume != nil {
		return nil
	}
	st, wal, _, err := s.xacts.statusAt(ctx, xid)
	if err != nil {
		return err
	}
	if st == xactCommitted && s.waitedEnd == 0 {
		// Committed, and its commit has not come in this session: it may
		// yet, or never — PostgreSQL sends nothing of a transaction left
		// with no outbox rows (a savepoint rolled back), and nothing of one
		// stored before this session began. Its commit record lies before
		// wal; once everything up to there is stored, so is it. A Commit
		// received later sets its own end.
		s.waitedEnd = wal
	}
	switch {
	case st == xactAborted:
	case st == xactCommitted && s.track.FlushedLSN() >= s.waitedEnd:
	default:
		return nil
	}
	s.resume = fmt.Errorf("%w (xid %d %s)", errResumeStreaming, xid, st)
	return nil
}
