package status

import (
	"context"
	"fmt"
	"time"
)

// Outbox counts the rows in the outbox table.
type Outbox struct {
	Rows int64
	// AtInfinity counts the rows whose event_date_time is 'infinity' or
	// '-infinity'. ClickHouse cannot store them: the connector sets them
	// aside as dead letters, and retention never deletes those at
	// 'infinity', so they stay until an operator deletes them.
	AtInfinity int64
}

// CountOutbox counts the outbox's rows, and those at ±infinity among them,
// in one pass over the table.
func CountOutbox(ctx context.Context, q Querier) (Outbox, error) {
	var o Outbox
	if err := q.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE NOT isfinite(event_date_time)) FROM outbox`).
		Scan(&o.Rows, &o.AtInfinity); err != nil {
		return o, fmt.Errorf("count outbox rows: %w", err)
	}
	return o, nil
}

// OldestPending returns the earliest event_date_time at or after from; nil
// when there is none. Rows at 'infinity' are left out: they lie after every
// time, so a single one would be the answer whenever no other row is, and
// no time.Time holds it; they are dead letters, never stored, not lag.
// Rows at '-infinity' lie before every from.
func OldestPending(ctx context.Context, q Querier, from time.Time) (*time.Time, error) {
	var oldest *time.Time
	if err := q.QueryRow(ctx, `SELECT min(event_date_time) FROM outbox WHERE event_date_time >= $1 AND event_date_time < 'infinity'`,
		from).Scan(&oldest); err != nil {
		return nil, fmt.Errorf("read the oldest outbox row from %s: %w", from.Format(time.RFC3339), err)
	}
	return oldest, nil
}
