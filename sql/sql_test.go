package sql_test

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pgx/v5"

	"github.com/eventcdc/cdc/internal/testenv"
	ddl "github.com/eventcdc/cdc/sql"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// connectFresh connects to a new, empty database, closed when the test ends.
func connectFresh(t *testing.T, env *testenv.Env) *pgx.Conn {
	t.Helper()
	pg, err := pgx.Connect(context.Background(), env.NewPostgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close(context.Background()) })
	return pg
}

// Two migrates at once on a new database — two replicas' init containers
// — both succeed: neither fails on the other's table or publication.
func TestMigratePostgres_TwoAtOnceOnANewDatabase(t *testing.T) {
	env := testenv.Get(t)
	ctx := context.Background()
	for round := range 5 {
		dsn := env.NewPostgres(t)
		start := make(chan struct{})
		errs := make(chan error, 2)
		for range 2 {
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close(context.Background()) })
			go func() {
				<-start
				errs <- ddl.MigratePostgres(ctx, conn, "pub", io.Discard)
			}()
		}
		close(start)
		// Both ended before a failure ends the test: its cleanup closes
		// the connections they use.
		first, second := <-errs, <-errs
		for _, err := range []error{first, second} {
			if err != nil {
				t.Fatalf("round %d: a migrate beside another: %v", round, err)
			}
		}
	}
}

func TestPostgres_RejectsUnsafePublicationName(t *testing.T) {
	for _, name := range []string{"", "Pub", "a-b", `x"; DROP TABLE outbox; --`, "1abc"} {
		if _, err := ddl.Postgres(name); err == nil {
			t.Errorf("Postgres(%q): want error", name)
		}
	}
}

func TestMigrate_IsIdempotentAndCreatesTheContract(t *testing.T) {
	env := testenv.Get(t)
	ctx := context.Background()

	pg := connectFresh(t, env)
	opts, err := clickhouse.ParseDSN(env.NewClickHouse(t))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := clickhouse.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()

	for i := 0; i < 2; i++ {
		if err := ddl.MigratePostgres(ctx, pg, "cdc_outbox", io.Discard); err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
		if err := ddl.MigrateClickHouse(ctx, ch); err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
	}

	var pubInsert, pubUpdate, pubDelete bool
	var tables int
	err = pg.QueryRow(ctx, `SELECT p.pubinsert, p.pubupdate, p.pubdelete,
		(SELECT count(*) FROM pg_publication_tables t WHERE t.pubname = p.pubname AND t.tablename = 'outbox')
		FROM pg_publication p WHERE p.pubname = 'cdc_outbox'`).Scan(&pubInsert, &pubUpdate, &pubDelete, &tables)
	if err != nil {
		t.Fatal(err)
	}
	if !pubInsert || pubUpdate || pubDelete || tables != 1 {
		t.Fatalf("publication: insert=%v update=%v delete=%v tables=%d; want insert-only on outbox", pubInsert, pubUpdate, pubDelete, tables)
	}

	var cols []string
	rows, err := pg.Query(ctx, `SELECT column_name || ' ' || data_type FROM information_schema.columns WHERE table_name = 'outbox' ORDER BY ordinal_position`)
	if err != nil {
		t.Fatal(err)
	}
	cols, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"id uuid", "event_type text", "event_date_time timestamp with time zone", "environment text", "event_context json", "metadata_version bigint", "traceparent text"}
	if len(cols) != len(want) {
		t.Fatalf("outbox columns = %v, want %v", cols, want)
	}
	for i := range want {
		if cols[i] != want[i] {
			t.Fatalf("outbox column %d = %q, want %q", i, cols[i], want[i])
		}
	}

	var engine, sortingKey string
	if err := ch.QueryRow(ctx, `SELECT engine, sorting_key FROM system.tables WHERE database = currentDatabase() AND name = 'event_log'`).Scan(&engine, &sortingKey); err != nil {
		t.Fatal(err)
	}
	if engine != "ReplacingMergeTree" || sortingKey != "event_type, event_date_time, event_id" {
		t.Fatalf("event_log engine=%q sorting key=%q", engine, sortingKey)
	}
}

// A cdc_dead_letter an earlier migrate made, without slot_name, gets the
// column from today's, with its letters kept and left every pipeline's
// (NULL); a migrate finding the column changes nothing. A fresh table has
// it last, as the added one is.
func TestMigratePostgres_AddsTheSlotColumnToAnEarlierDeadLetterTable(t *testing.T) {
	ctx := context.Background()
	pg := connectFresh(t, testenv.Get(t))
	if err := ddl.MigratePostgres(ctx, pg, "cdc_outbox", io.Discard); err != nil {
		t.Fatal(err)
	}
	columns := func() string {
		t.Helper()
		var cols string
		if err := pg.QueryRow(ctx, `SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position)
			FROM information_schema.columns WHERE table_name = 'cdc_dead_letter'`).Scan(&cols); err != nil {
			t.Fatal(err)
		}
		return cols
	}
	const want = "id bigint, event_id uuid, commit_lsn pg_lsn, seq bigint, row_data jsonb, error text, created_at timestamp with time zone, slot_name text"
	if got := columns(); got != want {
		t.Fatalf("a fresh cdc_dead_letter's columns: %s; want %s", got, want)
	}
	if _, err := pg.Exec(ctx, `ALTER TABLE cdc_dead_letter DROP COLUMN slot_name`); err != nil {
		t.Fatal(err)
	}
	if _, err := pg.Exec(ctx, `INSERT INTO cdc_dead_letter (commit_lsn, seq, row_data, error) VALUES ('0/10', 1, '{"a":"1"}', 'refused'), ('0/20', 2, '{"a":"2"}', 'refused')`); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := ddl.MigratePostgres(ctx, pg, "cdc_outbox", io.Discard); err != nil {
			t.Fatalf("migrate %d: %v", i+1, err)
		}
	}
	if got := columns(); got != want {
		t.Fatalf("cdc_dead_letter's columns after migrate: %s; want %s", got, want)
	}
	var letters, slotless int
	if err := pg.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE slot_name IS NULL) FROM cdc_dead_letter`).Scan(&letters, &slotless); err != nil {
		t.Fatal(err)
	}
	if letters != 2 || slotless != 2 {
		t.Fatalf("after migrate: %d letters, %d of no slot; want 2 and 2", letters, slotless)
	}
}

// A migrate that finds slot_name takes no lock that waits for a reader of
// cdc_dead_letter (an operator's transaction left open after a SELECT, a
// long `cdc deadletter list --json`): an ALTER TABLE queued behind one
// would hold up, for as long as the reader lasts, every Put and session
// start of cdc run, queued behind the ALTER. Run on every deploy, an ADD
// COLUMN IF NOT EXISTS would; the one that adds the column, once, does.
func TestMigratePostgres_FindingTheSlotColumnWaitsForNoReader(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.Get(t).NewPostgres(t)
	admin := connect(t, dsn)
	if err := ddl.MigratePostgres(ctx, admin, "cdc_outbox", io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		column  bool // cdc_dead_letter has slot_name when the reader starts
		waiting bool // the migrate waits for the reader
	}{
		{"the column there", true, false},
		{"the column to add", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.column {
				exec(t, admin, `ALTER TABLE cdc_dead_letter DROP COLUMN slot_name`)
			}
			reader := connect(t, dsn)
			tx, err := reader.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx) //nolint:errcheck // the test's reader
			if _, err := tx.Exec(ctx, `SELECT count(*) FROM cdc_dead_letter`); err != nil {
				t.Fatal(err)
			}
			impatient := connect(t, dsn)
			exec(t, impatient, `SET lock_timeout = '500ms'`)
			err = ddl.MigratePostgres(ctx, impatient, "cdc_outbox", io.Discard)
			if waited := err != nil && strings.Contains(err.Error(), "lock timeout"); waited != tc.waiting || !tc.waiting && err != nil {
				t.Fatalf("migrate beside a reader of cdc_dead_letter under a lock_timeout of 500ms: %v; want a lock timeout: %v", err, tc.waiting)
			}
		})
	}
}

func TestCreateSlot_CreatesOnceAndKeepsEventsFromThenOn(t *testing.T) {
	env := testenv.Get(t)
	ctx := context.Background()
	pg := connectFresh(t, env)
	if err := ddl.MigratePostgres(ctx, pg, "cdc_outbox", io.Discard); err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false} {
		created, err := ddl.CreateSlot(ctx, pg, "slot_a")
		if err != nil || created != want {
			t.Fatalf("call %d: created=%v err=%v, want created=%v", i+1, created, err, want)
		}
	}
	if _, err := pg.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context) VALUES ('e', 'test', '{}')`); err != nil {
		t.Fatal(err)
	}
	var inserts int
	err := pg.QueryRow(ctx, `SELECT count(*) FROM pg_logical_slot_peek_binary_changes('slot_a', NULL, NULL, 'proto_version', '1', 'publication_names', 'cdc_outbox') WHERE get_byte(data, 0) = ascii('I')`).Scan(&inserts)
	if err != nil {
		t.Fatal(err)
	}
	if inserts != 1 {
		t.Fatalf("slot holds %d inserts, want 1", inserts)
	}
	if _, err := ddl.CreateSlot(ctx, pg, "Bad-Name"); err == nil {
		t.Fatal("CreateSlot with an invalid name: want error")
	}
}

func TestCreateSlot_RefusesASlotOfAnotherDatabase(t *testing.T) {
	env := testenv.Get(t)
	ctx := context.Background()
	other := connectFresh(t, env)
	if created, err := ddl.CreateSlot(ctx, other, "shared_name"); err != nil || !created {
		t.Fatalf("first database: created=%v err=%v", created, err)
	}
	pg := connectFresh(t, env)
	_, err := ddl.CreateSlot(ctx, pg, "shared_name")
	if err == nil || !strings.Contains(err.Error(), "slot shared_name already exists for database") || !strings.Contains(err.Error(), "choose another CDC_SLOT_NAME") {
		t.Fatalf("err = %v", err)
	}
}

// A slot of the name in this database read by another plugin is not cdc's:
// migrate said nothing of it, and cdc run then refused it at every start.
func TestCreateSlot_RefusesASlotOfAnotherPlugin(t *testing.T) {
	env := testenv.Get(t)
	ctx := context.Background()
	pg := connectFresh(t, env)
	if _, err := pg.Exec(ctx, `SELECT pg_create_logical_replication_slot('other_plugin', 'test_decoding')`); err != nil {
		t.Fatal(err)
	}
	created, err := ddl.CreateSlot(ctx, pg, "other_plugin")
	want := `replication slot other_plugin exists with the plugin "test_decoding", and cdc reads pgoutput: drop it if nothing else reads it, or set another CDC_SLOT_NAME`
	if err == nil || err.Error() != want || created {
		t.Fatalf("CreateSlot = %v, %v; want the error %q", created, err, want)
	}
}

// The outbox migrated into public, and another schema put first on the
// search path since: migrate creates no second outbox or cdc_dead_letter
// there. CREATE TABLE IF NOT EXISTS looked only in app, made empty tables
// there, and the application's INSERTs, resolved by the same path, went
// to an outbox no publication sent.
func TestMigratePostgres_MakesNoSecondOutboxWhereTheSearchPathLooksFirst(t *testing.T) {
	env := testenv.Get(t)
	ctx := context.Background()
	pg := connectFresh(t, env)
	if err := ddl.MigratePostgres(ctx, pg, "cdc_outbox", io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`INSERT INTO outbox (event_type, environment, event_context) VALUES ('e', 'test', '{}')`,
		`CREATE SCHEMA app`, `SET search_path = app, public`,
	} {
		if _, err := pg.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	if err := ddl.MigratePostgres(ctx, pg, "cdc_outbox", io.Discard); err != nil {
		t.Fatal(err)
	}
	var tables string
	var rows int
	if err := pg.QueryRow(ctx, `SELECT string_agg(relnamespace::regnamespace::text || '.' || relname, ',' ORDER BY relnamespace::regnamespace::text, relname)
		FROM pg_class WHERE relname IN ('outbox', 'cdc_dead_letter') AND relkind = 'r'`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if err := pg.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if tables != "public.cdc_dead_letter,public.outbox" || rows != 1 {
		t.Fatalf("tables %s, %d rows in the outbox the path finds; want public's alone, with its 1 row", tables, rows)
	}
}

// A publication of CDC_PUBLICATION's name that exists in a shape cdc run
// refuses at every start fails migrate, naming what to do, and creates
// nothing for it to ship: before, migrate said "migrated", created the
// slot, and cdc run then refused the publication at each start.
func TestMigratePostgres_RefusesAPublicationRunWouldRefuse(t *testing.T) {
	env := testenv.Get(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		setup []string
		want  string // "" for accepted
	}{
		{"made by migrate", nil, ""},
		{"of the outbox alone, made by hand", []string{
			`CREATE TABLE outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), event_type text NOT NULL, event_date_time timestamptz NOT NULL DEFAULT now(), environment text NOT NULL, event_context json NOT NULL, metadata_version bigint NOT NULL DEFAULT 1, traceparent text)`,
			`CREATE PUBLICATION pub FOR TABLE outbox`,
		}, ""},
		{"of inserts no more", []string{
			`CREATE TABLE outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), event_type text NOT NULL, event_date_time timestamptz NOT NULL DEFAULT now(), environment text NOT NULL, event_context json NOT NULL, metadata_version bigint NOT NULL DEFAULT 1, traceparent text)`,
			`CREATE PUBLICATION pub FOR TABLE outbox WITH (publish = 'update, delete')`,
		}, `migrate postgres: publication pub exists and does not publish inserts, the only changes cdc ships: make it publish them (ALTER PUBLICATION pub SET (publish = 'insert')), or set CDC_PUBLICATION to another name`},
		{"of another table", []string{
			`CREATE TABLE audit (v int)`, `CREATE PUBLICATION pub FOR TABLE audit`,
		}, `migrate postgres: publication pub exists and does not publish the outbox table: set CDC_PUBLICATION to a publication of the outbox alone, or to a new name for migrate to create one`},
		{"with nothing in it", []string{`CREATE PUBLICATION pub`},
			`migrate postgres: publication pub exists and does not publish the outbox table: set CDC_PUBLICATION to a publication of the outbox alone, or to a new name for migrate to create one`},
		{"of the outbox and others", []string{
			`CREATE SCHEMA "Billing"`, `CREATE TABLE "Billing".outbox (v int)`, `CREATE TABLE audit (v int)`,
			`CREATE TABLE outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), event_type text NOT NULL, event_date_time timestamptz NOT NULL DEFAULT now(), environment text NOT NULL, event_context json NOT NULL, metadata_version bigint NOT NULL DEFAULT 1, traceparent text)`,
			`CREATE PUBLICATION pub FOR TABLE "Billing".outbox, outbox, audit`,
		}, `migrate postgres: publication pub exists and publishes "Billing".outbox, public.audit besides public.outbox, and cdc ships every row its publication sends into event_log: drop them from it (ALTER PUBLICATION pub DROP TABLE …; not possible FOR ALL TABLES), or set CDC_PUBLICATION to a new name for migrate to create a publication of the outbox alone`},
		{"of all tables", []string{`CREATE PUBLICATION pub FOR ALL TABLES`},
			`migrate postgres: publication pub exists and publishes public.cdc_dead_letter besides public.outbox, and cdc ships every row its publication sends into event_log: drop them from it (ALTER PUBLICATION pub DROP TABLE …; not possible FOR ALL TABLES), or set CDC_PUBLICATION to a new name for migrate to create a publication of the outbox alone`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pg := connectFresh(t, env)
			for _, stmt := range tc.setup {
				if _, err := pg.Exec(ctx, stmt); err != nil {
					t.Fatal(err)
				}
			}
			err := ddl.MigratePostgres(ctx, pg, "pub", io.Discard)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("MigratePostgres: %v; want it accepted", err)
				}
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Fatalf("MigratePostgres = %v;\nwant %s", err, tc.want)
			}
			// The publication is left as it was.
			var tables int
			if err := pg.QueryRow(ctx, `SELECT count(*) FROM pg_publication_tables WHERE pubname = 'pub'`).Scan(&tables); err != nil {
				t.Fatal(err)
			}
			want := map[string]int{"of inserts no more": 1, "of another table": 1, "with nothing in it": 0, "of the outbox and others": 3, "of all tables": 2}[tc.name]
			if tables != want {
				t.Fatalf("publication pub publishes %d tables after the refusal; want %d, as before", tables, want)
			}
		})
	}
}

// An application's database may have a table named outbox of its own
// (another outbox pattern's, with other columns). migrate made the
// publication on it and cdc_dead_letter beside it, then failed building
// the index, saying the failed build left it invalid and the next migrate
// would build it again: each did the same. It refuses such a table before
// making anything, naming the columns it lacks; an outbox with cdc's
// columns and more (one added end to end, docs/publishing.md) passes.
func TestMigratePostgres_RefusesAnOutboxThatIsNotCdcs(t *testing.T) {
	env := testenv.Get(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		table string
		want  string // "" for accepted
	}{
		{"another pattern's", `CREATE TABLE outbox (id bigserial PRIMARY KEY, topic text, payload jsonb, created_at timestamptz DEFAULT now())`,
			`migrate postgres: table public.outbox has no column event_date_time: it is not the outbox cdc reads (docs/publishing.md, The outbox row), but a table of that name from before cdc: rename it, or give cdc's outbox a schema of its own, first on the search_path of cdc's roles and of the application's inserts; then run cdc migrate again`},
		{"without id nor event_date_time", `CREATE TABLE outbox (event_id uuid, event_type text, created timestamptz, environment text, event_context json)`,
			`migrate postgres: table public.outbox has no column id, event_date_time: it is not the outbox cdc reads (docs/publishing.md, The outbox row), but a table of that name from before cdc: rename it, or give cdc's outbox a schema of its own, first on the search_path of cdc's roles and of the application's inserts; then run cdc migrate again`},
		{"with event_date_time dropped", `CREATE TABLE outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), event_type text NOT NULL, event_date_time timestamptz, environment text NOT NULL, event_context json NOT NULL); ALTER TABLE outbox DROP COLUMN event_date_time`,
			`migrate postgres: table public.outbox has no column event_date_time: it is not the outbox cdc reads (docs/publishing.md, The outbox row), but a table of that name from before cdc: rename it, or give cdc's outbox a schema of its own, first on the search_path of cdc's roles and of the application's inserts; then run cdc migrate again`},
		{"cdc's with a column added", `CREATE TABLE outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), event_type text NOT NULL, event_date_time timestamptz NOT NULL DEFAULT now(), environment text NOT NULL, event_context json NOT NULL, metadata_version bigint NOT NULL DEFAULT 1, traceparent text, tenant text)`, ""},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			pg := connectFresh(t, env)
			if _, err := pg.Exec(ctx, tc.table); err != nil {
				t.Fatal(err)
			}
			err := ddl.MigratePostgres(ctx, pg, "cdc_outbox", io.Discard)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("MigratePostgres: %v; want it accepted", err)
				}
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Fatalf("MigratePostgres = %v;\nwant %s", err, tc.want)
			}
			// Nothing made on or beside the table.
			var made []string
			if err := pg.QueryRow(ctx, `SELECT array_remove(ARRAY[
				CASE WHEN EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'cdc_outbox') THEN 'publication cdc_outbox' END,
				CASE WHEN to_regclass('cdc_dead_letter') IS NOT NULL THEN 'cdc_dead_letter' END,
				CASE WHEN to_regclass('outbox_event_date_time_id_idx') IS NOT NULL THEN 'outbox_event_date_time_id_idx' END], NULL)`).Scan(&made); err != nil {
				t.Fatal(err)
			}
			if len(made) != 0 {
				t.Fatalf("the refused migrate made %v", made)
			}
		})
	}
}

// makingConn is a real connection whose first look at the slot finds it
// as PostgreSQL shows a slot another session is making, for a moment after
// it appears: in this database, its plugin not named yet. That session
// (another connection here) has made it before the look: made during
// the look, as it once was, it waits for the server's open transactions
// — other packages' tests, under make test — and took longer than
// CreateSlot waits, counted from before its first look.
type makingConn struct {
	*pgx.Conn
	looked bool
}

type madeRow struct{ db string }

func (r madeRow) Scan(dest ...any) error {
	for i, v := range []string{r.db, r.db, "", ""} {
		*dest[i].(*string) = v
	}
	return nil
}

func (c *makingConn) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if c.looked || !strings.Contains(sql, "FROM pg_replication_slots") {
		return c.Conn.QueryRow(ctx, sql, args...)
	}
	c.looked = true
	return madeRow{db: c.Conn.Config().Database}
}

// Two migrates at once (an init container per replica): the second to
// look at the slot may find it being made by the first, listed before
// PostgreSQL names its plugin. CreateSlot took it for another plugin's
// slot, `exists with the plugin "", and cdc reads pgoutput: drop it`, and
// that migrate exited 1 (seen on PostgreSQL 15 with two `cdc migrate`
// over a 50,000-row outbox). It waits for the plugin to be named.
func TestCreateSlot_ASlotBeingMadeIsWaitedFor(t *testing.T) {
	env := testenv.Get(t)
	ctx := context.Background()
	pg := connectFresh(t, env)
	if err := ddl.MigratePostgres(ctx, pg, "cdc_outbox", io.Discard); err != nil {
		t.Fatal(err)
	}
	other, err := pgx.Connect(ctx, pg.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	const slot = "slot_being_made"
	t.Cleanup(func() {
		_, _ = pg.Exec(context.Background(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot)
	})
	if _, err := other.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
		t.Fatalf("the other session's slot: %v", err)
	}
	created, err := ddl.CreateSlot(ctx, &makingConn{Conn: pg}, slot)
	if err != nil || created {
		t.Fatalf("CreateSlot = %v, %v; want the other session's slot taken as made (false, nil)", created, err)
	}
}

// A physical slot of the name (a standby's, a base backup's) has no
// database: it was reported as "already exists for database \"\"".
func TestCreateSlot_NamesAPhysicalSlotAsSuch(t *testing.T) {
	env := testenv.Get(t)
	ctx := context.Background()
	pg := connectFresh(t, env)
	slot := testenv.Name("physical")
	if _, err := pg.Exec(ctx, `SELECT pg_create_physical_replication_slot($1)`, slot); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = pg.Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, slot) })
	created, err := ddl.CreateSlot(ctx, pg, slot)
	want := "slot " + slot + " already exists as a physical replication slot (a standby's or a base backup's), not a logical one of this database: choose another CDC_SLOT_NAME"
	if err == nil || err.Error() != want || created {
		t.Fatalf("CreateSlot = %v, %v; want the error %q", created, err, want)
	}
}
