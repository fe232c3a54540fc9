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
)

// Catch-up sessions.
//
// With streaming on, the walsender sends a large transaction once its
// decoded changes exceed logical_decoding_work_mem (64 MB by default), and
// not before: a backlog committed in one large transaction reaches cdc only
// after the walsender has decoded the first 64 MB of it alone, about half a
// second in which cdc and ClickHouse have nothing to do. A session that
// starts far behind therefore lowers logical_decoding_work_mem for its own
// walsender (Config.CatchUpWorkMem), so the first block comes after a few
// MB and decoding, batching and storing overlap from the start.
//
// The lower limit is for the backlog only. Under live traffic it would send
// more transactions before their commit, and a streamed transaction still
// in progress holds the stream up until it ends (streamed.go). So once the
// session has received everything that was in the WAL when it began, and no
// streamed transaction is open, it stores what it holds, acknowledges it
// and ends; the next session starts where it ended, with the server's own
// limit — or catches up again, if the WAL has run far ahead meanwhile.

// DefaultCatchUpLag is how far behind, in bytes of WAL, a session must
// start to catch up with a lower limit: PostgreSQL's default
// logical_decoding_work_mem. Less is decoded in memory in a fraction of a
// second anyway.
const DefaultCatchUpLag = 64 << 20

// errCaughtUp ends a catch-up session; Run starts the next one at once.
var errCaughtUp = errors.New("caught up with the backlog")

// catchUp lowers logical_decoding_work_mem for this replication
// connection's walsender when the session starts lag bytes of WAL behind
// confirmed, streams large transactions, the server's own limit is higher,
// and the sink holds no rows past confirmed. It returns the limit set in
// kB, 0 when it set none.
//
// Rows past confirmed mean a replay (the previous session stopped between
// storing and acknowledging), and a transaction partly stored then must be
// sent the way it was sent then: one sent whole at its commit and streamed
// now would be placed by its first row instead of its commit and stored
// twice (the other way round is recognised, see findStreamed). The
// previous session may have had the server's limit, so this one keeps it.
func (r *Replicator) catchUp(ctx context.Context, conn *pgconn.PgConn, streaming bool, confirmed pglogrepl.LSN, lag uint64) (int, error) {
	kb := r.cfg.CatchUpWorkMem >> 10
	threshold := uint64(r.cfg.CatchUpLag)
	if threshold == 0 {
		threshold = DefaultCatchUpLag
	}
	if !streaming || kb == 0 || lag < threshold {
		return 0, nil
	}
	rows, err := queryRows(ctx, conn, "SELECT setting FROM pg_settings WHERE name = 'logical_decoding_work_mem'")
	if err != nil {
		return 0, wrapf(err, "read logical_decoding_work_mem")
	}
	if len(rows) != 1 || len(rows[0]) != 1 {
		return 0, fmt.Errorf("read logical_decoding_work_mem: %d rows", len(rows))
	}
	current, err := strconv.Atoi(rows[0][0]) // in kB
	if err != nil {
		return 0, wrapf(err, "parse logical_decoding_work_mem %q", rows[0][0])
	}
	if current <= kb {
		return 0, nil
	}
	stored, err := r.written(ctx, confirmed)
	if err != nil {
		return 0, err
	}
	if len(stored) > 0 {
		r.log.Info("replaying rows already stored: catching up with the server's logical_decoding_work_mem",
			zap.Int("already_stored", len(stored)))
		return 0, nil
	}
	if _, err := queryRows(ctx, conn, fmt.Sprintf("SET logical_decoding_work_mem = %d", kb)); err != nil {
		return 0, wrapf(err, "set logical_decoding_work_mem for the catch-up")
	}
	return kb, nil
}

// caughtUp reports whether a catch-up session may end at at, the end of a
// commit or the WAL end of a keepalive: everything that was in the WAL when
// the session began has been received, and no transaction is half-sent.
func (s *stream) caughtUp(at pglogrepl.LSN) bool {
	return s.catchUpKB > 0 && at >= s.startWAL && len(s.streams) == 0 && s.cur == nil && !s.track.InTx()
}

// endCatchUp hands the open batch to the writer, waits until the writer
// has stored everything, acknowledges it and ends the session with
// errCaughtUp, so the next one replays nothing. While it waits the socket is
// not read, as while a handoff waits for the writer; status still goes out
// on time, so a slow sink does not time the connection out.
func (s *stream) endCatchUp(ctx context.Context) error {
	if len(s.batch.Rows) > 0 {
		if err := s.handoff(ctx, cutCaughtUp); err != nil || s.unsent != nil {
			return err
		}
	}
	for s.track.InFlight() > 0 {
		status := time.NewTimer(max(time.Until(s.nextStatus), 0))
		select {
		case a, ok := <-s.acks:
			status.Stop()
			if !ok {
				return errWriterStopped
			}
			s.applyAck(a)
		case <-status.C:
			if err := s.sendStatus(ctx); err != nil {
				return err
			}
		case <-ctx.Done():
			status.Stop()
			return nil // shutdown: run stores and acknowledges as usual
		}
	}
	if err := s.sendStatus(ctx); err != nil {
		return err
	}
	_, flushed := s.track.Positions()
	s.r.log.Info("caught up with the backlog; reconnecting with the server's logical_decoding_work_mem",
		zap.Int("catch_up_work_mem_kb", s.catchUpKB), zap.Stringer("flushed", flushed))
	return errCaughtUp
}
