package backfill_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/eventcdc/cdc/backfill"
	"github.com/eventcdc/cdc/deadletter"
	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/sink"
	ddl "github.com/eventcdc/cdc/sql"
)

// Verify looks for each event in its own second, then by id alone: an
// event stored under another time is found, one stored nowhere is
// missing. Lookups by id alone gather ids across pages and go by chunks
// (here 4 ids, over pages of 7 rows), so every chunk and page boundary
// is crossed.
func TestVerify_FindsEventsStoredUnderAnotherTime(t *testing.T) {
	defer backfill.SetByIDChunk(4)()
	ctx := context.Background()
	pool, ch, rel := thirtyEvents(t)
	if _, err := backfill.Ship(ctx, backfill.NewScanner(pool, rel, time.Time{}, time.Time{}, 100, 1<<20, true), rel, ch, deadletter.New(pool, "cdc_outbox"), 1<<20, nil, nil); err != nil {
		t.Fatal(err)
	}
	all := ids(t, pool, "true")
	// Ten events moved an hour on in event_log (as a replayed dead letter
	// whose time was corrected would be), ten deleted from it.
	var moved, gone []string
	for i, id := range all[:20] {
		if i%2 == 0 {
			moved = append(moved, id)
		} else {
			gone = append(gone, id)
		}
	}
	list := func(ids []string) string {
		q := ""
		for i, id := range ids {
			if i > 0 {
				q += ","
			}
			q += "'" + id + "'"
		}
		return q
	}
	for _, q := range []string{
		fmt.Sprintf(`INSERT INTO event_log (event_id, event_type, event_date_time, environment, event_context, metadata_version, cdc_commit_lsn, cdc_seq)
			SELECT event_id, event_type, event_date_time + 3600, environment, event_context, metadata_version, cdc_commit_lsn, cdc_seq FROM event_log WHERE toString(event_id) IN (%s)`, list(moved)),
		fmt.Sprintf(`ALTER TABLE event_log DELETE WHERE toString(event_id) IN (%s) AND event_date_time < toDateTime('2026-01-01 00:45:00')`, list(append(slices.Clone(moved), gone...))),
	} {
		if err := ch.Conn().Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	// A mutation runs in the background on 18.16: wait for it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n uint64
		if err := ch.Conn().QueryRow(ctx, "SELECT count() FROM event_log").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("event_log holds %d rows, want 20 once the delete ran", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rep, err := backfill.Verify(ctx, pool, ch.Conn(), backfill.VerifyOptions{Until: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC), Page: 7, Show: 100, Slot: "cdc_outbox"})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(rep.MissingIDs)
	want := slices.Sorted(slices.Values(gone))
	if rep.OutboxRows != 30 || rep.Found != 20 || rep.Missing != 10 || !slices.Equal(rep.MissingIDs, want) {
		t.Fatalf("verify: %d rows, %d found, %d missing %v; want 30, 20 (the moved ten among them), 10 missing: %v",
			rep.OutboxRows, rep.Found, rep.Missing, rep.MissingIDs, want)
	}
}

// event_log keeps whole seconds, so its side of the window runs to the end
// of the second --until falls in: an event at 00:29:00, before an until of
// 00:29:00.5, is stored at 00:29:00 and counted there, and once its outbox
// row is deleted it is reported as not in the outbox.
func TestVerify_EventLogWindowEndsWithTheSecondOfUntil(t *testing.T) {
	ctx := context.Background()
	pool, ch, rel := thirtyEvents(t)
	if _, err := backfill.Ship(ctx, backfill.NewScanner(pool, rel, time.Time{}, time.Time{}, 100, 1<<20, true), rel, ch, deadletter.New(pool, "cdc_outbox"), 1<<20, nil, nil); err != nil {
		t.Fatal(err)
	}
	var last string
	if err := pool.QueryRow(ctx, `DELETE FROM outbox WHERE event_date_time = '2026-01-01 00:29:00+00' RETURNING id::text`).Scan(&last); err != nil {
		t.Fatal(err)
	}
	rep, err := backfill.Verify(ctx, pool, ch.Conn(), backfill.VerifyOptions{Until: time.Date(2026, 1, 1, 0, 29, 0, 500000000, time.UTC), Page: 7, Show: 100, Slot: "cdc_outbox"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OutboxRows != 29 || rep.Found != 29 || rep.Missing != 0 || rep.EventLogRows != 30 || rep.NotInOutbox != 1 ||
		!slices.Equal(rep.NotInOutboxIDs, []string{last}) || rep.MissingDeadLettered != 0 {
		t.Fatalf("verify: %+v; want 29 outbox rows all found, 30 event_log rows, %s alone not in the outbox", rep, last)
	}
}

// A chunk of 2000 ids looked up in their own seconds went as an IN list
// in the query's text, 80 KB of it: a ClickHouse user whose profile sets
// max_query_size below that (64 KiB here) had every verify fail with
// "Max query size exceeded". Whatever the setting, every event is found
// and the one never shipped is missing.
func TestVerify_IDsAreNotBoundByMaxQuerySize(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ name, params string }{
		{"the server's max_query_size", ""},
		{"max_query_size 64 KiB", "?max_query_size=65536"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool := outbox(t)
			dsn := testenv.Get(t).NewClickHouse(t)
			ch, err := sink.Open(dsn, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			defer ch.Close()
			if err := ddl.MigrateClickHouse(ctx, ch.Conn()); err != nil {
				t.Fatal(err)
			}
			if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
				SELECT 'e', 'test', '{}', '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 second' FROM generate_series(0, 2499) i`); err != nil {
				t.Fatal(err)
			}
			rel, err := backfill.LoadRelation(ctx, pool)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := backfill.Ship(ctx, backfill.NewScanner(pool, rel, time.Time{}, time.Time{}, 10000, 1<<24, true), rel, ch, deadletter.New(pool, "cdc_outbox"), 1<<24, nil, nil); err != nil {
				t.Fatal(err)
			}
			var unshipped string
			if err := pool.QueryRow(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
				VALUES ('e', 'test', '{}', '2026-01-01 00:10:00.5+00') RETURNING id::text`).Scan(&unshipped); err != nil {
				t.Fatal(err)
			}
			limited, err := sink.Open(dsn+tc.params, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			defer limited.Close()
			rep, err := backfill.Verify(ctx, pool, limited.Conn(), backfill.VerifyOptions{Until: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC), Page: 10000, Show: 10, Slot: "cdc_outbox"})
			if err != nil {
				t.Fatal(err)
			}
			if rep.OutboxRows != 2501 || rep.Found != 2500 || rep.Missing != 1 || !slices.Equal(rep.MissingIDs, []string{unshipped}) || rep.EventLogRows != 2500 || rep.NotInOutbox != 0 {
				t.Fatalf("verify: %+v; want 2501 outbox rows, 2500 found, %s alone missing, 2500 event_log rows all in the outbox", rep, unshipped)
			}
		})
	}
}
