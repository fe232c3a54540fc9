package retention

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// Retention goes by event_date_time alone. A row at '-infinity' is older
// than any cutoff and goes at the first sweep; a row at 'infinity' never is
// and stays for ever, as a row dated in the future stays until its date
// has passed by Keep. Sweeps delete BatchSize rows per statement until
// none is left to delete. The operator deletes those at infinity with the
// SQL docs/operations.md gives.
func TestSweep_DeletesRowsOlderThanKeepAndNeverThoseAtInfinity(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	rows := []struct {
		name    string
		at      string // SQL expression of event_date_time
		deleted bool
	}{
		{"two hours old", `now() - interval '2 hours'`, true},
		{"a day old", `now() - interval '1 day'`, true},
		{"in year 1", `'0001-01-01 00:00:00+00'`, true},
		{"at -infinity", `'-infinity'`, true},
		{"second at -infinity", `'-infinity'`, true},
		{"a minute old", `now() - interval '1 minute'`, false},
		{"now", `now()`, false},
		{"in a day", `now() + interval '1 day'`, false},
		{"in year 9999", `'9999-12-31 23:59:59+00'`, false},
		{"at infinity", `'infinity'`, false},
		{"second at infinity", `'infinity'`, false},
		{"third at infinity", `'infinity'`, false},
	}
	var kept []string
	name := map[string]string{}
	for _, r := range rows {
		id := uuid.NewString()
		if _, err := pool.Exec(ctx, `INSERT INTO outbox (id, event_type, environment, event_context, event_date_time)
			VALUES ($1, 'e', 'test', '{}', `+r.at+`)`, id); err != nil {
			t.Fatalf("insert the row %s: %v", r.name, err)
		}
		name[id] = r.name
		if !r.deleted {
			kept = append(kept, id)
		}
	}
	slices.Sort(kept)

	c := &Cleaner{Pool: pool, Keep: time.Hour, BatchSize: 2, Log: zap.NewNop()}
	for sweep, want := range []int64{5, 0} {
		n, err := c.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Fatalf("sweep %d deleted %d rows, want %d", sweep+1, n, want)
		}
		if got := outboxIDs(t, pool); !slices.Equal(got, kept) {
			var names []string
			for _, id := range got {
				names = append(names, name[id])
			}
			t.Fatalf("after sweep %d the outbox holds %q, want %d rows: every one not marked deleted", sweep+1, names, len(kept))
		}
	}

	// What docs/operations.md (Rows dated infinity) gives an operator to
	// find and delete them.
	found, err := pool.Query(ctx, `SELECT o.id::text, o.event_type,
	       EXISTS (SELECT 1 FROM cdc_dead_letter d WHERE d.event_id = o.id) AS dead_letter
	FROM outbox o WHERE o.event_date_time = 'infinity'`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		ID         string
		EventType  string
		DeadLetter bool
	}
	atInfinity, err := pgx.CollectRows(found, pgx.RowToStructByPos[row])
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range atInfinity {
		if f.EventType != "e" || f.DeadLetter {
			t.Fatalf("found %+v, want event type e and no dead letter", f)
		}
		names = append(names, name[f.ID])
	}
	slices.Sort(names)
	if want := []string{"at infinity", "second at infinity", "third at infinity"}; !slices.Equal(names, want) {
		t.Fatalf("the operator's query finds %q, want %q", names, want)
	}
	tag, err := pool.Exec(ctx, `DELETE FROM outbox WHERE event_date_time = 'infinity'`)
	if err != nil || tag.RowsAffected() != 3 {
		t.Fatalf("the operator's DELETE deleted %d rows (%v), want 3", tag.RowsAffected(), err)
	}
	if n := len(outboxIDs(t, pool)); n != len(kept)-3 {
		t.Fatalf("%d outbox rows left, want %d", n, len(kept)-3)
	}
}

// Keep is counted back from the pipeline's horizon: while events wait
// unstored (ClickHouse down), rows up to Keep before the oldest of them
// stay, however old; while the pipeline does not stream, nothing goes.
func TestSweep_KeepsRowsThePipelineHasNotCaughtUpWith(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	ages := map[string]time.Duration{"30h": 30 * time.Hour, "26h": 26 * time.Hour, "20h": 20 * time.Hour, "2h": 2 * time.Hour}
	age := map[string]string{}
	for name, a := range ages {
		id := uuid.NewString()
		if _, err := pool.Exec(ctx, `INSERT INTO outbox (id, event_type, environment, event_context, event_date_time)
			VALUES ($1, 'e', 'test', '{}', now() - $2::interval)`, id, a.String()); err != nil {
			t.Fatal(err)
		}
		age[id] = name
	}
	left := func() []string {
		var out []string
		for _, id := range outboxIDs(t, pool) {
			out = append(out, age[id])
		}
		slices.Sort(out)
		return out
	}
	for _, step := range []struct {
		name    string
		horizon func() (time.Time, bool)
		deleted int64
		left    []string
	}{
		{"not streaming", func() (time.Time, bool) { return time.Time{}, false }, 0, []string{"20h", "26h", "2h", "30h"}},
		{"an event unstored for 4 hours", func() (time.Time, bool) { return time.Now().Add(-4 * time.Hour), true }, 1, []string{"20h", "26h", "2h"}},
		{"a horizon in the future counts from now", func() (time.Time, bool) { return time.Now().Add(time.Hour), true }, 1, []string{"20h", "2h"}},
		{"caught up", func() (time.Time, bool) { return time.Now(), true }, 0, []string{"20h", "2h"}},
	} {
		c := &Cleaner{Pool: pool, Keep: 24 * time.Hour, BatchSize: 10, Log: zap.NewNop(), Horizon: step.horizon}
		n, err := c.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := left(); n != step.deleted || !slices.Equal(got, step.left) {
			t.Fatalf("%s: deleted %d, left %q; want %d, %q", step.name, n, got, step.deleted, step.left)
		}
	}
}

// The horizon is read before each batch, not only each sweep: a sweep
// through a backlog runs for minutes, and one whose pipeline stops
// streaming (or falls behind) meanwhile deletes nothing more past what the
// horizon now allows.
func TestSweep_ReadsTheHorizonBeforeEachBatch(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT 'e', 'test', '{}', now() - interval '3 hours' + g * interval '1 minute' FROM generate_series(1, 9) g`); err != nil {
		t.Fatal(err)
	}
	calls := 0
	c := &Cleaner{Pool: pool, Keep: time.Hour, BatchSize: 2, Log: zap.NewNop(), Horizon: func() (time.Time, bool) {
		calls++
		return time.Now(), calls == 1
	}}
	n, retry, err := c.sweep(ctx)
	if err != nil || n != 2 || !retry || calls != 2 {
		t.Fatalf("sweep deleted %d (retry soon %v, %v) after %d horizon reads; want the first batch's 2, then a stop at the second read", n, retry, err, calls)
	}
	if left := len(outboxIDs(t, pool)); left != 7 {
		t.Fatalf("%d rows left, want 7", left)
	}

	// The pipeline falls behind during the sweep: events unstored since
	// 2h30m ago hold every row after 3h30m ago (Keep before them).
	calls = 0
	c.Horizon = func() (time.Time, bool) {
		calls++
		if calls == 1 {
			return time.Now(), true
		}
		return time.Now().Add(-150 * time.Minute), true
	}
	// The rows left are 2h57m to 2h51m old: the first batch (cut at 1h
	// ago) takes the 2 oldest, and none of the rest is older than 3h30m.
	n, retry, err = c.sweep(ctx)
	if err != nil || n != 2 || retry {
		t.Fatalf("sweep deleted %d (retry soon %v, %v), want the first batch's 2 and no more once the horizon moved back", n, retry, err)
	}
	if left := len(outboxIDs(t, pool)); left != 5 {
		t.Fatalf("%d rows left, want 5", left)
	}
}

// Run sweeps as soon as the pipeline streams, not an Every later, and not
// before.
func TestRun_WaitsForThePipelineToStream(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT 'e', 'test', '{}', now() - interval '2 hours' FROM generate_series(1, 3)`); err != nil {
		t.Fatal(err)
	}
	var streaming atomic.Bool
	c := &Cleaner{Pool: pool, Keep: time.Hour, Every: time.Hour, BatchSize: 10, Log: zap.NewNop(),
		Horizon: func() (time.Time, bool) { return time.Now(), streaming.Load() }}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	time.Sleep(1500 * time.Millisecond)
	if n := len(outboxIDs(t, pool)); n != 3 {
		t.Fatalf("%d rows left before the pipeline streams, want 3", n)
	}
	streaming.Store(true)
	deadline := time.Now().Add(5 * time.Second)
	for len(outboxIDs(t, pool)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d rows left 5 s after the pipeline streams, want 0", len(outboxIDs(t, pool)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A sweep cut short logs what it deleted: here the stream stops after the
// first batch of two. The rows were deleted and never logged.
func TestRun_LogsWhatASweepCutShortDeleted(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT 'e', 'test', '{}', now() - interval '2 hours' - g * interval '1 second' FROM generate_series(1, 4) g`); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	core, logs := observer.New(zapcore.InfoLevel)
	c := &Cleaner{Pool: pool, Keep: time.Hour, Every: time.Hour, BatchSize: 2, Log: zap.New(core),
		Horizon: func() (time.Time, bool) { return time.Now(), calls.Add(1) == 1 }}
	rctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	if err := c.Run(rctx); err != nil {
		t.Fatal(err)
	}
	var reported []int64
	for _, e := range logs.FilterMessage("outbox retention").All() {
		reported = append(reported, e.ContextMap()["deleted"].(int64))
	}
	if left := len(outboxIDs(t, pool)); left != 2 || !slices.Equal(reported, []int64{2}) {
		t.Fatalf("%d rows left, deletions logged %v; want 2 left and [2] logged", left, reported)
	}
}

// An application transaction holding a lock on an old outbox row holds a
// sweep's DELETE sweepLockTimeout at most: the sweep then fails, naming
// the lock timeout, and deletes nothing of that batch; the next one, once
// the lock is gone, deletes it all. It waited as long as the transaction
// lived, unseen.
func TestSweep_WaitsForARowLockABoundedTime(t *testing.T) {
	defer func(was string) { sweepLockTimeout = was }(sweepLockTimeout)
	sweepLockTimeout = "200ms"
	ctx := context.Background()
	pool, app := tenOldRowsOneLocked(t, ctx, "event_date_time DESC, id")
	c := &Cleaner{Pool: pool, Keep: time.Hour, BatchSize: 1000, Log: zap.NewNop()}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := c.Sweep(sctx)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "55P03" || n != 0 || sctx.Err() != nil {
		t.Fatalf("Sweep behind a row lock = %d, %v; want 0 and a lock timeout (55P03) well within 10 s", n, err)
	}
	if left := len(outboxIDs(t, pool)); left != 10 {
		t.Fatalf("%d rows left after the timed-out batch, want 10", left)
	}
	if err := app.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Sweep(ctx); err != nil || n != 10 {
		t.Fatalf("Sweep after the lock went = %d, %v; want 10", n, err)
	}
}

// Deleting an outbox row loses nothing the slot will send: pgoutput decodes
// the insert from the WAL, not from the table, so a row retention deletes
// before the connector has read it still reaches the connector whole (and
// one at -infinity is set aside as a dead letter from there, as
// TestCommands_BackfillSetsInfinityRowsAsideAsTheConnectorDoes shows).
func TestSweep_RowsDeletedBeforeTheSlotIsReadStillReachIt(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	slot := testenv.Name("retention")
	if _, err := pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{} // event id → event_date_time as pgoutput sends it
	for _, at := range []string{"-infinity", "2001-02-03 04:05:06+00", "infinity", "-infinity"} {
		var id, text string
		if err := pool.QueryRow(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
			VALUES ('e', 'test', '{}', $1::timestamptz) RETURNING id::text, event_date_time::text`, at).Scan(&id, &text); err != nil {
			t.Fatal(err)
		}
		want[id] = text
	}
	c := &Cleaner{Pool: pool, Keep: time.Hour, BatchSize: 1000, Log: zap.NewNop()}
	if n, err := c.Sweep(ctx); err != nil || n != 3 {
		t.Fatalf("sweep deleted %d rows (%v), want 3", n, err)
	}

	rows, err := pool.Query(ctx, `SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
		'proto_version', '1', 'publication_names', 'pub')`, slot)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]string{}
	dec := decoder.New()
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			t.Fatal(err)
		}
		msg, err := dec.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		if msg.Kind != decoder.KindInsert {
			continue
		}
		id := string(msg.Values[msg.Relation.Index("id")].Data)
		got[id] = string(msg.Values[msg.Relation.Index("event_date_time")].Data)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("the slot sends %d inserts, want %d: %v", len(got), len(want), got)
	}
	for id, at := range want {
		if got[id] != at {
			t.Errorf("the slot sends event %s at %q, want %q", id, got[id], at)
		}
	}
}

// outboxIDs returns the ids of every outbox row, sorted.
func outboxIDs(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT id::text FROM outbox`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	return ids
}

// A sweep pauses between its DELETEs, so a backlog of old rows goes as a
// trickle of WAL; a shutdown during a pause ends the sweep at once.
func TestSweep_PausesBetweenDeletes(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	insert := func(n int) {
		t.Helper()
		if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
			SELECT 'e', 'test', '{}', now() - interval '2 days' FROM generate_series(1, $1)`, n); err != nil {
			t.Fatal(err)
		}
	}
	const pause = 300 * time.Millisecond
	c := &Cleaner{Pool: pool, Keep: time.Hour, BatchSize: 10, Pause: pause, Log: zap.NewNop()}
	insert(25)
	start := time.Now()
	n, err := c.Sweep(ctx)
	took := time.Since(start)
	// Three DELETEs (10, 10, 5 rows), a pause after each full one.
	if err != nil || n != 25 {
		t.Fatalf("sweep deleted %d rows (%v), want 25", n, err)
	}
	if took < 2*pause {
		t.Fatalf("a sweep of three DELETEs took %s; want at least two pauses of %s", took, pause)
	}
	insert(25)
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(pause/3, cancel)
	start = time.Now()
	n, err = c.Sweep(cctx)
	if took := time.Since(start); err != nil || n != 10 || took >= pause {
		t.Fatalf("a sweep cancelled during its first pause deleted %d rows (%v) in %s; want 10, under %s", n, err, took, pause)
	}
	if left := len(outboxIDs(t, pool)); left != 15 {
		t.Fatalf("%d outbox rows left, want the 15 the next sweep deletes", left)
	}
}

// A sweep that fails is logged and tried again at the next tick: Run goes
// on, since its error would stop the connector. Here an application holds
// a lock on an old row past sweepLockTimeout; once it lets go, a later
// tick deletes every old row.
func TestRun_AFailedSweepIsTriedAgainAtTheNextTick(t *testing.T) {
	defer func(was string) { sweepLockTimeout = was }(sweepLockTimeout)
	sweepLockTimeout = "100ms"
	ctx := context.Background()
	pool, app := tenOldRowsOneLocked(t, ctx, "event_date_time")
	core, logs := observer.New(zapcore.InfoLevel)
	const every = 300 * time.Millisecond
	c := &Cleaner{Pool: pool, Keep: time.Hour, Every: every, BatchSize: 100, Log: zap.New(core)}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()

	failed := func() []observer.LoggedEntry {
		return logs.FilterMessage("outbox retention sweep failed; will retry").All()
	}
	for deadline := time.Now().Add(10 * time.Second); len(failed()) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no failed sweep logged within 10 s of Run's start behind a row lock")
		}
	}
	warn := failed()[0]
	if err, _ := warn.ContextMap()["error"].(string); !strings.Contains(err, "55P03") || warn.ContextMap()["retry_in"] != every {
		t.Fatalf("failed sweep logged with %v; want the lock timeout (55P03) and retry_in %s", warn.ContextMap(), every)
	}
	if err := app.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); len(outboxIDs(t, pool)) != 0; time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("Run returned %v after a failed sweep, with %d rows left; want it to go on", err, len(outboxIDs(t, pool)))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d old rows left 10 s after the lock went, want 0", len(outboxIDs(t, pool)))
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil once cancelled", err)
	}
	var reported []int64
	for _, e := range logs.FilterMessage("outbox retention").All() {
		reported = append(reported, e.ContextMap()["deleted"].(int64))
	}
	if !slices.Equal(reported, []int64{10}) {
		t.Fatalf("deletions logged %v, want [10]", reported)
	}
}

// Keep 0 is retention off (CDC_OUTBOX_RETENTION=0): Run returns at once
// and deletes nothing, not even rows at -infinity, which a sweep with a
// Keep of 0 would delete with every row older than the horizon.
func TestRun_KeepZeroDeletesNothing(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		VALUES ('e', 'test', '{}', '-infinity'), ('e', 'test', '{}', now() - interval '30 days')`); err != nil {
		t.Fatal(err)
	}
	c := &Cleaner{Pool: pool, Keep: 0, Every: time.Hour, BatchSize: 10, Log: zap.NewNop(),
		Horizon: func() (time.Time, bool) { return time.Now(), true }}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Run(rctx); err != nil || rctx.Err() != nil {
		t.Fatalf("Run with Keep 0 = %v (context %v); want nil at once, not at the context's end", err, rctx.Err())
	}
	if n := len(outboxIDs(t, pool)); n != 2 {
		t.Fatalf("%d outbox rows left with retention off, want 2", n)
	}
}

// tenOldRowsOneLocked inserts ten outbox rows two hours old, then locks
// one of them, the first by order, in an application's transaction
// rolled back when the test ends.
func tenOldRowsOneLocked(t *testing.T, ctx context.Context, order string) (*pgxpool.Pool, pgx.Tx) {
	t.Helper()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT 'e', 'test', '{}', now() - interval '2 hours' - g * interval '1 second' FROM generate_series(1, 10) g`); err != nil {
		t.Fatal(err)
	}
	app, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Rollback(context.Background()) })
	if _, err := app.Exec(ctx, `SELECT id FROM outbox ORDER BY `+order+` LIMIT 1 FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	return pool, app
}

// A statement_timeout the role or the database sets for the application
// (a Django shop's guard against runaway queries) is not the sweep's: a
// batch that took longer failed every sweep, each minute, deleting
// nothing while the outbox grew. The sweep bounds its own statements.
func TestSweep_OutlastsTheDatabasesStatementTimeout(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	for _, stmt := range []string{
		`INSERT INTO outbox (event_type, environment, event_context, event_date_time)
			SELECT 'e', 'test', '{}', now() - interval '2 hours' - g * interval '1 second' FROM generate_series(1, 30) g`,
		// Each row's delete takes 20 ms: a batch of 30, 600 ms.
		`CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.02); RETURN OLD; END $$`,
		`CREATE TRIGGER slow_delete BEFORE DELETE ON outbox FOR EACH ROW EXECUTE FUNCTION slow_delete()`,
		`DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET statement_timeout = %L', current_database(), '200ms'); END $$`,
	} {
		if _, err := pool.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	pool.Reset() // new sessions take the database's setting
	var timeout string
	if err := pool.QueryRow(ctx, `SHOW statement_timeout`).Scan(&timeout); err != nil || timeout != "200ms" {
		t.Fatalf("statement_timeout %q, %v; want the database's 200ms", timeout, err)
	}
	c := &Cleaner{Pool: pool, Keep: time.Hour, BatchSize: 1000, Log: zap.NewNop()}
	if n, err := c.Sweep(ctx); err != nil || n != 30 {
		t.Fatalf("Sweep = %d, %v; want 30 deleted", n, err)
	}
	if left := len(outboxIDs(t, pool)); left != 0 {
		t.Fatalf("%d rows left, want 0", left)
	}
	if err := pool.QueryRow(ctx, `SHOW statement_timeout`).Scan(&timeout); err != nil || timeout != "200ms" {
		t.Fatalf("after the sweep, statement_timeout %q, %v; want the session's own 200ms back", timeout, err)
	}
}

// Retention's own statement_timeout only lifts one the role, the database
// or the server's configuration sets shorter than a batch may take. It
// sets none where there was none, shortens none that is longer, and keeps
// the one CDC_PG_DSN sets: an outbox without its index on
// (event_date_time, id), which streams with a warning, has batches that
// read the whole outbox, and a bound of retention's own where the
// operator set none (or a longer one, or 0 in the DSN to lift it) failed
// every sweep of a large one, deleting nothing while it grew.
func TestSweep_StatementTimeoutOnlyLiftsAShorterOne(t *testing.T) {
	defer func(d time.Duration) { sweepStatementTimeout = d }(sweepStatementTimeout)
	sweepStatementTimeout = 300 * time.Millisecond // a batch below takes 600 ms
	for _, tc := range []struct {
		name          string
		database, dsn string // statement_timeout set by ALTER DATABASE, by the DSN; "" none
		want          int64  // rows deleted; -1: 57014, the DSN's own bound
	}{
		{name: "none set", want: 30},
		{name: "the database's, longer than retention's", database: "5s", want: 30},
		{name: "the database's 0 (none)", database: "0", want: 30},
		{name: "the DSN's, longer than retention's, over the database's", database: "100ms", dsn: "5s", want: 30},
		{name: "the DSN's 0 (none), over the database's", database: "100ms", dsn: "0", want: 30},
		{name: "the DSN's, shorter than a batch", dsn: "100ms", want: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			pool := testenv.Get(t).MigratedPostgres(t, "pub")
			stmts := []string{
				`INSERT INTO outbox (event_type, environment, event_context, event_date_time)
					SELECT 'e', 'test', '{}', now() - interval '2 hours' - g * interval '1 second' FROM generate_series(1, 30) g`,
				// Each row's delete takes 20 ms: a batch of 30, 600 ms.
				`CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.02); RETURN OLD; END $$`,
				`CREATE TRIGGER slow_delete BEFORE DELETE ON outbox FOR EACH ROW EXECUTE FUNCTION slow_delete()`,
			}
			if tc.database != "" {
				stmts = append(stmts, `DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET statement_timeout = %L', current_database(), '`+tc.database+`'); END $$`)
			}
			for _, stmt := range stmts {
				if _, err := pool.Exec(ctx, stmt); err != nil {
					t.Fatal(err)
				}
			}
			cfg := pool.Config()
			if tc.dsn != "" {
				cfg.ConnConfig.RuntimeParams["statement_timeout"] = tc.dsn
			}
			own, err := pgxpool.NewWithConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer own.Close()
			c := &Cleaner{Pool: own, Keep: time.Hour, BatchSize: 1000, Log: zap.NewNop()}
			n, err := c.Sweep(ctx)
			if tc.want < 0 {
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != "57014" || n != 0 {
					t.Fatalf("Sweep = %d, %v; want 0 and the DSN's own statement_timeout (57014)", n, err)
				}
				return
			}
			if err != nil || n != tc.want {
				t.Fatalf("Sweep = %d, %v; want %d deleted", n, err, tc.want)
			}
		})
	}
}
