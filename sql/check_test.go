package sql_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5"

	"github.com/eventcdc/cdc/internal/testenv"
	ddl "github.com/eventcdc/cdc/sql"
)

// What CheckPostgres names of each thing migrate makes.
const (
	lackDeadLetters    = "table cdc_dead_letter does not exist"
	lackByPosition     = "cdc_dead_letter has no index on (commit_lsn, seq) (cdc_dead_letter_position)"
	lackByEvent        = "cdc_dead_letter has no index on event_id (cdc_dead_letter_event_id)"
	lackBySlot         = "cdc_dead_letter has no slot_name column"
	lackBySlotIndex    = "cdc_dead_letter has no index on slot_name (cdc_dead_letter_slot)"
	lackOldOutboxIndex = "outbox has the index an earlier migrate made, on event_date_time alone, not outbox_event_date_time_id_idx on (event_date_time, id)"
	lackOutboxIndex    = "outbox has no index on event_date_time (outbox_event_date_time_id_idx)"
)

// Each schema an earlier `cdc migrate` left — its history in sql/ — and
// each way an index can be there and not serve, gives exactly the lacks
// cdc run must name; one migrated today, none. Fatal only without
// cdc_dead_letter. An index counts by its columns, not its name.
func TestCheckPostgres_NamesWhatAnEarlierMigrateDidNotMake(t *testing.T) {
	env := testenv.Get(t)
	ctx := context.Background()
	dropNewOutboxIndex := `DROP INDEX outbox_event_date_time_id_idx`
	dropSlot := `ALTER TABLE cdc_dead_letter DROP COLUMN slot_name`
	for _, tc := range []struct {
		name      string
		stmts     []string // after today's migrate
		retention bool
		want      []string // What of each lack, in order
		fatal     bool
	}{
		{"migrated today", nil, true, nil, false},
		{"before the slot column: letters are every pipeline's", []string{dropSlot}, true, []string{lackBySlot}, false},
		{"before 1148f4b: no index by position", []string{dropSlot, `DROP INDEX cdc_dead_letter_position`}, true,
			[]string{lackByPosition, lackBySlot}, false},
		{"before 258535c: no index on cdc_dead_letter", []string{dropSlot, `DROP INDEX cdc_dead_letter_position`, `DROP INDEX cdc_dead_letter_event_id`}, true,
			[]string{lackByPosition, lackBySlot, lackByEvent}, false},
		{"before cbfce64: the outbox index on event_date_time alone, and no dead-letter index", []string{
			dropSlot, `DROP INDEX cdc_dead_letter_position`, `DROP INDEX cdc_dead_letter_event_id`, dropNewOutboxIndex, oldIndex,
		}, true, []string{lackByPosition, lackBySlot, lackByEvent, lackOldOutboxIndex}, false},
		{"a slot column dropped and added again is found, without its index", []string{dropSlot, `ALTER TABLE cdc_dead_letter ADD COLUMN slot_name text`}, true, []string{lackBySlotIndex}, false},
		{"before the slot index", []string{`DROP INDEX cdc_dead_letter_slot`}, true, []string{lackBySlotIndex}, false},
		{"a slot index an operator made under another name", []string{`DROP INDEX cdc_dead_letter_slot`, `CREATE INDEX letters_by_slot ON cdc_dead_letter (slot_name, created_at)`}, true, nil, false},
		{"the old outbox index, retention off", []string{dropNewOutboxIndex, oldIndex}, false, nil, false},
		{"no outbox index", []string{dropNewOutboxIndex}, true, []string{lackOutboxIndex}, false},
		{"no outbox index, retention off", []string{dropNewOutboxIndex}, false, nil, false},
		{"an invalid index by position: PostgreSQL reads none", []string{
			`UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'cdc_dead_letter_position'::regclass`,
		}, true, []string{lackByPosition}, false},
		{"a partial index by event id", []string{
			`DROP INDEX cdc_dead_letter_event_id`, `CREATE INDEX some_letters ON cdc_dead_letter (event_id) WHERE seq > 0`,
		}, true, []string{lackByEvent}, false},
		{"indexes an operator made under other names", []string{
			`DROP INDEX cdc_dead_letter_position`, `DROP INDEX cdc_dead_letter_event_id`, dropNewOutboxIndex,
			`CREATE INDEX letters_by_lsn ON cdc_dead_letter (commit_lsn)`,
			`CREATE INDEX letters_by_event ON cdc_dead_letter (event_id, created_at)`,
			`CREATE INDEX outbox_by_time ON outbox (event_date_time, id)`,
		}, true, nil, false},
		{"an index with event_id second serves no lookup by it", []string{
			`DROP INDEX cdc_dead_letter_event_id`, `CREATE INDEX letters_by_time ON cdc_dead_letter (created_at, event_id)`,
		}, true, []string{lackByEvent}, false},
		{"id only included: the index orders by event_date_time alone", []string{
			dropNewOutboxIndex, `CREATE INDEX outbox_by_time ON outbox (event_date_time) INCLUDE (id)`,
		}, true, []string{lackOldOutboxIndex}, false},
		{"a hash index serves no range", []string{
			dropNewOutboxIndex, `CREATE INDEX outbox_by_time ON outbox USING hash (event_date_time)`,
		}, true, []string{lackOutboxIndex}, false},
		{"a BRIN index serves no keyset page", []string{
			dropNewOutboxIndex, `CREATE INDEX outbox_by_time ON outbox USING brin (event_date_time, id)`,
		}, true, []string{lackOutboxIndex}, false},
		{"no cdc_dead_letter", []string{`DROP TABLE cdc_dead_letter`}, true, []string{lackDeadLetters}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := connect(t, env.NewPostgres(t))
			if err := ddl.MigratePostgres(ctx, conn, "cdc_outbox", io.Discard); err != nil {
				t.Fatal(err)
			}
			exec(t, conn, tc.stmts...)
			lacks, err := ddl.CheckPostgres(ctx, conn, tc.retention)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range lacks {
				got = append(got, l.What)
				if l.Effect == "" {
					t.Errorf("%q says nothing of what it costs", l.What)
				}
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("lacks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			err = ddl.Fatal(lacks)
			if tc.fatal != (err != nil) || tc.fatal && !errors.Is(err, ddl.ErrNotMigrated) {
				t.Fatalf("Fatal = %v, want fatal %v wrapping ErrNotMigrated", err, tc.fatal)
			}
			if tc.fatal && !strings.HasPrefix(err.Error(), tc.want[0]+": ") || tc.fatal && !strings.HasSuffix(err.Error(), ": run `cdc migrate` as the admin") {
				t.Fatalf("Fatal = %q, want it to name %q and `cdc migrate`", err, tc.want[0])
			}
		})
	}
}

// A role with the runner's grants (docs/operations.md, Grants) lacks
// nothing; without one of those on cdc_dead_letter cdc run cannot work
// (fatal, naming the GRANT), and without the outbox's, with retention on,
// only retention fails (named, not fatal). A superuser lacks nothing.
func TestCheckPostgres_NamesTheGrantsTheRoleLacks(t *testing.T) {
	env := testenv.Get(t)
	ctx := context.Background()
	const seq = "public.cdc_dead_letter_id_seq"
	for _, tc := range []struct {
		name      string
		stmts     []string // after the runner's grants; {role} is the role
		retention bool
		want      []string // What of each lack, in order; {role} is the role
		grants    []string // Grant of each lack
		fatal     bool
	}{
		{"the runner's grants", nil, true, nil, nil, false},
		{"no SELECT on cdc_dead_letter", []string{`REVOKE SELECT ON cdc_dead_letter FROM {role}`}, true,
			[]string{"role {role} has no SELECT on cdc_dead_letter"}, []string{"GRANT SELECT ON cdc_dead_letter TO {role}"}, true},
		{"no INSERT on cdc_dead_letter", []string{`REVOKE INSERT ON cdc_dead_letter FROM {role}`}, false,
			[]string{"role {role} has no INSERT on cdc_dead_letter"}, []string{"GRANT INSERT ON cdc_dead_letter TO {role}"}, true},
		{"no USAGE on its sequence", []string{`REVOKE USAGE ON SEQUENCE cdc_dead_letter_id_seq FROM {role}`}, false,
			[]string{"role {role} has no USAGE on sequence " + seq}, []string{"GRANT USAGE ON SEQUENCE " + seq + " TO {role}"}, true},
		{"UPDATE on the sequence serves nextval too", []string{`REVOKE USAGE ON SEQUENCE cdc_dead_letter_id_seq FROM {role}`, `GRANT UPDATE ON SEQUENCE cdc_dead_letter_id_seq TO {role}`}, false,
			nil, nil, false},
		{"an identity id needs no sequence grant", []string{
			`REVOKE USAGE ON SEQUENCE cdc_dead_letter_id_seq FROM {role}`,
			`ALTER TABLE cdc_dead_letter ALTER COLUMN id DROP DEFAULT`, `DROP SEQUENCE cdc_dead_letter_id_seq`,
			`ALTER TABLE cdc_dead_letter ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY`,
		}, false, nil, nil, false},
		{"through a group role", []string{`REVOKE ALL ON cdc_dead_letter FROM {role}`, `CREATE ROLE {role}_group`, `GRANT SELECT, INSERT ON cdc_dead_letter TO {role}_group`, `GRANT {role}_group TO {role}`}, true,
			nil, nil, false},
		{"no DELETE on outbox, retention on", []string{`REVOKE DELETE ON outbox FROM {role}`}, true,
			[]string{"role {role} has no DELETE on outbox"}, []string{"GRANT SELECT, DELETE ON outbox TO {role}"}, false},
		{"no SELECT, DELETE on outbox, retention on", []string{`REVOKE ALL ON outbox FROM {role}`}, true,
			[]string{"role {role} has no SELECT, DELETE on outbox"}, []string{"GRANT SELECT, DELETE ON outbox TO {role}"}, false},
		{"no grant on outbox, retention off", []string{`REVOKE ALL ON outbox FROM {role}`}, false, nil, nil, false},
		{"nothing granted", []string{`REVOKE ALL ON outbox, cdc_dead_letter FROM {role}`, `REVOKE ALL ON SEQUENCE cdc_dead_letter_id_seq FROM {role}`}, true,
			[]string{"role {role} has no SELECT on cdc_dead_letter", "role {role} has no INSERT on cdc_dead_letter", "role {role} has no USAGE on sequence " + seq, "role {role} has no SELECT, DELETE on outbox"},
			[]string{"GRANT SELECT ON cdc_dead_letter TO {role}", "GRANT INSERT ON cdc_dead_letter TO {role}", "GRANT USAGE ON SEQUENCE " + seq + " TO {role}", "GRANT SELECT, DELETE ON outbox TO {role}"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := connect(t, env.NewPostgres(t))
			if err := ddl.MigratePostgres(ctx, conn, "cdc_outbox", io.Discard); err != nil {
				t.Fatal(err)
			}
			role := testenv.Name("cdc_runner")
			t.Cleanup(func() {
				for _, stmt := range []string{`RESET ROLE`, `DROP OWNED BY ` + role, `DROP ROLE ` + role, `DROP ROLE IF EXISTS ` + role + `_group`} {
					if _, err := conn.Exec(ctx, stmt); err != nil {
						t.Logf("%s: %v", stmt, err)
					}
				}
			})
			exec(t, conn, `CREATE ROLE `+role+` WITH LOGIN REPLICATION`,
				`GRANT SELECT, DELETE ON outbox TO `+role,
				`GRANT SELECT, INSERT ON cdc_dead_letter TO `+role,
				`GRANT USAGE ON SEQUENCE cdc_dead_letter_id_seq TO `+role)
			for _, stmt := range tc.stmts {
				exec(t, conn, strings.ReplaceAll(stmt, "{role}", role))
			}
			if lacks, err := ddl.CheckPostgres(ctx, conn, true); err != nil || len(lacks) != 0 {
				t.Fatalf("as the superuser: CheckPostgres = %+v, %v; want nothing lacking", lacks, err)
			}
			exec(t, conn, `SET ROLE `+role)
			lacks, err := ddl.CheckPostgres(ctx, conn, tc.retention)
			if err != nil {
				t.Fatal(err)
			}
			var got, gotGrants, want, wantGrants []string
			for _, l := range lacks {
				got, gotGrants = append(got, l.What), append(gotGrants, l.Grant)
				if l.Effect == "" {
					t.Errorf("%q says nothing of what it costs", l.What)
				}
			}
			for i := range tc.want {
				want, wantGrants = append(want, strings.ReplaceAll(tc.want[i], "{role}", role)), append(wantGrants, strings.ReplaceAll(tc.grants[i], "{role}", role))
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") || strings.Join(gotGrants, "\n") != strings.Join(wantGrants, "\n") {
				t.Fatalf("lacks:\n%s\n%s\nwant:\n%s\n%s", strings.Join(got, "\n"), strings.Join(gotGrants, "\n"), strings.Join(want, "\n"), strings.Join(wantGrants, "\n"))
			}
			err = ddl.Fatal(lacks)
			if tc.fatal != (err != nil) || tc.fatal && (!errors.Is(err, ddl.ErrNotGranted) || errors.Is(err, ddl.ErrNotMigrated)) {
				t.Fatalf("Fatal = %v, want fatal %v wrapping ErrNotGranted alone", err, tc.fatal)
			}
			if tc.fatal && !strings.HasPrefix(err.Error(), want[0]+": ") {
				t.Fatalf("Fatal = %q, want it to start with %q", err, want[0])
			}
		})
	}
}

// A role that may not use the schema holding cdc's tables finds none of
// them through its search path: told the USAGE it lacks, not to run
// migrate (which, as the admin, finds them).
func TestCheckPostgres_NamesTheSchemaTheRoleMayNotUse(t *testing.T) {
	env := testenv.Get(t)
	ctx := context.Background()
	conn := connect(t, env.NewPostgres(t))
	exec(t, conn, `CREATE SCHEMA app`, `SET search_path = app`)
	if err := ddl.MigratePostgres(ctx, conn, "cdc_outbox", io.Discard); err != nil {
		t.Fatal(err)
	}
	role := testenv.Name("cdc_runner")
	t.Cleanup(func() {
		for _, stmt := range []string{`RESET ROLE`, `DROP OWNED BY ` + role, `DROP ROLE ` + role} {
			if _, err := conn.Exec(ctx, stmt); err != nil {
				t.Logf("%s: %v", stmt, err)
			}
		}
	})
	exec(t, conn, `CREATE ROLE `+role+` WITH LOGIN REPLICATION`,
		`GRANT SELECT, DELETE ON outbox TO `+role,
		`GRANT SELECT, INSERT ON cdc_dead_letter TO `+role,
		`GRANT USAGE ON SEQUENCE cdc_dead_letter_id_seq TO `+role,
		`SET ROLE `+role)
	lacks, err := ddl.CheckPostgres(ctx, conn, true)
	want := "role " + role + " has no USAGE on schema app, which holds cdc_dead_letter (and, likely, outbox)"
	if err != nil || len(lacks) != 1 || lacks[0].What != want || lacks[0].Grant != "GRANT USAGE ON SCHEMA app TO "+role || !lacks[0].Fatal {
		t.Fatalf("CheckPostgres = %+v, %v; want the fatal lack %q", lacks, err, want)
	}
	if err := ddl.Fatal(lacks); !errors.Is(err, ddl.ErrNotGranted) || errors.Is(err, ddl.ErrNotMigrated) {
		t.Fatalf("Fatal = %v, want ErrNotGranted alone", err)
	}
	exec(t, conn, `RESET ROLE`, `GRANT USAGE ON SCHEMA app TO `+role, `SET ROLE `+role)
	if lacks, err := ddl.CheckPostgres(ctx, conn, true); err != nil || len(lacks) != 0 {
		t.Fatalf("with USAGE: CheckPostgres = %+v, %v; want nothing lacking", lacks, err)
	}
}

// A schema that lacks a table and a role that lacks a grant are named in
// one line, each with its remedy.
func TestFatal_NamesMigrateAndGrantsTogether(t *testing.T) {
	err := ddl.Fatal([]ddl.Lack{
		{What: "table event_log does not exist", Effect: "nowhere to store", Fatal: true},
		{What: "outbox index", Effect: "slower"},
		{What: "role r has no SELECT on cdc_dead_letter", Effect: "never streams", Fatal: true, Grant: "GRANT SELECT ON cdc_dead_letter TO r"},
	})
	const want = "table event_log does not exist: nowhere to store: run `cdc migrate` as the admin; " +
		"role r has no SELECT on cdc_dead_letter: never streams: GRANT SELECT ON cdc_dead_letter TO r: grant, as the admin, what the role cdc connects as lacks (docs/operations.md, Grants)"
	if err == nil || err.Error() != want || !errors.Is(err, ddl.ErrNotMigrated) || !errors.Is(err, ddl.ErrNotGranted) {
		t.Fatalf("Fatal = %v, want %q wrapping both", err, want)
	}
}

// A read-only role is named with the setting to lift, not as a grant
// the admin lacks, also beside the other two kinds, in one line.
func TestFatal_NamesAReadOnlyRoleApartFromGrants(t *testing.T) {
	readOnly := ddl.Lack{What: "role r's transactions are read-only", Effect: "writes nothing", Fatal: true,
		Grant: "as a superuser, ALTER ROLE r SET default_transaction_read_only = off", ReadOnly: true}
	grant := ddl.Lack{What: "role r has no SELECT on cdc_dead_letter", Effect: "never streams", Fatal: true, Grant: "GRANT SELECT ON cdc_dead_letter TO r"}
	migrate := ddl.Lack{What: "table event_log does not exist", Effect: "nowhere to store", Fatal: true}
	const (
		readOnlyLine = "role r's transactions are read-only: writes nothing: as a superuser, ALTER ROLE r SET default_transaction_read_only = off: lift the setting that makes the role cdc connects as read-only (docs/operations.md, Grants)"
		grantLine    = "role r has no SELECT on cdc_dead_letter: never streams: GRANT SELECT ON cdc_dead_letter TO r: grant, as the admin, what the role cdc connects as lacks (docs/operations.md, Grants)"
		migrateLine  = "table event_log does not exist: nowhere to store: run `cdc migrate` as the admin"
	)
	for _, tc := range []struct {
		name  string
		lacks []ddl.Lack
		want  string
		is    []error
		isNot []error
	}{
		{"read-only alone", []ddl.Lack{readOnly}, readOnlyLine,
			[]error{ddl.ErrReadOnly}, []error{ddl.ErrNotGranted, ddl.ErrNotMigrated}},
		{"read-only and a grant", []ddl.Lack{grant, readOnly}, readOnlyLine + "; " + grantLine,
			[]error{ddl.ErrReadOnly, ddl.ErrNotGranted}, []error{ddl.ErrNotMigrated}},
		{"all three", []ddl.Lack{grant, readOnly, migrate}, migrateLine + "; " + readOnlyLine + "; " + grantLine,
			[]error{ddl.ErrReadOnly, ddl.ErrNotGranted, ddl.ErrNotMigrated}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ddl.Fatal(tc.lacks)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Fatal = %v, want %q", err, tc.want)
			}
			for _, target := range tc.is {
				if !errors.Is(err, target) {
					t.Errorf("Fatal = %v, want it to wrap %v", err, target)
				}
			}
			for _, target := range tc.isNot {
				if errors.Is(err, target) {
					t.Errorf("Fatal = %v, want it not to wrap %v", err, target)
				}
			}
		})
	}
}

// The tables are found as cdc's other queries find them, through the
// search path: an outbox and dead letters in another schema on it count.
func TestCheckPostgres_FindsTheTablesOnTheSearchPath(t *testing.T) {
	env := testenv.Get(t)
	ctx := context.Background()
	conn := connect(t, env.NewPostgres(t))
	exec(t, conn, `CREATE SCHEMA app`, `SET search_path = app`)
	if err := ddl.MigratePostgres(ctx, conn, "cdc_outbox", io.Discard); err != nil {
		t.Fatal(err)
	}
	if lacks, err := ddl.CheckPostgres(ctx, conn, true); err != nil || len(lacks) != 0 {
		t.Fatalf("CheckPostgres = %+v, %v; want nothing lacking", lacks, err)
	}
	exec(t, conn, `DROP INDEX app.cdc_dead_letter_position`)
	if lacks, err := ddl.CheckPostgres(ctx, conn, true); err != nil || len(lacks) != 1 || lacks[0].What != lackByPosition {
		t.Fatalf("CheckPostgres = %+v, %v; want %q", lacks, err, lackByPosition)
	}
}

// event_log missing is fatal; another engine than ReplacingMergeTree is
// named; migrate's table passes.
func TestCheckClickHouse(t *testing.T) {
	env := testenv.Get(t)
	ctx := context.Background()
	const mergeTree = `CREATE TABLE event_log (event_id UUID, event_type String, event_date_time DateTime, cdc_commit_lsn UInt64, cdc_seq UInt64)
		ENGINE = MergeTree() PARTITION BY toYYYYMM(event_date_time) ORDER BY (event_type, event_date_time, event_id)`
	migrate := func(t *testing.T, ch clickhouse.Conn, _ string) {
		if err := ddl.MigrateClickHouse(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	// A user that may not insert, as its profile or the DSN makes it:
	// every INSERT is refused (code 164), and cdc run retried for ever.
	const readonly = "the ClickHouse user of CDC_CLICKHOUSE_DSN is read-only (readonly = "
	for _, tc := range []struct {
		name   string
		setup  func(t *testing.T, ch clickhouse.Conn, dsn string)
		params string // of the DSN CheckClickHouse connects with
		want   string
		fatal  bool
	}{
		{"migrated", migrate, "", "", false},
		{"no event_log", func(*testing.T, clickhouse.Conn, string) {}, "", "table event_log does not exist in ClickHouse's database", true},
		{"a MergeTree", func(t *testing.T, _ clickhouse.Conn, dsn string) { env.ClickHouseExec(t, dsn, mergeTree) }, "",
			"event_log's engine is MergeTree, not ReplacingMergeTree", false},
		{"a read-only user", migrate, "readonly=1", readonly + "1)", true},
		{"a user that may change settings and no data", migrate, "readonly=2", readonly + "2)", true},
		{"readonly=0", migrate, "readonly=0", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dsn := env.NewClickHouse(t)
			opts, err := clickhouse.ParseDSN(dsn)
			if err != nil {
				t.Fatal(err)
			}
			ch, err := clickhouse.Open(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer ch.Close()
			tc.setup(t, ch, dsn)
			check := ch
			if tc.params != "" {
				if opts, err = clickhouse.ParseDSN(dsn + "?" + tc.params); err != nil {
					t.Fatal(err)
				}
				if check, err = clickhouse.Open(opts); err != nil {
					t.Fatal(err)
				}
				defer check.Close()
			}
			lacks, err := ddl.CheckClickHouse(ctx, check)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if len(lacks) > 1 {
				t.Fatalf("lacks %+v, want one at most", lacks)
			}
			if len(lacks) == 1 {
				got = lacks[0].What
				if lacks[0].Fatal != tc.fatal {
					t.Fatalf("%q fatal %v, want %v", got, lacks[0].Fatal, tc.fatal)
				}
			}
			if got != tc.want {
				t.Fatalf("lack %q, want %q", got, tc.want)
			}
			// A read-only user is told to make it writable, not to grant
			// what a PostgreSQL role lacks.
			if err := ddl.Fatal(lacks); tc.fatal && strings.HasPrefix(tc.want, readonly) &&
				(!errors.Is(err, ddl.ErrClickHouseReadOnly) || errors.Is(err, ddl.ErrNotGranted) || !strings.HasSuffix(err.Error(), "CDC_CLICKHOUSE_DSN: "+ddl.ErrClickHouseReadOnly.Error())) {
				t.Errorf("Fatal = %v; want it to end with %q alone", err, ddl.ErrClickHouseReadOnly)
			}
			if tc.params == "readonly=1" {
				// What the lack says is what ClickHouse does to an INSERT.
				err := check.Exec(ctx, "INSERT INTO event_log (event_type) VALUES ('x')")
				var ex *clickhouse.Exception
				if !errors.As(err, &ex) || ex.Code != 164 {
					t.Fatalf("INSERT as the read-only user: %v; want code 164", err)
				}
			}
		})
	}
}

// A role whose transactions are read-only by default holds every grant,
// and PostgreSQL refuses each of cdc's writes all the same: cdc run
// stalled at the first refused row, retrying its dead letter for ever
// ("cannot execute INSERT in a read-only transaction"). It is fatal, named
// with the statement that lifts it wherever it is set: for the role, for
// the role in one database, for the database, or by the DSN.
func TestCheckPostgres_NamesARoleWhoseTransactionsAreReadOnly(t *testing.T) {
	env := testenv.Get(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		set     string // {role} is the role, {db} the database
		options string // of the role's connection
		what    string // {role} is the role, {db} the database
		fix     string // SQL after "as a superuser, " is run as one to lift it
	}{
		{"for the role", `ALTER ROLE {role} SET default_transaction_read_only = on`, "",
			"role {role}'s transactions are read-only (default_transaction_read_only = on, set for the role)",
			"as a superuser, ALTER ROLE {role} SET default_transaction_read_only = off"},
		{"for the role in the database", `ALTER ROLE {role} IN DATABASE {db} SET default_transaction_read_only = on`, "",
			"role {role}'s transactions are read-only (default_transaction_read_only = on, set for the role in database {db})",
			"as a superuser, ALTER ROLE {role} IN DATABASE {db} SET default_transaction_read_only = off"},
		{"for the database", `ALTER DATABASE {db} SET default_transaction_read_only = on`, "",
			"role {role}'s transactions are read-only (default_transaction_read_only = on, set for database {db})",
			"as a superuser, ALTER ROLE {role} SET default_transaction_read_only = off"},
		{"by the DSN", "", "-c default_transaction_read_only=on",
			"role {role}'s transactions are read-only (default_transaction_read_only = on, set by CDC_PG_DSN's options or PGOPTIONS)",
			"take default_transaction_read_only out of CDC_PG_DSN's options and PGOPTIONS"},
		{"read-write", "", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dsn := env.NewPostgres(t)
			conn := connect(t, dsn)
			if err := ddl.MigratePostgres(ctx, conn, "cdc_outbox", io.Discard); err != nil {
				t.Fatal(err)
			}
			role := testenv.Name("cdc_runner")
			t.Cleanup(func() {
				for _, stmt := range []string{`DROP OWNED BY ` + role, `DROP ROLE ` + role} {
					if _, err := conn.Exec(ctx, stmt); err != nil {
						t.Logf("%s: %v", stmt, err)
					}
				}
			})
			exec(t, conn, `CREATE ROLE `+role+` WITH LOGIN REPLICATION`,
				`GRANT SELECT, DELETE ON outbox TO `+role,
				`GRANT SELECT, INSERT ON cdc_dead_letter TO `+role,
				`GRANT USAGE ON SEQUENCE cdc_dead_letter_id_seq TO `+role)
			db := conn.Config().Database
			replacer := strings.NewReplacer("{role}", role, "{db}", db)
			if tc.set != "" {
				exec(t, conn, replacer.Replace(tc.set))
			}
			cfg, err := pgx.ParseConfig(dsn)
			if err != nil {
				t.Fatal(err)
			}
			cfg.User = role
			if tc.options != "" {
				cfg.RuntimeParams["options"] = tc.options
			}
			runner, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer runner.Close(ctx)
			lacks, err := ddl.CheckPostgres(ctx, runner, true)
			if err != nil {
				t.Fatal(err)
			}
			if tc.what == "" {
				if len(lacks) != 0 {
					t.Fatalf("CheckPostgres = %+v; want nothing lacking", lacks)
				}
				return
			}
			what, fix := replacer.Replace(tc.what), replacer.Replace(tc.fix)
			if len(lacks) != 1 || lacks[0].What != what || lacks[0].Grant != fix || !lacks[0].Fatal || lacks[0].Effect == "" {
				t.Fatalf("CheckPostgres = %+v; want the fatal lack %q, lifted by %q", lacks, what, fix)
			}
			// What the lack says of cdc's writes is what PostgreSQL does
			// to them.
			_, err = runner.Exec(ctx, `INSERT INTO cdc_dead_letter (commit_lsn, seq, row_data, error) VALUES ('0/0', 0, '{}', 'test')`)
			if err == nil || !strings.Contains(err.Error(), "read-only transaction") {
				t.Fatalf("INSERT as the role: %v; want it refused as read-only", err)
			}
			err = ddl.Fatal(lacks)
			if err == nil || !strings.HasPrefix(err.Error(), what+": ") || !strings.Contains(err.Error(), ": "+fix+": ") {
				t.Fatalf("Fatal = %v; want it to name %q and %q", err, what, fix)
			}
			// No grant lifts it, and the admin that grants (the tables'
			// owner) may not ALTER ROLE: PostgreSQL answers it
			// "permission denied".
			if strings.Contains(err.Error(), "grant, as the admin") {
				t.Fatalf("Fatal = %v; want no grant as the admin asked for a setting", err)
			}
			// The statement named lifts it, run as who it names.
			stmt, ok := strings.CutPrefix(fix, "as a superuser, ")
			if !ok {
				return
			}
			exec(t, conn, stmt)
			again, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer again.Close(ctx)
			if lacks, err := ddl.CheckPostgres(ctx, again, true); err != nil || len(lacks) != 0 {
				t.Fatalf("after %s: CheckPostgres = %+v, %v; want nothing lacking", stmt, lacks, err)
			}
		})
	}
}

// readonlyProfileConn answers every query as newer ClickHouse servers
// answer a user whose profile sets readonly = 1 when the query carries
// settings, as clickhouse-go sends the DSN's: refused, code 164. 18.16
// here takes them, so the answer is made up; the message is 23.8's.
type readonlyProfileConn struct{ driver.Conn }

func (readonlyProfileConn) QueryRow(context.Context, string, ...any) driver.Row {
	return errRow{&clickhouse.Exception{Code: 164, Name: "DB::Exception", Message: "Cannot modify 'receive_timeout' setting in readonly mode"}}
}

type errRow struct{ err error }

func (r errRow) Err() error           { return r.err }
func (r errRow) Scan(...any) error    { return r.err }
func (r errRow) ScanStruct(any) error { return r.err }

// A user refused the settings its DSN sends for being read-only is named
// read-only at start, not taken for a schema that could not be looked at
// (cdc run went on, and retried its first INSERT, refused alike, for
// ever).
func TestCheckClickHouse_AUserRefusedItsSettingsIsReadOnly(t *testing.T) {
	lacks, err := ddl.CheckClickHouse(context.Background(), readonlyProfileConn{})
	if err != nil {
		t.Fatalf("CheckClickHouse: %v", err)
	}
	const want = "the ClickHouse user of CDC_CLICKHOUSE_DSN is read-only (readonly = 1, refusing the settings CDC_CLICKHOUSE_DSN sends: Cannot modify 'receive_timeout' setting in readonly mode)"
	if len(lacks) != 1 || lacks[0].What != want || !lacks[0].Fatal {
		t.Fatalf("lacks %+v, want one fatal: %s", lacks, want)
	}
}
