package backfill_test

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcdc/cdc/backfill"
	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/replication"
	ddl "github.com/eventcdc/cdc/sql"
)

// migrated is a new database with cdc's outbox and publication "pub",
// and a pool on it with the server's own session settings.
func migrated(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	dsn := testenv.Get(t).NewPostgres(t)
	admin, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	if err := ddl.MigratePostgres(context.Background(), admin, "pub", io.Discard); err != nil {
		t.Fatal(err)
	}
	return dsn, admin
}

// scanAll reads the outbox as a backfill does, on sessions of its own,
// in one page that must hold want rows.
func scanAll(t *testing.T, dsn string, want int) (*decoder.Relation, []backfill.Record) {
	t.Helper()
	ctx := context.Background()
	pool, err := backfill.OpenPool(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	rel, err := backfill.LoadRelation(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	page, err := backfill.NewScanner(pool, rel, time.Time{}, time.Time{}, want+1, 0, true).Next(ctx)
	if err != nil || len(page) != want {
		t.Fatalf("scan: %d rows, err %v; want %d", len(page), err, want)
	}
	return rel, page
}

// A backfill reads values in the text form pgoutput sends them in
// (replication.TextParams), whatever the database sets for its sessions.
func TestScanner_ValuesKeepTheirTextFormWhateverTheDatabaseSets(t *testing.T) {
	ctx := context.Background()
	dsn, admin := migrated(t)
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
	rel, page := scanAll(t, dsn, 1) // sessions opened after the settings
	var got []string
	for _, col := range []string{"event_date_time", "ratio", "span", "blob"} {
		got = append(got, string(page[0].Values[rel.Index(col)].Data))
	}
	want := []string{"2026-12-01 10:00:00.123456+00", "0.30000000000000004", "1 day 02:00:00", `\x00ff`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("values %q, want %q", got, want)
	}
}

// A backfill reads every column in the text pgoutput sends for it, for
// types whose cast to text is a function of its own (bool, char(n), inet,
// cidr) as for the others: compared value by value with what a
// replication session of the same rows sends.
func TestScanner_ValuesAreWhatPgoutputSends(t *testing.T) {
	ctx := context.Background()
	dsn, admin := migrated(t)
	for _, sql := range []string{
		// A composite whose fields are all NULL is not NULL itself,
		// though IS NULL says so: pgoutput sends "(,)".
		`CREATE TYPE pair AS (a int, b text)`,
		`ALTER TABLE outbox ADD COLUMN flag bool, ADD COLUMN code char(5), ADD COLUMN addr inet, ADD COLUMN net cidr,
			ADD COLUMN tags text[], ADD COLUMN price numeric(10, 2), ADD COLUMN day date, ADD COLUMN who name, ADD COLUMN pr pair`,
		`SELECT pg_create_logical_replication_slot('textform', 'pgoutput')`,
		`INSERT INTO outbox (event_type, environment, event_context, event_date_time, flag, code, addr, net, tags, price, day, who, pr)
			SELECT 'e' || n, 'test', ('{"n": ' || n || '}')::json, '2026-12-01 10:00:00+00'::timestamptz + n * interval '1.5 second',
				n % 2 = 0, (ARRAY['ab', 'abcde', ''])[1 + n % 3], (ARRAY['10.0.0.1', '10.0.0.0/8', '::1'])[1 + n % 3]::inet,
				(ARRAY['10.0.0.0/8', '192.168.1.0/24'])[1 + n % 2]::cidr, ARRAY['a b', 'c"d', NULL], n * 1.5, '2026-02-28'::date + n,
				'who' || n, CASE WHEN n % 2 = 0 THEN ROW(NULL, NULL)::pair ELSE ROW(n, 'x y')::pair END
			FROM generate_series(1, 12) AS n`,
		`INSERT INTO outbox (event_type, environment, event_context) VALUES ('nulls', 'test', '{}')`,
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	rel, page := scanAll(t, dsn, 13)
	scanned := map[string][]decoder.Value{}
	for _, r := range page {
		scanned[r.ID] = r.Values
	}

	conn, err := replication.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := pglogrepl.StartReplication(ctx, conn, "textform", 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'pub'"}}); err != nil {
		t.Fatal(err)
	}
	dec := decoder.New()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	compared := 0
	for streamed := 0; streamed < len(page); {
		msg, err := conn.ReceiveMessage(rctx)
		if err != nil {
			t.Fatalf("after %d rows: %v", streamed, err)
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok || len(cd.Data) == 0 || cd.Data[0] != pglogrepl.XLogDataByteID {
			continue
		}
		xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
		if err != nil {
			t.Fatal(err)
		}
		m, err := dec.Decode(xld.WALData)
		if err != nil {
			t.Fatal(err)
		}
		if m.Kind != decoder.KindInsert {
			continue
		}
		streamed++
		id := string(m.Values[m.Relation.Index("id")].Data)
		got, ok := scanned[id]
		if !ok {
			t.Fatalf("streamed row %s not scanned", id)
		}
		for i, col := range m.Relation.Columns {
			want := m.Values[i]
			have := got[rel.Index(col.Name)]
			if have.Kind != want.Kind || string(have.Data) != string(want.Data) {
				t.Errorf("row %s column %s: backfill reads %q (%c), pgoutput sends %q (%c)", id, col.Name, have.Data, have.Kind, want.Data, want.Kind)
			}
			compared++
		}
	}
	if compared != 13*len(rel.Columns) || len(rel.Columns) != 16 {
		t.Fatalf("compared %d values of %d columns", compared, len(rel.Columns))
	}
}

// The bounds of a scan are instants, whatever zone they are written in,
// and an outbox whose event_date_time is a timestamp without a zone holds
// UTC wall clocks (the live stream reads them so), whatever the database
// sets for its sessions: --since 2026-06-02T03:15:00+02:00 is 01:15 UTC
// there too. pgx sends a time.Time for a timestamp parameter as its wall
// clock in its own zone, which read 03:15 instead.
func TestScanner_BoundsAreInstantsOverAZonelessEventTime(t *testing.T) {
	ctx := context.Background()
	dsn, admin := migrated(t)
	for _, sql := range []string{
		`DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET TimeZone = %L', current_database(), 'Asia/Kolkata'); END $$`,
		`ALTER TABLE outbox ALTER COLUMN event_date_time TYPE timestamp`,
		`INSERT INTO outbox (event_type, environment, event_context, event_date_time) VALUES
			('a', 'test', '{}', '2026-06-02 01:00:00'), ('b', 'test', '{}', '2026-06-02 01:30:00'), ('c', 'test', '{}', '2026-06-02 02:00:00')`,
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	pool, err := backfill.OpenPool(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	rel, err := backfill.LoadRelation(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		name         string
		since, until string
		want         string
	}{
		{"since in UTC", "2026-06-02T01:15:00Z", "", "[b c]"},
		{"since east of UTC", "2026-06-02T03:15:00+02:00", "", "[b c]"},
		{"since west of UTC", "2026-06-01T21:15:00-04:00", "", "[b c]"},
		{"until east of UTC", "", "2026-06-02T03:45:00+02:00", "[a b]"},
		{"both, apart", "2026-06-01T21:15:00-04:00", "2026-06-02T07:15:00+05:30", "[b]"},
	} {
		var since, until time.Time
		if tc.since != "" {
			since = at(tc.since)
		}
		if tc.until != "" {
			until = at(tc.until)
		}
		// One row a page: the keyset goes on from a zoneless time too.
		sc := backfill.NewScanner(pool, rel, since, until, 1, 0, true)
		var got []string
		for {
			page, err := sc.Next(ctx)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if len(page) == 0 {
				break
			}
			for _, r := range page {
				got = append(got, string(r.Values[rel.Index("event_type")].Data))
			}
		}
		if fmt.Sprint(got) != tc.want {
			t.Errorf("%s: rows %v, want %s", tc.name, got, tc.want)
		}
	}
}
