package retention_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

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

	// The batch's subquery, in the first batch and in one after it: a
	// Limit over an index scan that reads the batch's rows and stops.
	for _, q := range []struct {
		name string
		sql  string
		args []any
	}{
		{"first batch", retention.SweepFirst, []any{time.Now().Add(-24 * time.Hour), 100}},
		{"later batch", retention.SweepBatch, []any{time.Now().Add(-24 * time.Hour), 100, "-infinity", "00000000-0000-0000-0000-000000000000"}},
	} {
		nodes := explainAnalyze(t, pool, q.sql, q.args...).Nodes()
		found := false
		for _, n := range nodes {
			if n.Type != "Limit" || len(n.Plans) != 1 {
				continue
			}
			found = found || (n.Plans[0].Type == "Index Scan" || n.Plans[0].Type == "Index Only Scan") &&
				n.Plans[0].Index == ddl.OutboxIndex && n.Plans[0].Rows == 100
		}
		if !found {
			t.Fatalf("plan of the %s\n%+v\nwant its LIMIT over an index scan on %s reading 100 rows", q.name, nodes, ddl.OutboxIndex)
		}
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

// explainAnalyze runs EXPLAIN (ANALYZE, BUFFERS) of a sweep statement, in
// a transaction rolled back: ANALYZE runs the DELETE.
func explainAnalyze(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) testenv.Plan {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // nothing to keep
	var out string
	if err := tx.QueryRow(ctx, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "+sql, args...).Scan(&out); err != nil {
		t.Fatal(err)
	}
	return testenv.ParsePlan(t, out)
}

// A sweep's later batches start where the one before ended: they do not
// walk past the index entries of the rows the sweep already deleted,
// which stay until vacuum removes them (here never: autovacuum is off).
// With 20,000 of them ahead, the next batch of 100 reads a few index
// pages; one from the index's head reads all of theirs.
func TestSweep_LaterBatchesSkipWhatTheSweepDeleted(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	for _, stmt := range []string{
		`ALTER TABLE outbox SET (autovacuum_enabled = false)`,
		`INSERT INTO outbox (event_type, environment, event_context, event_date_time)
			SELECT 'e', 'test', '{}', now() - interval '2 days' + g * interval '1 millisecond' FROM generate_series(1, 20100) g`,
		`ANALYZE outbox`,
	} {
		if _, err := pool.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	// What a sweep's first 200 batches of 100 leave: the key of the last
	// row they deleted, and the rows, deleted.
	var lastTime pgtype.Timestamptz
	var lastID string
	err := pool.QueryRow(ctx, `SELECT event_date_time, id::text FROM outbox ORDER BY event_date_time, id OFFSET 19999 LIMIT 1`).Scan(&lastTime, &lastID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `DELETE FROM outbox WHERE (event_date_time, id) <= ($1, $2::uuid)`, lastTime, lastID); err != nil {
		t.Fatal(err)
	}
	cutoff := time.Now().Add(-24 * time.Hour)
	indexBlocks := func(p testenv.Plan) int64 {
		for _, n := range p.Nodes() {
			if n.Index == ddl.OutboxIndex {
				return n.SharedHitBlocks + n.SharedReadBlocks
			}
		}
		t.Fatalf("no scan of %s in %+v", ddl.OutboxIndex, p.Nodes())
		return 0
	}
	next := indexBlocks(explainAnalyze(t, pool, retention.SweepBatch, cutoff, 100, lastTime, lastID))
	fromHead := indexBlocks(explainAnalyze(t, pool, retention.SweepFirst, cutoff, 100))
	t.Logf("blocks read by the next batch: %d; by a batch from the index's head: %d", next, fromHead)
	if next > 20 || fromHead < 5*next {
		t.Fatalf("the next batch read %d blocks, one from the head %d: want at most 20, and a fifth of the head's", next, fromHead)
	}
	// The keys a sweep of batches of 30 must start each later batch past:
	// the 30th, 60th and 90th of the 100 rows left.
	var want []string
	rows, err := pool.Query(ctx, `SELECT id::text FROM outbox ORDER BY event_date_time, id`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(ids) != 100 {
		t.Fatalf("%d rows left, %v; want 100", len(ids), err)
	}
	want = append(want, ids[29], ids[59], ids[89])

	// Sweep itself, on a pool that records its statements: the first
	// batch from the head, each later one past the key the one before
	// returned.
	traced, rec := testenv.RecordedPool(t, pool, nil)
	c := &retention.Cleaner{Pool: traced, Keep: 24 * time.Hour, BatchSize: 30}
	if deleted, err := c.Sweep(ctx); err != nil || deleted != 100 {
		t.Fatalf("sweep deleted %d rows, %v; want the 100 left", deleted, err)
	}
	// Each batch in a transaction of its own, its lock wait and its
	// statement bounded.
	sql, args := rec.SQL(), rec.Args()
	if len(sql) != 16 {
		t.Fatalf("sweep ran %d statements %.60q; want 4 batches of 4", len(sql), sql)
	}
	for i := 0; i < 4; i++ {
		stmt := retention.SweepBatch
		if i == 0 {
			stmt = retention.SweepFirst
		}
		if got := sql[4*i : 4*i+4]; !slices.Equal(got, []string{"begin", retention.SweepTimeouts, stmt, "commit"}) {
			t.Fatalf("batch %d ran %.70q; want begin, its lock_timeout and statement_timeout, its DELETE, commit", i, got)
		}
		if got := args[4*i+1]; !slices.Equal(got, []any{"10s", int64(60000)}) {
			t.Fatalf("batch %d's timeouts %v; want lock_timeout 10s and statement_timeout at least 60000 ms", i, got)
		}
		if i > 0 {
			if got := args[4*i+2][3]; got != want[i-1] {
				t.Errorf("batch %d started past %v; want %s", i, got, want[i-1])
			}
		}
	}
}
