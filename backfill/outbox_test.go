package backfill_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcdc/cdc/backfill"
	"github.com/eventcdc/cdc/internal/testenv"
	ddl "github.com/eventcdc/cdc/sql"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// outbox opens a migrated outbox through backfill.OpenPool, as the
// operator commands do.
func outbox(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	pool, err := backfill.OpenPool(ctx, testenv.Get(t).NewPostgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := ddl.MigratePostgres(ctx, pool, "pub", io.Discard); err != nil {
		t.Fatal(err)
	}
	return pool
}

// ids returns the ids of the outbox rows matching where in keyset order, the
// order a scan must visit them in.
func ids(t *testing.T, pool *pgxpool.Pool, where string, args ...any) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT id::text FROM outbox WHERE `+where+` ORDER BY event_date_time, id`, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// A scan visits every row in its window exactly once, in keyset order,
// whatever the page size: rows at -infinity and infinity (which no
// time.Time holds) and rows tied on event_date_time, at a finite time or at
// infinity, included.
func TestScanner_VisitsEveryRowOnceIncludingInfinity(t *testing.T) {
	ctx := context.Background()
	pool := outbox(t)
	insert := func(at string, n int) {
		t.Helper()
		if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
			SELECT 'e', 'test', json_build_object('n', g), $1::timestamptz FROM generate_series(1, $2) g`, at, n); err != nil {
			t.Fatal(err)
		}
	}
	insert("-infinity", 3)
	insert("1969-12-31 23:59:59+00", 1)
	insert("2026-02-02 02:02:02.5+00", 7) // tied
	insert("2026-03-01 10:00:00+00", 1)
	insert("2026-03-01 10:00:01+00", 1)
	insert("infinity", 5)

	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	until := time.Date(2026, 3, 1, 10, 0, 1, 0, time.UTC)
	all := ids(t, pool, "true")
	tests := []struct {
		name         string
		since, until time.Time
		page         int
		maxBytes     int
		values       bool
		want         []string
	}{
		{"every row, one per page", time.Time{}, time.Time{}, 1, 0, false, all},
		{"every row, pages of 2", time.Time{}, time.Time{}, 2, 0, false, all},
		{"every row, pages of 3 with values", time.Time{}, time.Time{}, 3, 0, true, all},
		{"every row, pages sized by bytes", time.Time{}, time.Time{}, 4, 150, true, all},
		{"every row, one page", time.Time{}, time.Time{}, 1000, 1 << 20, true, all},
		{"since: infinity rows, not -infinity ones", since, time.Time{}, 2, 0, true,
			ids(t, pool, "event_date_time >= $1", since)},
		{"since and until: finite rows only", since, until, 2, 0, false,
			ids(t, pool, "event_date_time >= $1 AND event_date_time < $2", since, until)},
		{"until only: -infinity rows, not infinity ones", time.Time{}, until, 2, 0, false,
			ids(t, pool, "event_date_time < $1", until)},
	}
	if len(all) != 18 || len(tests[5].want) != 14 || len(tests[6].want) != 8 || len(tests[7].want) != 12 {
		t.Fatalf("windows hold %d, %d, %d and %d rows, want 18, 14, 8 and 12", len(all), len(tests[5].want), len(tests[6].want), len(tests[7].want))
	}
	rel, err := backfill.LoadRelation(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	timeCol := rel.Index("event_date_time")
	texts := map[string]string{}
	rows, err := pool.Query(ctx, `SELECT id::text, event_date_time::text FROM outbox`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, text string
		if err := rows.Scan(&id, &text); err != nil {
			t.Fatal(err)
		}
		texts[id] = text
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := backfill.NewScanner(pool, rel, tt.since, tt.until, tt.page, tt.maxBytes, tt.values)
			var got []string
			for pages := 0; ; pages++ {
				if pages > len(all)+1 {
					t.Fatalf("more pages than rows: the scan loops (visited %d rows)", len(got))
				}
				page, err := sc.Next(ctx)
				if err != nil {
					t.Fatalf("page %d, after %d rows: %v", pages+1, len(got), err)
				}
				if len(page) == 0 {
					break
				}
				if len(page) > tt.page {
					t.Fatalf("page of %d rows, want at most %d", len(page), tt.page)
				}
				for _, r := range page {
					got = append(got, r.ID)
					if !tt.values {
						continue
					}
					// The text the sink converts, and refuses for ±infinity,
					// as pgoutput sends it.
					if v := string(r.Values[timeCol].Data); v != texts[r.ID] {
						t.Errorf("row %s: event_date_time %q, want %q", r.ID, v, texts[r.ID])
					}
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("visited %d rows\n %v\nwant %d\n %v", len(got), got, len(tt.want), tt.want)
			}
		})
	}
}
