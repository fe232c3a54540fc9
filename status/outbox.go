package status

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventcdc/cdc/deadletter"
)

// Outbox counts the rows in the outbox table.
type Outbox struct {
	Rows int64
	// Estimated is set when Rows is the planner's estimate: there were
	// more rows than CountOutbox counts exactly.
	Estimated bool
	// AtInfinity counts the rows whose event_date_time is 'infinity' or
	// '-infinity'. ClickHouse cannot store them: the connector sets them
	// aside as dead letters, and retention never deletes those at
	// 'infinity', so they stay until an operator deletes them.
	AtInfinity int64
}

// CountOutbox counts the outbox's rows exactly up to exactUpTo; past that
// Rows is the planner's estimate (at least exactUpTo+1) and Estimated is
// set. An exact count reads the whole table: on an outbox of hundreds of
// millions of rows (retention off, or held) that takes minutes, and the
// number matters only as "about". Those at ±infinity are counted through
// the index on event_date_time.
func CountOutbox(ctx context.Context, q Querier, exactUpTo int64) (Outbox, error) {
	var o Outbox
	if err := q.QueryRow(ctx, `SELECT (SELECT count(*) FROM (SELECT FROM outbox LIMIT $1) c),
		(SELECT count(*) FROM outbox WHERE event_date_time IN ('infinity', '-infinity'))`, exactUpTo+1).
		Scan(&o.Rows, &o.AtInfinity); err != nil {
		return o, fmt.Errorf("count outbox rows: %w", err)
	}
	if o.Rows <= exactUpTo {
		return o, nil
	}
	// As the planner estimates: the density of the last VACUUM or
	// ANALYZE (reltuples per relpages) over the table's pages now, which
	// follows growth since. -1 before the first one; and never less than
	// what was counted.
	var estimate int64
	if err := q.QueryRow(ctx, `SELECT CASE WHEN c.reltuples > 0 AND c.relpages > 0
		THEN (c.reltuples / c.relpages * (pg_relation_size(c.oid) / current_setting('block_size')::int))::bigint
		ELSE -1 END
		FROM pg_class c WHERE c.oid = 'outbox'::regclass`).Scan(&estimate); err != nil {
		return o, fmt.Errorf("read the planner's estimate of outbox rows: %w", err)
	}
	o.Rows, o.Estimated = max(estimate, o.Rows), true
	return o, nil
}

// oldestPendingRows are the rows past $1 that are not the dead letters
// of the pipeline of slot $2 (deadletter.Mine: its own and those of no
// slot). Another pipeline's letter is a row its ClickHouse refused, which
// this one's has not stored either until it streams it.
func oldestPendingRows(tagged bool) string {
	return `SELECT o.event_date_time FROM outbox o
	WHERE o.event_date_time >= $1 AND o.event_date_time < 'infinity'
	AND NOT EXISTS (SELECT 1 FROM cdc_dead_letter d WHERE d.event_id = o.id AND ` + deadletter.Mine(tagged, 2) + `)`
}

const oldestPendingOrder = `
	ORDER BY o.event_date_time LIMIT 1`

// oldestPendingQuery is OldestPending's statement, without a row filter.
var oldestPendingQuery = oldestPendingRows(true) + oldestPendingOrder

// OldestPending returns the earliest event_date_time at or after from of a
// row that is not a dead letter of the pipeline of slot (its own, or one
// of no slot: deadletter.Store); nil when there is none. A dead letter is
// set aside, not pending: counted as lag, one refused row would read as a
// lag growing for as long as no later event is stored. Rows at 'infinity'
// are always left out: they are dead letters (ClickHouse holds no such
// time), lie after every time, and no time.Time holds them. Rows at
// '-infinity' lie before every from. rowFilter, the publication's row
// filter (backfill.RowFilter, "" for none), leaves out the rows it does
// not pass: cdc run is never sent them, and counted, an hour of another
// environment's events past event_log's newest read as an hour of lag.
func OldestPending(ctx context.Context, q Querier, from time.Time, rowFilter, slot string) (*time.Time, error) {
	tagged, err := deadletter.SlotColumn(ctx, q)
	if err != nil {
		return nil, err
	}
	var oldest *time.Time
	// ORDER BY … LIMIT 1, not min(): with the anti-join PostgreSQL would
	// read every row from `from` on (a whole backlog) for min(), where
	// this walks the index and stops at the first row that is no dead
	// letter.
	// from in UTC: pgx sends a time.Time for a timestamp parameter (an
	// outbox whose event_date_time has no zone, holding UTC wall clocks)
	// as its wall clock in its own zone, and `cdc status` passes the time
	// ClickHouse returned, in the server's zone.
	query := oldestPendingRows(tagged) + oldestPendingOrder
	if rowFilter != "" {
		// Its columns are unqualified, which here name the outbox's: the
		// dead letters are only in the subquery.
		query = oldestPendingRows(tagged) + "\n\tAND (" + rowFilter + ")" + oldestPendingOrder
	}
	err = q.QueryRow(ctx, query, from.UTC(), slot).Scan(&oldest)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the oldest outbox row from %s: %w", from.Format(time.RFC3339), err)
	}
	return oldest, nil
}
