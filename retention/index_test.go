package retention_test

import (
	"context"
	"testing"
	"time"

	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/retention"
	ddl "github.com/eventcdc/cdc/sql"
)

// With the index on event_date_time alone gone, a sweep's batch finds the
// old rows through the outbox's index on (event_date_time, id), reading
// those and no others; the sweep deletes exactly them.
func TestSweep_FindsOldRowsThroughTheIndex(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	// 50,000 rows of a bulk insert a minute ago, 300 rows of two days ago.
	for _, stmt := range []string{
		`INSERT INTO outbox (event_type, environment, event_context, event_date_time)
			SELECT 'e', 'test', json_build_object('n', g), now() - interval '1 minute' FROM generate_series(1, 50000) g`,
		`INSERT INTO outbox (event_type, environment, event_context, event_date_time)
			SELECT 'e', 'test', json_build_object('n', g), now() - interval '2 days' - g * interval '1 second' FROM generate_series(1, 300) g`,
		`ANALYZE outbox`,
	} {
		if _, err := pool.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}

	// EXPLAIN ANALYZE runs the DELETE: in a transaction rolled back.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	err = tx.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+retention.SweepBatch, time.Now().Add(-24*time.Hour), 100).Scan(&out)
	tx.Rollback(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The batch's subquery: a Limit over an index scan that reads the
	// batch's rows and stops.
	nodes := testenv.ParsePlan(t, out).Nodes()
	found := false
	for _, n := range nodes {
		if n.Type != "Limit" {
			continue
		}
		found = len(n.Plans) == 1 && (n.Plans[0].Type == "Index Scan" || n.Plans[0].Type == "Index Only Scan") &&
			n.Plans[0].Index == ddl.OutboxIndex && n.Plans[0].Rows == 100
	}
	if !found {
		t.Fatalf("plan of the batch\n%+v\nwant its LIMIT over an index scan on %s reading 100 rows", nodes, ddl.OutboxIndex)
	}

	c := &retention.Cleaner{Pool: pool, Keep: 24 * time.Hour, BatchSize: 100}
	deleted, err := c.Sweep(ctx)
	if err != nil || deleted != 300 {
		t.Fatalf("sweep deleted %d rows, %v; want 300", deleted, err)
	}
	var left, old int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE event_date_time < now() - interval '1 day') FROM outbox`).Scan(&left, &old); err != nil {
		t.Fatal(err)
	}
	if left != 50000 || old != 0 {
		t.Fatalf("outbox holds %d rows, %d of them old; want 50000 and 0", left, old)
	}
}
