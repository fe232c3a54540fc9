package backfill_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
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

// A scan with a publication's row filter reads the rows pgoutput would
// send: those the filter passes, not those it makes false or NULL. A
// publication without a filter, or one that does not publish the outbox,
// has none.
func TestRowFilter_ScansOnlyTheRowsThePublicationSends(t *testing.T) {
	ctx := context.Background()
	pool := outbox(t)
	var v15 bool
	if err := pool.QueryRow(ctx, `SELECT current_setting('server_version_num')::int >= 150000`).Scan(&v15); err != nil {
		t.Fatal(err)
	}
	if !v15 {
		t.Skip("row filters need PostgreSQL 15")
	}
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		VALUES ('kept', 'test', '{"keep": "yes"}', '2026-01-01T00:00:00Z'),
		       ('false', 'test', '{"keep": "no"}', '2026-01-01T00:00:01Z'),
		       ('null', 'test', '{}', '2026-01-01T00:00:02Z'),
		       ('kept-2', 'test', '{"keep": "yes"}', '2026-01-01T00:00:03Z')`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE PUBLICATION other FOR TABLE outbox`); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		publication string
		want        string
	}{
		{"pub", ""},
		{"other", ""},
		{"absent", ""},
	} {
		if got, err := backfill.RowFilter(ctx, pool, tt.publication); err != nil || got != tt.want {
			t.Fatalf("RowFilter(%s) = %q, %v; want %q", tt.publication, got, err, tt.want)
		}
	}
	if _, err := pool.Exec(ctx, `ALTER PUBLICATION pub SET TABLE outbox WHERE (event_context ->> 'keep' = 'yes')`); err != nil {
		t.Fatal(err)
	}
	filter, err := backfill.RowFilter(ctx, pool, "pub")
	if want := "((event_context ->> 'keep'::text) = 'yes'::text)"; err != nil || filter != want {
		t.Fatalf("RowFilter(pub) = %q, %v; want %q", filter, err, want)
	}
	rel, err := backfill.LoadRelation(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	typ := rel.Index("event_type")
	for _, values := range []bool{false, true} {
		var got []string
		sc := backfill.NewScanner(pool, rel, time.Time{}, time.Time{}, 1, 0, values).Filter(filter)
		for {
			page, err := sc.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			for _, r := range page {
				got = append(got, r.ID)
				if values && string(r.Values[typ].Data) != "kept" && string(r.Values[typ].Data) != "kept-2" {
					t.Errorf("scanned event_type %q, which the filter keeps out", r.Values[typ].Data)
				}
			}
		}
		if want := ids(t, pool, "event_type LIKE 'kept%'"); fmt.Sprint(got) != fmt.Sprint(want) || len(got) != 2 {
			t.Fatalf("values %t: scanned %v; want the 2 rows the filter passes, %v", values, got, want)
		}
	}
}

// explainPage runs EXPLAIN ANALYZE of the page query q with args: with the
// plan PostgreSQL makes for these values, or with the generic plan of the
// prepared statement, which it may use from a statement's sixth run on a
// connection (pgx prepares the scanner's query on each).
func explainPage(t *testing.T, pool *pgxpool.Pool, q string, args []any, generic bool) testenv.Plan {
	t.Helper()
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	var out string
	if !generic {
		err = conn.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+q, args...).Scan(&out)
	} else {
		// EXECUTE takes its arguments as literals, not as parameters.
		lits := make([]string, len(args))
		for i, a := range args {
			switch v := a.(type) {
			case time.Time:
				lits[i] = "'" + v.Format(time.RFC3339Nano) + "'"
			case pgtype.Timestamptz:
				lits[i] = "'" + v.Time.Format(time.RFC3339Nano) + "'"
			case string:
				lits[i] = "'" + strings.ReplaceAll(v, "'", "''") + "'"
			case int:
				lits[i] = strconv.Itoa(v)
			default:
				t.Fatalf("argument %d: %T has no literal form here", i+1, a)
			}
		}
		for _, stmt := range []string{`SET plan_cache_mode = force_generic_plan`, `PREPARE page AS ` + q} {
			if _, err := conn.Exec(ctx, stmt); err != nil {
				t.Fatalf("%s: %v", stmt, err)
			}
		}
		err = conn.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE page("+strings.Join(lits, ", ")+")").Scan(&out)
		if _, err := conn.Exec(ctx, `DEALLOCATE page; RESET plan_cache_mode`); err != nil {
			t.Fatal(err)
		}
	}
	if err != nil {
		t.Fatalf("explain %s: %v", q, err)
	}
	return testenv.ParsePlan(t, out)
}

// A bulk insert gives all its rows one event_date_time. A page from inside
// such a group reads its own rows, and no others, from the index on
// (event_date_time, id), in order: no Sort of the rest of the group, which
// the index on event_date_time alone needed.
func TestScanner_PageInsideAGroupReadsOnlyThePage(t *testing.T) {
	ctx := context.Background()
	pool := outbox(t)
	group := time.Date(2026, 11, 25, 12, 40, 0, 0, time.UTC)
	for _, stmt := range []string{
		// 1000 rows a second apart before the group, 50,000 in it, 1000 after.
		`INSERT INTO outbox (event_type, environment, event_context, event_date_time)
			SELECT 'e', 'test', json_build_object('n', g), $1::timestamptz - g * interval '1 second' FROM generate_series(1, 1000) g`,
		`INSERT INTO outbox (event_type, environment, event_context, event_date_time)
			SELECT 'e', 'test', json_build_object('n', g), $1::timestamptz FROM generate_series(1, 50000) g`,
		`INSERT INTO outbox (event_type, environment, event_context, event_date_time)
			SELECT 'e', 'test', json_build_object('n', g), $1::timestamptz + g * interval '1 second' FROM generate_series(1, 1000) g`,
	} {
		if _, err := pool.Exec(ctx, stmt, group); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, `ANALYZE outbox`); err != nil {
		t.Fatal(err)
	}
	rel, err := backfill.LoadRelation(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}

	// pageInGroup returns the query of the page after the group's first
	// 1000 rows: the scanner has read the 1000 rows before the group, then
	// those.
	pageInGroup := func(t *testing.T, since, until time.Time, values bool) (string, []any) {
		t.Helper()
		sc := backfill.NewScanner(pool, rel, since, until, 1000, 0, values)
		var read []backfill.Record
		for i := 0; i < 2; i++ {
			var err error
			if read, err = sc.Next(ctx); err != nil || len(read) != 1000 {
				t.Fatalf("page %d: %d rows, %v; want 1000", i+1, len(read), err)
			}
		}
		if at := read[999].Time.Time; !at.Equal(group) {
			t.Fatalf("keyset position at %v, want inside the group at %v", at, group)
		}
		return sc.PageQuery()
	}

	const page = 1000
	tests := []struct {
		name         string
		since, until time.Time
		values       bool
		generic      bool
	}{
		{"verify: ids since and until", group.Add(-time.Hour), group.Add(time.Hour), false, false},
		{"verify: ids since and until, generic plan", group.Add(-time.Hour), group.Add(time.Hour), false, true},
		{"backfill: every column since", group.Add(-time.Hour), time.Time{}, true, false},
		{"backfill: every column since, generic plan", group.Add(-time.Hour), time.Time{}, true, true},
		{"since -infinity: no bounds", time.Time{}, time.Time{}, true, false},
		{"since -infinity: no bounds, generic plan", time.Time{}, time.Time{}, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, args := pageInGroup(t, tt.since, tt.until, tt.values)
			nodes := explainPage(t, pool, q, args, tt.generic).Nodes()
			// The Limit over one index scan that starts at the last row
			// read, leaves it out and stops after the page.
			if len(nodes) != 2 || nodes[0].Type != "Limit" || nodes[0].Rows != page ||
				(nodes[1].Type != "Index Scan" && nodes[1].Type != "Index Only Scan") ||
				nodes[1].Index != ddl.OutboxIndex || nodes[1].Rows != page || nodes[1].Removed != 1 || nodes[1].Loops != 1 {
				t.Fatalf("plan of %s\n%+v\nwant a Limit of %d rows over an Index Scan on %s reading %d+1 rows", q, nodes, page, ddl.OutboxIndex, page)
			}
		})
	}

	// The same page with the index on event_date_time alone, as before:
	// it reads and sorts the rest of the group, 49,000 rows, for 1000.
	t.Run("index on event_date_time alone", func(t *testing.T) {
		for _, stmt := range []string{
			`DROP INDEX ` + ddl.OutboxIndex,
			`CREATE INDEX ` + ddl.OldOutboxIndex + ` ON outbox (event_date_time)`,
		} {
			if _, err := pool.Exec(ctx, stmt); err != nil {
				t.Fatal(err)
			}
		}
		q, args := pageInGroup(t, group.Add(-time.Hour), group.Add(time.Hour), false)
		var sorted float64
		nodes := explainPage(t, pool, q, args, false).Nodes()
		for _, n := range nodes {
			if strings.HasSuffix(n.Type, "Sort") && len(n.Plans) == 1 {
				sorted = n.Plans[0].Rows * n.Plans[0].Loops
			}
		}
		if sorted < 49000 {
			t.Fatalf("plan of %s\n%+v\nwant a Sort of the 49,000 rows left in the group", q, nodes)
		}
	})
}

// Pages are sized from the largest row of the page before; when the rows
// grow larger than those, a page ends once its rows reach maxBytes rather
// than holding a whole page of the small rows' count (62 rows of 256 KiB,
// 15.5 MiB, for a 1 MiB bound).
func TestScanner_GrowingRowsKeepAPageNearMaxBytes(t *testing.T) {
	ctx := context.Background()
	pool := outbox(t)
	const big, maxBytes = 256 << 10, 1 << 20
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT 'small', 'test', '{}', '2026-01-01' FROM generate_series(1, 3)`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT 'big', 'test', json_build_object('pad', repeat('x', $1)), '2026-01-02' FROM generate_series(1, 60)`, big); err != nil {
		t.Fatal(err)
	}
	rel, err := backfill.LoadRelation(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	sc := backfill.NewScanner(pool, rel, time.Time{}, time.Time{}, 50000, maxBytes, true)
	var got []string
	for pages := 0; pages <= 64; pages++ {
		page, err := sc.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		bytes, largest := 0, 0
		for _, r := range page {
			got = append(got, r.ID)
			size := 0
			for _, v := range r.Values {
				size += len(v.Data)
			}
			bytes += size
			largest = max(largest, size)
		}
		// At most the bound plus the row that crossed it.
		if bytes > maxBytes+largest {
			t.Fatalf("page %d: %d rows, %d bytes; want at most %d + one row of %d", pages+1, len(page), bytes, maxBytes, largest)
		}
	}
	if want := ids(t, pool, "true"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("visited %d rows, want the %d in keyset order, once each", len(got), len(want))
	}
}

// A generated column of the outbox is not published by pgoutput, so the
// connector never sees it; backfill leaves it out too, or the same event
// would be stored with the column's value by one and without it by the
// other.
func TestLoadRelation_LeavesGeneratedColumnsOut(t *testing.T) {
	ctx := context.Background()
	pool := outbox(t)
	if _, err := pool.Exec(ctx, `ALTER TABLE outbox ADD COLUMN tenant text,
		ADD COLUMN context_bytes integer GENERATED ALWAYS AS (octet_length(event_context::text)) STORED`); err != nil {
		t.Fatal(err)
	}
	rel, err := backfill.LoadRelation(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range rel.Columns {
		names = append(names, c.Name)
	}
	want := "[id event_type event_date_time environment event_context metadata_version traceparent tenant]"
	if fmt.Sprint(names) != want {
		t.Fatalf("columns %v, want %s", names, want)
	}
}

// A page cut by its bytes ends its query there: the rows after the cut, up
// to the LIMIT sized for the small rows before, are neither sent nor read
// and dropped.
func TestScanner_PageCutByBytesReadsNoFurther(t *testing.T) {
	ctx := context.Background()
	pool := outbox(t)
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT 'small', 'test', '{}', '2026-01-01' FROM generate_series(1, 3)`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT 'big', 'test', json_build_object('pad', repeat('x', 1 << 20)), '2026-01-02' FROM generate_series(1, 40)`); err != nil {
		t.Fatal(err)
	}
	counted, read := testenv.CountingPool(t, pool)
	rel, err := backfill.LoadRelation(ctx, counted)
	if err != nil {
		t.Fatal(err)
	}
	sc := backfill.NewScanner(counted, rel, time.Time{}, time.Time{}, 50000, 1<<20, true)
	// The first page is one row, a probe of the rows' size; the second may
	// hold 50,000 rows the size of the first.
	if page, err := sc.Next(ctx); err != nil || len(page) != 1 {
		t.Fatalf("first page: %d rows, %v; want 1", len(page), err)
	}
	before := read.Load()
	page, err := sc.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := read.Load() - before
	if len(page) != 3 {
		t.Fatalf("second page of %d rows; want 3, the first 1 MiB one crossing 1 MiB", len(page))
	}
	if got > 8<<20 {
		t.Fatalf("reading a page of 1 MiB read %d bytes from the server; want under 8 MiB (the 37 rows after the cut are 37 MiB)", got)
	}
	rest := 0
	for {
		page, err := sc.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		rest += len(page)
	}
	if rest != 39 {
		t.Fatalf("the pages after the cut held %d rows, want the other 39", rest)
	}
}
