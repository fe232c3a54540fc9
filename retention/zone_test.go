package retention

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/eventcdc/cdc/internal/testenv"
)

// An outbox whose event_date_time has no zone holds UTC wall clocks (the
// stream reads them so, docs/operations.md "Times and time zones"): a
// sweep deletes what is older than Keep in UTC, whatever cdc's own zone
// (TZ) and the database's TimeZone. pgx sends a time.Time for a timestamp
// parameter as its wall clock in its own zone, and PostgreSQL reads a
// timestamp compared with a timestamptz in the session's zone.
func TestSweep_ZonelessEventTimesAreUTCWhateverTheZones(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	for _, sql := range []string{
		`DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET TimeZone = %L', current_database(), 'Asia/Kolkata'); END $$`,
		`ALTER TABLE outbox ALTER COLUMN event_date_time TYPE timestamp`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	pool.Reset() // the next connections take the database's TimeZone
	// UTC wall clocks, as the application writes them; ages in minutes.
	old := []int{180, 150, 120, 90}
	young := []int{30, 0, -60}
	for _, age := range append(append([]int{}, old...), young...) {
		if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
			VALUES ('e', 'test', '{}', (now() AT TIME ZONE 'UTC') - make_interval(mins => $1))`, age); err != nil {
			t.Fatal(err)
		}
	}
	for _, zone := range []*time.Location{time.FixedZone("east", 14*3600), time.FixedZone("west", -11*3600)} {
		t.Run(zone.String(), func(t *testing.T) {
			// A time in cdc's own zone (TZ), as time.Now and the
			// pipeline's horizon give it; setting time.Local here would
			// race with the pool's goroutines.
			horizon := func() (time.Time, bool) { return time.Now().Add(-time.Minute).In(zone), true }
			c := &Cleaner{Pool: pool, Keep: time.Hour, BatchSize: 1, Log: zap.NewNop(), Horizon: horizon}
			want := int64(len(old))
			if zone.String() == "west" {
				want = 0 // the first sweep took them
			}
			n, err := c.Sweep(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n != want {
				t.Errorf("the sweep deleted %d rows, want %d", n, want)
			}
			if left := len(outboxIDs(t, pool)); left != len(young) {
				t.Errorf("%d outbox rows left, want the %d younger than an hour", left, len(young))
			}
		})
	}
}
