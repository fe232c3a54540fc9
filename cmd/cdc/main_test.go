package main

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eventcdc/cdc/internal/testenv"
)

// A PostgreSQL DSN carrying settings of pgx or its pool is refused for a
// command whose connection would send them to the server, which refuses
// them at every connect: run's replication connection (all of them),
// migrate's pgx connection (the pool's). Commands on pools take them all,
// and PostgreSQL's own settings pass everywhere.
func TestCheckPGDSN(t *testing.T) {
	for _, tc := range []struct {
		dsn, cmd, wantErr string
	}{
		{"postgres://u:pw@db:5432/app?sslmode=disable", "run", ""},
		{"postgres://u:pw@db/app?application_name=x&search_path=app&options=-c%20work_mem%3D4MB", "run", ""},
		{"host=db user=u dbname=app statement_timeout=5000", "migrate", ""},
		{"postgres://u:pw@db/app?pool_max_conns=10", "run", "pool_max_conns: settings of the pgx driver"},
		{"postgres://u:pw@db/app?statement_cache_capacity=0&default_query_exec_mode=exec", "run", "default_query_exec_mode, statement_cache_capacity: settings of the pgx driver"},
		{"host=db user=u dbname=app pool_min_conns=1", "run", "pool_min_conns: settings of the pgx driver"},
		{"postgres://u:pw@db/app?pool_max_conns=10", "migrate", "pool_max_conns: settings of the pgx driver, not of PostgreSQL, which refuses them on cdc migrate's connection"},
		{"postgres://u:pw@db/app?default_query_exec_mode=simple_protocol", "migrate", ""},
		{"postgres://u:pw@db/app?pool_max_conns=10&default_query_exec_mode=simple_protocol", "status", ""},
		{"postgres://u:pw@db/app?statement_cache_capacity=0", "backfill", ""},
		{"postgres://u:pw@db/app?sslmode=bogus", "status", "sslmode is invalid"},
		{"postgres://u:pw@db/app?replication=database", "run", "replication: cdc opens its replication connection itself"},
		{"postgres://u:pw@db/app?replication=database", "status", "replication: cdc opens its replication connection itself"},
		{"host=db user=u dbname=app replication=true", "migrate", "replication: cdc opens its replication connection itself"},
	} {
		err := checkPGDSN(tc.dsn, tc.cmd)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("checkPGDSN(%q, %s) = %v, want an error containing %q", tc.dsn, tc.cmd, err, tc.wantErr)
		}
	}
}

// Every bad setting is named in one message, the DSNs' options with the
// rest, and the command exits 2 before it connects anywhere.
func TestMain_NamesEveryBadSettingAtOnce(t *testing.T) {
	env := map[string]string{
		"CDC_BATCH_MAX_ROWS": "abc",
		"CDC_PG_DSN":         "postgres://u:s3cret@127.0.0.1:1/app?pool_max_conns=4",
		"CDC_CLICKHOUSE_DSN": "clickhouse://u@127.0.0.1:1/db?read_timeout=10",
		"CDC_METRICS_ADDR":   "off",
	}
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), []string{"run"}, func(k string) string { return env[k] }, nil, &stdout, &stderr)
	msg := stderr.String()
	if code != 2 || stdout.Len() != 0 || strings.Contains(msg, "s3cret") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2 and no password", code, stdout.String(), msg)
	}
	for _, name := range []string{"CDC_BATCH_MAX_ROWS: ", "CDC_PG_DSN: pool_max_conns", "CDC_CLICKHOUSE_DSN: "} {
		if !strings.Contains(msg, name) {
			t.Errorf("stderr %q does not name %q", msg, name)
		}
	}
}

// A configuration refused also names the CDC_* variables set that cdc
// does not read: CDC_CLICKHOUSE_URL is the CDC_CLICKHOUSE_DSN missing.
func TestMain_InvalidConfigurationNamesVariablesNotRead(t *testing.T) {
	env := map[string]string{
		"CDC_PG_DSN":         "postgres://u@127.0.0.1:1/app",
		"CDC_CLICKHOUSE_URL": "clickhouse://127.0.0.1:2/db",
	}
	environ := []string{"CDC_PG_DSN=postgres://u@127.0.0.1:1/app", "CDC_CLICKHOUSE_URL=clickhouse://127.0.0.1:2/db", "HOME=/root"}
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), []string{"status"}, func(k string) string { return env[k] }, environ, &stdout, &stderr)
	want := "cdc: invalid configuration: CDC_CLICKHOUSE_DSN: required, e.g. clickhouse://user:password@host/db (set but not read by cdc: CDC_CLICKHOUSE_URL)\n"
	if code != 2 || stderr.String() != want {
		t.Fatalf("exit %d, stderr %q; want 2 and %q", code, stderr.String(), want)
	}
}

// The first signal cancels the command; the second ends the process by
// the signal, or as PID 1, which the signal cannot kill, exits with 128 +
// its number: never 2, which means a bad setting. A SIGHUP after the first
// signal is not that second one: a terminal's hangup comes twice (from the
// shell and from the kernel), and the shutdown it began goes on.
func TestOnSignals(t *testing.T) {
	for _, tc := range []struct {
		first    syscall.Signal
		then     []syscall.Signal // the last one ends the process
		pid1     bool
		wantDie  []syscall.Signal
		wantExit int
	}{
		{syscall.SIGTERM, []syscall.Signal{syscall.SIGTERM}, false, []syscall.Signal{syscall.SIGTERM}, 143},
		{syscall.SIGTERM, []syscall.Signal{syscall.SIGINT}, false, []syscall.Signal{syscall.SIGINT}, 130},
		{syscall.SIGTERM, []syscall.Signal{syscall.SIGTERM}, true, nil, 143},
		{syscall.SIGTERM, []syscall.Signal{syscall.SIGINT}, true, nil, 130},
		{syscall.SIGHUP, []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM}, false, []syscall.Signal{syscall.SIGTERM}, 143},
		{syscall.SIGHUP, []syscall.Signal{syscall.SIGHUP, syscall.SIGHUP, syscall.SIGINT}, true, nil, 130},
		{syscall.SIGTERM, []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM}, false, []syscall.Signal{syscall.SIGTERM}, 143},
	} {
		sigs := make(chan os.Signal, 2)
		ctx, cancel := context.WithCancel(context.Background())
		var died []syscall.Signal
		exited := make(chan int, 1)
		go onSignals(sigs, cancel, tc.pid1, func(s syscall.Signal) { died = append(died, s) }, func(code int) { exited <- code })
		last := len(tc.then) - 1
		for i, sig := range append([]syscall.Signal{tc.first}, tc.then[:last]...) {
			sigs <- sig
			if i == 0 {
				<-ctx.Done()
			}
			select {
			case code := <-exited:
				t.Fatalf("%v then %v: exited %d after %d signals, before the last", tc.first, tc.then, code, i+1)
			case <-time.After(50 * time.Millisecond):
			}
		}
		sigs <- tc.then[last]
		code := <-exited // after die, which did not end this test
		if code != tc.wantExit || fmt.Sprint(died) != fmt.Sprint(tc.wantDie) {
			t.Errorf("%v then %v, pid 1 %v: died by %v, exit %d; want %v, %d", tc.first, tc.then, tc.pid1, died, code, tc.wantDie, tc.wantExit)
		}
	}
}

// A DSN config refuses is named once: not parsed again by the drivers.
func TestMain_NamesABadDSNOnce(t *testing.T) {
	env := map[string]string{
		"CDC_PG_DSN":         "postgres://u:s3cret@db:port/app",
		"CDC_CLICKHOUSE_DSN": "clickhouse://u@127.0.0.1:1/db",
		"CDC_METRICS_ADDR":   "off",
	}
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), []string{"status"}, func(k string) string { return env[k] }, nil, &stdout, &stderr)
	msg := stderr.String()
	if code != 2 || strings.Count(msg, "CDC_PG_DSN") != 1 || strings.Contains(msg, "s3cret") {
		t.Fatalf("exit %d, stderr %q; want exit 2, CDC_PG_DSN named once, no password", code, msg)
	}
}

// A PostgreSQL that accepts connections and never answers (a hung server,
// a stuck proxy) fails a one-shot command after the connect timeout, 10 s
// where the DSN sets none, with exit 1, instead of holding it (a migrate
// Job, an init container) for ever.
func TestMain_OneShotCommandsGiveUpOnASilentServer(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the 10 s connect timeout")
	}
	silent := testenv.SilentAddr(t)
	env := map[string]string{
		"CDC_PG_DSN":         "postgres://u:pw@" + silent + "/app?sslmode=disable",
		"CDC_CLICKHOUSE_DSN": "clickhouse://u@127.0.0.1:1/db",
		"CDC_METRICS_ADDR":   "off",
	}
	for _, args := range [][]string{{"migrate"}, {"deadletter", "list"}, {"backfill", "--since", "-infinity"}} {
		t.Run(args[0], func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			done := make(chan int, 1)
			start := time.Now()
			go func() {
				done <- Main(context.Background(), args, func(k string) string { return env[k] }, nil, &stdout, &stderr)
			}()
			select {
			case code := <-done:
				// The 10 s default, not another timeout: a minute's
				// bound would pass one of 45 s.
				took := time.Since(start)
				if code != 1 || !strings.Contains(stderr.String(), "failed to connect to") || !strings.Contains(stderr.String(), "timeout") || took < 9*time.Second || took > 19*time.Second {
					t.Fatalf("cdc %v exited %d after %s: %s; want 1 after the 10 s connect timeout", args, code, took.Round(time.Millisecond), stderr.String())
				}
				t.Logf("exited 1 after %s: %s", took.Round(time.Millisecond), strings.TrimSpace(stderr.String()))
			case <-time.After(time.Minute):
				t.Fatalf("cdc %v still waits on a server that never answers, a minute on", args)
			}
		})
	}
}

// pgx reads a URL only when it starts with postgres:// or postgresql:// as
// written; any other spelling (Postgres://, POSTGRESQL://, postgres:/…)
// it reads as keyword=value settings, the whole URL one setting's name.
// Such a DSN connected to the server libpq's variables (PGHOST, PGPORT)
// name instead of its own host, which refused the URL as a setting and
// put it, password and all, in the error cdc logged. It is a setting to
// fix: exit 2 naming CDC_PG_DSN, before any connection, nothing echoed.
func TestMain_PostgresURLTheDriverWouldNotReadIsRefused(t *testing.T) {
	u, err := url.Parse(testenv.Get(t).PGDSN)
	if err != nil {
		t.Fatal(err)
	}
	// Where libpq's variables lead: the test's server, not db.invalid.
	t.Setenv("PGHOST", u.Hostname())
	t.Setenv("PGPORT", u.Port())
	t.Setenv("PGUSER", u.User.Username())
	t.Setenv("PGSSLMODE", "disable")
	for _, dsn := range []string{
		"Postgres://cdc:s3cret@db.invalid:5432/app?sslmode=disable",
		"POSTGRESQL://cdc:s3cret@db.invalid/app",
		"postgres:/app?host=/nonexistent&password=s3cret",
	} {
		t.Run(dsn, func(t *testing.T) {
			env := map[string]string{
				"CDC_PG_DSN":         dsn,
				"CDC_CLICKHOUSE_DSN": "clickhouse://u@127.0.0.1:1/db",
				"CDC_METRICS_ADDR":   "off",
			}
			var stdout, stderr bytes.Buffer
			code := Main(context.Background(), []string{"status"}, func(k string) string { return env[k] }, nil, &stdout, &stderr)
			want := "cdc: invalid configuration: CDC_PG_DSN: does not start with postgres:// or postgresql:// as written (lowercase, two slashes), the only forms the driver reads as a URL: it would read this one as keyword=value settings, the host ignored and the whole URL, password and all, sent to the server as a setting's name\n"
			if code != 2 || stdout.Len() != 0 || stderr.String() != want {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2 and %q", code, stdout.String(), stderr.String(), want)
			}
		})
	}
}

// A CDC_PG_DSN that leads to PgBouncer, not PostgreSQL: it refuses the
// replication connection ("unsupported startup parameter: replication",
// SQLSTATE 08P01) and the session settings the operator commands send
// (lock_timeout, bytea_output…) alike. It is a setting to fix: every
// command exits 2 at once, naming the variable and saying where it must
// lead. cdc run reconnected for ever, never ready; status and deadletter
// exited 1 with the bare refusal.
func TestMain_PoolerInsteadOfPostgresExitsTwo(t *testing.T) {
	env := map[string]string{
		"CDC_PG_DSN":         "postgres://u:s3cret@" + testenv.PoolerAddr(t) + "/app?sslmode=disable",
		"CDC_CLICKHOUSE_DSN": "clickhouse://u@127.0.0.1:1/db",
		"CDC_METRICS_ADDR":   "off",
	}
	const want = "CDC_PG_DSN: the server refused a parameter cdc sends when connecting, as a pooler in front of PostgreSQL does (PgBouncer refuses replication connections before 1.23, and the session settings cdc relies on): point the DSN at PostgreSQL itself, not at a pooler: "
	for _, tc := range []struct {
		args []string
		// What was connecting; the pooler names whichever parameter
		// pgx sent first of those it refuses, in no fixed order.
		what string
	}{
		{[]string{"run"}, "replication: connect to postgres for replication: "},
		{[]string{"status"}, "read slot cdc_outbox: "},
		{[]string{"deadletter", "list"}, "read dead letters: "},
	} {
		t.Run(tc.args[0], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			code := Main(ctx, tc.args, func(k string) string { return env[k] }, nil, &stdout, &stderr)
			lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
			last := lines[len(lines)-1]
			prefix := "cdc " + tc.args[0] + ": " + want + tc.what
			if code != 2 || ctx.Err() != nil || !strings.HasPrefix(last, prefix) || !strings.Contains(last, "server error: FATAL: unsupported startup parameter: ") ||
				!strings.HasSuffix(last, " (SQLSTATE 08P01)") || strings.Contains(stderr.String(), "s3cret") {
				t.Fatalf("exit %d (context: %v), stderr %q; want exit 2 at once, a last line %q…(SQLSTATE 08P01), no password", code, ctx.Err(), stderr.String(), prefix)
			}
			if strings.Contains(stderr.String(), "reconnecting") {
				t.Fatalf("reconnected before exiting:\n%s", stderr.String())
			}
		})
	}
}
