package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// The backfill migrate asks for after creating a slot over an outbox with
// rows starts at the oldest of them, as an instant in UTC, whatever the
// database's TimeZone and whether event_date_time has a zone (cdc reads a
// zoneless one as UTC). Over a zoneless column the time came out in the
// database's zone with a Z: 5h30 late in Asia/Kolkata, so the backfill it
// named, and the verify before lifting the hold, left out the gap's first
// hours, which retention then deleted.
func TestMigrate_NamesTheOldestEventInUTCWhateverTheZones(t *testing.T) {
	for _, tc := range []struct {
		name, zone, column, at string
	}{
		{"timestamptz east of UTC", "Asia/Kolkata", "timestamptz", "2026-01-02 03:04:05.6+00"},
		{"timestamptz west of UTC", "America/New_York", "timestamptz", "2026-01-02 03:04:05.6+00"},
		{"zoneless east of UTC", "Asia/Kolkata", "timestamp", "2026-01-02 03:04:05.6"},
		{"zoneless west of UTC", "America/New_York", "timestamp", "2026-01-02 03:04:05.6"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			pool, env := operatorEnv(t)
			ctx := context.Background()
			for _, sql := range []string{
				`DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET TimeZone = %L', current_database(), '` + tc.zone + `'); END $$`,
				`ALTER TABLE outbox ALTER COLUMN event_date_time TYPE ` + tc.column,
				`INSERT INTO outbox (event_type, event_date_time, environment, event_context) VALUES ('oldest', '` + tc.at + `', 'e', '{}')`,
			} {
				if _, err := pool.Exec(ctx, sql); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
			}
			code, stdout, stderr, _ := runWithin(t, time.Minute, env, "migrate")
			const want = "the outbox already holds events from 2026-01-02T03:04:05Z on, which this slot will not stream: ship them with `cdc backfill --since 2026-01-02T03:04:05Z`\n"
			if code != 0 || !strings.Contains(stdout, want) {
				t.Fatalf("migrate exited %d, stdout %q, stderr %q; want 0 and %q", code, stdout, stderr, want)
			}
		})
	}
}
