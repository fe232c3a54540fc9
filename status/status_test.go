package status

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/metrics"
	"github.com/eventcdc/cdc/retention"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// The monitor's slot gauges follow the slot while PostgreSQL answers, and
// a poll that fails marks the slot not active — the alerts on it fire —
// rather than leaving the last good reading standing.
func TestMonitor_FailedPollMarksSlotNotActive(t *testing.T) {
	env := testenv.Get(t)
	dsn := env.NewPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	const slot = "status_test"
	for _, q := range []string{
		`CREATE TABLE t (v int)`,
		`CREATE PUBLICATION p FOR TABLE t`,
		// Counted by each good poll, once a minute.
		`CREATE TABLE cdc_dead_letter (id int)`,
		`SELECT pg_create_logical_replication_slot('` + slot + `', 'pgoutput')`,
		`INSERT INTO t SELECT generate_series(1, 1000)`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	m := metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() })
	mon := &Monitor{Pool: pool, Slot: slot, Every: 5 * time.Second, Metrics: m, Log: zap.NewNop()}

	// Nobody streams the slot yet. The lag counts the cluster's WAL, which
	// other tests' databases write meanwhile: the poll's reading lies
	// between one taken before it and one after.
	before, err := ReadSlot(ctx, pool, slot)
	if err != nil {
		t.Fatal(err)
	}
	mon.poll(ctx)
	after, err := ReadSlot(ctx, pool, slot)
	if err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.SlotActive); got != 0 {
		t.Fatalf("cdc_slot_active = %v with no consumer, want 0", got)
	}
	if got := testutil.ToFloat64(m.LagBytes); got < float64(before.LagBytes) || got > float64(after.LagBytes) || before.LagBytes <= 0 {
		t.Fatalf("cdc_replication_lag_bytes = %v, slot lag %d bytes before the poll and %d after; want between them and positive",
			got, before.LagBytes, after.LagBytes)
	}

	// A walsender streams it.
	testenv.StreamSlot(ctx, t, dsn, slot, "p")
	mon.poll(ctx)
	if got := testutil.ToFloat64(m.SlotActive); got != 1 {
		t.Fatalf("cdc_slot_active = %v while streaming, want 1", got)
	}
	lag := testutil.ToFloat64(m.LagBytes)

	// PostgreSQL stops answering the monitor; the walsender still runs.
	unreachable, err := pgxpool.New(ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer unreachable.Close()
	mon.Pool = unreachable
	mon.poll(ctx)
	mon.poll(ctx)
	if got := testutil.ToFloat64(m.SlotActive); got != 0 {
		t.Fatalf("cdc_slot_active = %v after failed polls, want 0", got)
	}
	if got := testutil.ToFloat64(m.SlotPollErrors); got != 2 {
		t.Fatalf("cdc_slot_poll_errors_total = %v after 2 failed polls, want 2", got)
	}
	if got := testutil.ToFloat64(m.LagBytes); got != lag {
		t.Fatalf("cdc_replication_lag_bytes = %v after failed polls, want the last reading %v", got, lag)
	}

	// It answers again.
	mon.Pool = pool
	mon.poll(ctx)
	if got := testutil.ToFloat64(m.SlotActive); got != 1 {
		t.Fatalf("cdc_slot_active = %v once polls succeed again, want 1", got)
	}
	if got := testutil.ToFloat64(m.SlotPollErrors); got != 2 {
		t.Fatalf("cdc_slot_poll_errors_total = %v after a good poll, want still 2", got)
	}
}

// The oldest pending row is the earliest finite event_date_time from a
// time on: rows at 'infinity' (after every time) and '-infinity' (before
// every time) are dead letters, never pending, whatever the time.
func TestOldestPending_LeavesOutRowsAtInfinity(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	t1 := time.Date(2026, 3, 1, 10, 0, 0, 500000000, time.UTC)
	t2 := time.Date(2026, 4, 4, 4, 4, 4, 123456000, time.UTC)
	for _, at := range []string{"infinity", "-infinity", t2.Format(time.RFC3339Nano), "infinity", t1.Format(time.RFC3339Nano)} {
		if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
			VALUES ('e', 'test', '{}', $1::timestamptz)`, at); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name string
		from time.Time
		want *time.Time
	}{
		{"from the zero time", time.Time{}, &t1},
		{"from the first row", t1, &t1},
		{"just after the first row", t1.Add(time.Microsecond), &t2},
		{"from the last row", t2, &t2},
		{"after every finite row", t2.Add(time.Second), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := OldestPending(ctx, pool, tt.from, "", slot)
			if err != nil {
				t.Fatal(err)
			}
			if (got == nil) != (tt.want == nil) || got != nil && !got.Equal(*tt.want) {
				t.Fatalf("OldestPending(%s) = %v, want %v", tt.from.Format(time.RFC3339Nano), got, tt.want)
			}
		})
	}
}

func TestCountOutbox_CountsRowsAtInfinityApart(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	if got, err := CountOutbox(ctx, pool, 100); err != nil || got != (Outbox{}) {
		t.Fatalf("CountOutbox of an empty outbox = %+v, %v; want zero", got, err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT 'e', 'test', '{}', at::timestamptz
		FROM unnest(ARRAY['infinity', '-infinity', 'infinity', '2026-03-01 10:00:00+00', '9999-12-31 23:59:59+00', '0001-01-01 00:00:00+00']) at`); err != nil {
		t.Fatal(err)
	}
	if got, err := CountOutbox(ctx, pool, 100); err != nil || got != (Outbox{Rows: 6, AtInfinity: 3}) {
		t.Fatalf("CountOutbox = %+v, %v; want 6 rows, 3 at infinity", got, err)
	}
}

// Past the bound the count is the planner's: exact up to it, then the
// density of the last ANALYZE over the pages now, never less than what was
// counted (there is no density before the first ANALYZE).
func TestCountOutbox_EstimatesPastTheBound(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	// No autoanalyze to move the estimate under the test.
	if _, err := pool.Exec(ctx, `ALTER TABLE outbox SET (autovacuum_enabled = false)`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT 'e', 'test', '{}', CASE WHEN g <= 2 THEN 'infinity' ELSE now() END FROM generate_series(1, 500) g`); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name      string
		exactUpTo int64
		analyze   bool
		want      Outbox
	}{
		{"within the bound", 500, false, Outbox{Rows: 500, AtInfinity: 2}},
		{"past it, never analyzed", 499, false, Outbox{Rows: 500, Estimated: true, AtInfinity: 2}},
		{"past it, analyzed", 100, true, Outbox{Rows: 500, Estimated: true, AtInfinity: 2}},
		{"past it, estimate behind", 10, false, Outbox{Rows: 500, Estimated: true, AtInfinity: 2}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.analyze {
				if _, err := pool.Exec(ctx, `ANALYZE outbox`); err != nil {
					t.Fatal(err)
				}
			}
			if got, err := CountOutbox(ctx, pool, tt.exactUpTo); err != nil || got != tt.want {
				t.Fatalf("CountOutbox(%d) = %+v, %v; want %+v", tt.exactUpTo, got, err, tt.want)
			}
		})
	}
	// 500 more rows: the ANALYZE said 500, the pages say about 1000; a
	// count past the bound that finds more than the estimate says that.
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context) SELECT 'e', 'test', '{}' FROM generate_series(1, 500)`); err != nil {
		t.Fatal(err)
	}
	if got, err := CountOutbox(ctx, pool, 10); err != nil || !got.Estimated || got.Rows < 900 || got.Rows > 1100 || got.AtInfinity != 2 {
		t.Fatalf("CountOutbox(10) of 1000 rows after an ANALYZE of 500 = %+v, %v; want about 1000, estimated", got, err)
	}
	if got, err := CountOutbox(ctx, pool, 1500); err != nil || got != (Outbox{Rows: 1000, AtInfinity: 2}) {
		t.Fatalf("CountOutbox(1500) = %+v, %v; want the 1000 counted", got, err)
	}
}

// A row set aside as a dead letter is not pending: the oldest pending row
// is the next one, or none.
func TestOldestPending_LeavesOutDeadLetters(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	t1 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Hour)
	refused := outboxRowsAt(t, pool, t1, t2)[0]
	if _, err := pool.Exec(ctx, `INSERT INTO cdc_dead_letter (event_id, commit_lsn, seq, row_data, error)
		VALUES ($1::uuid, '0/100', 1, '{}', 'refused')`, refused); err != nil {
		t.Fatal(err)
	}
	got, err := OldestPending(ctx, pool, t1, "", slot)
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || !got.Equal(t2) {
		t.Fatalf("OldestPending with the first row a dead letter = %v, want %s", got, t2)
	}
	if _, err := pool.Exec(ctx, `DELETE FROM outbox WHERE event_date_time = $1`, t2); err != nil {
		t.Fatal(err)
	}
	if got, err := OldestPending(ctx, pool, t1, "", slot); err != nil || got != nil {
		t.Fatalf("OldestPending with only a dead letter left = %v, %v; want none", got, err)
	}
}

// outboxRowsAt inserts an outbox event at each time and returns their ids.
func outboxRowsAt(t *testing.T, pool *pgxpool.Pool, times ...time.Time) []string {
	t.Helper()
	ids := make([]string, len(times))
	for i, at := range times {
		if err := pool.QueryRow(context.Background(), `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
			VALUES ('e', 'test', '{}', $1) RETURNING id::text`, at).Scan(&ids[i]); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// slot is the pipeline the tests read the lag of.
const slot = "pipe_a"

// Another pipeline's dead letter (another slot's: its ClickHouse refused
// the row) is pending for this one, which has not stored it: left out, it
// hid this pipeline's lag behind it, 0 when it was the last row. Its own
// letters, and those of no slot (an earlier build's), are set aside, and
// on a table without slot_name every letter is.
func TestOldestPending_LeavesOutOnlyThePipelinesDeadLetters(t *testing.T) {
	ctx := context.Background()
	t1 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Hour)
	for _, tc := range []struct {
		name   string
		column bool    // cdc_dead_letter has slot_name
		slot   *string // of the letter of the row at t1
		want   *time.Time
	}{
		{"another slot's letter", true, ptr("pipe_b"), &t1},
		{"the pipeline's letter", true, ptr(slot), &t2},
		{"a letter of no slot", true, nil, &t2},
		{"a letter on a table without slot_name", false, nil, &t2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool := testenv.Get(t).MigratedPostgres(t, "pub")
			refused := outboxRowsAt(t, pool, t1, t2)[0]
			if !tc.column {
				if _, err := pool.Exec(ctx, `ALTER TABLE cdc_dead_letter DROP COLUMN slot_name`); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := pool.Exec(ctx, `INSERT INTO cdc_dead_letter (event_id, commit_lsn, seq, row_data, error)
				VALUES ($1::uuid, '0/100', 1, '{}', 'refused')`, refused); err != nil {
				t.Fatal(err)
			}
			if tc.slot != nil {
				if _, err := pool.Exec(ctx, `UPDATE cdc_dead_letter SET slot_name = $1`, *tc.slot); err != nil {
					t.Fatal(err)
				}
			}
			got, err := OldestPending(ctx, pool, t1, "", slot)
			if err != nil {
				t.Fatal(err)
			}
			if got == nil || !got.Equal(*tc.want) {
				t.Fatalf("OldestPending of pipeline %s = %v, want %s", slot, got, tc.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// The oldest pending row is found by walking the outbox's index from the
// time asked, not by reading every row after it: after a ClickHouse
// outage that is the whole backlog, when an operator runs cdc status.
func TestOldestPending_ReadsFewBlocksOfABacklog(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	for _, stmt := range []string{
		`INSERT INTO outbox (event_type, environment, event_context, event_date_time)
			SELECT 'e', 'test', '{}', now() - interval '1 hour' + g * interval '1 millisecond' FROM generate_series(1, 100000) g`,
		`ANALYZE outbox`,
	} {
		if _, err := pool.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	var out string
	if err := pool.QueryRow(ctx, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "+oldestPendingQuery, time.Now().Add(-2*time.Hour), slot).Scan(&out); err != nil {
		t.Fatal(err)
	}
	plan := testenv.ParsePlan(t, out)
	if blocks := plan.SharedHitBlocks + plan.SharedReadBlocks; blocks > 50 {
		t.Fatalf("the oldest pending row of 100,000 read %d blocks, want at most 50:\n%+v", blocks, plan.Nodes())
	}
	if got, err := OldestPending(ctx, pool, time.Now().Add(-2*time.Hour), "", slot); err != nil || got == nil {
		t.Fatalf("OldestPending = %v, %v; want the first of the backlog", got, err)
	}
}

// cdc_outbox_retention_held follows the hold: 1 while it exists, 0 once
// an operator dropped it.
func TestMonitor_ReportsTheRetentionHold(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	slot := testenv.Name("mon")
	hold := retention.HoldName(slot)
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, hold)
	})
	m := metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() })
	mon := &Monitor{Pool: pool, Slot: slot, Every: 5 * time.Second, Metrics: m, Log: zap.NewNop()}
	for _, step := range []struct {
		sql  string
		want float64
	}{
		{"", 0},
		{`SELECT pg_create_physical_replication_slot('` + hold + `', false)`, 1},
		{`SELECT pg_drop_replication_slot('` + hold + `')`, 0},
	} {
		if step.sql != "" {
			if _, err := pool.Exec(ctx, step.sql); err != nil {
				t.Fatal(err)
			}
		}
		mon.poll(ctx)
		if got := testutil.ToFloat64(m.RetentionHeld); got != step.want {
			t.Fatalf("after %q cdc_outbox_retention_held = %v, want %v", step.sql, got, step.want)
		}
	}
	if got := testutil.ToFloat64(m.SlotPollErrors); got != 0 {
		t.Fatalf("cdc_slot_poll_errors_total = %v, want 0", got)
	}
	// No hold, but this process created its slot and could not make one:
	// it pauses its own retention, and says so the same way.
	mon.Paused = func() bool { return true }
	mon.poll(ctx)
	if got := testutil.ToFloat64(m.RetentionHeld); got != 1 {
		t.Fatalf("cdc_outbox_retention_held = %v while this process pauses retention without a hold, want 1", got)
	}
}

// cdc_dead_letters_waiting counts the slot's letters in cdc_dead_letter
// (and those of no slot), not another slot's, once a minute and up to
// lettersCap.
func TestMonitor_CountsDeadLettersWaiting(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	m := metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() })
	slot := testenv.Name("mon")
	mon := &Monitor{Pool: pool, Slot: slot, Every: 5 * time.Second, Metrics: m, Log: zap.NewNop()}
	letters := func(n int, slot *string) {
		t.Helper()
		if _, err := pool.Exec(ctx, `INSERT INTO cdc_dead_letter (event_id, commit_lsn, seq, row_data, error, slot_name)
			SELECT gen_random_uuid(), '0/10'::pg_lsn, g, '{}', 'refused for the test', $2 FROM generate_series(1, $1) g`, n, slot); err != nil {
			t.Fatal(err)
		}
	}
	other := "another_pipeline"
	for _, step := range []struct {
		name   string
		add    int
		slot   *string // nil: a letter of no slot (an earlier build's)
		recent bool    // counted less than a minute ago
		want   float64
	}{
		{"none", 0, &slot, false, 0},
		{"three added, read within the minute", 3, &slot, true, 0},
		{"read a minute later", 0, &slot, false, 3},
		{"another slot's letters are not counted", 5, &other, false, 3},
		{"letters of no slot are every pipeline's", 2, nil, false, 5},
		{"past the cap", lettersCap, &slot, false, lettersCap},
	} {
		letters(step.add, step.slot)
		if !step.recent {
			mon.lettersRead = time.Time{}
		}
		mon.poll(ctx)
		if got := testutil.ToFloat64(m.LettersWaiting); got != step.want {
			t.Fatalf("%s: cdc_dead_letters_waiting = %v, want %v", step.name, got, step.want)
		}
	}
	if got := testutil.ToFloat64(m.SlotPollErrors); got != 0 {
		t.Fatalf("cdc_slot_poll_errors_total = %v, want 0", got)
	}

}

// Slot names are the cluster's: a slot of the name in another database is
// reported as that database's, not read as this one's.
func TestReadSlot_NamesTheDatabaseOfAnotherDatabasesSlot(t *testing.T) {
	env := testenv.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pools := make([]*pgxpool.Pool, 2)
	names := make([]string, 2)
	for i := range pools {
		pool, err := pgxpool.New(ctx, env.NewPostgres(t))
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		if err := pool.QueryRow(ctx, `SELECT current_database()`).Scan(&names[i]); err != nil {
			t.Fatal(err)
		}
		pools[i] = pool
	}
	slot := testenv.Name("elsewhere")
	if _, err := pools[0].Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
		t.Fatal(err)
	}
	defer pools[0].Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, slot) //nolint:errcheck // best effort
	for i, want := range []string{"", names[0]} {
		s, err := ReadSlot(ctx, pools[i], slot)
		if err != nil || !s.Exists || s.OtherDatabase != want {
			t.Fatalf("ReadSlot from database %s: exists %v, other database %q (%v); want true, %q", names[i], s.Exists, s.OtherDatabase, err, want)
		}
	}
}

// An outbox whose event_date_time has no zone holds UTC wall clocks:
// OldestPending reads from an instant, in whatever zone it comes (`cdc
// status` passes ClickHouse's newest time, in the server's zone).
func TestOldestPending_ZonelessTimesAreUTC(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	if _, err := pool.Exec(ctx, `ALTER TABLE outbox ALTER COLUMN event_date_time TYPE timestamp`); err != nil {
		t.Fatal(err)
	}
	t1 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	t2 := t1.Add(2 * time.Hour)
	for _, at := range []time.Time{t1, t2} {
		if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
			VALUES ('e', 'test', '{}', $1::text::timestamp)`, at.Format("2006-01-02 15:04:05")); err != nil {
			t.Fatal(err)
		}
	}
	for _, zone := range []*time.Location{time.UTC, time.FixedZone("west", -5*3600), time.FixedZone("east", 9*3600)} {
		t.Run(zone.String(), func(t *testing.T) {
			from := t1.Add(time.Second).In(zone)
			got, err := OldestPending(ctx, pool, from, "", slot)
			if err != nil {
				t.Fatal(err)
			}
			if got == nil || !got.Equal(t2) {
				t.Fatalf("OldestPending(%s) = %v, want %v", from.Format(time.RFC3339), got, t2)
			}
		})
	}
}
