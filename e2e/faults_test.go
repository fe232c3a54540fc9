package e2e

// Fault tests: the real binary against real servers while processes die,
// servers go away and rows are refused. Every test ends with exact counts:
// each committed outbox row is in event_log exactly once — not only under
// FINAL but as raw rows, because the connector skips rows it already stored
// when the slot replays after a crash (sink.Written) — and no rolled-back
// row is there at all.
//
// Raw duplicates are counted twice over. `SELECT count() FROM event_log`
// counts the rows the table holds now; but ReplacingMergeTree merges
// collapse duplicates in the background, so that count could hide a
// duplicate written and merged away. Each test world therefore gets a
// materialized view that copies every inserted event_id into a plain
// MergeTree table, which never collapses anything: its count is the number
// of rows ever inserted into event_log.
//
// These tests stop and restart the shared servers, so none is parallel.

import (
	"bufio"
	"context"
	"crypto/sha256"
	byteorder "encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// auditInserts creates the insert-counting view described above.
func (w *world) auditInserts() {
	w.t.Helper()
	ctx := context.Background()
	if err := w.ch.Exec(ctx, `CREATE MATERIALIZED VIEW cdc_test_inserted ENGINE = MergeTree() ORDER BY tuple() AS SELECT event_id FROM event_log`); err != nil {
		w.t.Fatalf("create insert audit view: %v", err)
	}
}

// slowInserts makes every INSERT into event_log take d longer after its
// rows are stored: a view whose query sleeps d for each block ClickHouse
// pushes to it (at most 3 s). ClickHouse 18.16 writes the INSERT's part of
// event_log before it pushes the block to the views, so for d the rows are
// in event_log while the connector still waits for the INSERT to return,
// and has not acknowledged them: a kill then lands between the two.
func (w *world) slowInserts(d time.Duration) {
	w.t.Helper()
	q := fmt.Sprintf(`CREATE MATERIALIZED VIEW cdc_test_slow ENGINE = Null AS SELECT sleep(%g) AS slept FROM event_log`, d.Seconds())
	if err := w.ch.Exec(context.Background(), q); err != nil {
		w.t.Fatalf("create slow-insert view: %v", err)
	}
}

// waitStoredUnreturned waits up to timeout for an INSERT into event_log
// whose rows event_log shows while the INSERT has not returned (see
// slowInserts), and reports whether it saw one: rows more than when it
// began, with an INSERT still running after they were counted.
// system.processes is the whole server's: an INSERT of another package's
// test can be mistaken for the connector's, which only makes the kill that
// follows land somewhere else. Newer ClickHouse releases may make an
// INSERT's part visible only once its views are done; there it sees none.
func (w *world) waitStoredUnreturned(timeout time.Duration) bool {
	w.t.Helper()
	running := func() bool {
		return w.chCount(`SELECT count() FROM system.processes WHERE query LIKE 'INSERT INTO event_log%' AND written_rows > 0`) > 0
	}
	before := w.chCount(`SELECT count() FROM event_log`)
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if running() && w.chCount(`SELECT count() FROM event_log`) > before && running() {
			return true
		}
	}
	return false
}

// showsRowsBeforeReturn reports whether this ClickHouse makes an INSERT's
// rows visible before its materialized views are done, as 18.16 does.
func (w *world) showsRowsBeforeReturn() bool {
	w.t.Helper()
	var v string
	if err := w.ch.QueryRow(context.Background(), `SELECT version()`).Scan(&v); err != nil {
		w.t.Fatal(err)
	}
	major, _ := strconv.Atoi(strings.SplitN(v, ".", 2)[0])
	return major < 22
}

// assertExactlyOnce checks that event_log holds want events under FINAL, as
// raw rows, and that exactly want rows were ever inserted into it.
func (w *world) assertExactlyOnce(want uint64) {
	w.t.Helper()
	final := w.chCount("SELECT count() FROM event_log FINAL")
	raw := w.chCount("SELECT count() FROM event_log")
	// ClickHouse writes an INSERT's part of event_log before the view's
	// copy of it, so a count taken the moment event_log shows the last
	// rows can miss them in the view (seen once in CI: raw 1300, view
	// 800, the connector's last INSERT of 500 rows logged as stored). The
	// view cannot hold fewer rows than event_log once those INSERTs have
	// returned: give it a few seconds to catch up.
	inserted := w.chCount("SELECT count() FROM cdc_test_inserted")
	for deadline := time.Now().Add(10 * time.Second); inserted < raw && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		inserted = w.chCount("SELECT count() FROM cdc_test_inserted")
	}
	w.t.Logf("committed %d; event_log FINAL %d, raw %d, rows ever inserted %d (raw duplicates: %d)",
		want, final, raw, inserted, int64(inserted)-int64(want))
	if final != want || raw != want || inserted != want {
		w.t.Errorf("want exactly %d events: FINAL %d, raw %d, ever inserted %d", want, final, raw, inserted)
	}
}

// assertSameIDs checks that event_log holds exactly the committed ids and
// none of the rolled-back ones.
func (w *world) assertSameIDs(committed map[uuid.UUID]bool, rolledBack []uuid.UUID) {
	w.t.Helper()
	rows, err := w.ch.Query(context.Background(), "SELECT DISTINCT event_id FROM event_log")
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	got := map[uuid.UUID]bool{}
	for rows.Next() {
		var id uuid.UUID
		if err := rows.Scan(&id); err != nil {
			w.t.Fatal(err)
		}
		got[id] = true
	}
	if err := rows.Err(); err != nil {
		w.t.Fatal(err)
	}
	var missing, extra, back int
	for id := range committed {
		if !got[id] {
			missing++
		}
	}
	for id := range got {
		if !committed[id] {
			extra++
		}
	}
	for _, id := range rolledBack {
		if got[id] {
			back++
		}
	}
	if missing+extra+back > 0 {
		w.t.Errorf("event ids: %d committed missing, %d not committed present (%d of them rolled back)", missing, extra, back)
	}
}

// chReconnect opens a fresh ClickHouse client after the server restarted,
// so no test query lands on a connection the restart broke.
func (w *world) chReconnect() {
	w.t.Helper()
	opts, err := clickhouse.ParseDSN(w.chDSN)
	if err != nil {
		w.t.Fatal(err)
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		w.t.Fatal(err)
	}
	old := w.ch
	w.ch = conn // the world's cleanup closes whatever w.ch is at the end
	_ = old.Close()
	waitFor(w.t, 60*time.Second, "clickhouse to answer", func() (bool, string) {
		err := w.ch.Ping(context.Background())
		return err == nil, fmt.Sprint(err)
	})
}

// load is a set of writer goroutines committing (and now and then rolling
// back) small outbox transactions, some of one row and some of several, with
// ids chosen here so the test knows exactly what was committed.
type load struct {
	mu         sync.Mutex
	committed  map[uuid.UUID]bool
	rolledBack []uuid.UUID
	txs        int
	err        error

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type loadOptions struct {
	writers    int
	pause      time.Duration // between a writer's transactions
	pad        int           // bytes of padding in each event_context
	rollbackIn int           // one transaction in rollbackIn is rolled back; 0: none
}

func (w *world) startLoad(o loadOptions) *load {
	w.t.Helper()
	cfg, err := pgxpool.ParseConfig(w.pgDSN)
	if err != nil {
		w.t.Fatal(err)
	}
	cfg.MaxConns = int32(o.writers)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{committed: map[uuid.UUID]bool{}, cancel: cancel}
	pad := strings.Repeat("p", o.pad)
	for i := 0; i < o.writers; i++ {
		l.wg.Add(1)
		go func(writer int) {
			defer l.wg.Done()
			for ctx.Err() == nil {
				// Stop only between transactions: a commit interrupted by
				// the stop signal may have committed on the server while
				// the client saw an error, and the count would be wrong.
				txCtx, txCancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := l.oneTx(txCtx, pool, writer, pad, o.rollbackIn)
				txCancel()
				if err != nil {
					if ctx.Err() == nil {
						l.mu.Lock()
						l.err = errors.Join(l.err, err)
						l.mu.Unlock()
					}
					return
				}
				if o.pause > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(o.pause):
					}
				}
			}
		}(i)
	}
	w.t.Cleanup(func() { l.stop(); pool.Close() })
	return l
}

// oneTx commits or rolls back one transaction of one to eight rows,
// written by one to three statements.
func (l *load) oneTx(ctx context.Context, pool *pgxpool.Pool, writer int, pad string, rollbackIn int) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // no-op after commit
	var ids []uuid.UUID
	for s := rand.IntN(3); s >= 0; s-- {
		n := 1 + rand.IntN(3)
		batch := make([]string, n)
		for i := range batch {
			id := uuid.New()
			ids = append(ids, id)
			batch[i] = id.String()
		}
		if _, err := tx.Exec(ctx, `INSERT INTO outbox (id, event_type, environment, event_context)
			SELECT id, 'load', 'test', json_build_object('writer', $2::int, 'pad', $3::text)
			FROM unnest($1::text[]::uuid[]) id`, batch, writer, pad); err != nil {
			return fmt.Errorf("insert: %w", err)
		}
	}
	if rollbackIn > 0 && rand.IntN(rollbackIn) == 0 {
		if err := tx.Rollback(ctx); err != nil {
			return fmt.Errorf("rollback: %w", err)
		}
		l.mu.Lock()
		l.rolledBack = append(l.rolledBack, ids...)
		l.mu.Unlock()
		return nil
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	l.mu.Lock()
	for _, id := range ids {
		l.committed[id] = true
	}
	l.txs++
	l.mu.Unlock()
	return nil
}

// stop ends the writers and waits for them; what they committed is final.
func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

func (l *load) count() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return uint64(len(l.committed))
}

// result stops the load and reports what it committed and rolled back,
// failing the test if a writer hit an error.
func (l *load) result(t *testing.T) (map[uuid.UUID]bool, []uuid.UUID) {
	t.Helper()
	l.stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		t.Fatalf("load writer: %v", l.err)
	}
	t.Logf("load: %d transactions committed %d events; %d events rolled back", l.txs, len(l.committed), len(l.rolledBack))
	return l.committed, l.rolledBack
}

// scrapeMetric reads one metric (without labels) from the connector's
// /metrics endpoint.
func scrapeMetric(t *testing.T, addr, name string) float64 {
	t.Helper()
	v, err := readMetric(addr, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func readMetric(addr, name string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("scrape metrics: %w", err)
	}
	return 0, fmt.Errorf("metric %s not found at %s", name, addr)
}

// waitMetrics waits until the connector's metrics endpoint answers.
func waitMetrics(t *testing.T, addr string) {
	t.Helper()
	waitFor(t, 30*time.Second, "metrics endpoint", func() (bool, string) {
		_, err := readMetric(addr, "cdc_buffer_bytes")
		return err == nil, fmt.Sprint(err)
	})
}

// peakRSS returns the highest resident set size the process reached
// (VmHWM), in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read process status: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("parse VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/<pid>/status")
	return 0
}

func (c *connector) alive() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// streaming reports whether the connector logged that it holds the slot
// and streams from it (the "streaming" message of a session start).
func (c *connector) streamingCount() int {
	return strings.Count(c.out.String(), "\tstreaming\t")
}

func (w *world) slotConfirmed() string {
	w.t.Helper()
	var lsn string
	if err := w.pg.QueryRow(context.Background(), `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'cdc_outbox'`).Scan(&lsn); err != nil {
		w.t.Fatal(err)
	}
	return lsn
}

func (w *world) lsnLE(a, b string) bool {
	w.t.Helper()
	var le bool
	if err := w.pg.QueryRow(context.Background(), `SELECT $1::pg_lsn <= $2::pg_lsn`, a, b).Scan(&le); err != nil {
		w.t.Fatal(err)
	}
	return le
}

func (w *world) currentLSN() string {
	w.t.Helper()
	var lsn string
	if err := w.pg.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		w.t.Fatal(err)
	}
	return lsn
}

// waitStreaming waits until c holds the slot and streams.
// A session after a fault may rightly wait before it streams for an
// INSERT the one before abandoned and ClickHouse still runs (the sink's
// settle, up to read_timeout): a clean-clone CI waited 59.9 s so after a
// crash, past the 60 s this allowed.
func waitStreaming(t *testing.T, c *connector, sessions int) {
	t.Helper()
	waitFor(t, 3*time.Minute, "connector to stream", func() (bool, string) {
		return c.streamingCount() >= sessions, tail(c.out.String(), 3)
	})
}

// alreadyStored finds the count of stored-but-unacknowledged rows a session
// start reports.
var alreadyStored = regexp.MustCompile(`"already_stored": (\d+)`)

func TestFaults_Kill9UnderConcurrentLoad(t *testing.T) {
	w := newWorld(t)
	w.auditInserts()
	// A short flush interval and a small row limit: many batches, so the
	// kills land between a batch's INSERT and its acknowledgement and in the
	// middle of transactions cut across batches.
	// Every other kill waits for an INSERT whose rows are stored and not
	// yet acknowledged (slowInserts keeps each one so for 200 ms): the
	// restart must find those rows in ClickHouse and skip them.
	w.slowInserts(200 * time.Millisecond)
	env := map[string]string{"CDC_FLUSH_INTERVAL": "100ms", "CDC_BATCH_MAX_ROWS": "500"}
	c := w.start(env)
	all := []*connector{c}
	l := w.startLoad(loadOptions{writers: 4, pause: 2 * time.Millisecond, pad: 64, rollbackIn: 6})

	end := time.Now().Add(12 * time.Second)
	kills, aimed := 0, 0
	for time.Now().Before(end) {
		time.Sleep(1500*time.Millisecond + rand.N(time.Second))
		midInsert := kills%2 == 1 && w.waitStoredUnreturned(3*time.Second)
		c.kill()
		kills++
		if midInsert {
			aimed++
		}
		t.Logf("SIGKILL %d (during an INSERT: %v): %d committed so far, %d raw rows in event_log", kills, midInsert, l.count(), w.chCount("SELECT count() FROM event_log"))
		c = w.start(env)
		all = append(all, c)
	}
	committed, rolledBack := l.result(t)

	w.waitRows(uint64(len(committed)), 90*time.Second)
	// How often a kill fell between a stored INSERT and its
	// acknowledgement, so the restart had to skip stored rows in the replay.
	replays, skipped := 0, 0
	for _, c := range all {
		for _, m := range alreadyStored.FindAllStringSubmatch(c.out.String(), -1) {
			if n, _ := strconv.Atoi(m[1]); n > 0 {
				replays++
				skipped += n
			}
		}
	}
	t.Logf("%d kills, %d of them during an INSERT; %d restarts found %d rows already stored past the slot's position and skipped them", kills, aimed, replays, skipped)
	if aimed == 0 {
		if w.showsRowsBeforeReturn() {
			t.Errorf("no kill landed while an INSERT into event_log had stored its rows and not returned")
		} else {
			t.Logf("this ClickHouse showed no INSERT's rows before it returned: no kill was aimed between the two")
		}
	} else if replays == 0 {
		t.Errorf("%d kills landed between an INSERT's rows being stored and its return, and no restart found rows already stored", aimed)
	}
	w.assertExactlyOnce(uint64(len(committed)))
	w.assertSameIDs(committed, rolledBack)
	var outbox int
	if err := w.pg.QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&outbox); err != nil {
		t.Fatal(err)
	}
	if outbox != len(committed) {
		t.Errorf("outbox holds %d rows, the writers committed %d", outbox, len(committed))
	}
	// Sanity: the loop above killed often enough to mean something
	// (about one kill every two seconds).
	if kills < 4 {
		t.Errorf("only %d kills in 12s", kills)
	}
}

func TestFaults_ClickHouseRestartAndOutage(t *testing.T) {
	w := newWorld(t)
	if !w.env.Local() {
		t.Skip("servers come from the environment; cannot stop ClickHouse")
	}
	w.auditInserts()
	const maxBytes = 64 << 10
	c := w.start(map[string]string{
		"CDC_METRICS_ADDR":    "auto",
		"CDC_BATCH_MAX_BYTES": "64KiB",
		// A flush interval long enough that batches are cut by bytes, so
		// the buffered batches are full ones.
		"CDC_FLUSH_INTERVAL": "2s",
	})
	waitMetrics(t, c.MetricsAddr)
	// About 1 KB per event and a hundred or so events a second: far more
	// than three batches pile up during the outage, so the buffer bound is
	// really tested.
	l := w.startLoad(loadOptions{writers: 1, pause: 20 * time.Millisecond, pad: 1000})
	waitFor(t, 60*time.Second, "events to arrive before the outage", func() (bool, string) {
		n := w.chCount("SELECT count() FROM event_log")
		return n >= 200, fmt.Sprintf("%d rows", n)
	})

	w.env.StopClickHouse(t)
	down := true
	t.Cleanup(func() {
		if down {
			w.env.StartClickHouse(t)
		}
	})
	// Nothing can be stored from here on: the slot must not be
	// acknowledged past this point until ClickHouse is back.
	stopLSN := w.currentLSN()
	stoppedAt := l.count()

	// A minute-long outage, as the issue asks: the connector retries with
	// capped backoff and the stream stops reading once three batches are
	// held, however long it lasts.
	outageEnd := time.Now().Add(time.Minute)
	var peak float64
	scrapes := 0
	for time.Now().Before(outageEnd) {
		time.Sleep(time.Second)
		if !c.alive() {
			t.Fatalf("connector exited during the ClickHouse outage: %v\n%s", c.err, tail(c.out.String(), 30))
		}
		buf := scrapeMetric(t, c.MetricsAddr, "cdc_buffer_bytes")
		peak = max(peak, buf)
		scrapes++
		if confirmed := w.slotConfirmed(); !w.lsnLE(confirmed, stopLSN) {
			t.Errorf("slot acknowledged %s during the outage, past %s where ClickHouse went down", confirmed, stopLSN)
		}
	}
	duringOutage := l.count() - stoppedAt
	endLSN := w.currentLSN()
	confirmed := w.slotConfirmed()
	t.Logf("outage: %d events committed meanwhile; WAL %s -> %s; slot confirmed %s; peak cdc_buffer_bytes %.0f over %d scrapes (limit 3 x %d = %d)",
		duringOutage, stopLSN, endLSN, confirmed, peak, scrapes, maxBytes, 3*maxBytes)
	if !c.alive() {
		t.Fatal("connector exited during the outage")
	}
	if duringOutage == 0 || w.lsnLE(endLSN, stopLSN) {
		t.Fatalf("no events committed during the outage (%d, WAL %s -> %s)", duringOutage, stopLSN, endLSN)
	}
	if !w.lsnLE(confirmed, stopLSN) {
		t.Errorf("slot confirmed %s, past %s where ClickHouse went down", confirmed, stopLSN)
	}
	if n := strings.Count(c.out.String(), "storing batch failed; will retry"); n == 0 {
		t.Errorf("no retry logged during the outage")
	} else {
		t.Logf("%d retries logged", n)
	}
	if errs := scrapeMetric(t, c.MetricsAddr, "cdc_sink_errors_total"); errs <= 0 {
		t.Errorf("cdc_sink_errors_total = %v during the outage, want > 0", errs)
	}
	// At most CDC_INSERTS_IN_FLIGHT + 1 = 3 batches are held (the open one
	// and the two being retried), each cut before the row that would take
	// it over the byte limit; cdc_buffer_bytes counts their payload, which
	// is part of that.
	if limit := float64(3 * maxBytes); peak > limit {
		t.Errorf("cdc_buffer_bytes peaked at %.0f during the outage, want <= %.0f (3 x CDC_BATCH_MAX_BYTES)", peak, limit)
	}
	// Every batch full means the stream stopped reading: backpressure,
	// not growth. A row's payload is about two thirds of what it counts
	// against the limit here, so three full batches hold about 2 x
	// maxBytes of payload and two hold 1.33 x: above 1.5 x, all three
	// were held.
	if peak < 1.5*maxBytes {
		t.Errorf("cdc_buffer_bytes peaked at only %.0f: the outage did not fill the buffer, so the bound was not tested", peak)
	}

	w.env.StartClickHouse(t)
	down = false
	back := time.Now()
	w.chReconnect()
	committed, rolledBack := l.result(t)
	// Within seconds as a rule (4–9 s in twenty runs). Once the stream,
	// reading again after the outage, heard nothing for 56 s while the
	// walsender waited to write (TCP's window, closed by the long hold,
	// not seen open again; operations.md, ClickHouse down): the receive
	// timeout (90 s here) bounds that, and ends the session.
	w.waitRows(uint64(len(committed)), 150*time.Second)
	t.Logf("all events stored %s after ClickHouse came back", time.Since(back).Round(time.Millisecond))
	w.assertExactlyOnce(uint64(len(committed)))
	w.assertSameIDs(committed, rolledBack)
	if !c.alive() {
		t.Fatal("connector exited after the outage")
	}
}

func TestFaults_PostgresRestart(t *testing.T) {
	w := newWorld(t)
	if !w.env.Local() {
		t.Skip("servers come from the environment; cannot restart PostgreSQL")
	}
	w.auditInserts()
	c := w.start(map[string]string{"CDC_FLUSH_INTERVAL": "100ms", "CDC_METRICS_ADDR": "auto"})
	waitStreaming(t, c, 1)
	w.insertEvents("before", 300)
	w.waitRows(300, 60*time.Second)
	// More events right before the restart: some may be buffered or
	// stored-but-not-acknowledged when the connection drops, the case the
	// replay must neither lose nor duplicate.
	for i := 0; i < 5; i++ {
		w.insertEvents("just_before", 100)
	}

	w.env.RestartPostgres(t)
	w.pg.Reset() // every pooled connection died with the server
	waitFor(t, 60*time.Second, "postgres to accept connections", func() (bool, string) {
		err := w.pg.Ping(context.Background())
		return err == nil, fmt.Sprint(err)
	})
	for i := 0; i < 5; i++ {
		w.insertEvents("after", 100)
	}
	waitStreaming(t, c, 2)
	w.waitRows(1300, 90*time.Second)
	if !c.alive() {
		t.Fatalf("connector exited: %v", c.err)
	}
	if !strings.Contains(c.out.String(), "replication interrupted; reconnecting") {
		t.Errorf("the connector did not log the reconnect")
	}
	// One restart is one interruption, however many reconnects failed
	// while PostgreSQL was down.
	if n := metricValue(c.scrape(), "cdc_replication_interruptions_total"); n != 1 {
		t.Errorf("cdc_replication_interruptions_total %v after one restart, want 1 (%d reconnect attempts logged)",
			n, strings.Count(c.out.String(), "replication interrupted; reconnecting"))
	}
	w.assertExactlyOnce(1300)
	for typ, want := range map[string]uint64{"before": 300, "just_before": 500, "after": 500} {
		if n := w.chCount("SELECT count() FROM event_log WHERE event_type = '" + typ + "'"); n != want {
			t.Errorf("%s events: %d raw rows, want %d", typ, n, want)
		}
	}
}

func TestFaults_EventsCommittedWhileDown(t *testing.T) {
	w := newWorld(t)
	w.auditInserts()
	// (a) `cdc migrate` created the slot: events committed before the very
	// first `cdc run` are kept and streamed.
	w.insertEvents("before_first_run", 250)
	w.insertEvents("before_first_run", 50)
	c := w.start(nil)
	w.waitRows(300, 60*time.Second)
	w.assertExactlyOnce(300)

	// (b) events committed while the connector is stopped.
	if code, _ := c.term(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	for i := 0; i < 4; i++ {
		w.insertEvents("while_stopped", 100)
	}
	w.start(nil)
	w.waitRows(700, 60*time.Second)
	w.assertExactlyOnce(700)
	if n := w.chCount("SELECT count() FROM event_log WHERE event_type = 'while_stopped'"); n != 400 {
		t.Errorf("events committed while stopped: %d raw rows, want 400", n)
	}
}

// buildPlain builds the connector without the race detector, whose memory
// overhead (5-10x) would make an RSS bound meaningless.
func buildPlain(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cdc")
	build := exec.Command("go", "build", "-buildvcs=false", "-o", bin, "../cmd/cdc")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build cdc without -race: %v\n%s", err, out)
	}
	return bin
}

func TestFaults_MillionRowTransactionAndHugeEvents(t *testing.T) {
	plain := buildPlain(t)
	// The memory bound of issue 3: the connector holds at most three
	// batches (two being written, one filling: CDC_INSERTS_IN_FLIGHT=2), a batch being
	// CDC_BATCH_MAX_BYTES or one event larger than that; 100 MiB covers the
	// Go runtime, the client libraries and GC headroom.
	const slack = 100 << 20
	// start runs the connector (built without -race) on a fresh world.
	start := func(t *testing.T, maxBytes string) (*world, *connector) {
		w := newWorld(t)
		w.auditInserts()
		c := w.startBinary(plain, map[string]string{"CDC_BATCH_MAX_BYTES": maxBytes})
		waitStreaming(t, c, 1)
		return w, c
	}

	t.Run("million_row_transaction", func(t *testing.T) {
		const maxBytes = 8 << 20
		w, c := start(t, "8MiB")
		// Measured on the 2-core test machine: the transaction commits in
		// 12-35 s and all rows are in ClickHouse 26-62 s after the INSERT
		// began (the spread is other load on the machine), under the 90 s
		// at which the issue allows 300,000 rows instead, so the full
		// million stays.
		const rows = 1_000_000
		start := time.Now()
		w.exec(`INSERT INTO outbox (event_type, environment, event_context)
			SELECT 'bulk', 'test', '{"n":1}' FROM generate_series(1, $1)`, rows)
		t.Logf("committed %d rows in one transaction in %s", rows, time.Since(start).Round(time.Millisecond))
		w.waitRows(rows, 180*time.Second)
		t.Logf("all %d rows in ClickHouse %s after the insert began", rows, time.Since(start).Round(time.Millisecond))
		assertPeakRSS(t, c.cmd.Process.Pid, 3*maxBytes+slack, "3 x CDC_BATCH_MAX_BYTES + 100 MiB")
		w.assertExactlyOnce(rows)
		// The transaction spans many batches, each one INSERT.
		if n := w.chCount("SELECT uniqExact(cdc_commit_lsn) FROM event_log"); n != 1 {
			t.Errorf("rows carry %d commit LSNs, want the one transaction's", n)
		}
	})

	t.Run("huge_events", func(t *testing.T) {
		const maxBytes = 16 << 20
		w, c := start(t, "16MiB")
		sizes := []int{10 << 20, 64 << 20}
		want := map[uuid.UUID][32]byte{}
		lens := map[uuid.UUID]int{}
		for i, size := range sizes {
			doc := hugeJSON(size, uint64(i))
			id := uuid.New()
			want[id], lens[id] = sha256.Sum256([]byte(doc)), len(doc)
			w.exec(`INSERT INTO outbox (id, event_type, environment, event_context) VALUES ($1, 'huge', 'test', $2::json)`, id, doc)
			// One at a time: each huge event travels in its own batch, so
			// the peak is that of the largest event, not of both at once.
			w.waitRows(uint64(i+1), 120*time.Second)
		}
		w.insertEvents("small_after", 3)
		w.waitRows(5, 120*time.Second)
		// An event larger than CDC_BATCH_MAX_BYTES travels alone, and a
		// single value cannot be split: it is held about six times over —
		// pgx's read buffer (rounded up to a power of two, so up to 2x),
		// the decoded copy, the ClickHouse column, the encoded block and
		// the compressed block. docs/operations.md documents this bound.
		assertPeakRSS(t, c.cmd.Process.Pid, max(3*maxBytes, 6*sizes[len(sizes)-1])+slack, "max(3 x CDC_BATCH_MAX_BYTES, 6 x largest event) + 100 MiB")
		for id, sum := range want {
			var got string
			if err := w.ch.QueryRow(context.Background(), "SELECT event_context FROM event_log WHERE event_id = ?", id).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if len(got) != lens[id] || sha256.Sum256([]byte(got)) != sum {
				t.Errorf("event %s: got %d bytes, want %d bytes, byte-identical", id, len(got), lens[id])
			}
		}
		w.assertExactlyOnce(5)
	})

	t.Run("huge_events_back_to_back", func(t *testing.T) {
		const maxBytes = 16 << 20
		w, c := start(t, "16MiB")
		// Three events of 32 MiB in one transaction arrive back to back:
		// each is a batch of its own, and two such batches do not fit the
		// writer's memory budget together, so they are inserted one at a
		// time while the next is received. md5s joined, so TOAST and LZ4
		// cannot shrink them.
		const size, events = 32 << 20, 3
		w.exec(`INSERT INTO outbox (event_type, environment, event_context)
			SELECT 'huge', 'test', json_build_object('blob', (
				SELECT string_agg(md5(i::text || ':' || g::text), '') FROM generate_series(1, $1::int) g))
			FROM generate_series(1, $2::int) i`, size/32, events)
		want := map[string]string{}
		rows, err := w.pg.Query(context.Background(), `SELECT id::text, encode(sha256(convert_to(event_context::text, 'UTF8')), 'hex') FROM outbox`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id, sum string
			if err := rows.Scan(&id, &sum); err != nil {
				t.Fatal(err)
			}
			want[id] = sum
		}
		if rows.Close(); rows.Err() != nil || len(want) != events {
			t.Fatalf("read %d outbox hashes: %v", len(want), rows.Err())
		}
		w.waitRows(events, 120*time.Second)
		// The insert holds its event about four times (decoded, column,
		// encoded, compressed), the stream the next one about three (read
		// buffer rounded up to a power of two, decoded), and the previous
		// one's copies may not be collected yet: measured 289 MiB here,
		// about 8 x 32 MiB + 30 MiB. docs/operations.md#memory says 9 x.
		assertPeakRSS(t, c.cmd.Process.Pid, max(3*maxBytes, 9*size)+slack, "9 x largest event + 100 MiB")
		for id, sum := range want {
			var got string
			if err := w.ch.QueryRow(context.Background(), "SELECT event_context FROM event_log WHERE toString(event_id) = ?", id).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if h := sha256.Sum256([]byte(got)); hex.EncodeToString(h[:]) != sum {
				t.Errorf("event %s: %d bytes in ClickHouse, not byte-identical to the outbox", id, len(got))
			}
		}
		w.assertExactlyOnce(events)
	})
}

// The operator commands that move events' values — backfill, deadletter
// replay, deadletter list --json — handle one huge event at a time, as the
// connector does, and must not need more memory than it: an operator runs
// them in the connector's image, often in its container, sized by
// docs/operations.md#memory.
func TestFaults_OperatorCommandsHoldHugeEventsLikeTheConnector(t *testing.T) {
	plain := buildPlain(t)
	const size, events, slack = 32 << 20, 3, 100 << 20
	w := newWorld(t)
	for i := range events {
		w.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('huge', 'test', $1::json)`, hugeJSON(size, uint64(i)))
	}
	// The letters refused rows leave: every outbox column as text.
	w.exec(`INSERT INTO cdc_dead_letter (event_id, commit_lsn, seq, row_data, error)
		SELECT id, '0/0', row_number() OVER (ORDER BY id), jsonb_build_object('id', id::text, 'event_type', event_type,
			'event_date_time', format('%s', event_date_time), 'environment', environment,
			'event_context', event_context::text, 'metadata_version', metadata_version::text, 'traceparent', traceparent),
			'refused for the test'
		FROM outbox`)
	// In this order, on one world: list reads the letters replay deletes.
	// Each holds one event at a time, as the connector holds one larger
	// than CDC_BATCH_MAX_BYTES: about six times over.
	cases := []struct {
		name string
		args []string
		want string // the start of stdout
	}{
		{"backfill", []string{"backfill", "--since", "-infinity"}, "backfill since -infinity: 3 outbox rows read, 3 shipped to event_log, 0 refused"},
		{"deadletter_list_json", []string{"deadletter", "list", "--json"}, "["},
		{"deadletter_replay", []string{"deadletter", "replay"}, "replayed 3 dead letters into event_log; 0 refused again"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, plain, tc.args...)
			cmd.Env = envList(w.baseEnv())
			var out, errOut strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &errOut
			peak, err := runPeakRSS(cmd)
			if err != nil {
				t.Fatalf("cdc %v: %v\n%s", tc.args, err, errOut.String())
			}
			if !strings.HasPrefix(out.String(), tc.want) {
				t.Errorf("cdc %v printed %.200q, want it to start with %q", tc.args, out.String(), tc.want)
			}
			bound := int64(6*size + slack)
			t.Logf("cdc %v peak RSS %.1f MiB (bound %.1f MiB = 6 x the event + 100 MiB)", tc.args, float64(peak)/(1<<20), float64(bound)/(1<<20))
			if peak > bound {
				t.Errorf("cdc %v peak RSS %d bytes, want <= %d", tc.args, peak, bound)
			}
		})
	}
}

// runPeakRSS runs cmd and returns its peak RSS, in bytes, with Wait's
// error. It reads the process's VmHWM until it ends, not the rusage's
// maxrss, which counts the test process's own peak: os/exec starts the
// child in the parent's memory (vfork), and Linux carries that memory's
// high water mark across the exec. A command's peak comes while it holds
// events, long before it exits, so reading every 5 ms misses none.
func runPeakRSS(cmd *exec.Cmd) (int64, error) {
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Start returns once the exec is done: this first read is the
	// command's.
	peak, _ := vmHWM(cmd.Process.Pid)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return peak, err
		case <-tick.C:
			if hwm, ok := vmHWM(cmd.Process.Pid); ok {
				peak = max(peak, hwm)
			}
		}
	}
}

// vmHWM is the peak RSS of a running process, in bytes; ok is false once
// it has ended (or its status cannot be read).
func vmHWM(pid int) (int64, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, found := strings.CutPrefix(line, "VmHWM:"); found {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}

// runPeakRSS measures the command, not the test: a test process that grew
// large (the huge events it generated, a race build) must not make a small
// command look large, or every memory bound above would fail for the test's
// own memory.
func TestPeakRSSIsTheCommandsOwn(t *testing.T) {
	ballast := make([]byte, 256<<20)
	for i := range ballast {
		ballast[i] = byte(i) // touched, so resident
	}
	peak, err := runPeakRSS(exec.Command(binary, "version"))
	runtime.KeepAlive(ballast)
	if err != nil {
		t.Fatalf("cdc version: %v", err)
	}
	t.Logf("cdc version: peak RSS %.1f MiB, beside a test holding 256 MiB", float64(peak)/(1<<20))
	if peak <= 0 || peak >= 128<<20 {
		t.Errorf("cdc version measured at %d bytes of peak RSS, want its own few MiB (above 0, under 128 MiB)", peak)
	}
}

// assertPeakRSS fails t when the connector's peak RSS is over bound bytes;
// formula says how the bound was made, for the log.
func assertPeakRSS(t *testing.T, pid, bound int, formula string) {
	t.Helper()
	peak := peakRSS(t, pid)
	t.Logf("connector peak RSS %.1f MiB (bound %.1f MiB = %s)", float64(peak)/(1<<20), float64(bound)/(1<<20), formula)
	if peak > int64(bound) {
		t.Errorf("connector peak RSS %d bytes, want <= %d", peak, bound)
	}
}

// hugeJSON builds a JSON document of exactly size bytes whose content does
// not compress to nothing (TOAST and LZ4 see realistic work).
func hugeJSON(size int, seed uint64) string {
	r := rand.New(rand.NewPCG(seed, 42))
	const hex = "0123456789abcdef"
	head, tailStr := `{"blob":"`, `"}`
	b := make([]byte, 0, size)
	b = append(b, head...)
	for len(b) < size-len(tailStr) {
		b = append(b, hex[r.IntN(16)])
	}
	return string(append(b, tailStr...))
}

func TestFaults_HotStandbyTakesOver(t *testing.T) {
	w := newWorld(t)
	w.auditInserts()
	a := w.start(map[string]string{"CDC_METRICS_ADDR": "auto"})
	b := w.start(map[string]string{"CDC_METRICS_ADDR": "auto"})
	var active, standby *connector
	waitFor(t, 60*time.Second, "one connector streaming and one standing by", func() (bool, string) {
		as, bs := a.streamingCount() > 0, b.streamingCount() > 0
		aw, bw := strings.Contains(a.out.String(), "standing by"), strings.Contains(b.out.String(), "standing by")
		switch {
		case as && bw && !bs:
			active, standby = a, b
		case bs && aw && !as:
			active, standby = b, a
		default:
			return false, fmt.Sprintf("a streaming=%v standing by=%v; b streaming=%v standing by=%v", as, aw, bs, bw)
		}
		return true, ""
	})
	w.insertEvents("first", 200)
	w.waitRows(200, 60*time.Second)
	if standby.streamingCount() != 0 {
		t.Fatal("both connectors streamed at once")
	}
	// Standing by is this instance's normal state, not an interruption.
	for _, c := range []struct {
		name      string
		c         *connector
		streaming float64
	}{{"active", active, 1}, {"standby", standby, 0}} {
		m := c.c.scrape()
		if s, n := metricValue(m, "cdc_replication_streaming"), metricValue(m, "cdc_replication_interruptions_total"); s != c.streaming || n != 0 {
			t.Fatalf("%s: cdc_replication_streaming %v, cdc_replication_interruptions_total %v; want %v and 0", c.name, s, n, c.streaming)
		}
	}

	active.kill()
	killed := time.Now()
	waitFor(t, 10*time.Second, "the standby to take over", func() (bool, string) {
		return standby.streamingCount() > 0, tail(standby.out.String(), 2)
	})
	t.Logf("standby streaming %s after the SIGKILL", time.Since(killed).Round(time.Millisecond))
	w.insertEvents("second", 300)
	w.waitRows(500, 60*time.Second)
	w.assertExactlyOnce(500)
}

func TestFaults_RefusedRowsAreDeadLettered(t *testing.T) {
	w := newWorld(t)
	w.auditInserts()
	c := w.start(map[string]string{"CDC_METRICS_ADDR": "auto"})
	waitMetrics(t, c.MetricsAddr)
	w.insertEvents("before", 1)
	w.waitRows(1, 60*time.Second)

	// event_log now refuses metadata_version above 255.
	if err := w.ch.Exec(context.Background(), "ALTER TABLE event_log MODIFY COLUMN metadata_version UInt8"); err != nil {
		t.Fatal(err)
	}
	good1, bad, good2 := uuid.New(), uuid.New(), uuid.New()
	w.exec(`INSERT INTO outbox (id, event_type, environment, event_context, metadata_version)
		VALUES ($1, 'mixed', 'test', '{}', 1), ($2, 'mixed', 'test', '{}', 300), ($3, 'mixed', 'test', '{}', 2)`, good1, bad, good2)
	w.waitRows(3, 60*time.Second)

	var (
		deadID    uuid.UUID
		commitLSN uint64
		seq       int64
		errText   string
		letters   int
	)
	waitFor(t, 30*time.Second, "the dead letter", func() (bool, string) {
		err := w.pg.QueryRow(context.Background(), `SELECT count(*) FROM cdc_dead_letter`).Scan(&letters)
		return err == nil && letters > 0, fmt.Sprint(letters, err)
	})
	if letters != 1 {
		t.Fatalf("%d dead letters, want 1", letters)
	}
	if err := w.pg.QueryRow(context.Background(), `SELECT event_id, (commit_lsn - '0/0'::pg_lsn)::numeric::bigint, seq, error FROM cdc_dead_letter`).Scan(&deadID, &commitLSN, &seq, &errText); err != nil {
		t.Fatal(err)
	}
	t.Logf("dead letter: event %s at %d#%d: %s", deadID, commitLSN, seq, errText)
	if deadID != bad {
		t.Errorf("dead letter is event %s, want %s (metadata_version 300)", deadID, bad)
	}
	if !strings.Contains(errText, "metadata_version") || !strings.Contains(errText, "300") {
		t.Errorf("dead letter error %q does not name the column and the value", errText)
	}
	if seq != 2 {
		t.Errorf("dead letter seq %d, want 2 (second row of its transaction)", seq)
	}
	rows, err := w.ch.Query(context.Background(), "SELECT event_id, toUInt64(metadata_version) FROM event_log WHERE event_type = 'mixed'")
	if err != nil {
		t.Fatal(err)
	}
	got := map[uuid.UUID]uint64{}
	for rows.Next() {
		var id uuid.UUID
		var v uint64
		if err := rows.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		got[id] = v
	}
	rows.Close()
	if want := map[uuid.UUID]uint64{good1: 1, good2: 2}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("mixed events in event_log (id: metadata_version): %v; want the two good ones %v", got, want)
	}
	if n := w.chCount(fmt.Sprintf("SELECT count() FROM event_log WHERE event_type = 'mixed' AND cdc_commit_lsn = %d", commitLSN)); n != 2 {
		t.Errorf("%d good rows carry the dead letter's commit LSN %d, want 2", n, commitLSN)
	}
	if v := scrapeMetric(t, c.MetricsAddr, "cdc_dead_letters_total"); v != 1 {
		t.Errorf("cdc_dead_letters_total = %v, want 1", v)
	}

	// The stream goes on.
	w.insertEvents("after", 2)
	w.waitRows(5, 60*time.Second)
	w.assertExactlyOnce(5)
	if n := w.chCount("SELECT count() FROM event_log WHERE event_id = toUUID('" + bad.String() + "')"); n != 0 {
		t.Errorf("the refused event is in event_log %d times", n)
	}
}

// pendingCommitLSN is the commit LSN of the last transaction waiting in
// the connector's slot: its Begin message's final LSN, as the connector
// will read it.
func (w *world) pendingCommitLSN() uint64 {
	w.t.Helper()
	var commit uint64
	rows, err := w.pg.Query(context.Background(), `SELECT data FROM pg_logical_slot_peek_binary_changes('cdc_outbox', NULL, NULL,
		'proto_version', '1', 'publication_names', 'cdc_outbox')`)
	if err != nil {
		w.t.Fatal(err)
	}
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			w.t.Fatal(err)
		}
		if len(data) >= 9 && data[0] == 'B' {
			commit = byteorder.BigEndian.Uint64(data[1:9])
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil || commit == 0 {
		w.t.Fatalf("peek the slot: %v, commit LSN %d", err, commit)
	}
	return commit
}

// event_log may hold a row of another WAL history at a new event's exact
// position (commit LSN and ordinal) while every old position lies within
// this server's WAL, and few enough to hold: nothing gives the other
// history away but the row's event. The replay skips a row only when the
// event stored at its run's first position is its own, so the new event
// is stored.
func TestFaults_AnotherEventAtAReplayedPositionIsNotSkipped(t *testing.T) {
	w := newWorld(t)
	w.auditInserts()
	w.insertEvents("new", 3)
	commit := w.pendingCommitLSN()
	w.chExec(fmt.Sprintf(`INSERT INTO event_log (event_id, event_type, event_date_time, environment, event_context, metadata_version, cdc_commit_lsn, cdc_seq)
		SELECT generateUUIDv4(), 'old', now(), 'old', '{}', 1, %d, 1`, commit))
	c := w.start(nil)
	waitFor(t, 60*time.Second, "the three new events in event_log", func() (bool, string) {
		n := w.chCount("SELECT count() FROM event_log FINAL WHERE event_type = 'new'")
		return n == 3, fmt.Sprintf("%d new events", n)
	})
	if !strings.Contains(c.out.String(), "the sink holds another event at a replayed row's position") {
		t.Errorf("no warning names the other event:\n%s", tail(c.out.String(), 20))
	}
	if n := w.chCount("SELECT count() FROM event_log WHERE event_type = 'new'"); n != 3 {
		t.Errorf("%d rows of the new events, want 3 (one each)", n)
	}
}

// event_log may hold more positions past the slot's than the connector
// can keep in memory to skip a replay's stored rows: a restored table of
// another WAL history whose positions lie within this server's WAL, which
// would make the set the whole table. The connector then skips nothing
// until the slot has passed them: no event lost to an old row at its
// position, and memory bounded.
func TestFaults_TooManyStoredPositionsAreNotSkipped(t *testing.T) {
	w := newWorld(t)
	w.auditInserts()
	w.insertEvents("new", 3)
	commit := w.pendingCommitLSN()
	// Rows of the old history, all within this server's WAL: one at the
	// first new event's position, and 1 Mi + 1 more at the same commit LSN
	// with gaps between their ordinals — a run each, one past the bound.
	w.chExec(fmt.Sprintf(`INSERT INTO event_log (event_id, event_type, event_date_time, environment, event_context, metadata_version, cdc_commit_lsn, cdc_seq)
		SELECT generateUUIDv4(), 'old', now(), 'old', '{}', 1, %d, if(number = 0, 1, 8 + 2 * number) FROM system.numbers LIMIT %d`, commit, 1<<20+2))
	c := w.start(nil)
	waitFor(t, 90*time.Second, "the three new events in event_log", func() (bool, string) {
		n := w.chCount("SELECT count() FROM event_log FINAL WHERE event_type = 'new'")
		return n == 3, fmt.Sprintf("%d new events", n)
	})
	if !strings.Contains(c.out.String(), "more positions past the slot's than cdc keeps in memory") {
		t.Errorf("no warning says the stored positions are too many:\n%s", tail(c.out.String(), 20))
	}
	w.insertEvents("later", 2)
	waitFor(t, 60*time.Second, "the later events in event_log", func() (bool, string) {
		n := w.chCount("SELECT count() FROM event_log FINAL WHERE event_type = 'later'")
		return n == 2, fmt.Sprintf("%d later events", n)
	})
	if n := w.chCount("SELECT count() FROM event_log WHERE environment = 'old'"); n != 1<<20+2 {
		t.Errorf("%d rows of the old history, want the %d inserted", n, 1<<20+2)
	}
}

// event_log may hold rows of another WAL history than the server's: the
// database was moved to a new cluster, whose WAL starts again from a low
// position. Such a row can have the commit LSN and ordinal of a new event,
// and skipping the new event as already stored would lose it. A stored
// position past the server's WAL gives the other history away; while one
// is there, nothing is skipped.
func TestFaults_PositionsOfAnotherWALHistoryAreNotSkipped(t *testing.T) {
	w := newWorld(t)
	w.auditInserts()
	w.insertEvents("new", 3)
	commit := w.pendingCommitLSN()
	// Rows of the old history: one at the first new event's position, one
	// far past this server's WAL.
	for _, pos := range []struct {
		typ string
		lsn uint64
	}{{"old_same_position", commit}, {"old_far", 0xFFFF000000000000}} {
		w.chExec(fmt.Sprintf(`INSERT INTO event_log (event_id, event_type, event_date_time, environment, event_context, metadata_version, cdc_commit_lsn, cdc_seq)
			SELECT generateUUIDv4(), '%s', now(), 'old', '{}', 1, %d, 1`, pos.typ, pos.lsn))
	}
	c := w.start(nil)
	waitFor(t, 60*time.Second, "the three new events in event_log", func() (bool, string) {
		n := w.chCount("SELECT count() FROM event_log FINAL WHERE event_type = 'new'")
		return n == 3, fmt.Sprintf("%d new events", n)
	})
	if !strings.Contains(c.out.String(), "from another WAL history") {
		t.Errorf("no warning names the other WAL history:\n%s", tail(c.out.String(), 20))
	}
	w.insertEvents("later", 2)
	waitFor(t, 60*time.Second, "the later events in event_log", func() (bool, string) {
		n := w.chCount("SELECT count() FROM event_log FINAL WHERE event_type = 'later'")
		return n == 2, fmt.Sprintf("%d later events", n)
	})
	if n := w.chCount("SELECT count() FROM event_log WHERE environment = 'old'"); n != 2 {
		t.Errorf("%d rows of the old history, want the 2 inserted", n)
	}
}
