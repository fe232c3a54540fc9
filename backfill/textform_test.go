package backfill_test

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcdc/cdc/backfill"
	"github.com/eventcdc/cdc/internal/testenv"
	ddl "github.com/eventcdc/cdc/sql"
)

// A backfill reads values in the text form pgoutput sends them in
// (replication.TextParams), whatever the database sets for its sessions.
func TestScanner_ValuesKeepTheirTextFormWhateverTheDatabaseSets(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.Get(t).NewPostgres(t)
	admin, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := ddl.MigratePostgres(ctx, admin, "pub", io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`DO $$ BEGIN
			EXECUTE format('ALTER DATABASE %I SET extra_float_digits = 0', current_database());
			EXECUTE format('ALTER DATABASE %I SET IntervalStyle = iso_8601', current_database());
			EXECUTE format('ALTER DATABASE %I SET bytea_output = escape', current_database());
			EXECUTE format('ALTER DATABASE %I SET TimeZone = %L', current_database(), 'Asia/Kolkata');
			EXECUTE format('ALTER DATABASE %I SET DateStyle = %L', current_database(), 'SQL, DMY');
		END $$`,
		`ALTER TABLE outbox ADD COLUMN ratio double precision, ADD COLUMN span interval, ADD COLUMN blob bytea`,
		`INSERT INTO outbox (event_type, environment, event_context, event_date_time, ratio, span, blob)
			VALUES ('e', 'test', '{}', '2026-12-01 10:00:00.123456+00', 0.1::float8 + 0.2::float8, '1 day 2 hours', '\x00ff'::bytea)`,
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	pool, err := backfill.OpenPool(ctx, dsn) // sessions opened after the settings
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	rel, err := backfill.LoadRelation(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	page, err := backfill.NewScanner(pool, rel, time.Time{}, time.Time{}, 10, 0, true).Next(ctx)
	if err != nil || len(page) != 1 {
		t.Fatalf("scan: %d rows, err %v; want 1 row", len(page), err)
	}
	var got []string
	for _, col := range []string{"event_date_time", "ratio", "span", "blob"} {
		got = append(got, string(page[0].Values[rel.Index(col)].Data))
	}
	want := []string{"2026-12-01 10:00:00.123456+00", "0.30000000000000004", "1 day 02:00:00", `\x00ff`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("values %q, want %q", got, want)
	}
}
