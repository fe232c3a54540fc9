package retention

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/eventcdc/cdc/internal/testenv"
)

func TestHoldName(t *testing.T) {
	long := strings.Repeat("s", 63)
	for _, tc := range []struct{ slot, want string }{
		{"cdc_outbox", "cdc_outbox_retention_hold"},
		{strings.Repeat("s", 48), strings.Repeat("s", 48) + "_retention_hold"},
		// Longer: the first 39 characters, '_' and FNV-1a of the whole.
		{strings.Repeat("s", 49), strings.Repeat("s", 39) + "_18231ed2_retention_hold"},
		{long, strings.Repeat("s", 39) + "_142931f4_retention_hold"},
		{strings.Repeat("s", 48) + "t", strings.Repeat("s", 39) + "_132316f3_retention_hold"},
	} {
		got := HoldName(tc.slot)
		if got != tc.want || len(got) > 63 {
			t.Errorf("HoldName(%s) = %q (%d), want %q", tc.slot, got, len(got), tc.want)
		}
	}
}

// A slot whose hold an earlier cdc named by its first 48 characters is
// still held by that marker, so that an upgrade does not lift it.
func TestHeld_FindsAHoldByItsEarlierName(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	slot := testenv.Name("h") + "_" + strings.Repeat("x", 63)
	slot = slot[:63]
	legacy := slot[:48] + "_retention_hold"
	if legacy == HoldName(slot) {
		t.Fatalf("the earlier name %q is today's", legacy)
	}
	if held, err := Held(ctx, pool, slot); err != nil || held {
		t.Fatalf("Held %v (%v) with no marker, want false", held, err)
	}
	if _, err := pool.Exec(ctx, `SELECT pg_create_physical_replication_slot($1, false)`, legacy); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, legacy) })
	if held, err := Held(ctx, pool, slot); err != nil || !held {
		t.Fatalf("Held %v (%v) with the marker of the earlier name, want true", held, err)
	}
	// Its name is the one to drop, and the one a sweeper names.
	if name, err := HeldAs(ctx, pool, slot); err != nil || name != legacy {
		t.Fatalf("HeldAs %q (%v), want the earlier name %q", name, err, legacy)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	c := &Cleaner{Pool: pool, Slot: slot, Log: zap.New(core)}
	if held, err := c.checkHold(ctx); err != nil || !held {
		t.Fatalf("checkHold %v (%v), want held", held, err)
	}
	if warned := logs.FilterMessageSnippet("outbox retention is held").All(); len(warned) != 1 || warned[0].ContextMap()["hold"] != legacy ||
		warned[0].ContextMap()["lift"] != "SELECT pg_drop_replication_slot('"+legacy+"')" {
		t.Fatalf("the sweeper's warning: %+v, want one naming %s", warned, legacy)
	}
	// Hold makes today's beside it (the earlier name may be another
	// slot's hold), and today's name comes first; once it is dropped the
	// earlier one is named.
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, HoldName(slot)) })
	if created, err := Hold(ctx, pool, slot); err != nil || !created {
		t.Fatalf("Hold beside the earlier marker: created %v (%v), want today's made", created, err)
	}
	if name, err := HeldAs(ctx, pool, slot); err != nil || name != HoldName(slot) {
		t.Fatalf("HeldAs %q (%v) with both markers, want %q", name, err, HoldName(slot))
	}
	if _, err := pool.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, HoldName(slot)); err != nil {
		t.Fatal(err)
	}
	if name, err := HeldAs(ctx, pool, slot); err != nil || name != legacy {
		t.Fatalf("HeldAs %q (%v) with today's dropped, want the earlier %q", name, err, legacy)
	}
}

// Two connectors' slots, one of 48 characters and one that starts with
// it: the long one's hold is its own, and lifting the short one's, once
// its gap is shipped, leaves the long one's gap held. Hold took the short
// slot's marker, whose name an earlier cdc gave the long slot's hold, for
// the long slot's, made none, and the long slot's sweeper then deleted
// its unshipped gap.
func TestHold_ALongSlotsHoldIsNotTheHoldOfTheSlotNamedByItsStart(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	short := testenv.Name("h")
	short += strings.Repeat("y", 48-len(short))
	long := short + "_second_connector"
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name IN ($1, $2)`,
			HoldName(short), HoldName(long))
	})
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT 'gap', 'test', '{}', now() - interval '2 hours' - g * interval '1 second' FROM generate_series(1, 5) g`); err != nil {
		t.Fatal(err)
	}
	if created, err := Hold(ctx, pool, short); err != nil || !created {
		t.Fatalf("Hold(%s): created %v (%v), want made", short, created, err)
	}
	if created, err := Hold(ctx, pool, long); err != nil || !created {
		t.Fatalf("Hold(%s): created %v (%v), want made", long, created, err)
	}
	if _, err := pool.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, HoldName(short)); err != nil {
		t.Fatal(err)
	}
	c := &Cleaner{Pool: pool, Keep: time.Hour, BatchSize: 100, Log: zap.NewNop(), Slot: long}
	if n, err := c.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("the long slot's sweeper deleted %d rows (%v) with its hold standing, want 0", n, err)
	}
	if got := outboxRows(t, pool); got != 5 {
		t.Fatalf("%d outbox rows left, want 5", got)
	}
}

// A hold is made only over an outbox that holds rows, once; it reserves
// no WAL and holds back no xmin; and while it exists no sweeper deletes a
// row, each (as each instance of the connector) finding it for itself.
// Dropping it, as an operator does, lets the next sweep delete.
func TestHold_KeepsEverySweeperFromDeletingUntilDropped(t *testing.T) {
	ctx := context.Background()
	pool, slot := holdWorld(t)
	hold := HoldName(slot)

	if created, err := HoldIfOutboxHasRows(ctx, pool, slot); err != nil || created {
		t.Fatalf("hold over an empty outbox: created %v (err %v), want none", created, err)
	}
	// A row at infinity is never deleted: nothing to hold for.
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		VALUES ('forever', 'test', '{}', 'infinity')`); err != nil {
		t.Fatal(err)
	}
	if created, err := HoldIfOutboxHasRows(ctx, pool, slot); err != nil || created {
		t.Fatalf("hold over an outbox of a row at infinity: created %v (err %v), want none", created, err)
	}
	if held, err := Held(ctx, pool, slot); err != nil || held {
		t.Fatalf("Held %v (err %v) with no hold made", held, err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT 'gap', 'test', '{}', now() - interval '2 hours' - g * interval '1 second' FROM generate_series(1, 5) g`); err != nil {
		t.Fatal(err)
	}
	// Ahead of a slot, as cdc run and migrate make it: the test server
	// has replication slots to spare.
	if created, err := HoldAhead(ctx, pool, slot); err != nil || !created {
		t.Fatalf("hold over an outbox with rows: created %v (err %v), want made", created, err)
	}
	if created, err := Hold(ctx, pool, slot); err != nil || created {
		t.Fatalf("a second hold: created %v (err %v), want the first kept", created, err)
	}
	var kind string
	var reserves bool
	if err := pool.QueryRow(ctx, `SELECT slot_type, restart_lsn IS NOT NULL OR xmin IS NOT NULL OR catalog_xmin IS NOT NULL
		FROM pg_replication_slots WHERE slot_name = $1`, hold).Scan(&kind, &reserves); err != nil {
		t.Fatal(err)
	}
	if kind != "physical" || reserves {
		t.Fatalf("the hold is a %s slot reserving WAL or xmin: %v; want a physical slot reserving nothing", kind, reserves)
	}

	core, logs := observer.New(zapcore.InfoLevel)
	sweepers := []*Cleaner{
		{Pool: pool, Keep: time.Hour, BatchSize: 2, Log: zap.New(core), Slot: slot},
		{Pool: pool, Keep: time.Hour, BatchSize: 2, Log: zap.NewNop(), Slot: slot},
	}
	for round := 1; round <= 2; round++ {
		for i, c := range sweepers {
			if n, err := c.Sweep(ctx); err != nil || n != 0 {
				t.Fatalf("round %d: sweeper %d deleted %d rows (err %v) while held, want none", round, i+1, n, err)
			}
		}
	}
	if n := outboxRows(t, pool); n != 6 {
		t.Fatalf("%d outbox rows left while held, want 6", n)
	}
	if got := logs.FilterMessageSnippet("outbox retention is held").Len(); got != 1 {
		t.Fatalf("the hold was logged %d times over two sweeps, want once", got)
	}
	// A sweeper of another slot is not held by this one's hold.
	other := &Cleaner{Pool: pool, Keep: time.Hour, BatchSize: 2, Log: zap.NewNop(), Slot: slot + "_other"}
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		VALUES ('other', 'test', '{}', now() - interval '3 hours')`); err != nil {
		t.Fatal(err)
	}
	if n, err := other.Sweep(ctx); err != nil || n != 6 {
		t.Fatalf("another slot's sweeper deleted %d rows (err %v), want 6", n, err)
	}

	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT 'gap', 'test', '{}', now() - interval '2 hours' - g * interval '1 second' FROM generate_series(1, 3) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, hold); err != nil {
		t.Fatal(err)
	}
	if n, err := sweepers[0].Sweep(ctx); err != nil || n != 3 {
		t.Fatalf("the sweep after the hold was dropped deleted %d rows (err %v), want 3", n, err)
	}
	if got := logs.FilterMessageSnippet("outbox retention hold lifted").Len(); got != 1 {
		t.Fatalf("the lift was logged %d times, want once", got)
	}
}

// A hold made while a sweep runs stops it at its next batch: a sweep
// through a backlog runs for minutes.
func TestHold_StopsASweepInProgress(t *testing.T) {
	ctx := context.Background()
	pool, slot := holdWorld(t)
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT 'old', 'test', '{}', now() - interval '2 hours' - g * interval '1 second' FROM generate_series(1, 10) g`); err != nil {
		t.Fatal(err)
	}
	// The pause between batches leaves ample time to make the hold
	// once the first batch is seen gone.
	c := &Cleaner{Pool: pool, Keep: time.Hour, BatchSize: 2, Pause: 2 * time.Second, Log: zap.NewNop(), Slot: slot}
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := c.Sweep(ctx)
		done <- result{n, err}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for outboxRows(t, pool) != 8 {
		if time.Now().After(deadline) {
			t.Fatal("the first batch was never deleted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if created, err := Hold(ctx, pool, slot); err != nil || !created {
		t.Fatalf("Hold: created %v, %v", created, err)
	}
	r := <-done
	if r.err != nil || r.n != 2 {
		t.Fatalf("the sweep deleted %d rows (err %v), want the first batch's 2", r.n, r.err)
	}
	if n := outboxRows(t, pool); n != 8 {
		t.Fatalf("%d outbox rows left, want 8", n)
	}
}

// holdWorld gives a migrated outbox and a slot name of the test's own,
// whose hold, if made, is dropped when the test ends: a physical slot
// belongs to no database, so dropping the test's does not.
func holdWorld(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	slot := testenv.Name("h")
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, HoldName(slot))
	})
	return pool, slot
}

func outboxRows(t *testing.T, q Querier) int {
	t.Helper()
	var n int
	if err := q.QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// The outbox is the database's, not a slot's: a second pipeline on the
// same database (its own slot and publication, another ClickHouse) whose
// slot was made anew holds the rows of its gap, and a sweeper of the
// first pipeline deleted them, though the hold is said to hold retention
// on every cdc run. A hold of a slot of another database, one of the same
// cluster, holds nothing here: that outbox is another.
func TestHold_HoldsTheSweepersOfEverySlotOfItsDatabase(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		sameDB    bool // the held slot is a logical slot of the sweeper's database
		wantRows  int  // outbox rows left after the sweep
		wantHeld  bool // whether the sweep logged the hold
		wantSweep int64
	}{
		{name: "a slot of the same database", sameDB: true, wantRows: 5, wantHeld: true},
		{name: "a slot of another database", sameDB: false, wantRows: 0, wantSweep: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool, slot := holdWorld(t)
			other := pool
			if !tc.sameDB {
				other = testenv.Get(t).MigratedPostgres(t, "pub")
			}
			held := slot + "_b"
			t.Cleanup(func() {
				_, _ = pool.Exec(context.Background(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, HoldName(held))
			})
			for _, s := range []struct {
				q    *pgxpool.Pool
				name string
			}{{pool, slot}, {other, held}} {
				if _, err := s.q.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, s.name); err != nil {
					t.Fatalf("create slot %s: %v", s.name, err)
				}
			}
			if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
				SELECT 'gap', 'test', '{}', now() - interval '2 hours' - g * interval '1 second' FROM generate_series(1, 5) g`); err != nil {
				t.Fatal(err)
			}
			if created, err := Hold(ctx, other, held); err != nil || !created {
				t.Fatalf("Hold(%s): created %v, %v", held, created, err)
			}
			core, logs := observer.New(zapcore.InfoLevel)
			c := &Cleaner{Pool: pool, Keep: time.Hour, BatchSize: 2, Log: zap.New(core), Slot: slot}
			n, err := c.Sweep(ctx)
			if err != nil || n != tc.wantSweep {
				t.Fatalf("the sweep of slot %s deleted %d rows (err %v), want %d", slot, n, err, tc.wantSweep)
			}
			if got := outboxRows(t, pool); got != tc.wantRows {
				t.Fatalf("%d outbox rows left, want %d", got, tc.wantRows)
			}
			if got := logs.FilterMessageSnippet("outbox retention is held").FilterField(zap.String("hold", HoldName(held))).Len() == 1; got != tc.wantHeld {
				t.Fatalf("the sweep logged the hold %s: %v, want %v (logs: %v)", HoldName(held), got, tc.wantHeld, logs.All())
			}
		})
	}
}
