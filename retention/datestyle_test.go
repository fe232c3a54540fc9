package retention

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/eventcdc/cdc/internal/testenv"
)

// A sweep's keyset goes back to PostgreSQL as it came, whatever
// DateStyle and TimeZone the pool's sessions take from the DSN, the role
// or the database: cdc run's pool does not fix them. In DateStyle SQL a
// timestamptz prints with its zone's abbreviation, which PostgreSQL reads
// back as another zone (Asia/Kolkata's IST is Israel's to it, 3.5 hours
// off: the next batch skipped the rows between) or not at all (the local
// mean time, LMT, of a date before the zone's standard time, such as Go's
// zero time: every sweep failed at it). Every row older than Keep goes in
// one sweep of batches of one row.
func TestSweep_KeysetIsExactWhateverTheDateStyle(t *testing.T) {
	for _, column := range []string{"timestamptz", "timestamp"} {
		t.Run(column, func(t *testing.T) {
			ctx := context.Background()
			pool := testenv.Get(t).MigratedPostgres(t, "pub")
			for _, sql := range []string{
				`DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET DateStyle = %L', current_database(), 'SQL, DMY'); END $$`,
				`DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET TimeZone = %L', current_database(), 'Asia/Kolkata'); END $$`,
				`ALTER TABLE outbox ALTER COLUMN event_date_time TYPE ` + column + ` USING event_date_time AT TIME ZONE 'UTC'`,
			} {
				if _, err := pool.Exec(ctx, sql); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
			}
			pool.Reset() // the next connections take the database's settings
			// UTC times, an hour apart, each with microseconds, and
			// Go's zero time (an application's unset field).
			old := []string{
				"0001-01-01 00:00:00",
				"2020-01-01 00:00:00.000001",
				"2020-01-01 01:00:00.000002",
				"2020-01-01 02:00:00.000003",
				"2020-01-01 03:00:00.000004",
				"2020-01-01 04:00:00.000005",
			}
			for _, at := range old {
				if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
					VALUES ('e', 'test', '{}', ($1::timestamp AT TIME ZONE 'UTC')::`+column+`)`, at); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
				VALUES ('e', 'test', '{}', now() AT TIME ZONE 'UTC' + interval '1 day')`); err != nil {
				t.Fatal(err)
			}
			c := &Cleaner{Pool: pool, Keep: time.Hour, BatchSize: 1, Log: zap.NewNop()}
			n, err := c.Sweep(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(len(old)) {
				t.Errorf("the sweep deleted %d rows, want the %d older than an hour", n, len(old))
			}
			if left := len(outboxIDs(t, pool)); left != 1 {
				t.Errorf("%d outbox rows left, want the one of tomorrow", left)
			}
		})
	}
}
