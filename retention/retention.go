// Package retention deletes old outbox rows. The rows are only a staging
// area: the WAL already carries every insert to the slot, so deleting a row
// — even one not yet streamed — loses no event. Deletes go in small batches
// with a pause between them, so they never hold long locks, and a backlog
// of old rows (retention switched back on after days off) is deleted as a
// steady trickle of WAL rather than a burst the walsender must decode
// ahead of new events.
//
// Age is event_date_time's: the outbox has no insertion time. So a row at
// '-infinity' goes at the first sweep and one at 'infinity' never goes;
// both are dead letters (ClickHouse cannot hold them). Those at 'infinity'
// are left for an operator to delete (docs/operations.md, Rows dated
// infinity) rather than deleted at once: until then `cdc backfill` can
// still set them aside again after an outage that lost the WAL.
package retention

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
)

// Cleaner deletes outbox rows older than Keep.
type Cleaner struct {
	Pool      *pgxpool.Pool
	Keep      time.Duration
	Every     time.Duration // between sweeps
	BatchSize int           // rows per DELETE
	Pause     time.Duration // between the DELETEs of one sweep
	Log       *zap.Logger
	// Horizon, when set, says before when every event has been stored
	// (replication.State.Horizon: the oldest event pending, or the last
	// one received), and false while that is not known (not streaming,
	// nothing received yet).
	// Keep is counted back from it rather than from now, and a sweep is
	// skipped while it is false: a ClickHouse outage longer than Keep
	// must not take with it the rows `cdc backfill` would need if the
	// slot is lost meanwhile (max_slot_wal_keep_size).
	Horizon func() (time.Time, bool)
	// Slot, when set, is the replication slot whose hold (Hold) is
	// checked before each batch, with the holds of the database's other
	// logical slots: while one exists nothing is deleted.
	Slot string

	held string // the hold the last sweep found ("" none); only the sweeping goroutine touches it
}

// Run sweeps until ctx ends. A failed sweep is logged and tried again on
// the next tick; retention never stops the connector. While Horizon says
// the pipeline does not stream (starting, reconnecting, standing by) the
// sweep waits for it, checking every second; while the slot's hold exists
// (Hold) nothing is deleted, and the hold is checked again at each tick.
func (c *Cleaner) Run(ctx context.Context) error {
	if c.Keep <= 0 {
		return nil
	}
	next := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(next):
		}
		n, retrySoon, err := c.sweep(ctx)
		// What a sweep deleted is logged however it ended: one cut
		// short (the stream stopped, an error) deleted rows too.
		if n > 0 {
			c.Log.Info("outbox retention", zap.Int64("deleted", n), zap.Duration("older_than", c.Keep))
		}
		if retrySoon {
			next = min(time.Second, c.Every)
			continue
		}
		next = c.Every
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.Log.Warn("outbox retention sweep failed; will retry", zap.Error(err), zap.Duration("retry_in", c.Every))
		}
	}
}

// sweepBatch deletes up to $2 rows older than $1, the first ones in
// (event_date_time, id) order past ($3, $4), and returns how many it chose,
// how many it deleted and the last one's key: the next batch starts past
// it, as text, which PostgreSQL reads back as the column's own type (a
// timestamptz key would compare a zoneless event_date_time in the
// session's TimeZone, hours off). The text is to_json's, ISO 8601 with a
// numeric offset whatever the session's DateStyle: the pool's sessions
// take DateStyle and TimeZone from the DSN, the role or the database, and
// ::text in DateStyle SQL, Postgres or German prints a zone's abbreviation,
// which reads back as another zone (Asia/Kolkata's IST as Israel's) or not
// at all (LMT, before a zone's standard time). The outbox's index on (event_date_time,
// id) finds them, starting at that key: a batch that started at the index's head would walk past the
// entries of every row the sweep's earlier batches deleted (vacuum has not
// removed them yet), which after a long outage is most of a large backlog.
// The first batch of a sweep starts at the head (sweepFirst). No FOR
// UPDATE: it would need UPDATE on outbox, a right the connector's role
// does not have; two sweepers deleting the same row is harmless.
const (
	sweepBatch = `WITH batch AS MATERIALIZED (
	SELECT id, event_date_time FROM outbox
	WHERE event_date_time < $1 AND (event_date_time, id) > ($3, $4::uuid)
	ORDER BY event_date_time, id LIMIT $2),
gone AS (DELETE FROM outbox WHERE id IN (SELECT id FROM batch) RETURNING 1)
` + sweepResult
	sweepFirst = `WITH batch AS MATERIALIZED (
	SELECT id, event_date_time FROM outbox
	WHERE event_date_time < $1
	ORDER BY event_date_time, id LIMIT $2),
gone AS (DELETE FROM outbox WHERE id IN (SELECT id FROM batch) RETURNING 1)
` + sweepResult
	sweepResult = `SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM gone),
	to_json(last.event_date_time) #>> '{}', last.id::text
FROM (SELECT NULL) one LEFT JOIN (SELECT event_date_time, id FROM batch ORDER BY event_date_time DESC, id DESC LIMIT 1) last ON true`
)

// Sweep deletes every row older than Keep (counted back from Horizon's
// time when that is earlier than now), BatchSize rows per statement, and
// returns how many it deleted; none while Horizon says not streaming or
// the slot's hold exists.
func (c *Cleaner) Sweep(ctx context.Context) (int64, error) {
	n, _, err := c.sweep(ctx)
	return n, err
}

// sweep is Sweep, also saying whether to look again within a second
// rather than at the next tick: while Horizon is not known.
func (c *Cleaner) sweep(ctx context.Context) (total int64, retrySoon bool, err error) {
	cutoff := time.Now().Add(-c.Keep)
	var lastTime *string
	var lastID *string
	for {
		// Before each batch, not only each sweep: a sweep through a
		// large backlog runs for minutes, and a hold made meanwhile, or
		// the stream ending, stops it at the next batch. The cutoff only
		// moves back: the keyset paging goes on from where it was.
		if c.Horizon != nil {
			h, ok := c.Horizon()
			if !ok {
				return total, true, nil
			}
			cutoff = minTime(cutoff, h.Add(-c.Keep))
		}
		if held, err := c.checkHold(ctx); err != nil || held {
			return total, false, err
		}
		var chosen, deleted int64
		var err error
		// In UTC: pgx sends a time.Time for a timestamp parameter (an
		// outbox whose event_date_time has no zone, holding UTC wall
		// clocks) as its wall clock in its own zone, hours off under a
		// TZ other than UTC.
		if lastID == nil {
			err = c.deleteBatch(ctx, []any{&chosen, &deleted, &lastTime, &lastID}, sweepFirst, cutoff.UTC(), c.BatchSize)
		} else {
			err = c.deleteBatch(ctx, []any{&chosen, &deleted, &lastTime, &lastID}, sweepBatch, cutoff.UTC(), c.BatchSize, *lastTime, *lastID)
		}
		if err != nil {
			return total, false, fmt.Errorf("delete old outbox rows: %w", err)
		}
		total += deleted
		if chosen < int64(c.BatchSize) || lastID == nil {
			return total, false, nil
		}
		select {
		case <-ctx.Done():
			return total, false, nil
		case <-time.After(c.Pause):
		}
	}
}

// checkHold reports whether the slot's hold exists (false when the
// Cleaner has no Slot), and logs when that changes. An error means not
// known to be free: the caller deletes nothing.
func (c *Cleaner) checkHold(ctx context.Context) (bool, error) {
	if c.Slot == "" {
		return false, nil
	}
	name, heldFor, err := HeldForOutbox(ctx, c.Pool, c.Slot)
	if err != nil {
		return false, err
	}
	switch {
	case name != "" && name != c.held && heldFor != c.Slot:
		c.Log.Warn("outbox retention is held for another replication slot of this database, another pipeline's: its slot was created while the outbox held rows it will never stream, so the outbox keeps them for it until an operator lifts the hold, once that pipeline's `cdc backfill` has shipped them and its `cdc verify` finds nothing missing (docs/operations.md, Outbox retention)",
			zap.String("hold", name), zap.String("held_for", heldFor), zap.String("lift", fmt.Sprintf("SELECT pg_drop_replication_slot('%s')", name)))
	case name != "" && name != c.held:
		c.Log.Warn("outbox retention is held: the replication slot was created while the outbox held rows it will never stream, so the outbox keeps them until an operator lifts the hold; ship them with `cdc backfill --since` the oldest event the outbox holds (not the time of the loss: the gap begins where cdc last acknowledged, before it), and once `cdc verify` from then finds nothing missing drop the hold (docs/operations.md, Outbox retention)",
			zap.String("hold", name), zap.String("lift", fmt.Sprintf("SELECT pg_drop_replication_slot('%s')", name)))
	case name == "" && c.held != "":
		// Warn: a hold dropped by something else than the operator who
		// shipped the gap (a script clearing inactive slots, Patroni)
		// lets retention delete the gap's rows from now on.
		c.Log.Warn("outbox retention hold lifted: retention deletes old outbox rows again; if no operator dropped it after `cdc verify`, see docs/operations.md, Outbox retention",
			zap.String("hold", c.held))
	}
	c.held = name
	return name != "", nil
}

// sweepLockTimeout bounds how long a batch's DELETE waits for a row lock.
// An application transaction that locks an old outbox row (SELECT … FOR
// UPDATE, an UPDATE) held the DELETE for as long as it lived, unseen: no
// log line, no rows deleted, and the DELETE's own lock on the outbox
// queued every ALTER TABLE outbox behind it, and the application's INSERTs
// behind that. Past it the sweep fails, says so, and is tried again at
// the next tick.
var sweepLockTimeout = "10s" // a var: tests wait less

// sweepStatementTimeout is the least statement_timeout a batch runs with
// when the role, the database or the server's configuration sets a shorter
// one (sweepTimeouts). Such a timeout guards the application's queries;
// one shorter than a batch (a database set to 1s, a busy server) failed
// every sweep, each minute, deleting nothing while the outbox grew. A
// batch is BatchSize rows found by the outbox's index, well within this
// however busy the server. Only a shorter one is lifted: none, or a longer
// one, stays, and so does the one CDC_PG_DSN sets, cdc's own, as the
// operator commands keep theirs. A bound where there was none failed every
// batch of an outbox without its index on (event_date_time, id), which
// reads the whole outbox, once that took longer, with no setting to lift it.
var sweepStatementTimeout = 60 * time.Second // a var: tests wait less

// sweepTimeouts sets a batch's lock_timeout ($1) and raises a
// statement_timeout shorter than $2 ms to it, unless the session's came
// from the client (the DSN, its options or PGOPTIONS: pg_settings says
// "client"). pg_settings gives the setting in ms, 0 for none.
const sweepTimeouts = `SELECT set_config('lock_timeout', $1, true),
	(SELECT set_config('statement_timeout', $2::bigint::text, true) FROM pg_settings
	WHERE name = 'statement_timeout' AND source <> 'client' AND setting::bigint BETWEEN 1 AND $2::bigint - 1)`

// rollbackWait bounds a sweep's rollback.
const rollbackWait = 5 * time.Second

// deleteBatch runs one batch's statement in a transaction of its own,
// within sweepLockTimeout and at least sweepStatementTimeout
// (sweepTimeouts), scanning its row into dest.
func (c *Cleaner) deleteBatch(ctx context.Context, dest []any, query string, args ...any) error {
	tx, err := c.Pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() {
		// Even after a shutdown, but bounded: a server that stopped
		// answering would otherwise hold the sweep, and the exit, for ever.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackWait)
		defer cancel()
		_ = tx.Rollback(rctx)
	}()
	if _, err := tx.Exec(ctx, sweepTimeouts, sweepLockTimeout, sweepStatementTimeout.Milliseconds()); err != nil {
		return err
	}
	if err := tx.QueryRow(ctx, query, args...).Scan(dest...); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
