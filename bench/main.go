// Command bench measures cdc against real local PostgreSQL and ClickHouse and
// prints one Markdown table: PostgreSQL's own decoding rate (the ceiling), a
// backlog drain by the real binary, its peak memory, steady-traffic latency
// and the primary's TPS with and without the connector, and the Go
// micro-benchmarks. bench/run.sh starts the servers (scripts/localdb.sh),
// builds the binaries and runs it; `make bench` runs that. It never runs in
// `make test` or CI: its figures depend on the machine.
package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/eventcdc/cdc/config"
	"github.com/eventcdc/cdc/internal/testenv"
)

type options struct {
	cdc       string // the cdc binary (non-race build)
	dir       string // localdb folder; logs and results go here too
	repo      string // module root, for the micro-benchmarks
	pgbench   string
	events    int           // backlog size
	bigEvents int           // events in the large-event run
	bigSize   int           // bytes of event_context per large event
	rate      int           // steady-traffic rate cap, events/s
	steady    time.Duration // steady-traffic duration
	tpsRun    time.Duration // each unthrottled pgbench run
	profile   bool          // run the in-process drain with a CPU profile
	pairs     int           // ceiling/drain pairs, measured alternately
}

func main() {
	var o options
	flag.StringVar(&o.cdc, "cdc", ".local/bench/cdc", "cdc binary to measure (build it without -race)")
	flag.StringVar(&o.dir, "dir", ".local/bench", "localdb folder; logs, profiles and results.md are written here")
	flag.StringVar(&o.repo, "repo", ".", "module root, where the micro-benchmarks run")
	flag.StringVar(&o.pgbench, "pgbench", "/usr/lib/postgresql/15/bin/pgbench", "pgbench binary")
	flag.IntVar(&o.events, "events", 300000, "backlog events for the ceiling and the drain")
	flag.IntVar(&o.pairs, "pairs", 3, "ceiling and drain measurements, alternated; the verdict is on the median of their ratios")
	flag.IntVar(&o.bigEvents, "big-events", 50, "events in the large-event memory run")
	flag.IntVar(&o.bigSize, "big-size", 10<<20, "event_context bytes of each large event")
	flag.IntVar(&o.rate, "rate", 5000, "steady-traffic rate cap (pgbench -R), events/s")
	flag.DurationVar(&o.steady, "steady", 20*time.Second, "steady-traffic duration")
	flag.DurationVar(&o.tpsRun, "tps-run", 10*time.Second, "duration of each unthrottled pgbench run")
	flag.BoolVar(&o.profile, "profile", true, "also drain a backlog in-process under a CPU profile")
	profileOnly := flag.Bool("profile-only", false, "run only the in-process profiled drain (= -steps profile)")
	only := flag.String("steps", "", "run only these steps, comma-separated: micro, drain, many, large, steady, profile (default: all)")
	flag.Parse()
	if *profileOnly {
		*only = "profile"
	}

	ctx := context.Background()
	b, err := newBench(ctx, o)
	if err == nil {
		err = b.run(ctx, *only)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// bench holds the servers' addresses and the rows of the result table.
type bench struct {
	o         options
	drainRows int    // rows of the drain's first batch: the sink-only run cuts its batches alike
	pgDSN     string // superuser DSN of the maintenance database
	chDSN     string // default user, default database
	started   time.Time
	rows      []row
	notes     []string
}

// row is one line of the result table.
type row struct {
	section, figure, result, target, verdict string
}

func newBench(ctx context.Context, o options) (*bench, error) {
	b := &bench{o: o, pgDSN: os.Getenv("CDC_PG_DSN"), chDSN: os.Getenv("CDC_CLICKHOUSE_DSN"), started: time.Now()}
	if b.pgDSN == "" || b.chDSN == "" {
		return nil, errors.New("CDC_PG_DSN and CDC_CLICKHOUSE_DSN must name the local servers (bench/run.sh sets them)")
	}
	for _, p := range []*string{&b.o.cdc, &b.o.dir, &b.o.repo} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", *p, err)
		}
		*p = abs
	}
	return b, nil
}

func (b *bench) add(section, figure, result, target, verdict string) {
	b.rows = append(b.rows, row{section, figure, result, target, verdict})
}

func (b *bench) note(format string, args ...any) {
	b.notes = append(b.notes, fmt.Sprintf(format, args...))
}

type step struct {
	key, name string
	fn        func(context.Context) error
}

func (b *bench) run(ctx context.Context, only string) error {
	all := []step{
		{"micro", "micro-benchmarks", b.microBenchmarks},
		{"drain", "ceiling and backlog drain", b.drain},
		{"many", "backlog of many transactions", b.manyTransactions},
		{"large", "large events", b.bigEvents},
		{"steady", "steady traffic and TPS", b.steadyTraffic},
		{"profile", "in-process profiled drain", b.profileDrain},
		{"profile", "source-only and sink-only drains", b.decompose},
	}
	var steps []step
	want := map[string]bool{}
	for _, k := range strings.Split(only, ",") {
		if k = strings.TrimSpace(k); k != "" {
			want[k] = true
		}
	}
	for _, s := range all {
		if want[s.key] || (len(want) == 0 && (s.key != "profile" || b.o.profile)) {
			steps = append(steps, s)
		}
	}
	var keys []string
	for _, s := range all {
		if !slices.Contains(keys, s.key) {
			keys = append(keys, s.key)
		}
	}
	for k := range want {
		if !slices.Contains(keys, k) {
			return fmt.Errorf("-steps: unknown step %q (%s)", k, strings.Join(keys, ", "))
		}
	}
	// Other work on the machine skews every figure; the load average at
	// each step's start and end shows how much there was.
	var loads []string
	for _, s := range steps {
		t := time.Now()
		load0 := loadAvg()
		fmt.Fprintf(os.Stderr, "bench: %s...\n", s.name)
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		loads = append(loads, fmt.Sprintf("%s %s → %s", s.name, load0, loadAvg()))
		fmt.Fprintf(os.Stderr, "bench: %s done in %s\n", s.name, time.Since(t).Round(100*time.Millisecond))
	}
	b.note("1-minute load average at the start → end of each step (on %d CPUs; work outside this bench, such as other test suites, raises it and slows every figure): %s.",
		numCPU(), strings.Join(loads, "; "))
	table := b.table()
	fmt.Print(table)
	out := filepath.Join(b.o.dir, "results.md")
	if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	fmt.Fprintf(os.Stderr, "bench: table written to %s\n", out)
	return nil
}

func (b *bench) table() string {
	var s strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&s, "## cdc benchmark — %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&s, "Machine: %s, nproc %d, %s RAM, host %s. Code: %s. Whole run: %s.\n\n",
		cpuModel(), numCPU(), memTotal(), host, b.revision(), time.Since(b.started).Round(time.Second))
	s.WriteString("| # | Figure | Result | Target | Verdict |\n|---|---|---|---|---|\n")
	rows := slices.Clone(b.rows)
	slices.SortStableFunc(rows, func(x, y row) int { return strings.Compare(x.section, y.section) })
	for _, r := range rows {
		fmt.Fprintf(&s, "| %s | %s | %s | %s | %s |\n", r.section, r.figure, r.result, r.target, r.verdict)
	}
	if len(b.notes) > 0 {
		s.WriteString("\nNotes:\n")
		for _, n := range b.notes {
			fmt.Fprintf(&s, "- %s\n", n)
		}
	}
	return s.String()
}

// revision names the commit measured, and says so when the pipeline's
// files differ from it (the binaries are built from the working tree).
func (b *bench) revision() string {
	out, err := exec.Command("git", "-C", b.o.repo, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown commit"
	}
	rev := "commit " + strings.TrimSpace(string(out))
	dirty, err := exec.Command("git", "-C", b.o.repo, "status", "--porcelain", "--", "cmd", "config", "decoder", "checkpoint", "sink", "replication", "metrics", "tracing", "go.mod").Output()
	if err == nil && len(strings.TrimSpace(string(dirty))) > 0 {
		var files []string
		for _, l := range strings.Split(strings.TrimSpace(string(dirty)), "\n") {
			files = append(files, strings.TrimSpace(l[2:]))
		}
		rev += " plus uncommitted changes to " + strings.Join(files, ", ")
	}
	return rev
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

// ---------------------------------------------------------------------------
// Databases

// world is one fresh database on each server, migrated by `cdc migrate`,
// with its own replication slot.
type world struct {
	pgDB  string // PostgreSQL database
	chDB  string // ClickHouse database
	slot  string // the connector's slot; slot names are cluster-wide
	pgDSN string
	chDSN string
	pg    *pgx.Conn
	ch    driver.Conn
}

func (b *bench) newWorld(ctx context.Context, name string) (*world, error) {
	admin, err := pgx.Connect(ctx, b.pgDSN)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	defer admin.Close(ctx)
	// A slot left by an earlier run pins its database; drop it first.
	if _, err := admin.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, name); err != nil {
		return nil, fmt.Errorf("drop old slots of %s: %w", name, err)
	}
	for _, q := range []string{"DROP DATABASE IF EXISTS " + name + " WITH (FORCE)", "CREATE DATABASE " + name} {
		if _, err := admin.Exec(ctx, q); err != nil {
			return nil, fmt.Errorf("%s: %w", q, err)
		}
	}
	if err := b.freshCHDatabase(ctx, name); err != nil {
		return nil, err
	}
	w := &world{pgDB: name, chDB: name, slot: name, pgDSN: withPath(b.pgDSN, name), chDSN: withPath(b.chDSN, name)}
	return w, b.migrate(ctx, w)
}

// freshCHDatabase drops and recreates a ClickHouse database.
func (b *bench) freshCHDatabase(ctx context.Context, name string) error {
	chAdmin, err := openCH(b.chDSN)
	if err != nil {
		return err
	}
	defer chAdmin.Close()
	for _, q := range []string{"DROP DATABASE IF EXISTS " + name, "CREATE DATABASE " + name} {
		if err := chAdmin.Exec(ctx, q); err != nil {
			return fmt.Errorf("clickhouse %s: %w", q, err)
		}
	}
	return nil
}

// sibling is a second connector's view of w's PostgreSQL database: its own
// slot (so create it before the events to share) and its own ClickHouse
// database. Two drains of the same WAL can then be compared.
func (b *bench) sibling(ctx context.Context, w *world, name string) (*world, error) {
	if err := b.freshCHDatabase(ctx, name); err != nil {
		return nil, err
	}
	s := &world{pgDB: w.pgDB, chDB: name, slot: name, pgDSN: w.pgDSN, chDSN: withPath(b.chDSN, name)}
	return s, b.migrate(ctx, s)
}

// migrate runs `cdc migrate` (which also creates the slot) and connects.
func (b *bench) migrate(ctx context.Context, w *world) error {
	if out, err := b.cdcOnce(ctx, w, "migrate"); err != nil {
		return fmt.Errorf("cdc migrate: %w: %s", err, out)
	}
	var err error
	if w.pg, err = pgx.Connect(ctx, w.pgDSN); err != nil {
		return fmt.Errorf("connect to postgres %s: %w", w.pgDB, err)
	}
	if w.ch, err = openCH(w.chDSN); err != nil {
		return err
	}
	return nil
}

// close drops the world's slot, so its WAL is not kept for the rest of the run.
func (w *world) close() {
	_, _ = w.pg.Exec(context.Background(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database() AND NOT active`)
	w.pg.Close(context.Background())
	w.ch.Close()
}

func withPath(dsn, db string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		panic(err) // checked by the servers already accepting it
	}
	u.Path = "/" + db
	return u.String()
}

func openCH(dsn string) (driver.Conn, error) {
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse clickhouse dsn: %w", err)
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open clickhouse: %w", err)
	}
	return conn, nil
}

func chCount(ctx context.Context, ch driver.Conn, table string) (uint64, error) {
	var n uint64
	if err := ch.QueryRow(ctx, "SELECT count() FROM "+table).Scan(&n); err != nil {
		return 0, fmt.Errorf("count %s: %w", table, err)
	}
	return n, nil
}

// mergesSettled waits, up to limit, until ClickHouse runs no merge: the
// parts a drain inserted are merged in the background for a while after
// it, and a ceiling or drain measured meanwhile would share the cores with
// that merge. It returns how long it waited.
func mergesSettled(ctx context.Context, ch driver.Conn, limit time.Duration) (time.Duration, error) {
	t := time.Now()
	for {
		var n uint64
		if err := ch.QueryRow(ctx, "SELECT count() FROM system.merges").Scan(&n); err != nil {
			return 0, fmt.Errorf("count clickhouse merges: %w", err)
		}
		if n == 0 || time.Since(t) > limit {
			return time.Since(t), nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// eventContextSQL builds a ~300-byte JSON event_context from integer i: the
// order event of decoder/bench_test.go with a unique order id.
const eventContextSQL = `('{"order_id":"ord_' || lpad(i::text, 20, '0') || '","customer_id":"cus_8f3a2b1c","currency":"EUR",` +
	`"total":"149.90","items":[{"sku":"SKU-1042","qty":2,"price":"49.95"},{"sku":"SKU-2210","qty":1,"price":"50.00"}],` +
	`"shipping":{"method":"express","country":"DE"},"locale":"de-DE","source":"web","campaign":"spring-sale"}')::json`

// insertBacklog inserts n events in one transaction.
func insertBacklog(ctx context.Context, pg *pgx.Conn, n int) (time.Duration, error) {
	t := time.Now()
	_, err := pg.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context, traceparent)
		SELECT 'order.created', 'production', `+eventContextSQL+`, '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
		FROM generate_series(1, $1) AS i`, n)
	if err != nil {
		return 0, fmt.Errorf("insert %d events: %w", n, err)
	}
	d := time.Since(t)
	// Vacuum and checkpoint now, so autovacuum and a timed checkpoint do not
	// land in the middle of what is measured next.
	for _, q := range []string{"VACUUM ANALYZE outbox", "CHECKPOINT"} {
		if _, err := pg.Exec(ctx, q); err != nil {
			return 0, fmt.Errorf("%s: %w", q, err)
		}
	}
	return d, nil
}

// ---------------------------------------------------------------------------
// The connector process

type connector struct {
	cmd     *exec.Cmd
	start   time.Time
	metrics string // host:port of its metrics endpoint
	logPath string
	done    chan error
}

func (b *bench) cdcEnv(w *world, extra map[string]string) []string {
	env := map[string]string{
		"PATH":               os.Getenv("PATH"),
		"CDC_PG_DSN":         w.pgDSN,
		"CDC_CLICKHOUSE_DSN": w.chDSN,
		"CDC_METRICS_ADDR":   "off",
		"CDC_LOG_FORMAT":     "json",
		// Slot names are cluster-wide: one per world, so worlds never
		// find each other's slot.
		"CDC_SLOT_NAME": w.slot,
	}
	for k, v := range extra {
		env[k] = v
	}
	var out []string
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

func (b *bench) cdcOnce(ctx context.Context, w *world, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, b.o.cdc, args...)
	cmd.Env = b.cdcEnv(w, nil)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// startCDC starts `cdc run` with debug logs (one line per stored batch: the
// exact rows of every INSERT) and a metrics endpoint.
func (b *bench) startCDC(w *world, tag string, extra map[string]string) (*connector, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	c := &connector{metrics: fmt.Sprintf("127.0.0.1:%d", port), logPath: filepath.Join(b.o.dir, "cdc-"+tag+".log"), done: make(chan error, 1)}
	env := map[string]string{"CDC_METRICS_ADDR": c.metrics, "CDC_LOG_LEVEL": "debug"}
	for k, v := range extra {
		env[k] = v
	}
	logFile, err := os.Create(c.logPath)
	if err != nil {
		return nil, fmt.Errorf("create connector log: %w", err)
	}
	c.cmd = exec.Command(b.o.cdc, "run")
	c.cmd.Env = b.cdcEnv(w, env)
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	// Killed with the bench, so an interrupted run leaves no connector behind.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c.start = time.Now()
	if err := c.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start cdc run: %w", err)
	}
	go func() {
		c.done <- c.cmd.Wait()
		logFile.Close()
	}()
	return c, nil
}

func (c *connector) pid() int { return c.cmd.Process.Pid }

// exited reports an early exit, with the tail of the log.
func (c *connector) exited() error {
	select {
	case err := <-c.done:
		c.done <- err
		return fmt.Errorf("cdc run exited early (%v); log %s:\n%s", err, c.logPath, tail(c.logPath, 20))
	default:
		return nil
	}
}

// stop sends SIGTERM and waits for the clean shutdown.
func (c *connector) stop() error {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.done:
		c.done <- err
		if err != nil {
			return fmt.Errorf("cdc run exited with %v; log %s", err, c.logPath)
		}
		return nil
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		return fmt.Errorf("cdc run did not stop within 30s of SIGTERM; killed")
	}
}

// batchLine is one "batch stored" line of the debug log.
type batchLine struct {
	Msg      string    `json:"msg"`
	TS       time.Time `json:"ts"`
	Rows     int       `json:"rows"`
	Last     string    `json:"last"`     // position of its last row, "LSN#seq"
	Duration float64   `json:"duration"` // seconds
}

// batchLog reads every stored batch from the debug log.
func (c *connector) batchLog() ([]batchLine, error) {
	f, err := os.Open(c.logPath)
	if err != nil {
		return nil, fmt.Errorf("read connector log: %w", err)
	}
	defer f.Close()
	return readBatchLog(f)
}

// readBatchLog returns the "batch stored" lines of a debug log in WAL
// order. With two INSERTs in flight a drain's last, small batch can be
// stored before the full one ahead of it; the INSERT-size verdict excepts
// the batch that holds the backlog's end, not whichever was stored last.
func readBatchLog(r io.Reader) ([]batchLine, error) {
	type placed struct {
		line     batchLine
		lsn, seq uint64
	}
	var out []placed
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line batchLine
		if json.Unmarshal(sc.Bytes(), &line) != nil || line.Msg != "batch stored" {
			continue
		}
		lsn, seq, ok := strings.Cut(line.Last, "#")
		l, err := pglogrepl.ParseLSN(lsn)
		n, err2 := strconv.ParseUint(seq, 10, 64)
		if !ok || err != nil || err2 != nil {
			return nil, fmt.Errorf("batch stored at %s: position %q is not LSN#seq", line.TS, line.Last)
		}
		out = append(out, placed{line, uint64(l), n})
	}
	slices.SortStableFunc(out, func(a, b placed) int {
		return cmp.Or(cmp.Compare(a.lsn, b.lsn), cmp.Compare(a.seq, b.seq))
	})
	lines := make([]batchLine, len(out))
	for i, p := range out {
		lines[i] = p.line
	}
	return lines, sc.Err()
}

// scrape reads the connector's Prometheus metrics as name{labels} → value.
func (c *connector) scrape() (map[string]float64, error) {
	resp, err := http.Get("http://" + c.metrics + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape connector metrics: %w", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// scrapeWhen scrapes the metrics until done says they are complete, for
// at most 10 s.
func (c *connector) scrapeWhen(done func(map[string]float64) bool) (map[string]float64, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := c.scrape()
		if err != nil || done(m) {
			return m, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connector metrics incomplete after 10 s: %d events written", int64(m["cdc_events_written_total"]))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exactlyOnce checks that event_log holds n rows, n distinct events.
func exactlyOnce(ctx context.Context, ch driver.Conn, n int) error {
	var rows, events uint64
	if err := ch.QueryRow(ctx, "SELECT count(), uniqExact(event_id) FROM event_log").Scan(&rows, &events); err != nil {
		return fmt.Errorf("count the drained events: %w", err)
	}
	if rows != uint64(n) || events != uint64(n) {
		return fmt.Errorf("event_log holds %d rows of %d events after the drain, want %d of %d", rows, events, n, n)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// waitStreaming waits until the connector's walsender is streaming.
func waitStreaming(ctx context.Context, w *world, c *connector) (int, error) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if err := c.exited(); err != nil {
			return 0, err
		}
		// By the slot, not by application_name, which PGAPPNAME or the
		// DSN may set to anything.
		var pid int
		err := w.pg.QueryRow(ctx, `SELECT r.pid FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
			WHERE s.slot_name = $1 AND r.state = 'streaming'`, w.slot).Scan(&pid)
		if err == nil {
			return pid, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return 0, fmt.Errorf("read pg_stat_replication: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, errors.New("connector not streaming after 30s")
}

// waitCount polls count() every interval until it reaches want and returns
// when it first saw it. A count that stands still for 60 s fails early:
// the connector is stuck (its log says why).
func waitCount(ctx context.Context, ch driver.Conn, c *connector, want uint64, every, limit time.Duration) (time.Time, error) {
	deadline := time.Now().Add(limit)
	var n, last uint64
	moved := time.Now()
	for time.Now().Before(deadline) {
		var err error
		if n, err = chCount(ctx, ch, "event_log"); err != nil {
			return time.Time{}, err
		}
		if n >= want {
			return time.Now(), nil
		}
		if n != last {
			last, moved = n, time.Now()
		} else if time.Since(moved) > time.Minute {
			where := ""
			if c != nil {
				where = fmt.Sprintf("; log %s:\n%s", c.logPath, tail(c.logPath, 5))
			}
			return time.Time{}, fmt.Errorf("event_log stuck at %d rows for a minute, want %d%s", n, want, where)
		}
		if c != nil {
			if err := c.exited(); err != nil {
				return time.Time{}, err
			}
		}
		time.Sleep(every)
	}
	return time.Time{}, fmt.Errorf("event_log has %d rows after %s, want %d", n, limit, want)
}

// ---------------------------------------------------------------------------
// /proc

// vmHWM is the peak resident set size of a process, in bytes.
func vmHWM(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read peak RSS: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmHWM %q: %w", rest, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// statField reads field n (1-based, as proc(5) numbers them) of
// /proc/<pid>/stat as an integer; the command name, field 2, may hold
// spaces, so fields are counted after its closing parenthesis.
func statField(pid, n int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read /proc/%d/stat: %w", pid, err)
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	v, err := strconv.ParseInt(fields[n-3], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return v, nil
}

// cpuTime is a process's user+system CPU time so far (fields 14 and 15;
// USER_HZ is 100 on Linux for every architecture this runs on).
func cpuTime(pid int) (time.Duration, error) {
	utime, err := statField(pid, 14)
	if err != nil {
		return 0, err
	}
	stime, err := statField(pid, 15)
	if err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// minorFaults is the minor page faults a process has taken (field 10):
// mostly first touches of anonymous memory, each a trap to the kernel
// that takes a page and zeroes it.
func minorFaults(pid int) (int64, error) { return statField(pid, 10) }

// runQueueWait is the time the threads of a process have spent runnable
// but waiting for a core, from /proc/<pid>/task/*/schedstat (second field,
// nanoseconds). Threads that have exited are not counted.
func runQueueWait(pid int) (time.Duration, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("no schedstat for pid %d", pid)
	}
	var total int64
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(data))
		if len(f) < 2 {
			return 0, fmt.Errorf("parse %s: %q", t, data)
		}
		ns, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse %s: %w", t, err)
		}
		total += ns
	}
	return time.Duration(total), nil
}

func (b *bench) clickhousePID() int {
	data, _ := os.ReadFile(filepath.Join(b.o.dir, "ch", "server.pid"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(data))[0]
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest), ":"))
		}
	}
	return "unknown CPU"
}

func numCPU() int {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}

// firstTouchCost is what one minor page fault costs this machine: the
// median of three times mapping 32 MiB of anonymous memory and writing
// one byte in each 4 KiB page, per page. A virtual machine may make it
// far dearer than bare metal's well under a microsecond, and then every
// process that grows its memory pays it (cdc, the walsender, ClickHouse).
func firstTouchCost() (time.Duration, error) {
	const size, page = 32 << 20, 4096
	var runs []time.Duration
	for range 3 {
		mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
		if err != nil {
			return 0, fmt.Errorf("map memory to time page faults: %w", err)
		}
		t := time.Now()
		for i := 0; i < size; i += page {
			mem[i] = 1
		}
		runs = append(runs, time.Since(t)/(size/page))
		if err := syscall.Munmap(mem); err != nil {
			return 0, fmt.Errorf("unmap: %w", err)
		}
	}
	slices.Sort(runs)
	return runs[1], nil
}

func memTotal() string {
	data, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return "unknown"
}

// ---------------------------------------------------------------------------
// 1–3: ceiling, backlog drain, peak memory

// memLimit is the Go soft memory limit of the diagnostic drains: what the
// RSS target (150 MiB) leaves after the runtime's own overhead.
const memLimit = "120MiB"

func (b *bench) drain(ctx context.Context) error {
	n := b.o.events
	w, err := b.newWorld(ctx, "bench_drain")
	if err != nil {
		return err
	}
	defer w.close()
	// Every slot that reads the backlog exists before the inserts: one
	// ceiling slot and one connector per pair, a slot for each bare
	// receive loop, and the connectors of the diagnostic drains.
	pairs := max(1, b.o.pairs)
	ceilSlots := make([]string, pairs)
	for i := range pairs {
		ceilSlots[i] = fmt.Sprintf("ceiling_slot_%d", i+1)
	}
	rawSlot := w.slot + "_raw"
	for _, slot := range append(ceilSlots, "ceiling2_slot", rawSlot, rawSlot+"2", rawSlot+"3") {
		if _, err := w.pg.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
			return fmt.Errorf("create %s: %w", slot, err)
		}
	}
	drainWorlds, err := b.pairWorlds(ctx, w, "bench_drain", pairs)
	if err != nil {
		return err
	}
	defer disconnect(drainWorlds[1:]...)
	lim, err := b.sibling(ctx, w, "bench_drain_memlimit")
	if err != nil {
		return err
	}
	defer disconnect(lim)
	// And one that connects over the server's Unix socket: the transport
	// of a connector deployed next to its database.
	sock, err := b.sibling(ctx, w, "bench_drain_socket")
	if err != nil {
		return err
	}
	defer disconnect(sock)
	if sock.pgDSN, err = testenv.SocketDSN(w.pgDSN, testenv.SocketDir(b.o.dir)); err != nil {
		return err
	}
	// And one whose replication connection has the walsender stream a large
	// transaction once 4 MB of it is decoded rather than PostgreSQL's
	// default 64 MB: the first rows arrive sooner. A setting an operator
	// can pass in CDC_PG_DSN; cdc does not set it (docs/performance.md).
	small, err := b.sibling(ctx, w, "bench_drain_workmem")
	if err != nil {
		return err
	}
	defer disconnect(small)
	if small.pgDSN, err = testenv.DecodingMemoryDSN(w.pgDSN, smallWorkMem); err != nil {
		return err
	}
	insertDur, err := insertBacklog(ctx, w.pg, n)
	if err != nil {
		return err
	}
	var walBytes int64
	if err := w.pg.QueryRow(ctx, `SELECT pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1`, ceilSlots[0]).Scan(&walBytes); err != nil {
		return fmt.Errorf("measure backlog WAL: %w", err)
	}
	b.note("Backlog: %d outbox inserts in one transaction (%s to insert, %.0f MiB of WAL), event_context ≈ 300 bytes.",
		n, insertDur.Round(time.Millisecond), float64(walBytes)/(1<<20))

	// 1 and 2, alternated: the ceiling — the walsender's own decoding, no
	// network, no consumer, protocol 1 as the issue defines it — then a
	// drain of the same WAL by the real binary, pairs times.
	ps, settled, err := b.alternate(ctx, w, ceilSlots, drainWorlds, n, int64(n), "drain")
	if err != nil {
		return err
	}
	b.note("Before each ceiling and drain of the pairs (and after the last drain), ClickHouse's background merges were let finish: waited %s s.", strings.Join(settled, ", "))
	mid := medianPair(ps)
	ceilDur, d := ps[mid].ceil, ps[mid].drain
	ceiling := float64(n) / ceilDur.Seconds()
	b.add("1", "Ceiling: `pg_logical_slot_get_binary_changes` (pgoutput v1) over the backlog",
		fmt.Sprintf("%d messages in %.2f s → **%.0f events/s** (the median pair's; the %d pairs' ceilings: %s s)",
			ps[mid].msgs, ceilDur.Seconds(), ceiling, pairs, joinDurs(ps, func(p drainPair) time.Duration { return p.ceil })),
		"reference", "—")
	ceil2Dur, msgs2, _, err := decodeOnSlot(ctx, w, "ceiling2_slot", "'proto_version', '2', 'streaming', 'on', 'binary', 'true'")
	if err != nil {
		return err
	}
	b.add("1", "Reference: the same with protocol 2, `streaming 'on'` and `binary 'true'` (what cdc asks for on PostgreSQL 14+)",
		fmt.Sprintf("%d messages in %.2f s → **%.0f events/s**", msgs2, ceil2Dur.Seconds(), float64(n)/ceil2Dur.Seconds()), "reference", "—")

	// The walsender's streaming path, with nothing of cdc in the way.
	if _, err := b.rawStream(ctx, w.pgDSN, rawSlot, n, false, ""); err != nil {
		return err
	}
	raw, err := b.rawStream(ctx, w.pgDSN, rawSlot+"2", n, true, "")
	if err != nil {
		return err
	}
	rawSock, err := b.rawStream(ctx, sock.pgDSN, rawSlot+"3", n, true, " over the Unix socket")
	if err != nil {
		return err
	}

	rate := float64(n) / d.dur.Seconds()
	ratio := rate / ceiling
	b.add("2", "Backlog drain: `cdc run` start → last row visible in ClickHouse (polled every 50 ms)",
		fmt.Sprintf("%d events in %.2f s → **%.0f events/s** (the median pair's; the %d pairs' drains: %s s); first batch handed to the writer %.2f s after start",
			n, d.dur.Seconds(), rate, pairs, joinDurs(ps, func(p drainPair) time.Duration { return p.drain.dur }), d.firstHandoff.Seconds()), "—", "—")
	b.add("2", "Drain / ceiling", fmt.Sprintf("**%.2f** (median of the pairs: %s)", ratio, joinRatios(ps)), "≥ 0.8", verdict(ratio >= 0.8))
	b.add("2", "Drain / ceiling with protocol 2 streaming, binary values", fmt.Sprintf("%.2f", ceil2Dur.Seconds()/d.dur.Seconds()), "—", "—")
	b.add("2", "Drain / bare replication stream, protocol 2 streaming, binary values (what cdc costs on top of the walsender's streaming path)",
		fmt.Sprintf("%.2f", raw.Seconds()/d.dur.Seconds()), "—", "—")
	// The three processes share the machine's cores: even run perfectly
	// in parallel, their CPU time over the core count bounds the drain
	// from below, and so the ratio any connector could reach here.
	bound := (d.cdcCPU + d.wsCPU + d.chCPU).Seconds() / float64(numCPU())
	b.add("2", "CPU while draining (user+sys; the median pair's drain)",
		fmt.Sprintf("cdc %.2f s (%.1f µs/event), walsender %.2f s, clickhouse-server %.2f s, over %.2f s on %d cores; "+
			"all of it spread perfectly over the %d cores would take %.2f s, so drain / ceiling ≤ %.2f on this machine (derived)",
			d.cdcCPU.Seconds(), d.cdcCPU.Seconds()*1e6/float64(n), d.wsCPU.Seconds(), d.chCPU.Seconds(), d.dur.Seconds(), numCPU(),
			numCPU(), bound, ceilDur.Seconds()/bound),
		"—", "—")
	if cost, err := firstTouchCost(); err == nil {
		faults := d.cdcFaults + d.wsFaults + d.chFaults
		b.add("2", "Minor page faults while draining (first touches of memory; /proc/…/stat), and what they cost here",
			fmt.Sprintf("cdc %d, walsender %d, clickhouse-server %d; one costs %.1f µs on this machine (32 MiB mapped and touched, per 4 KiB page), so about %.2f s of the three processes' CPU above (cdc's share %.2f s). The ceiling's backend took %d (about %.2f s of its %.2f s)",
				d.cdcFaults, d.wsFaults, d.chFaults, float64(cost)/float64(time.Microsecond),
				(time.Duration(faults)*cost).Seconds(), (time.Duration(d.cdcFaults)*cost).Seconds(),
				ps[mid].ceilFaults, (time.Duration(ps[mid].ceilFaults)*cost).Seconds(), ceilDur.Seconds()),
			"—", "—")
	}
	b.add("2", "Waiting for a core while draining (runnable, not running; /proc/…/schedstat)",
		fmt.Sprintf("walsender %.2f s (so on a core %.0f %% and idle — blocked on a full socket, or done — %.0f %% of the drain); cdc's threads %.2f s in all",
			d.wsWait.Seconds(), 100*d.wsCPU.Seconds()/d.dur.Seconds(), 100*max(0, d.dur-d.wsCPU-d.wsWait).Seconds()/d.dur.Seconds(), d.cdcWait.Seconds()),
		"—", "—")
	if len(d.batches) > 0 {
		b.drainRows = d.batches[0]
	}
	// The INSERT and memory verdicts hold for every drain, not the median.
	minFull, peak := -1, int64(0)
	var peaks []string
	for _, p := range ps {
		if m := smallestFull(p.drain.batches); minFull < 0 || m < minFull {
			minFull = m
		}
		peak = max(peak, p.drain.peak)
		peaks = append(peaks, fmt.Sprintf("%.1f", float64(p.drain.peak)/(1<<20)))
	}
	b.add("2", "INSERTs issued (cdc_batches_written_total) and rows per INSERT",
		fmt.Sprintf("%.0f INSERTs, mean %.0f rows; smallest before the last, over the %d drains: %d; per batch of the median pair's drain (debug log): %s; mean store time %.2f s per batch",
			d.inserts, d.rowsPerInsert, pairs, minFull, summarizeInts(d.batches), mean(d.storeSecs)),
		"≥ 10,000 rows while a backlog exists", verdict(minFull >= 10000))
	limit := int64(150 << 20)
	b.add("3", "Peak RSS of cdc while draining (VmHWM; the highest of the drains)",
		fmt.Sprintf("**%.1f MiB** (the %d drains: %s MiB)", float64(peak)/(1<<20), pairs, strings.Join(peaks, " / ")),
		"≤ 150 MiB", verdict(peak <= limit))

	if err := b.copyPipe(ctx, w, n); err != nil {
		return err
	}

	// The same drain under a Go soft memory limit: how much of the peak is
	// garbage the collector had not yet reclaimed, and at what cost.
	dl, err := b.drainOnce(ctx, lim, n, "drain-memlimit", map[string]string{"GOMEMLIMIT": memLimit})
	if err != nil {
		return err
	}
	b.add("3", fmt.Sprintf("Diagnostic: the same drain with GOMEMLIMIT=%s (env var only, no code change)", memLimit),
		fmt.Sprintf("peak RSS **%.1f MiB**; %.2f s → %.0f events/s; cdc CPU %.2f s", float64(dl.peak)/(1<<20), dl.dur.Seconds(), float64(n)/dl.dur.Seconds(), dl.cdcCPU.Seconds()),
		"≤ 150 MiB", verdict(dl.peak <= limit))

	ds, err := b.drainOnce(ctx, sock, n, "drain-socket", nil)
	if err != nil {
		return err
	}
	b.add("2", "Diagnostic: the same drain over the Unix socket (`CDC_PG_DSN=postgres://…@/db?host=<socket folder>`; reads not paced)",
		fmt.Sprintf("%.2f s → %.0f events/s; drain / ceiling **%.2f**; / bare loop over the socket %.2f; CPU cdc %.2f s, walsender %.2f s, clickhouse-server %.2f s; peak RSS %.1f MiB",
			ds.dur.Seconds(), float64(n)/ds.dur.Seconds(), ceilDur.Seconds()/ds.dur.Seconds(), rawSock.Seconds()/ds.dur.Seconds(),
			ds.cdcCPU.Seconds(), ds.wsCPU.Seconds(), ds.chCPU.Seconds(), float64(ds.peak)/(1<<20)),
		"—", "—")

	dw, err := b.drainOnce(ctx, small, n, "drain-workmem", nil)
	if err != nil {
		return err
	}
	b.add("2", fmt.Sprintf("Diagnostic: the same drain with `logical_decoding_work_mem=%s` on cdc's replication connection (`options=-c logical_decoding_work_mem=%s` in CDC_PG_DSN; PostgreSQL's default is 64MB)", smallWorkMem, smallWorkMem),
		fmt.Sprintf("%.2f s → %.0f events/s; drain / ceiling **%.2f** (against the median pair's ceiling); first batch handed to the writer %.2f s after start; CPU cdc %.2f s, walsender %.2f s, clickhouse-server %.2f s; peak RSS %.1f MiB",
			dw.dur.Seconds(), float64(n)/dw.dur.Seconds(), ceilDur.Seconds()/dw.dur.Seconds(), dw.firstHandoff.Seconds(),
			dw.cdcCPU.Seconds(), dw.wsCPU.Seconds(), dw.chCPU.Seconds(), float64(dw.peak)/(1<<20)),
		"—", "—")
	return nil
}

// smallWorkMem is the walsender's decoding memory the drain diagnostic
// tries: over it a transaction is streamed in blocks before its commit.
const smallWorkMem = "4MB"

// drainPair is one ceiling measured just before one drain of the same WAL.
type drainPair struct {
	ceil       time.Duration
	msgs       int64
	ceilFaults int64 // minor page faults of the decoding backend
	drain      drained
}

func (p drainPair) ratio() float64 { return p.ceil.Seconds() / p.drain.dur.Seconds() }

// pairWorlds is w followed by a sibling of it for each further pair
// (prefix_2 … prefix_n), so that each pair's drain has a slot of its own on
// the same WAL. Create them before the backlog.
func (b *bench) pairWorlds(ctx context.Context, w *world, prefix string, n int) ([]*world, error) {
	ws := []*world{w}
	for i := 2; i <= n; i++ {
		s, err := b.sibling(ctx, w, fmt.Sprintf("%s_%d", prefix, i))
		if err != nil {
			disconnect(ws[1:]...)
			return nil, err
		}
		ws = append(ws, s)
	}
	return ws, nil
}

// disconnect closes siblings' connections; their slots are dropped by
// close of the world whose database they share.
func disconnect(ws ...*world) {
	for _, s := range ws {
		s.pg.Close(context.Background())
		s.ch.Close()
	}
}

// alternate measures the pairs: PostgreSQL decoding ceilSlots[i] (protocol
// 1, at least minMsgs messages), then cdc draining the same n events on
// worlds[i] (logs tagged tag, tag-2, …). This host's speed drifts by more
// than the margin the target leaves, so a verdict is on the median of the
// pairs' ratios, each measured side by side, not on one draw. ClickHouse's
// merges are let finish before each measurement and after the last; the
// seconds waited come back for the notes.
func (b *bench) alternate(ctx context.Context, w *world, ceilSlots []string, worlds []*world, n int, minMsgs int64, tag string) ([]drainPair, []string, error) {
	ps := make([]drainPair, len(ceilSlots))
	var settled []string
	settle := func() error {
		d, err := mergesSettled(ctx, w.ch, 30*time.Second)
		settled = append(settled, fmt.Sprintf("%.1f", d.Seconds()))
		return err
	}
	for i := range ps {
		if err := settle(); err != nil {
			return nil, nil, err
		}
		cd, msgs, faults, err := decodeOnSlot(ctx, w, ceilSlots[i], "'proto_version', '1'")
		if err != nil {
			return nil, nil, err
		}
		if msgs < minMsgs {
			return nil, nil, fmt.Errorf("%s decoded %d messages, want at least %d", ceilSlots[i], msgs, minMsgs)
		}
		if err := settle(); err != nil {
			return nil, nil, err
		}
		t := tag
		if i > 0 {
			t = fmt.Sprintf("%s-%d", tag, i+1)
		}
		d, err := b.drainOnce(ctx, worlds[i], n, t, nil)
		if err != nil {
			return nil, nil, err
		}
		ps[i] = drainPair{ceil: cd, msgs: msgs, ceilFaults: faults, drain: d}
	}
	if err := settle(); err != nil {
		return nil, nil, err
	}
	return ps, settled, nil
}

// medianPair is the index of the pair with the median drain / ceiling
// ratio (the lower one of an even count: a verdict on the better of two
// would flatter it).
func medianPair(ps []drainPair) int {
	idx := make([]int, len(ps))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(ps[a].ratio(), ps[b].ratio()) })
	return idx[(len(idx)-1)/2]
}

func joinDurs(ps []drainPair, f func(drainPair) time.Duration) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = fmt.Sprintf("%.2f", f(p).Seconds())
	}
	return strings.Join(s, " / ")
}

func joinRatios(ps []drainPair) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = fmt.Sprintf("%.2f", p.ratio())
	}
	return strings.Join(s, " / ")
}

// smallestFull is the smallest batch stored while a backlog remained:
// every batch but the last in WAL order.
func smallestFull(batches []int) int {
	switch len(batches) {
	case 0:
		return 0
	case 1:
		return batches[0]
	}
	return slices.Min(batches[:len(batches)-1])
}

// decodeOnSlot times pg_logical_slot_get_binary_changes over the backlog
// on slot with the given protocol options, then drops the slot. It also
// counts the minor page faults the decoding backend took meanwhile.
func decodeOnSlot(ctx context.Context, w *world, slot, protocol string) (d time.Duration, msgs, faults int64, err error) {
	var pid int
	if err := w.pg.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		return 0, 0, 0, fmt.Errorf("backend pid: %w", err)
	}
	faults0, _ := minorFaults(pid)
	t := time.Now()
	err = w.pg.QueryRow(ctx, `SELECT count(*) FROM pg_logical_slot_get_binary_changes('`+slot+`', NULL, NULL,
		`+protocol+`, 'publication_names', 'cdc_outbox')`).Scan(&msgs)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("decode on %s: %w", slot, err)
	}
	d = time.Since(t)
	faults1, _ := minorFaults(pid)
	if _, err := w.pg.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot); err != nil {
		return 0, 0, 0, fmt.Errorf("drop %s: %w", slot, err)
	}
	return d, msgs, faults1 - faults0, nil
}

// drained is what one drain measured.
type drained struct {
	dur                  time.Duration // process start → last row visible
	firstHandoff         time.Duration // process start → first batch given to the writer
	cdcCPU, wsCPU, chCPU time.Duration
	// Time runnable but waiting for a core (schedstat), over the lives of
	// cdc's threads and of its walsender: how much of the drain two
	// shared cores cost each of them.
	cdcWait, wsWait time.Duration
	// Minor page faults over the drain (cdc's and its walsender's over
	// their lives, clickhouse-server's as a difference).
	cdcFaults, wsFaults, chFaults int64
	peak                          int64
	inserts                       float64 // cdc_batches_written_total
	rowsPerInsert                 float64 // cdc_batch_rows mean
	batches                       []int   // rows of each stored batch, from the debug log
	storeSecs                     []float64
}

// drainOnce starts `cdc run` on w, waits until event_log holds n rows, reads
// its peak RSS, CPU time and metrics, and stops it.
func (b *bench) drainOnce(ctx context.Context, w *world, n int, tag string, env map[string]string) (drained, error) {
	var d drained
	chPID := b.clickhousePID()
	chCPU0, _ := cpuTime(chPID)
	chFaults0, _ := minorFaults(chPID)
	c, err := b.startCDC(w, tag, env)
	if err != nil {
		return d, err
	}
	defer func() { _ = c.stop() }()
	seen, err := waitCount(ctx, w.ch, c, uint64(n), 50*time.Millisecond, 5*time.Minute)
	if err != nil {
		return d, err
	}
	d.dur = seen.Sub(c.start)
	chCPU1, _ := cpuTime(chPID)
	d.chCPU = chCPU1 - chCPU0
	chFaults1, _ := minorFaults(chPID)
	d.chFaults = chFaults1 - chFaults0
	if d.cdcCPU, err = cpuTime(c.pid()); err != nil {
		return d, err
	}
	d.cdcFaults, _ = minorFaults(c.pid())
	var wsPID int
	if err := w.pg.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, w.slot).Scan(&wsPID); err == nil {
		d.wsCPU, _ = cpuTime(wsPID)
		d.wsFaults, _ = minorFaults(wsPID)
		d.wsWait, _ = runQueueWait(wsPID)
	}
	d.cdcWait, _ = runQueueWait(c.pid())
	if d.peak, err = vmHWM(c.pid()); err != nil {
		return d, err
	}
	// ClickHouse shows the last batch's rows a moment before the writer
	// counts it: scraped at once, the INSERT count could miss it.
	m, err := c.scrapeWhen(func(m map[string]float64) bool { return m["cdc_events_written_total"] >= float64(n) })
	if err != nil {
		return d, err
	}
	if err := c.stop(); err != nil {
		return d, err
	}
	// The drain's end is count() reaching n; a row stored twice would end
	// it early. Each event once, or the figure is not a drain.
	if err := exactlyOnce(ctx, w.ch, n); err != nil {
		return d, err
	}
	d.inserts = m["cdc_batches_written_total"]
	if cnt := m["cdc_batch_rows_count"]; cnt > 0 {
		d.rowsPerInsert = m["cdc_batch_rows_sum"] / cnt
	}
	logged, err := c.batchLog()
	if err != nil {
		return d, err
	}
	for i, l := range logged {
		d.batches = append(d.batches, l.Rows)
		d.storeSecs = append(d.storeSecs, l.Duration)
		if i == 0 {
			// The log line is written when the batch is stored; it
			// was handed over its store duration earlier.
			d.firstHandoff = l.TS.Add(-time.Duration(l.Duration * float64(time.Second))).Sub(c.start)
		}
	}
	return d, nil
}

// copyPipe is the other reference: the same rows read with COPY from the
// table (not the WAL) and loaded by clickhouse-client in TabSeparated, one
// INSERT, into a copy of event_log.
func (b *bench) copyPipe(ctx context.Context, w *world, n int) error {
	if err := w.ch.Exec(ctx, "CREATE TABLE event_log_copy AS event_log"); err != nil {
		return fmt.Errorf("create event_log_copy: %w", err)
	}
	copySQL := `COPY (SELECT id, event_type, to_char(event_date_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), environment, event_context, metadata_version, '', 0, 0 FROM outbox) TO STDOUT`
	insert := "INSERT INTO event_log_copy (event_id, event_type, event_date_time, environment, event_context, metadata_version, trace_id, cdc_commit_lsn, cdc_seq) FORMAT TabSeparated"
	pipe := fmt.Sprintf("psql -X -q -v ON_ERROR_STOP=1 %s -c %s | clickhouse-client --host 127.0.0.1 --port %s --database %s --query %s",
		shellQuote(w.pgDSN), shellQuote(copySQL), os.Getenv("LOCALDB_CH_PORT"), w.chDB, shellQuote(insert))
	t := time.Now()
	if err := runQuiet(ctx, "bash", "-o", "pipefail", "-c", pipe); err != nil {
		return fmt.Errorf("COPY | clickhouse-client: %w", err)
	}
	d := time.Since(t)
	got, err := chCount(ctx, w.ch, "event_log_copy")
	if err != nil {
		return err
	}
	if got != uint64(n) {
		return fmt.Errorf("COPY pipe loaded %d rows, want %d", got, n)
	}
	b.add("1", "Reference: `psql COPY (SELECT …) TO STDOUT \\| clickhouse-client … FORMAT TabSeparated` (one INSERT; reads the table, not the WAL)",
		fmt.Sprintf("%d rows in %.2f s → %.0f rows/s", n, d.Seconds(), float64(n)/d.Seconds()), "reference", "—")
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func summarizeInts(v []int) string {
	if len(v) > 12 {
		head := make([]string, 0, 12)
		for _, x := range v[:6] {
			head = append(head, strconv.Itoa(x))
		}
		head = append(head, "…")
		for _, x := range v[len(v)-5:] {
			head = append(head, strconv.Itoa(x))
		}
		return strings.Join(head, ", ")
	}
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ", ")
}

// bigEvents drains a backlog of large events and reports peak RSS, which
// the batch byte limit should bound; then drains the same WAL again under
// a Go soft memory limit.
func (b *bench) bigEvents(ctx context.Context) error {
	w, err := b.newWorld(ctx, "bench_big")
	if err != nil {
		return err
	}
	defer w.close()
	lim, err := b.sibling(ctx, w, "bench_big_memlimit")
	if err != nil {
		return err
	}
	defer disconnect(lim)
	// Random hex, so neither TOAST nor LZ4 shrinks it to nothing.
	raw := make([]byte, (b.o.bigSize-len(`{"blob":""}`))/2)
	for i := 0; i < b.o.bigEvents; i++ {
		if _, err := rand.Read(raw); err != nil {
			return fmt.Errorf("random payload: %w", err)
		}
		payload := `{"blob":"` + hex.EncodeToString(raw) + `"}`
		if _, err := w.pg.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context) VALUES ('bench.big', 'production', $1::json)`, payload); err != nil {
			return fmt.Errorf("insert large event %d: %w", i, err)
		}
	}
	if _, err := w.pg.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	limit := int64(3*config.DefaultBatchMaxBytes + 100<<20)
	target := fmt.Sprintf("≤ 3 × CDC_BATCH_MAX_BYTES (%d MiB) + 100 MiB = %d MiB", config.DefaultBatchMaxBytes>>20, limit>>20)
	d, err := b.drainOnce(ctx, w, b.o.bigEvents, "big", nil)
	if err != nil {
		return err
	}
	b.add("3", fmt.Sprintf("Peak RSS of cdc draining %d events of %.0f MiB each (VmHWM)", b.o.bigEvents, float64(b.o.bigSize)/(1<<20)),
		fmt.Sprintf("**%.1f MiB** (drained in %.1f s, %d INSERTs of %s rows, mean store time %.2f s)",
			float64(d.peak)/(1<<20), d.dur.Seconds(), len(d.batches), summarizeInts(d.batches), mean(d.storeSecs)),
		target, verdict(d.peak <= limit))
	dl, err := b.drainOnce(ctx, lim, b.o.bigEvents, "big-memlimit", map[string]string{"GOMEMLIMIT": memLimit})
	if err != nil {
		return err
	}
	b.add("3", fmt.Sprintf("Diagnostic: the same with GOMEMLIMIT=%s", memLimit),
		fmt.Sprintf("peak RSS **%.1f MiB** (drained in %.1f s; cdc CPU %.2f s vs %.2f s without the limit)",
			float64(dl.peak)/(1<<20), dl.dur.Seconds(), dl.cdcCPU.Seconds(), d.cdcCPU.Seconds()),
		target, verdict(dl.peak <= limit))
	return nil
}

// ---------------------------------------------------------------------------
// 5: micro-benchmarks

var benchLineRE = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

// microBenchmarks runs the decoder and sink benchmarks three times and
// reports the median of each figure (the run-to-run spread on a shared VM
// is large; the range is shown). It runs first, while the servers are idle.
func (b *bench) microBenchmarks(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", ".", "-benchmem", "-count", "3", "./decoder/", "./sink/")
	cmd.Dir = b.o.repo
	out, err := cmd.CombinedOutput()
	if werr := os.WriteFile(filepath.Join(b.o.dir, "microbench.txt"), out, 0o644); werr != nil {
		return fmt.Errorf("write microbench.txt: %w", werr)
	}
	if err != nil {
		return fmt.Errorf("go test -bench: %w: %s", err, out)
	}
	type figures struct {
		name  string
		units []string
		vals  map[string][]float64
	}
	var order []*figures
	byName := map[string]*figures{}
	pkg := ""
	for _, line := range strings.Split(string(out), "\n") {
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = filepath.Base(p)
		}
		if c, ok := strings.CutPrefix(line, "cpu: "); ok && !strings.Contains(strings.Join(b.notes, "\n"), "Go reports the CPU") {
			b.note("Go reports the CPU as %q.", strings.TrimSpace(c))
		}
		m := benchLineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		name := pkg + "." + m[1]
		f := byName[name]
		if f == nil {
			f = &figures{name: name, vals: map[string][]float64{}}
			byName[name] = f
			order = append(order, f)
		}
		fields := strings.Fields(m[2])
		for i := 0; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			unit := fields[i+1]
			if _, seen := f.vals[unit]; !seen {
				f.units = append(f.units, unit)
			}
			f.vals[unit] = append(f.vals[unit], v)
		}
	}
	for _, f := range order {
		var parts []string
		for _, u := range f.units {
			v := slices.Clone(f.vals[u])
			slices.Sort(v)
			med := v[len(v)/2]
			part := fmt.Sprintf("%s %s", strconv.FormatFloat(med, 'f', -1, 64), u)
			if (u == "ns/op" || u == "ns/event") && v[0] != v[len(v)-1] {
				part += fmt.Sprintf(" (%s–%s)", strconv.FormatFloat(v[0], 'f', -1, 64), strconv.FormatFloat(v[len(v)-1], 'f', -1, 64))
			}
			parts = append(parts, part)
		}
		b.add("5", "`"+f.name+"` (median of 3)", strings.Join(parts, ", "), "—", "—")
	}
	return nil
}

// runQuiet runs a command, returning its combined output in the error.
func runQuiet(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = io.Discard
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, stderr.String())
	}
	return nil
}
