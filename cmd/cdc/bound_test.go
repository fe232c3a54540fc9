package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/config"
	"github.com/eventcdc/cdc/deadletter"
	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/retention"
	"github.com/eventcdc/cdc/sink"
	ddl "github.com/eventcdc/cdc/sql"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// operatorEnv is a migrated PostgreSQL database and ClickHouse database for
// the operator commands, with one outbox row old enough for verify and one
// dead letter; pool is a superuser pool on the database.
func operatorEnv(t *testing.T) (pool *pgxpool.Pool, env map[string]string) {
	t.Helper()
	e := testenv.Get(t)
	pool = e.MigratedPostgres(t, "cdc_outbox")
	chDSN := e.NewClickHouse(t)
	ch, err := sink.Open(chDSN, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	ctx := context.Background()
	if err := ddl.MigrateClickHouse(ctx, ch.Conn()); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_type, event_date_time, environment, event_context) VALUES ('a', now() - interval '1 hour', 'e', '{}')`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO cdc_dead_letter (commit_lsn, seq, row_data, error) VALUES ('0/1', 1, '{"id": "x"}', 'refused')`); err != nil {
		t.Fatal(err)
	}
	// Slot names are the cluster's: migrate would refuse another test's.
	slot := testenv.Name("slot")
	// A migrate here holds retention (the outbox has a row): a physical
	// slot, in no database, which dropping the test's database leaves
	// behind, taking one of the cluster's max_replication_slots for good
	// at every run until migrate fails for want of one.
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, retention.HoldName(slot))
	})
	return pool, map[string]string{
		"CDC_PG_DSN":         pool.Config().ConnString(),
		"CDC_CLICKHOUSE_DSN": chDSN,
		"CDC_METRICS_ADDR":   "off",
		"CDC_SLOT_NAME":      slot,
	}
}

// holdLock takes lock in a transaction on a connection of its own, left
// open until the test ends, and returns that session's pid.
func holdLock(t *testing.T, pool *pgxpool.Pool, lock string) (pid uint32, release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, lock); err != nil {
		t.Fatal(err)
	}
	release = func() {
		if err := tx.Rollback(context.Background()); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
			t.Errorf("let the lock go: %v", err)
		}
	}
	t.Cleanup(func() { release(); conn.Release() })
	return conn.Conn().PgConn().PID(), release
}

// startMigrate runs `cdc migrate` with env until it exits, which the
// returned channel then says with its code.
func startMigrate(env map[string]string) (done <-chan int, stdout, stderr *testenv.Buffer) {
	stdout, stderr = &testenv.Buffer{}, &testenv.Buffer{}
	exited := make(chan int, 1)
	go func() {
		exited <- Main(context.Background(), []string{"migrate"}, func(k string) string { return env[k] }, nil, stdout, stderr)
	}()
	return exited, stdout, stderr
}

// awaitMigrated fails the test unless migrate, started by startMigrate,
// exits 0 within 30 s, its last line saying what it migrated.
func awaitMigrated(t *testing.T, done <-chan int, stdout, stderr *testenv.Buffer) {
	t.Helper()
	select {
	case code := <-done:
		if code != 0 || !strings.HasSuffix(stdout.String(), "migrated: postgres outbox, cdc_dead_letter, publication cdc_outbox; clickhouse event_log\n") {
			t.Fatalf("migrate exited %d once the lock was let go; stdout %q, stderr %q; want 0 and the migrated line last", code, stdout.String(), stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("migrate still waits 30 s after the lock was let go")
	}
}

// runWithin runs the command, failing the test if it has not ended within
// limit; it returns the exit code, stdout, stderr and how long it took.
func runWithin(t *testing.T, limit time.Duration, env map[string]string, args ...string) (int, string, string, time.Duration) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	go func() { done <- Main(ctx, args, func(k string) string { return env[k] }, nil, &stdout, &stderr) }()
	select {
	case code := <-done:
		return code, stdout.String(), stderr.String(), time.Since(start)
	case <-time.After(limit):
		cancel()
		<-done
		t.Fatalf("cdc %v still waits after %s; stderr: %s", args, limit, stderr.String())
		return 0, "", "", 0
	}
}

// operatorCase is an operator command, the table it reads, and what its
// error says it was doing.
type operatorCase struct {
	args  []string
	table string
	doing string
}

// An operator command whose table another session holds locked (LOCK
// TABLE in a transaction left open, an ALTER TABLE queued behind one)
// gives up after lock_timeout, 15 s, and exits 1 saying what it was doing,
// that it waited for a lock and whose. It waited for ever.
func TestOperatorCommands_GiveUpOnALockedTable(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the 15 s lock_timeout")
	}
	for _, tc := range []operatorCase{
		{[]string{"deadletter", "list"}, "cdc_dead_letter", "read dead letters"},
		{[]string{"deadletter", "list", "--json"}, "cdc_dead_letter", "read dead letters"},
		{[]string{"deadletter", "replay"}, "cdc_dead_letter", "read the newest dead letter"},
		{[]string{"verify", "--since", "-infinity"}, "outbox", "read outbox rows"},
		{[]string{"backfill", "--since", "-infinity"}, "outbox", "read outbox rows"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			pool, env := operatorEnv(t)
			pid, _ := holdLock(t, pool, "LOCK TABLE "+tc.table+" IN ACCESS EXCLUSIVE MODE")
			code, _, stderr, took := runWithin(t, time.Minute, env, tc.args...)
			want := regexp.MustCompile(regexp.QuoteMeta(tc.doing+": ERROR: canceling statement due to lock timeout (SQLSTATE 55P03) (waited 15s, lock_timeout, for a lock: AccessExclusiveLock on "+tc.table+" held by pid "+fmt.Sprint(pid)+" (idle in transaction, its transaction open ") + `\d+s\)\)"`)
			if code != 1 || !want.MatchString(stderr) || took < 14*time.Second || took > 30*time.Second {
				t.Fatalf("cdc %v exited %d after %s: %s; want 1 after 15 s, matching %s", tc.args, code, took.Round(time.Millisecond), stderr, want)
			}
		})
	}
}

// The sessions holding the lock are named whatever pgxpool settings the
// DSN carries, which the operator commands' pools take (an application's
// pgx URL): the connection that asks for them is made from the same
// settings. It sent pool_max_conns to PostgreSQL as a session setting,
// was refused, and the error said nothing of what it waited for.
func TestOperatorCommands_NameTheLockHolderWhateverThePoolSettings(t *testing.T) {
	for _, params := range []string{"pool_max_conns=3", "pool_max_conns=3&pool_min_conns=1&pool_max_conn_lifetime=1h"} {
		t.Run(params, func(t *testing.T) {
			t.Parallel()
			pool, env := operatorEnv(t)
			// A lock_timeout of the DSN's own keeps the test short.
			sep := "?"
			if strings.Contains(env["CDC_PG_DSN"], "?") {
				sep = "&"
			}
			env["CDC_PG_DSN"] += sep + "lock_timeout=1000&" + params
			pid, _ := holdLock(t, pool, "LOCK TABLE cdc_dead_letter IN ACCESS EXCLUSIVE MODE")
			code, _, stderr, _ := runWithin(t, time.Minute, env, "deadletter", "list")
			want := regexp.MustCompile(regexp.QuoteMeta("read dead letters: ERROR: canceling statement due to lock timeout (SQLSTATE 55P03) (waited 1000, lock_timeout, for a lock: AccessExclusiveLock on cdc_dead_letter held by pid "+fmt.Sprint(pid)+" (idle in transaction, its transaction open ") + `\d+s\)\)"`)
			if code != 1 || !want.MatchString(stderr) {
				t.Fatalf("exit %d: %s; want 1, matching %s", code, stderr, want)
			}
		})
	}
}

// A PostgreSQL that stops answering once the command is connected (a
// SIGSTOPped backend, a paused VM, a link gone without a reset) fails the
// command once it has sent nothing for statement_timeout + 15 s, here 1 s
// + 15 s, exit 1 saying so. It waited for ever: statement_timeout needs a
// server that answers.
func TestOperatorCommands_GiveUpOnAFrozenServer(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the 16 s silence bound")
	}
	for _, tc := range []operatorCase{
		{[]string{"deadletter", "list"}, "cdc_dead_letter", "read dead letters"},
		{[]string{"deadletter", "list", "--json"}, "cdc_dead_letter", "read dead letters"},
		{[]string{"verify", "--since", "-infinity"}, "outbox", "read outbox rows"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			pool, env := operatorEnv(t)
			// The lock keeps the command's query waiting in the server;
			// the link freezes meanwhile, before the server's
			// statement_timeout answer can pass it.
			holdLock(t, pool, "LOCK TABLE "+tc.table+" IN ACCESS EXCLUSIVE MODE")
			u, err := url.Parse(env["CDC_PG_DSN"])
			if err != nil {
				t.Fatal(err)
			}
			freezer := testenv.NewFreezer(t, u.Host)
			u.Host = freezer.Addr()
			q := u.Query()
			q.Set("statement_timeout", "1000")
			u.RawQuery = q.Encode()
			env["CDC_PG_DSN"] = u.String()
			go func() {
				for !freezer.Frozen() {
					var waiting bool
					if err := pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock')`).Scan(&waiting); err != nil {
						return
					}
					if waiting {
						freezer.Freeze()
					}
					time.Sleep(10 * time.Millisecond)
				}
			}()
			code, _, stderr, took := runWithin(t, time.Minute, env, tc.args...)
			want := tc.doing + ": "
			if code != 1 || !freezer.Frozen() || !strings.Contains(stderr, want) || !strings.Contains(stderr, "postgres sent nothing for 16s while cdc waited for an answer") || took < 15*time.Second || took > 30*time.Second {
				t.Fatalf("cdc %v exited %d after %s (link frozen: %v): %s; want 1 after 16 s, naming %q", tc.args, code, took.Round(time.Millisecond), freezer.Frozen(), stderr, want)
			}
			freezer.Thaw()
		})
	}
}

// The listing's rows keep their columns whatever an error holds: a tab
// (tabwriter's column break) or a carriage return printed as is shifted
// or overwrote the row's cells.
func TestPrintLetters(t *testing.T) {
	at := time.Date(2026, 11, 25, 12, 43, 30, 0, time.UTC)
	id := "e4231b8c-5a09-4af8-8adb-e3578428d7f0"
	for _, tc := range []struct {
		name  string
		error string
		want  string
	}{
		{"plain", `column metadata_version: "300" does not fit UInt8`,
			"1   e4231b8c-5a09-4af8-8adb-e3578428d7f0  0/5CA7898#1  2026-11-25T12:43:30Z  column metadata_version: \"300\" does not fit UInt8\n"},
		{"a tab", "code: 53\tType mismatch",
			"1   e4231b8c-5a09-4af8-8adb-e3578428d7f0  0/5CA7898#1  2026-11-25T12:43:30Z  code: 53 Type mismatch\n"},
		{"lines", "first\r\nsecond",
			"1   e4231b8c-5a09-4af8-8adb-e3578428d7f0  0/5CA7898#1  2026-11-25T12:43:30Z  first  second\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := printLetters(&b, []deadletter.Letter{{ID: 1, EventID: &id, CommitLSN: "0/5CA7898", Seq: 1, Error: tc.error, CreatedAt: at}}, 3); err != nil {
				t.Fatal(err)
			}
			want := "ID  EVENT ID                              POSITION     CREATED               ERROR\n" + tc.want + "1 of 3 dead letters shown\n"
			if b.String() != want {
				t.Errorf("printed\n%q\nwant\n%q", b.String(), want)
			}
		})
	}
}

// migrate may wait for a lock as long as it takes (a deploy's migration
// behind a long transaction), but says what it waits for, and whose; it
// said nothing. Here: the outbox locked by another session, then let go.
func TestMigrate_SaysWhatItWaitsFor(t *testing.T) {
	defer func(every time.Duration) { migrateWatchEvery = every }(migrateWatchEvery)
	migrateWatchEvery = 100 * time.Millisecond
	pool, env := operatorEnv(t)
	pid, release := holdLock(t, pool, "LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
	done, stdout, stderr := startMigrate(env)
	want := fmt.Sprintf("waiting for a lock on outbox (AccessShareLock) held by pid %d (idle in transaction, its transaction open ", pid)
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(stdout.String(), want); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("migrate has not said %q in 20 s; stdout: %q", want, stdout.String())
		}
	}
	release()
	awaitMigrated(t, done, stdout, stderr)
}

// A PostgreSQL that stops answering while migrate waits in it stops
// migrate once neither its session nor a second one asking after it gets
// an answer for migrateSilence (a minute; 2 s here): exit 1 saying so. It
// waited for ever. So too behind a DSN of several hosts whose first
// refuses every connection (a standby starting up: SQLSTATE 57P03) and
// whose next is migrate's, frozen: pgx joins both attempts' errors, and
// the refusal, a server's answer, but another server's, kept the watch
// from ever stopping migrate.
func TestMigrate_GivesUpOnAFrozenServer(t *testing.T) {
	defer func(every, silence time.Duration) { migrateWatchEvery, migrateSilence = every, silence }(migrateWatchEvery, migrateSilence)
	migrateWatchEvery, migrateSilence = 100*time.Millisecond, 2*time.Second
	for _, tc := range []struct {
		name string
		// refusingFirst lists a host that refuses every connection
		// before the server's.
		refusingFirst bool
	}{
		{name: "one host"},
		{name: "a refusing host listed first", refusingFirst: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool, env := operatorEnv(t)
			holdLock(t, pool, "LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
			u, err := url.Parse(env["CDC_PG_DSN"])
			if err != nil {
				t.Fatal(err)
			}
			freezer := testenv.NewFreezer(t, u.Host)
			u.Host = freezer.Addr()
			if tc.refusingFirst {
				u.Host = refusingServer(t) + "," + u.Host
			}
			env["CDC_PG_DSN"] = u.String()
			go func() {
				for !freezer.Frozen() {
					var waiting bool
					if err := pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock')`).Scan(&waiting); err != nil {
						return
					}
					if waiting {
						freezer.Freeze()
					}
					time.Sleep(10 * time.Millisecond)
				}
			}()
			code, _, stderr, took := runWithin(t, time.Minute, env, "migrate")
			if code != 1 || !freezer.Frozen() || !strings.Contains(stderr, "postgres answered nothing for 2s to migrate's session or to a second one asking what it waits for") || took > 15*time.Second {
				t.Fatalf("migrate exited %d after %s (link frozen: %v): %s; want 1 within a few seconds, saying postgres answered nothing", code, took.Round(time.Millisecond), freezer.Frozen(), stderr)
			}
			freezer.Thaw()
		})
	}
}

// refusingServer listens on a free port of 127.0.0.1 until the test ends,
// and answers every connection's startup (after declining TLS) with the
// FATAL error of a server starting up, as PostgreSQL does then.
func refusingServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				be := pgproto3.NewBackend(c, c)
				for {
					msg, err := be.ReceiveStartupMessage()
					if err != nil {
						return
					}
					if _, ok := msg.(*pgproto3.SSLRequest); ok {
						if _, err := c.Write([]byte("N")); err != nil {
							return
						}
						continue
					}
					be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "57P03", Message: "the database system is starting up"})
					_ = be.Flush()
					return
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// The operator sessions' bounds: cdc's own unless the DSN sets them; a
// statement_timeout PostgreSQL would not read is a bad CDC_PG_DSN (exit 2).
func TestOperatorBounds(t *testing.T) {
	for _, tc := range []struct {
		query           string
		lock, statement string
		err             string
	}{
		{"", "15000", "45000", ""},
		{"lock_timeout=60s", "60s", "45000", ""},
		{"statement_timeout=2min", "15000", "2min", ""},
		{"statement_timeout=90000", "15000", "90000", ""},
		{"statement_timeout=0", "15000", "0", ""},
		{"statement_timeout=1.5h", "15000", "1.5h", ""},
		{"statement_timeout=10parsecs", "", "", `CDC_PG_DSN: statement_timeout "10parsecs": unit "parsecs" is none of PostgreSQL's (us, ms, s, min, h, d)`},
		{"statement_timeout=soon", "", "", `CDC_PG_DSN: statement_timeout "soon": not a time PostgreSQL reads (e.g. 30000 or 30s)`},
		// Set through libpq's options: cdc adds nothing, or its own
		// parameter would override them.
		{"options=-c%20lock_timeout%3D1s%20-c%20statement_timeout%3D0", "", "", ""},
		{"options=-clock_timeout%3D1s", "", "45000", ""},
		{"options=--statement-timeout%3D2min", "15000", "", ""},
		{"options=-c%20work_mem%3D8MB", "15000", "45000", ""},
		{"options=-c%20statement_timeout%3D10parsecs", "", "", `CDC_PG_DSN: statement_timeout "10parsecs": unit "parsecs" is none of PostgreSQL's (us, ms, s, min, h, d)`},
	} {
		dsn := "postgres://u@127.0.0.1:1/app?" + tc.query
		pcfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			t.Fatal(err)
		}
		err = operatorBounds(dsn, pcfg)
		if tc.err != "" {
			var ee *exitError
			if err == nil || err.Error() != tc.err || !errors.As(err, &ee) || ee.code != 2 {
				t.Errorf("%s: operatorBounds = %v; want exit 2 with %q", tc.query, err, tc.err)
			}
			continue
		}
		p := pcfg.ConnConfig.RuntimeParams
		if err != nil || p["lock_timeout"] != tc.lock || p["statement_timeout"] != tc.statement {
			t.Errorf("%s: operatorBounds = %v, lock_timeout %q, statement_timeout %q; want %q, %q", tc.query, err, p["lock_timeout"], p["statement_timeout"], tc.lock, tc.statement)
		}
	}
}

// The silence bound follows the statement timeout in force, 15 s past it.
func TestPGDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"45000": 45 * time.Second, "45s": 45 * time.Second, "2min": 2 * time.Minute, "1.5h": 90 * time.Minute,
		"250ms": 250 * time.Millisecond, "1 d": 24 * time.Hour, "0": 0,
		// What PostgreSQL 15 shows after SET statement_timeout to each:
		// rounded to a whole millisecond, half to even (0 is none), with
		// strtol's hex and octal and strtod's exponents.
		"400us": 0, "0.4": 0, "500us": 0, "1500us": 2 * time.Millisecond, "1.5": 2 * time.Millisecond,
		"2.5": 2 * time.Millisecond, "010": 8 * time.Millisecond, "0x10": 16 * time.Millisecond,
		"1e3": time.Second, "1e-1s": 100 * time.Millisecond, " 30 s": 30 * time.Second, ".5s": 500 * time.Millisecond,
	} {
		if got, err := pgDuration(in); err != nil || got != want {
			t.Errorf("pgDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"-1":         "not a time PostgreSQL reads (e.g. 30000 or 30s)",
		"1e":         `unit "e" is none of PostgreSQL's (us, ms, s, min, h, d)`,
		"08":         "not a time PostgreSQL reads (e.g. 30000 or 30s)",
		"2147483648": "more than PostgreSQL's largest statement_timeout, 2147483647 ms",
		"1 parsec":   `unit "parsec" is none of PostgreSQL's (us, ms, s, min, h, d)`,
	} {
		if got, err := pgDuration(in); err == nil || err.Error() != want {
			t.Errorf("pgDuration(%q) = %v, %v; want the error %q", in, got, err, want)
		}
	}
}

// The setting a session gets: a connection parameter, else the last one
// options sets, as PostgreSQL reads options.
func TestSetting(t *testing.T) {
	for _, tc := range []struct {
		params map[string]string
		want   string
	}{
		{map[string]string{}, ""},
		{map[string]string{"Statement_Timeout": "5s"}, "5s"},
		{map[string]string{"options": "-c statement_timeout=1s"}, "1s"},
		{map[string]string{"options": "-cstatement_timeout=1s"}, "1s"},
		{map[string]string{"options": "--statement-timeout=1s"}, "1s"},
		{map[string]string{"options": "-c STATEMENT_TIMEOUT=1s -c statement_timeout=2s"}, "2s"},
		{map[string]string{"options": "-c statement_timeout=1s", "statement_timeout": "3s"}, "3s"},
		{map[string]string{"options": `-c search_path=a\ b -c statement_timeout=4s`}, "4s"},
		{map[string]string{"options": "-c work_mem=8MB"}, ""},
		{map[string]string{"options": "-c"}, ""},
	} {
		if got := setting(tc.params, "statement_timeout"); got != tc.want {
			t.Errorf("setting(%v) = %q; want %q", tc.params, got, tc.want)
		}
	}
}

// The bounds a DSN sets through options are the ones its sessions run
// with: before, cdc added its own as parameters, which PostgreSQL applies
// after options, and a DSN's statement_timeout=0 ran at 45 s.
func TestOperatorPool_KeepsTheBoundsTheDSNsOptionsSet(t *testing.T) {
	env := testenv.Get(t)
	dsn := env.NewPostgres(t)
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	pool, err := openOperatorPool(context.Background(), config.Config{PGDSN: dsn + sep + "options=-c%20lock_timeout%3D1s%20-c%20statement_timeout%3D0"})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var lock, stmt string
	if err := pool.QueryRow(context.Background(), "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')").Scan(&lock, &stmt); err != nil {
		t.Fatal(err)
	}
	if lock != "1s" || stmt != "0" {
		t.Errorf("lock_timeout %q, statement_timeout %q; want the DSN's 1s and 0", lock, stmt)
	}
}

// A backfill or dead letter command cancelled at statement_timeout while
// it read an event of many MB says how to let it run longer: that page
// takes as long on every try, so the command could never get past it.
// Here statement_timeout is 100 ms and the event 100 MB that PostgreSQL
// stores uncompressed (32 KB of hex repeated: pglz finds no repeat
// within its 4 KB window), which takes seconds to read here (23 ms a MB
// measured) and no less than 200 ms at 500 MB/s. A value of repeated
// characters is compressed, and read in a few ms. It said only
// "canceling statement due to statement timeout".
func TestOperatorCommands_SayHowToOutlastStatementTimeout(t *testing.T) {
	// 25 ms: PostgreSQL takes about 100 ms here to read and print the
	// event of 100 MB, and cancels a statement only while it makes a row,
	// not while it sends one: at 100 ms a faster read finished first and
	// the command succeeded (2 runs in 5 under load). The statements
	// before the read take a millisecond or less.
	const hint = " (statement_timeout 25: a page holding an event of hundreds of MB can take longer, and fails again at the same event; set a longer one in CDC_PG_DSN, e.g. ?statement_timeout=10min, or 0 for none)"
	for _, tc := range []struct {
		args  []string
		big   string // puts the event of 100 MB first in the command's reading order
		doing string
	}{
		{[]string{"backfill", "--since", "-infinity"},
			`INSERT INTO outbox (event_type, event_date_time, environment, event_context) VALUES ('big', now() - interval '2 hours', 'e', json_build_object('blob', repeat((SELECT string_agg(md5(i::text), '') FROM generate_series(1, 1000) i), 3125)))`,
			"read outbox rows"},
		{[]string{"deadletter", "list", "--json"},
			`INSERT INTO cdc_dead_letter (commit_lsn, seq, row_data, error) VALUES ('0/2', 2, jsonb_build_object('event_context', repeat((SELECT string_agg(md5(i::text), '') FROM generate_series(1, 1000) i), 3125)), 'refused')`,
			"read dead letters"},
		{[]string{"deadletter", "replay"},
			`INSERT INTO cdc_dead_letter (commit_lsn, seq, row_data, error) VALUES ('0/2', 2, jsonb_build_object('event_context', repeat((SELECT string_agg(md5(i::text), '') FROM generate_series(1, 1000) i), 3125)), 'refused')`,
			"read dead letters"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			pool, env := operatorEnv(t)
			if _, err := pool.Exec(context.Background(), tc.big); err != nil {
				t.Fatal(err)
			}
			sep := "?"
			if strings.Contains(env["CDC_PG_DSN"], "?") {
				sep = "&"
			}
			env["CDC_PG_DSN"] += sep + "statement_timeout=25"
			code, _, stderr, _ := runWithin(t, time.Minute, env, tc.args...)
			want := tc.doing + ": ERROR: canceling statement due to statement timeout (SQLSTATE 57014)" + hint
			if code != 1 || !strings.Contains(stderr, want) {
				t.Fatalf("cdc %v exited %d: %s; want 1 with %q", tc.args, code, stderr, want)
			}
		})
	}
}

// Only statement_timeout's cancel gets the hint, with the bound in force:
// a lock timeout, a cancel on a signal (also 57014) and other errors are
// left as they are.
func TestExplainStatementTimeout(t *testing.T) {
	timeout := &pgconn.PgError{Severity: "ERROR", Code: "57014", Message: "canceling statement due to statement timeout"}
	for _, tc := range []struct {
		dsn  string
		err  error
		want string
	}{
		{"postgres://u@h/db", fmt.Errorf("read outbox rows: %w", timeout),
			"read outbox rows: ERROR: canceling statement due to statement timeout (SQLSTATE 57014) (statement_timeout 45s: a page holding an event of hundreds of MB can take longer, and fails again at the same event; set a longer one in CDC_PG_DSN, e.g. ?statement_timeout=10min, or 0 for none)"},
		{"postgres://u@h/db?Statement_Timeout=2min", fmt.Errorf("read dead letters: %w", timeout),
			"read dead letters: ERROR: canceling statement due to statement timeout (SQLSTATE 57014) (statement_timeout 2min: a page holding an event of hundreds of MB can take longer, and fails again at the same event; set a longer one in CDC_PG_DSN, e.g. ?statement_timeout=10min, or 0 for none)"},
		{"postgres://u@h/db", fmt.Errorf("read dead letters: %w", &pgconn.PgError{Severity: "ERROR", Code: "57014", Message: "canceling statement due to user request"}),
			"read dead letters: ERROR: canceling statement due to user request (SQLSTATE 57014)"},
		{"postgres://u@h/db", fmt.Errorf("read dead letters: %w", &pgconn.PgError{Severity: "ERROR", Code: "55P03", Message: "canceling statement due to lock timeout"}),
			"read dead letters: ERROR: canceling statement due to lock timeout (SQLSTATE 55P03)"},
		{"postgres://u@h/db", errors.New("read dead letters: EOF"), "read dead letters: EOF"},
	} {
		if got := explainStatementTimeout(tc.dsn, tc.err).Error(); got != tc.want {
			t.Errorf("explainStatementTimeout(%s, %v) = %q; want %q", tc.dsn, tc.err, got, tc.want)
		}
	}
}
