// Package e2e runs the cdc binary as a real process against real PostgreSQL
// and ClickHouse: what an operator deploys is what these tests kill, restart
// and count.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcdc/cdc/internal/testenv"
)

var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "cdc-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "cdc")
	// -buildvcs=false: git refuses a clone owned by another user than
	// the one running the tests, and the build with it; no test reads
	// the binary's revision.
	build := exec.Command("go", "build", "-buildvcs=false", "-race", "-o", binary, "../cmd/cdc")
	// -short runs only the tests that need no servers (testenv.Main):
	// the command-line checks, quick enough without the race detector.
	if os.Getenv("CDC_E2E_NORACE") != "" || testing.Short() {
		build = exec.Command("go", "build", "-buildvcs=false", "-o", binary, "../cmd/cdc")
	}
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build cdc:", err)
		os.Exit(1)
	}
	code := testenv.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// world is one test's PostgreSQL and ClickHouse databases, migrated.
type world struct {
	t     *testing.T
	env   *testenv.Env
	pgDSN string
	chDSN string
	pg    *pgxpool.Pool
	ch    driver.Conn
}

func newWorld(t *testing.T) *world {
	t.Helper()
	env := testenv.Get(t)
	return newWorldOn(t, env.NewPostgres(t), env.NewClickHouse(t))
}

// newWorldOn is newWorld on databases the test made itself (another
// encoding, a ClickHouse server in another timezone).
func newWorldOn(t *testing.T, pgDSN, chDSN string) *world {
	t.Helper()
	env := testenv.Get(t)
	w := &world{t: t, env: env, pgDSN: pgDSN, chDSN: chDSN}
	var err error
	if w.pg, err = pgxpool.New(context.Background(), w.pgDSN); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.pg.Close)
	// The retention hold is a physical slot, in no database: one a test
	// made (or an earlier run left) would hold every later test's
	// retention.
	dropHold := func() {
		_, _ = w.pg.Exec(context.Background(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'cdc_outbox_retention_hold'`)
	}
	dropHold()
	t.Cleanup(dropHold)
	opts, err := clickhouse.ParseDSN(w.chDSN)
	if err != nil {
		t.Fatal(err)
	}
	if w.ch, err = clickhouse.Open(opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.ch.Close() })
	// A fresh database: migrate says what it built and created, and no
	// word of older events (the outbox is empty).
	out, stderr, code := w.runOperator(nil, "migrate")
	if code != 0 || out != freshMigrate {
		t.Fatalf("migrate of a fresh database exited %d:\n%s%s\nwant:\n%s", code, out, stderr, freshMigrate)
	}
	return w
}

const freshMigrate = `building index outbox_event_date_time_id_idx on outbox (event_date_time, id) concurrently; inserts into outbox go on meanwhile
built index outbox_event_date_time_id_idx
created replication slot cdc_outbox: events published from now on are kept until cdc run ships them
migrated: postgres outbox, cdc_dead_letter, publication cdc_outbox; clickhouse event_log
`

func (w *world) baseEnv() map[string]string {
	return map[string]string{
		"CDC_PG_DSN":         w.pgDSN,
		"CDC_CLICKHOUSE_DSN": w.chDSN,
		"CDC_SLOT_NAME":      "cdc_outbox",
		"CDC_PUBLICATION":    "cdc_outbox",
		"CDC_FLUSH_INTERVAL": "200ms",
		"CDC_METRICS_ADDR":   "off",
		"CDC_LOG_LEVEL":      "debug",
		"CDC_LOG_FORMAT":     "console",
	}
}

func envList(m map[string]string) []string {
	out := []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

// runOnce runs a short cdc command and returns its combined output and exit code.
func (w *world) runOnce(extra map[string]string, args ...string) (string, int) {
	w.t.Helper()
	env := w.baseEnv()
	for k, v := range extra {
		env[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = envList(env)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		}
		w.t.Fatalf("run cdc %v: %v", args, err)
	}
	return string(out), 0
}

// connector is a running `cdc run` process.
type connector struct {
	t    *testing.T
	cmd  *exec.Cmd
	out  *testenv.Buffer
	done chan struct{}
	err  error
	// MetricsAddr is set when the connector serves metrics.
	MetricsAddr string
}

// start launches `cdc run` with the world's settings plus extra.
func (w *world) start(extra map[string]string) *connector {
	w.t.Helper()
	return w.startBinary(binary, extra)
}

// startBinary is start with another build of cdc (the memory tests use one
// without the race detector).
func (w *world) startBinary(bin string, extra map[string]string) *connector {
	w.t.Helper()
	return w.startCommand(bin, []string{"run"}, extra)
}

// startCommand is start with cdc run launched as name args (a wrapper such
// as nohup, given the binary and "run").
func (w *world) startCommand(name string, args []string, extra map[string]string) *connector {
	w.t.Helper()
	env := w.baseEnv()
	for k, v := range extra {
		env[k] = v
	}
	c := &connector{t: w.t, out: &testenv.Buffer{}, done: make(chan struct{})}
	if env["CDC_METRICS_ADDR"] == "auto" {
		env["CDC_METRICS_ADDR"] = testenv.FreeAddr(w.t)
	}
	if env["CDC_METRICS_ADDR"] != "off" {
		c.MetricsAddr = env["CDC_METRICS_ADDR"]
	}
	c.cmd = exec.Command(name, args...)
	c.cmd.Env = envList(env)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	w.t.Cleanup(func() {
		c.kill()
		if w.t.Failed() {
			w.t.Logf("connector output:\n%s", tail(c.out.String(), 60))
		}
	})
	return c
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// lastLine is the last line the process wrote, without its newline.
func lastLine(out string) string {
	return tail(strings.TrimRight(out, "\n"), 1)
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *connector) kill() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// term sends SIGTERM and returns the exit code and how long the exit took.
func (c *connector) term(limit time.Duration) (int, time.Duration) {
	c.t.Helper()
	return c.stop(syscall.SIGTERM, limit)
}

// stop sends sig and returns the exit code (-1 for a process the signal
// killed) and how long the exit took.
func (c *connector) stop(sig syscall.Signal, limit time.Duration) (int, time.Duration) {
	c.t.Helper()
	start := time.Now()
	_ = c.cmd.Process.Signal(sig)
	select {
	case <-c.done:
	case <-time.After(limit):
		c.kill()
		c.t.Fatalf("connector did not exit within %s of %v", limit, sig)
	}
	return c.cmd.ProcessState.ExitCode(), time.Since(start)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s (last: %s)", timeout, what, last)
}

func (w *world) chCount(query string) uint64 {
	w.t.Helper()
	var n uint64
	if err := w.ch.QueryRow(context.Background(), query).Scan(&n); err != nil {
		w.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// waitRows waits until event_log FINAL holds want rows.
func (w *world) waitRows(want uint64, timeout time.Duration) {
	w.t.Helper()
	waitFor(w.t, timeout, fmt.Sprintf("%d rows in event_log", want), func() (bool, string) {
		n := w.chCount("SELECT count() FROM event_log FINAL")
		return n == want, fmt.Sprintf("%d rows", n)
	})
}

func (w *world) exec(sql string, args ...any) {
	w.t.Helper()
	if _, err := w.pg.Exec(context.Background(), sql, args...); err != nil {
		w.t.Fatalf("%s: %v", sql, err)
	}
}

// insertEvents commits n events in one transaction with event_type typ.
func (w *world) insertEvents(typ string, n int) {
	w.t.Helper()
	w.exec(`INSERT INTO outbox (event_type, environment, event_context)
		SELECT $1, 'test', json_build_object('n', g, 'pad', repeat('x', 200)) FROM generate_series(1, $2) g`, typ, n)
}
