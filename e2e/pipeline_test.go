package e2e

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventcdc/cdc/internal/testenv"
)

type chEvent struct {
	ID              uuid.UUID
	Type            string
	Time            time.Time
	Environment     string
	Context         string
	MetadataVersion uint64
	TraceID         string
}

func (w *world) chEvents(where string) map[uuid.UUID]chEvent {
	w.t.Helper()
	rows, err := w.ch.Query(context.Background(), `SELECT event_id, event_type, event_date_time, environment, event_context, metadata_version, trace_id FROM event_log FINAL `+where)
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	out := map[uuid.UUID]chEvent{}
	for rows.Next() {
		var e chEvent
		if err := rows.Scan(&e.ID, &e.Type, &e.Time, &e.Environment, &e.Context, &e.MetadataVersion, &e.TraceID); err != nil {
			w.t.Fatal(err)
		}
		out[e.ID] = e
	}
	return out
}

func TestPipeline_CommittedEventsArriveFieldForField(t *testing.T) {
	w := newWorld(t)
	c := w.start(nil)

	want := []chEvent{
		{ID: uuid.New(), Type: "user_created", Time: time.Date(2026, 3, 1, 10, 20, 30, 0, time.UTC), Environment: "prod",
			Context: `{"user_id": 42,  "email":"ana@example.com", "tags":["a","b"], "note":"ünïcødé ✓"}`, MetadataVersion: 1},
		{ID: uuid.New(), Type: "order_paid", Time: time.Date(2026, 11, 24, 23, 59, 59, 0, time.UTC), Environment: "staging",
			Context: `{"amount":"12.30","nested":{"deep":[1,2,{"x":null}]}}`, MetadataVersion: 7,
			TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"},
		{ID: uuid.New(), Type: "empty_context", Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Environment: "dev",
			Context: `{}`, MetadataVersion: 3},
	}
	ctx := context.Background()
	tx, err := w.pg.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range want {
		var tp any
		if e.TraceID != "" {
			tp = "00-" + e.TraceID + "-00f067aa0ba902b7-01"
		}
		// +02:00 offset on purpose: the stored instant, not the zone, must survive.
		if _, err := tx.Exec(ctx, `INSERT INTO outbox (id, event_type, event_date_time, environment, event_context, metadata_version, traceparent)
			VALUES ($1, $2, $3, $4, $5::json, $6, $7)`, e.ID, e.Type, e.Time.In(time.FixedZone("x", 2*3600)), e.Environment, e.Context, e.MetadataVersion, tp); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	w.waitRows(3, 30*time.Second)
	got := w.chEvents("")
	for _, e := range want {
		g, ok := got[e.ID]
		if !ok {
			t.Fatalf("event %s missing", e.ID)
		}
		g.Time = g.Time.UTC()
		if g != e {
			t.Errorf("event %s:\n got  %+v\n want %+v", e.ID, g, e)
		}
	}
	// One flush, one INSERT: the three events share a batch. (Not told
	// by event_log's parts: the events' months make three partitions.)
	// The line follows the INSERT, which the rows showed.
	waitFor(t, 10*time.Second, "the batch stored line", func() (bool, string) { return strings.Contains(c.out.String(), "\tbatch stored\t"), "" })
	out := c.out.String()
	if n := strings.Count(out, "\tbatch stored\t"); n != 1 || !strings.Contains(out, "\tbatch stored\t{\"rows\": 3,") {
		t.Errorf("%d batches stored, want one of 3 rows:\n%s", n, out)
	}
}

func TestPipeline_RolledBackEventsNeverArrive(t *testing.T) {
	w := newWorld(t)
	w.start(nil)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		tx, err := w.pg.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context) VALUES ('rolled_back', 'test', '{}')`); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	}
	w.insertEvents("committed", 2)
	w.waitRows(2, 30*time.Second)
	time.Sleep(500 * time.Millisecond) // two flush intervals: anything else would have arrived
	if n := w.chCount("SELECT count() FROM event_log WHERE event_type = 'rolled_back'"); n != 0 {
		t.Fatalf("%d rolled-back events arrived", n)
	}
	if n := w.chCount("SELECT count() FROM event_log"); n != 2 {
		t.Fatalf("event_log holds %d rows, want 2", n)
	}
}

func TestPipeline_TenMegabyteEventArrivesByteIdentical(t *testing.T) {
	w := newWorld(t)
	w.start(map[string]string{"CDC_BATCH_MAX_BYTES": "4MiB"})

	var b strings.Builder
	b.WriteString(`{"blob":[`)
	for i := 0; b.Len() < 10<<20; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"i":%d,"s":"%s"}`, i, strings.Repeat("é", i%50))
	}
	b.WriteString(`]}`)
	big := b.String()
	id := uuid.New()
	w.exec(`INSERT INTO outbox (id, event_type, environment, event_context) VALUES ($1, 'big', 'test', $2::json)`, id, big)
	w.insertEvents("small_after", 1)
	w.waitRows(2, 60*time.Second)

	var got string
	if err := w.ch.QueryRow(context.Background(), "SELECT event_context FROM event_log WHERE event_id = ?", id).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(big) || sha256.Sum256([]byte(got)) != sha256.Sum256([]byte(big)) {
		t.Fatalf("event_context: got %d bytes, want %d bytes, identical", len(got), len(big))
	}
}

func TestPipeline_UpdatesAndDeletesAreIgnored(t *testing.T) {
	w := newWorld(t)
	w.start(nil)
	a, b := uuid.New(), uuid.New()
	w.exec(`INSERT INTO outbox (id, event_type, environment, event_context) VALUES ($1, 'a', 'test', '{"v":1}'), ($2, 'b', 'test', '{"v":1}')`, a, b)
	w.exec(`UPDATE outbox SET event_context = '{"v":2}', event_type = 'changed' WHERE id = $1`, a)
	// The Debezium-style pattern: delete right after inserting.
	w.exec(`DELETE FROM outbox WHERE id = $1`, b)
	w.exec(`TRUNCATE outbox`)
	w.insertEvents("marker", 1)
	w.waitRows(3, 30*time.Second)
	got := w.chEvents("")
	if got[a].Context != `{"v":1}` || got[a].Type != "a" {
		t.Errorf("updated event: %+v; want the inserted version", got[a])
	}
	if _, ok := got[b]; !ok {
		t.Errorf("deleted event %s missing: deletes must not lose inserts", b)
	}
	if n := w.chCount("SELECT count() FROM event_log"); n != 3 {
		t.Errorf("event_log holds %d raw rows, want 3", n)
	}
}

func TestPipeline_ColumnAddedWhileStreamingIsCarried(t *testing.T) {
	w := newWorld(t)
	w.start(nil)
	w.insertEvents("before", 2)
	w.waitRows(2, 30*time.Second)

	// An array column (a Django ArrayField) too: its values arrive as
	// PostgreSQL's text form, which the session switches to for it.
	if err := w.ch.Exec(context.Background(), "ALTER TABLE event_log ADD COLUMN tenant String DEFAULT '', ADD COLUMN tags Array(String)"); err != nil {
		t.Fatal(err)
	}
	w.exec(`ALTER TABLE outbox ADD COLUMN tenant text, ADD COLUMN tags text[]`)
	w.exec(`INSERT INTO outbox (event_type, environment, event_context, tenant, tags) VALUES ('after', 'test', '{}', 'acme', ARRAY['vip', 'b "c", d']), ('after', 'test', '{}', NULL, NULL)`)
	w.waitRows(4, 30*time.Second)

	rows, err := w.ch.Query(context.Background(), "SELECT event_type, tenant, toString(tags) FROM event_log FINAL ORDER BY event_type, tenant")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var typ, tenant, tags string
		if err := rows.Scan(&typ, &tenant, &tags); err != nil {
			t.Fatal(err)
		}
		got = append(got, typ+"/"+tenant+"/"+tags)
	}
	want := []string{"after//[]", `after/acme/['vip','b "c", d']`, "before//[]", "before//[]"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("rows = %v, want %v", got, want)
	}
}

// A second SIGTERM ends the process at once: the first one's shutdown waits
// up to CDC_SHUTDOWN_TIMEOUT for an INSERT into a ClickHouse that does not
// answer, and a second signal means now. Nothing unstored was acknowledged,
// so the next start stores the events. Meanwhile /metrics still answers:
// the probe server outlives the first signal until the pipeline stops (it
// closed at once, and a shutdown of minutes looked like cdc gone).
func TestPipeline_SecondSignalEndsTheShutdownAtOnce(t *testing.T) {
	w := newWorld(t)
	w.auditInserts()
	u, err := url.Parse(w.chDSN)
	if err != nil {
		t.Fatal(err)
	}
	fz := testenv.NewFreezer(t, u.Host)
	dsn, err := fz.DSN(w.chDSN, "")
	if err != nil {
		t.Fatal(err)
	}
	c := w.start(map[string]string{"CDC_CLICKHOUSE_DSN": dsn, "CDC_FLUSH_INTERVAL": "50ms", "CDC_SHUTDOWN_TIMEOUT": "5m", "CDC_METRICS_ADDR": "auto"})
	w.insertEvents("before", 5)
	w.waitRows(5, 30*time.Second)
	waitFor(t, 10*time.Second, "the 5 events counted written", func() (bool, string) {
		v, err := readMetric(c.MetricsAddr, "cdc_events_written_total")
		return err == nil && v == 5, fmt.Sprint(v, err)
	})
	fz.Freeze()
	w.insertEvents("stuck", 10)
	w.waitReceived(10 * time.Second)
	time.Sleep(500 * time.Millisecond) // the batch is cut 50 ms after its commit, and its INSERT hangs
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		t.Fatalf("exited on the first SIGTERM while its INSERT hangs: %v\n%s", c.err, tail(c.out.String(), 20))
	case <-time.After(time.Second):
	}
	if v, err := readMetric(c.MetricsAddr, "cdc_events_written_total"); err != nil || v != 5 {
		t.Fatalf("/metrics during the shutdown: cdc_events_written_total %v, %v; want 5, served until the pipeline stops", v, err)
	}
	select {
	case <-c.done:
		t.Fatalf("exited on the first SIGTERM while its INSERT hangs: %v\n%s", c.err, tail(c.out.String(), 20))
	case <-time.After(2 * time.Second):
	}
	start := time.Now()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10 s after a second SIGTERM:\n%s", tail(c.out.String(), 20))
	}
	if ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("process state %v after a second SIGTERM; want ended by the signal", c.cmd.ProcessState)
	}
	t.Logf("ended %s after the second SIGTERM", time.Since(start).Round(time.Millisecond))
	fz.Thaw()
	w.start(nil)
	w.waitRows(15, 60*time.Second)
	w.assertExactlyOnce(15)
}

// SIGTERM, SIGINT (Ctrl-C) and SIGHUP (`docker kill -s HUP`; a terminal's
// hangup, an ssh session gone with cdc run in the foreground, which sends
// two: the shell passes its own on to its foreground job, and the kernel
// sends one) each store and acknowledge what is buffered and exit 0.
// SIGHUP ended the process by Go's default, with nothing stored, and as a
// container's PID 1 exited 2, which reads as a bad setting. Under nohup,
// which starts cdc with SIGHUP ignored, a hangup changes nothing: cdc
// streams on until SIGTERM.
func TestPipeline_SIGTERMFlushesAcknowledgesAndExitsZero(t *testing.T) {
	if signal.Ignored(syscall.SIGHUP) {
		// The tests run under a nohup of their own (a CI job started
		// so): cdc would inherit SIGHUP ignored and, as it should,
		// leave it so. Caught here, it is back to its default in the
		// children. Once for all the cases: after signal.Stop it is
		// ignored again, and signal.Ignored no longer says so.
		caught := make(chan os.Signal, 1)
		signal.Notify(caught, syscall.SIGHUP)
		defer signal.Stop(caught)
	}
	for _, tc := range []struct {
		name   string
		nohup  bool
		signal syscall.Signal
		twice  bool // the signal comes again at once
	}{
		{"SIGTERM", false, syscall.SIGTERM, false},
		{"SIGINT", false, syscall.SIGINT, false},
		{"SIGHUP", false, syscall.SIGHUP, false},
		{"SIGHUP twice, as a terminal's hangup", false, syscall.SIGHUP, true},
		{"SIGHUP under nohup", true, syscall.SIGHUP, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			// A long flush interval: the events are still buffered when the signal comes.
			env := map[string]string{"CDC_FLUSH_INTERVAL": "1h"}
			var c *connector
			if tc.nohup {
				nohup, err := exec.LookPath("nohup")
				if err != nil {
					t.Skip("no nohup:", err)
				}
				c = w.startCommand(nohup, []string{binary, "run"}, env)
			} else {
				c = w.start(env)
			}
			waitFor(t, 30*time.Second, "slot active", func() (bool, string) {
				var active bool
				_ = w.pg.QueryRow(context.Background(), `SELECT active FROM pg_replication_slots WHERE slot_name = 'cdc_outbox'`).Scan(&active)
				return active && strings.Contains(c.out.String(), "streaming"), ""
			})
			w.insertEvents("buffered", 500)
			w.waitReceived(10 * time.Second)
			if n := w.chCount("SELECT count() FROM event_log"); n != 0 {
				t.Fatalf("%d rows stored before %s; the test wants them buffered", n, tc.name)
			}
			if tc.nohup {
				_ = c.cmd.Process.Signal(tc.signal)
				select {
				case <-c.done:
					t.Fatalf("exited on SIGHUP under nohup (%v):\n%s", c.cmd.ProcessState, tail(c.out.String(), 10))
				case <-time.After(2 * time.Second):
				}
				if n := w.chCount("SELECT count() FROM event_log"); n != 0 {
					t.Fatalf("%d rows stored after SIGHUP under nohup, want 0: the batch waits for its interval", n)
				}
				tc.signal, tc.name = syscall.SIGTERM, "SIGTERM"
			}
			if tc.twice {
				// Apart, as the shell's and the kernel's are: two
				// pending at once are delivered as one.
				_ = c.cmd.Process.Signal(tc.signal)
				time.Sleep(20 * time.Millisecond)
			}
			code, took := c.stop(tc.signal, 15*time.Second)
			if code != 0 {
				t.Fatalf("process state %v after %s, want exit code 0", c.cmd.ProcessState, tc.name)
			}
			t.Logf("exited %s after %s", took, tc.name)
			if last := lastLine(c.out.String()); !strings.Contains(last, "shut down cleanly") {
				t.Errorf("last line %q after a shutdown that stored and acknowledged everything, want shut down cleanly", last)
			}
			if n := w.chCount("SELECT count() FROM event_log"); n != 500 {
				t.Fatalf("event_log holds %d rows after %s, want the 500 buffered", n, tc.name)
			}
			// The flush was acknowledged: the slot has nothing left to replay.
			var pending int64
			if err := w.pg.QueryRow(context.Background(), `SELECT count(*) FROM pg_logical_slot_peek_binary_changes('cdc_outbox', NULL, NULL, 'proto_version', '1', 'publication_names', 'cdc_outbox')`).Scan(&pending); err != nil {
				t.Fatal(err)
			}
			if pending != 0 {
				t.Fatalf("slot still holds %d changes after a clean shutdown", pending)
			}
		})
	}
}

// waitReceived waits until the connector reports (as its write position)
// that it received everything committed so far.
func (w *world) waitReceived(timeout time.Duration) {
	w.t.Helper()
	var target string
	if err := w.pg.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&target); err != nil {
		w.t.Fatal(err)
	}
	waitFor(w.t, timeout, "connector to receive up to "+target, func() (bool, string) {
		var ok bool
		err := w.pg.QueryRow(context.Background(), `SELECT coalesce(bool_or(write_lsn >= $1::pg_lsn), false) FROM pg_stat_replication WHERE application_name = 'cdc'`, target).Scan(&ok)
		return err == nil && ok, fmt.Sprint(err)
	})
}

func TestPipeline_BadSettingExitsTwoNamingTheVariable(t *testing.T) {
	w := newWorld(t)
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"CDC_BATCH_MAX_ROWS": "many"}, `cdc: invalid configuration: CDC_BATCH_MAX_ROWS: "many" is not a positive whole number`},
		{map[string]string{"CDC_FLUSH_INTERVAL": "1 minute"}, `cdc: invalid configuration: CDC_FLUSH_INTERVAL: "1 minute" is not a duration, e.g. 500ms, 1s, 24h`},
		{map[string]string{"CDC_PG_DSN": ""}, `cdc: invalid configuration: CDC_PG_DSN: required, e.g. postgres://user:password@host/db`},
	}
	for _, tt := range tests {
		out, code := w.runOnce(tt.env, "run")
		if code != 2 || strings.TrimSpace(out) != tt.want {
			t.Errorf("env %v: exit %d, output %q; want 2, %q", tt.env, code, out, tt.want)
		}
	}
	if _, code := w.runOnce(nil, "frobnicate"); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
	// Help needs no configuration either, and every command has it.
	for _, args := range [][]string{{"run", "-h"}, {"migrate", "--help"}, {"verify", "-h"}, {"deadletter", "replay", "-h"}} {
		out, code := w.runOnce(map[string]string{"CDC_PG_DSN": ""}, args...)
		if code != 0 || !strings.HasPrefix(out, "usage: cdc "+args[0]) {
			t.Errorf("%v: exit %d, %q; want 0 and its usage", args, code, out)
		}
	}
	if out, code := w.runOnce(nil, "run", "extra"); code != 2 || !strings.Contains(out, `cdc run: unexpected argument "extra"`) {
		t.Errorf("run extra: exit %d, %q; want 2 naming the argument", code, out)
	}
	// version needs no configuration.
	if out, code := w.runOnce(map[string]string{"CDC_PG_DSN": ""}, "version"); code != 0 || strings.Count(out, "\n") != 1 || len(out) < 4 {
		t.Errorf("version: exit %d, %q; want 0 and one line", code, out)
	}

	// Settings only the attempt can check still exit 2, before cdc
	// connects to anything; the last line names the variable.
	sep := "?"
	if strings.Contains(w.chDSN, "?") {
		sep = "&"
	}
	for _, tt := range []struct {
		env        map[string]string
		wantPrefix string
	}{
		{map[string]string{"CDC_METRICS_ADDR": "nohost.invalid:9187"}, "cdc run: CDC_METRICS_ADDR: listen tcp: lookup nohost.invalid"},
		{map[string]string{"CDC_CLICKHOUSE_DSN": w.chDSN + sep + "read_timeout=-1s"}, "cdc: invalid configuration: CDC_CLICKHOUSE_DSN: read_timeout -1s must be positive"},
	} {
		out, code := w.runOnce(tt.env, "run")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if last := lines[len(lines)-1]; code != 2 || !strings.HasPrefix(last, tt.wantPrefix) {
			t.Errorf("env %v: exit %d, last line %q; want 2, %q…", tt.env, code, last, tt.wantPrefix)
		}
		if strings.Contains(out, "replication") {
			t.Errorf("env %v: cdc connected before refusing the setting:\n%s", tt.env, out)
		}
	}

	// Every command parses both DSNs as the drivers will before it
	// connects: migrate, which connects to PostgreSQL first, creates no
	// slot for a ClickHouse DSN it would then refuse.
	for _, cmd := range []string{"migrate", "status"} {
		env := map[string]string{"CDC_SLOT_NAME": "cdc_unmade", "CDC_CLICKHOUSE_DSN": w.chDSN + sep + "read_timeout=30"}
		out, code := w.runOnce(env, cmd)
		want := `cdc: invalid configuration: CDC_CLICKHOUSE_DSN: parse clickhouse dsn: clickhouse [dsn parse]:read timeout: time: missing unit in duration "30"`
		if code != 2 || strings.TrimSpace(out) != want {
			t.Errorf("%s with read_timeout=30: exit %d, output %q; want 2, %q", cmd, code, out, want)
		}
	}
	var slots int
	if err := w.pg.QueryRow(context.Background(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdc_unmade'`).Scan(&slots); err != nil || slots != 0 {
		t.Errorf("slots named cdc_unmade: %d (%v); want 0", slots, err)
	}
	pgSep := "?"
	if strings.Contains(w.pgDSN, "?") {
		pgSep = "&"
	}
	out, code := w.runOnce(map[string]string{"CDC_PG_DSN": w.pgDSN + pgSep + "sslmode=bogus"}, "migrate")
	if code != 2 || !strings.HasPrefix(out, "cdc: invalid configuration: CDC_PG_DSN: cannot parse `") || !strings.HasSuffix(strings.TrimSpace(out), "failed to configure TLS (sslmode is invalid)") {
		t.Errorf("migrate with sslmode=bogus: exit %d, output %q; want 2 naming CDC_PG_DSN", code, out)
	}

	// A misspelt variable is named, not fatal: it may be a newer or older
	// release's.
	out, code = w.runOnce(map[string]string{"CDC_OUTBOX_RETENTON": "0"}, "status")
	if code != 0 || !strings.Contains(out, "ignoring environment variables cdc does not read; a misspelling leaves the setting at its default\t{\"names\": [\"CDC_OUTBOX_RETENTON\"]}") {
		t.Errorf("misspelt variable: exit %d, output %q; want 0 and a warning naming CDC_OUTBOX_RETENTON", code, out)
	}
}
