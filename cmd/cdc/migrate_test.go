package main

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/eventcdc/cdc/internal/testenv"
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

// The admin of an application's database owns the outbox, which migrate
// needs, but seldom has REPLICATION, which creating the slot needs. Such a
// migrate warned that it would hold retention "once the slot exists", then
// failed (exit 1) with PostgreSQL's bare "must be superuser or replication
// role" and no word of what to change. It exits 2 naming CDC_PG_DSN, the
// role and the statement that lets it, and the next migrate, once the role
// has REPLICATION, creates the slot and holds retention.
func TestMigrate_AdminWithoutReplicationIsToldHowToCreateTheSlot(t *testing.T) {
	pool, env := operatorEnv(t)
	ctx := context.Background()
	role := testenv.Name("owner")
	for _, sql := range []string{
		`CREATE ROLE ` + role + ` LOGIN NOREPLICATION`,
		`DO $$ BEGIN EXECUTE format('GRANT CREATE ON DATABASE %I TO ` + role + `', current_database()); END $$`,
		`GRANT CREATE, USAGE ON SCHEMA public TO ` + role,
		`ALTER TABLE outbox OWNER TO ` + role,
		`ALTER TABLE cdc_dead_letter OWNER TO ` + role,
		`ALTER PUBLICATION cdc_outbox OWNER TO ` + role,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	t.Cleanup(func() {
		for _, sql := range []string{`REASSIGN OWNED BY ` + role + ` TO current_user`, `DROP OWNED BY ` + role, `DROP ROLE ` + role} {
			_, _ = pool.Exec(context.Background(), sql)
		}
	})
	u, err := url.Parse(env["CDC_PG_DSN"])
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	env["CDC_PG_DSN"] = u.String()
	slot := env["CDC_SLOT_NAME"]
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot)
	})

	for _, tc := range []struct {
		name       string
		before     string
		code       int
		want       []string
		wantAbsent []string
	}{
		{
			name: "without REPLICATION",
			code: 2,
			want: []string{
				"cdc migrate: CDC_PG_DSN: create slot " + slot + ": ERROR: must be superuser or replication role to use replication slots (SQLSTATE 42501): " +
					"creating the replication slot takes a role with REPLICATION, or a superuser: as a superuser, ALTER ROLE \"" + role + "\" REPLICATION, or run cdc migrate as one; " +
					"the rest is migrated, and the next cdc migrate creates the slot\n",
			},
			wantAbsent: []string{"trying again once it exists"},
		},
		{
			name:   "given REPLICATION",
			before: `ALTER ROLE ` + role + ` REPLICATION`,
			code:   0,
			want: []string{
				"created replication slot " + slot + ": ",
				"outbox retention is held on every cdc run until ",
			},
		},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			if tc.before != "" {
				if _, err := pool.Exec(ctx, tc.before); err != nil {
					t.Fatalf("%s: %v", tc.before, err)
				}
			}
			code, stdout, stderr, _ := runWithin(t, time.Minute, env, "migrate")
			out := stdout + stderr
			if code != tc.code {
				t.Fatalf("migrate exited %d, want %d; stdout %q, stderr %q", code, tc.code, stdout, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("migrate's output lacks %q; stdout %q, stderr %q", w, stdout, stderr)
				}
			}
			for _, w := range tc.wantAbsent {
				if strings.Contains(out, w) {
					t.Errorf("migrate's output says %q; stdout %q, stderr %q", w, stdout, stderr)
				}
			}
		})
	}
}

// migrate asks first whether the server is a standby in recovery, which
// takes no DDL. A database whose roles may not execute pg_is_in_recovery()
// (a hardened catalog: REVOKE EXECUTE … FROM PUBLIC) refused the question,
// and every migrate exited 1 with "ask whether the server is in recovery:
// permission denied", where it migrated before the question was asked. A
// refused question is no answer: migrate goes on, and a standby refuses
// its first DDL itself.
func TestMigrate_RunsWhereRecoveryMayNotBeAsked(t *testing.T) {
	pool, env := operatorEnv(t)
	ctx := context.Background()
	role := testenv.Name("owner")
	for _, sql := range []string{
		`CREATE ROLE ` + role + ` LOGIN REPLICATION`,
		`DO $$ BEGIN EXECUTE format('GRANT CREATE ON DATABASE %I TO ` + role + `', current_database()); END $$`,
		`GRANT CREATE, USAGE ON SCHEMA public TO ` + role,
		`ALTER TABLE outbox OWNER TO ` + role,
		`ALTER TABLE cdc_dead_letter OWNER TO ` + role,
		`ALTER PUBLICATION cdc_outbox OWNER TO ` + role,
		`REVOKE EXECUTE ON FUNCTION pg_is_in_recovery() FROM PUBLIC`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	t.Cleanup(func() {
		for _, sql := range []string{`REASSIGN OWNED BY ` + role + ` TO current_user`, `DROP OWNED BY ` + role, `DROP ROLE ` + role} {
			_, _ = pool.Exec(context.Background(), sql)
		}
	})
	u, err := url.Parse(env["CDC_PG_DSN"])
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	env["CDC_PG_DSN"] = u.String()
	slot := env["CDC_SLOT_NAME"]
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot)
	})
	code, stdout, stderr, _ := runWithin(t, time.Minute, env, "migrate")
	if want := "created replication slot " + slot + ": "; code != 0 || !strings.Contains(stdout, want) {
		t.Fatalf("migrate exited %d, stdout %q, stderr %q; want 0 and %q", code, stdout, stderr, want)
	}
}
