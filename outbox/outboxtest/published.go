package outboxtest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/eventcdc/cdc/outbox"
)

// Querier is what Published needs: pgx.Tx and *pgx.Conn satisfy it.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// publishedSQL selects the outbox rows written by the current transaction,
// its savepoints included (a released savepoint leaves its own xid on the
// rows). A row visible to a transaction whose inserting transaction is
// still in progress can only be its own, so the test is
// pg_xact_status(xmin) = 'in progress'. xmin is a 32-bit xid; it is widened
// to the xid8 that pg_xact_status takes with the epoch of the current
// transaction's id, which the ids of its subtransactions follow.
// Rows come back in insertion order (command id, then position).
const publishedSQL = `
WITH cur AS (SELECT pg_current_xact_id_if_assigned()::text::bigint AS x),
rows AS (
	SELECT o.*, o.cmin::text::bigint AS cmd, o.ctid AS pos,
		(((o.xmin::text::bigint - cur.x % 4294967296) + 6442450944) % 4294967296) - 2147483648 AS ahead,
		cur.x
	FROM outbox o, cur
	WHERE cur.x IS NOT NULL
)
SELECT id, event_type, event_date_time, environment, event_context::text, metadata_version, COALESCE(traceparent, '')
FROM rows
WHERE CASE WHEN ahead >= 0 THEN pg_xact_status((x + ahead)::text::xid8) = 'in progress' ELSE false END
ORDER BY cmd, pos`

// ReadPublished returns the events that the transaction q has written to
// the outbox table so far, in order. Call it before the transaction ends:
// afterwards there is no telling its rows from the others.
func ReadPublished(ctx context.Context, q Querier) ([]outbox.Event, error) {
	rows, err := q.Query(ctx, publishedSQL)
	if err != nil {
		return nil, fmt.Errorf("outboxtest: read published events: %w", err)
	}
	defer rows.Close()
	var events []outbox.Event
	for rows.Next() {
		var e outbox.Event
		var ctxText string
		if err := rows.Scan(&e.ID, &e.Type, &e.Time, &e.Environment, &ctxText, &e.MetadataVersion, &e.Traceparent); err != nil {
			return nil, fmt.Errorf("outboxtest: read published events: %w", err)
		}
		e.Time = e.Time.UTC()
		e.Context = json.RawMessage(ctxText)
		events = append(events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outboxtest: read published events: %w", err)
	}
	return events, nil
}

// Published is ReadPublished for tests: it fails t on error.
func Published(t testing.TB, ctx context.Context, q Querier) []outbox.Event {
	t.Helper()
	events, err := ReadPublished(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	return events
}
