// Package testenv gives integration tests a real PostgreSQL 15 and a real
// ClickHouse server. By default it starts both as local processes under a
// temporary folder with scripts/localdb.sh (the same script `make demo`
// uses); when CDC_TEST_PG_DSN and CDC_TEST_CLICKHOUSE_DSN are set it uses those
// servers instead (and CDC_TEST_LOCALDB_DIR, when set, names the localdb
// folder they run from, so tests may stop and restart them). Each test gets its own database on both sides, so tests do
// not see each other's tables, slots or rows.
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pgx/v5"
)

// Env is a running PostgreSQL and ClickHouse pair.
type Env struct {
	PGDSN string // superuser DSN to the maintenance database
	CHDSN string // DSN of the default ClickHouse database, default user
	dir   string // localdb folder; empty when the servers came from the environment
}

var current *Env

// Main starts the servers, runs the package's tests and stops the servers.
// Use it from TestMain: os.Exit(testenv.Main(m)). With -short it starts
// nothing, and the tests that need the servers skip (Get): `make
// test-short` runs the unit tests alone, on a machine without databases.
func Main(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	// A run stopped by a signal (Ctrl-C, a CI job's kill) would otherwise
	// leave the servers running: they are not in the test's process
	// group, and its deferred functions do not run. Caught from before
	// they start; a second signal exits at once.
	var (
		mu      sync.Mutex
		stop    = func() {}
		stopped bool
	)
	stopOnce := func() {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			stopped = true
			stop()
		}
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "testenv: %v: stopping the local databases\n", sig)
		go func() { <-sigs; os.Exit(1) }()
		stopOnce()
		os.Exit(1)
	}()
	env, err := start(func(f func()) { mu.Lock(); stop = f; mu.Unlock() })
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		stopOnce()
		return 1
	}
	current = env
	code := m.Run()
	stopOnce()
	return code
}

// Get returns the package's servers; the package must use Main in TestMain.
func Get(t testing.TB) *Env {
	t.Helper()
	if current == nil {
		if testing.Short() {
			t.Skip("needs PostgreSQL and ClickHouse; not run with -short")
		}
		t.Fatal("testenv: call testenv.Main from TestMain")
	}
	return current
}

// start starts the local servers, or finds them in the environment. It
// hands setStop what stops them as soon as there is anything to stop,
// before they have started: a signal may come meanwhile.
func start(setStop func(func())) (*Env, error) {
	pg, ch := os.Getenv("CDC_TEST_PG_DSN"), os.Getenv("CDC_TEST_CLICKHOUSE_DSN")
	if pg != "" && ch != "" {
		// `make test` starts the servers once for all packages and says
		// where, so fault-injection tests can still stop and start them.
		return &Env{PGDSN: pg, CHDSN: ch, dir: os.Getenv("CDC_TEST_LOCALDB_DIR")}, nil
	}
	script, err := Script()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cdc-testenv-")
	if err != nil {
		return nil, err
	}
	setStop(func() {
		_ = exec.Command(script, "stop", dir).Run()
		_ = os.RemoveAll(dir)
	})
	if watchdogPipe, err = watchdog(script, dir); err != nil {
		return nil, err
	}
	// PostgreSQL runs as the postgres user when the tests run as root; it
	// must be able to reach its data folder.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	env := &Env{dir: dir}
	out, err := exec.Command(script, "start", dir).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return nil, fmt.Errorf("start local databases: %w: %s", err, ee.Stderr)
		}
		return nil, fmt.Errorf("start local databases: %w", err)
	}
	vars := parseEnv(out)
	env.PGDSN, env.CHDSN = vars["CDC_PG_DSN"], vars["CDC_CLICKHOUSE_DSN"]
	return env, nil
}

// watchdogPipe is the write end of the watchdog's stdin, held open for the
// life of the test binary. It is never read: the variable only keeps the
// file reachable, since the collector would otherwise finalize it, closing
// the pipe and stopping the servers while tests still use them.
//
//lint:ignore U1000 kept to stay reachable, see above
var watchdogPipe io.WriteCloser

// watchdog stops the servers in dir once the test binary has exited,
// however it exits. A binary that dies without returning from m.Run (a
// -timeout panic, os.Exit in a test, SIGKILL) runs no deferred stop, and
// its servers would run on in a temporary folder nothing else stops. The
// watchdog reads a pipe whose write end only this process holds (Go opens
// it close-on-exec, so no server inherits it); the kernel closes it when
// the process ends, and the watchdog then stops what is left. It has a
// process group of its own, so a Ctrl-C at the terminal does not end it
// first. After a clean stop it finds nothing to do.
// Closing the returned pipe sets it off too: a test that starts servers
// of its own closes it when done, and a clean stop leaves it nothing to
// do but remove dir.
func watchdog(script, dir string) (io.WriteCloser, error) {
	cmd := exec.Command("/bin/sh", "-c", `cat >/dev/null; "$0" stop "$1" >/dev/null 2>&1; rm -rf "$1"`, script, dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	w, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start the servers' watchdog: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the servers' watchdog: %w", err)
	}
	// Reaped when it ends, so it does not linger as a zombie.
	go func() { _ = cmd.Wait() }()
	return w, nil
}

func parseEnv(out []byte) map[string]string {
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			vars[k] = v
		}
	}
	return vars
}

// Script returns the path of scripts/localdb.sh, found from the working
// directory upwards.
func Script() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "scripts", "localdb.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("scripts/localdb.sh not found above the working directory")
		}
		dir = parent
	}
}

// Local reports whether the servers are local processes this package
// started, which tests that stop and restart a server need.
func (e *Env) Local() bool { return e.dir != "" }

// PostgresDataDir is the local PostgreSQL server's data folder, for tests
// that reconfigure it (TLS certificates); it skips the test otherwise.
func (e *Env) PostgresDataDir(t testing.TB) string {
	t.Helper()
	if !e.Local() {
		t.Skip("servers come from the environment; cannot reconfigure them")
	}
	return filepath.Join(e.dir, "pg")
}

// PostgresSocketDir is the folder of the local PostgreSQL server's Unix
// socket (unix_socket_directories in scripts/localdb.sh); it skips the
// test when the servers come from the environment.
func (e *Env) PostgresSocketDir(t testing.TB) string {
	t.Helper()
	if !e.Local() {
		t.Skip("servers come from the environment; their socket folder is unknown")
	}
	return SocketDir(e.dir)
}

// SocketDir is the folder of the Unix socket of the PostgreSQL server
// scripts/localdb.sh started in folder dir: dir itself, or the short
// folder it chose when dir is too deep for a socket's path (pg.socket_dir).
func SocketDir(dir string) string {
	if b, err := os.ReadFile(filepath.Join(dir, "pg.socket_dir")); err == nil {
		if s := strings.TrimSpace(string(b)); s != "" {
			return s
		}
	}
	return dir
}

// SocketDSN is the PostgreSQL URL dsn rewritten to reach the same server
// through its Unix socket in folder dir: host and port move into query
// parameters, postgres://user@/db?host=dir&port=N, the form pgx and libpq
// take (and cdc's configuration accepts).
func SocketDSN(dsn, dir string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", fmt.Errorf("parse postgres dsn: %w", err)
	}
	q := u.Query()
	q.Set("host", dir)
	q.Set("port", u.Port())
	u.Host, u.RawQuery = "", q.Encode()
	return u.String(), nil
}

// DecodingMemoryDSN is the PostgreSQL URL dsn with logical_decoding_work_mem
// set to mem for its sessions, in the startup "options" parameter (spaces
// as %20, which pgx and libpq read). Below PostgreSQL's default of 64MB the
// walsender streams a transaction over mem before its commit instead of at
// it; 64kB, the smallest, streams one of a few hundred rows.
func DecodingMemoryDSN(dsn, mem string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", fmt.Errorf("parse postgres dsn: %w", err)
	}
	q := u.Query()
	q.Set("options", "-c logical_decoding_work_mem="+mem)
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	return u.String(), nil
}

// StopClickHouse stops the local ClickHouse server; StartClickHouse starts it
// again on the same port with the same data.
func (e *Env) StopClickHouse(t testing.TB) { e.localdb(t, "stop-ch") }

// StartClickHouse starts the local ClickHouse server again.
func (e *Env) StartClickHouse(t testing.TB) { e.localdb(t, "start-ch") }

// CrashClickHouse kills the local ClickHouse server (SIGKILL: no query
// finished, nothing written after the signal) and starts it again.
func (e *Env) CrashClickHouse(t testing.TB) { e.localdb(t, "crash-ch") }

// EnableClickHouseTLS gives the local ClickHouse server a certificate and
// key (PEM) and restarts it, so that it also speaks the native protocol over
// TLS on a port of its own, which it returns (scripts/localdb.sh). The server
// keeps that port until it is restarted after the test; it skips the test
// when the servers come from the environment.
func (e *Env) EnableClickHouseTLS(t testing.TB, certPEM, keyPEM []byte) int {
	t.Helper()
	if !e.Local() {
		t.Skip("servers come from the environment; cannot reconfigure them")
	}
	tlsDir := filepath.Join(e.dir, "ch", "tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// Removed again at the end, so a later restart starts without TLS.
	t.Cleanup(func() { _ = os.RemoveAll(tlsDir) })
	for name, data := range map[string][]byte{"server.crt": certPEM, "server.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(tlsDir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e.StopClickHouse(t)
	e.StartClickHouse(t)
	b, err := os.ReadFile(filepath.Join(e.dir, "ch.secure_port"))
	if err != nil {
		t.Fatalf("localdb did not record the TLS port: %v", err)
	}
	port, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("TLS port %q: %v", b, err)
	}
	return port
}

// RestartPostgres restarts the local PostgreSQL server (fast shutdown), which
// drops every connection, replication ones included.
func (e *Env) RestartPostgres(t testing.TB) { e.localdb(t, "restart-pg") }

// CrashPostgres stops the local PostgreSQL server as a crash would (an
// immediate shutdown: no checkpoint, so a replication slot's position not
// yet on disk is lost) and starts it again.
func (e *Env) CrashPostgres(t testing.TB) { e.localdb(t, "crash-pg") }

func (e *Env) localdb(t testing.TB, cmd string) {
	t.Helper()
	if !e.Local() {
		t.Skip("servers come from the environment; cannot stop or start them")
	}
	script, err := Script()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(script, cmd, e.dir).CombinedOutput(); err != nil {
		t.Fatalf("localdb %s: %v: %s", cmd, err, out)
	}
}

// Name returns a fresh lowercase identifier with the given prefix, usable as
// a database, slot or publication name.
func Name(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + "_" + hex.EncodeToString(b)
}

// NewPostgres creates an empty database and returns a DSN for it. The
// database and any replication slot in it are dropped when the test ends.
func (e *Env) NewPostgres(t testing.TB) string {
	t.Helper()
	return e.NewPostgresWith(t, "")
}

// NewPostgresWith is NewPostgres with options added to CREATE DATABASE
// (e.g. "ENCODING 'SQL_ASCII' TEMPLATE template0 LOCALE 'C'").
func (e *Env) NewPostgresWith(t testing.TB, options string) string {
	t.Helper()
	name := Name("t")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.PGDSN)
	if err != nil {
		t.Fatalf("connect to postgres: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, strings.TrimSpace("CREATE DATABASE "+name+" "+options)); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, e.PGDSN)
		if err != nil {
			t.Logf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		// A slot pins WAL for the whole cluster; drop the test's slots first.
		// A slot still held by a lingering walsender is terminated first.
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, name)
		for i := 0; i < 50; i++ {
			if _, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, name); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
	})
	return withDatabase(t, e.PGDSN, name)
}

// NewClickHouse creates an empty ClickHouse database and returns a DSN for
// it; it is dropped when the test ends.
func (e *Env) NewClickHouse(t testing.TB) string {
	t.Helper()
	name := Name("t")
	e.ClickHouseExec(t, e.CHDSN, "CREATE DATABASE "+name)
	t.Cleanup(func() {
		opts, err := clickhouse.ParseDSN(e.CHDSN)
		if err != nil {
			return
		}
		conn, err := clickhouse.Open(opts)
		if err != nil {
			return
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name)
	})
	return withDatabase(t, e.CHDSN, name)
}

// ClickHouseExec runs one statement against the server at dsn.
func (e *Env) ClickHouseExec(t testing.TB, dsn, query string, args ...any) {
	t.Helper()
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("parse clickhouse dsn: %v", err)
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		t.Fatalf("open clickhouse: %v", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := conn.Exec(ctx, query, args...); err != nil {
		t.Fatalf("clickhouse %q: %v", query, err)
	}
}

func withDatabase(t testing.TB, dsn, db string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("parse dsn: %v", err)
	}
	u.Path = "/" + db
	return u.String()
}

// SilentAddr returns the loopback address of a server that takes every
// connection and never answers (a frozen link, a wedged pooler), until
// the test ends.
func SilentAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	return ln.Addr().String()
}

// FreeAddr returns a loopback address with a port nobody listens on now,
// for a server a test is about to start.
func FreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// ClickHouseInZone starts a ClickHouse server of the test's own whose
// timezone, the zone a plain DateTime column is read in, is zone
// (scripts/localdb.sh's LOCALDB_CH_TIMEZONE), and returns the DSN of its
// default database; it is stopped when the test ends. The package's own
// server runs in UTC, where a value sent as its wall clock and one sent as
// an instant land alike.
func (e *Env) ClickHouseInZone(t *testing.T, zone string) string {
	t.Helper()
	script, err := Script()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, port, err := net.SplitHostPort(FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	// start-ch starts ClickHouse alone, on the port the folder records.
	if err := os.WriteFile(filepath.Join(dir, "ch.port"), []byte(port+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A -timeout panic runs no cleanup; the watchdog stops the server then.
	guard, err := watchdog(script, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(script, "stop", dir).CombinedOutput(); err != nil {
			t.Errorf("localdb.sh stop: %v: %s", err, out)
		}
		guard.Close()
	})
	cmd := exec.Command(script, "start-ch", dir)
	cmd.Env = append(os.Environ(), "LOCALDB_CH_TIMEZONE="+zone)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("start a ClickHouse in %s: %v: %s", zone, err, out)
	}
	return "clickhouse://default@127.0.0.1:" + port + "/default"
}
