package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcdc/cdc/internal/testenv"
)

// refusingEventLog makes event_log's metadata_version a UInt8: cdc's own
// conversion refuses a value above 255, before any INSERT.
func (w *world) refusingEventLog() {
	w.t.Helper()
	if err := w.ch.Exec(context.Background(), "ALTER TABLE event_log MODIFY COLUMN metadata_version UInt8"); err != nil {
		w.t.Fatal(err)
	}
}

// refusingOnServer makes ClickHouse itself refuse rows whose environment is
// 'bad' (code 6, computing a MATERIALIZED column), which cdc's own
// conversion lets through: the INSERT fails as a whole, and cdc bisects.
func (w *world) refusingOnServer() {
	w.t.Helper()
	if err := w.ch.Exec(context.Background(), `ALTER TABLE event_log ADD COLUMN chk UInt8 MATERIALIZED toUInt8(if(environment = 'bad', 'x', '1'))`); err != nil {
		w.t.Fatal(err)
	}
}

// insertMixed commits one transaction of n rows, every refuseEvery-th of
// which event_log refuses (metadata_version 300, environment 'bad'), and
// returns the ids of the good and the refused ones.
func (w *world) insertMixed(typ string, n, refuseEvery int) (good, refused []string) {
	w.t.Helper()
	ctx := context.Background()
	tx, err := w.pg.Begin(ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	for i := 1; i <= n; i++ {
		id, version, env := uuid.NewString(), 1, "test"
		if i%refuseEvery == 0 {
			version, env = 300, "bad"
			refused = append(refused, id)
		} else {
			good = append(good, id)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO outbox (id, event_type, environment, event_context, metadata_version)
			VALUES ($1, $2, $5, json_build_object('i', $3::int, 'pad', repeat('x', 200)), $4)`, id, typ, i, version, env); err != nil {
			w.t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		w.t.Fatal(err)
	}
	return good, refused
}

// letterIDs returns the event ids of every dead letter, sorted, one per
// letter (an id set aside twice shows twice).
func (w *world) letterIDs() []string {
	w.t.Helper()
	var ids []string
	rows, err := w.pg.Query(context.Background(), `SELECT event_id::text FROM cdc_dead_letter ORDER BY 1`)
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			w.t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		w.t.Fatal(err)
	}
	return ids
}

// eventLogIDs returns event_log's event ids of type typ, sorted, one per
// raw row.
func (w *world) eventLogIDs(typ string) []string {
	w.t.Helper()
	rows, err := w.ch.Query(context.Background(), `SELECT toString(event_id) FROM event_log WHERE event_type = ? ORDER BY 1`, typ)
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	ids := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			w.t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		w.t.Fatal(err)
	}
	return ids
}

// A batch with refused rows is stored in ClickHouse (its good rows) and
// then waits for its dead letters, which a lock on cdc_dead_letter holds
// up; cdc is killed there, before it acknowledged anything. The restart
// replays the transaction: the good rows are found stored and skipped,
// the refused ones are refused again and set aside — each event once,
// in one place or the other.
func TestFaults_Kill9WhileDeadLettersWait(t *testing.T) {
	w := newWorld(t)
	w.auditInserts()
	c := w.start(nil)
	w.insertEvents("before", 1)
	w.waitRows(1, 60*time.Second)
	w.refusingEventLog()

	ctx := context.Background()
	lock, err := w.pg.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lock.Rollback(ctx) }()
	if _, err := lock.Exec(ctx, `LOCK TABLE cdc_dead_letter IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	good, refused := w.insertMixed("mixed", 40, 7)
	committed := w.currentLSN() // past the transaction's end
	w.waitRows(uint64(1+len(good)), 60*time.Second)
	waitFor(t, 30*time.Second, "the refused rows logged", func() (bool, string) {
		return strings.Count(c.out.String(), "row refused by the sink") >= len(refused), tail(c.out.String(), 3)
	})
	c.kill()
	if now := w.slotConfirmed(); w.lsnLE(committed, now) {
		t.Fatalf("slot confirmed %s, past the transaction (%s), before its dead letters were stored", now, committed)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	c = w.start(nil)
	waitFor(t, 60*time.Second, "the dead letters", func() (bool, string) {
		n := len(w.letterIDs())
		return n >= len(refused), fmt.Sprintf("%d letters", n)
	})
	w.insertEvents("after", 2)
	w.waitRows(uint64(1+len(good)+2), 60*time.Second)
	w.assertExactlyOnce(uint64(1 + len(good) + 2))
	sameIDs(t, "mixed events in event_log", w.eventLogIDs("mixed"), good)
	sameIDs(t, "dead letters", w.letterIDs(), refused)
}

// A batch with refused rows is stored and its dead letters too, and the
// slot acknowledged; PostgreSQL then crashes before the slot's position
// reached its disk (an older open transaction holds restart_lsn, and with
// it the slot's saves), so the transaction is sent again. The good rows
// are found in ClickHouse and the refused ones among the dead letters:
// nothing is stored or set aside twice.
func TestFaults_PostgresCrashAfterDeadLetters(t *testing.T) {
	w := newWorld(t)
	if !w.env.Local() {
		t.Skip("servers come from the environment; cannot crash PostgreSQL")
	}
	w.auditInserts()
	ctx := context.Background()
	w.exec(`CREATE TABLE hold_restart (x int)`)
	w.exec(`CHECKPOINT`)
	older, err := w.pg.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = older.Rollback(ctx) }()
	if _, err := older.Exec(ctx, `INSERT INTO hold_restart VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	c := w.start(nil)
	waitStreaming(t, c, 1)
	// The slot is saved to disk when its restart_lsn or catalog_xmin
	// moves: let both reach where the open transaction holds them, and
	// check below that neither moved again before the crash.
	w.insertEvents("warm_up", 1)
	w.waitRows(1, 60*time.Second)
	w.exec(`CHECKPOINT`)
	held := func() string {
		var s string
		if err := w.pg.QueryRow(ctx, `SELECT restart_lsn::text || ' ' || catalog_xmin::text FROM pg_replication_slots WHERE slot_name = 'cdc_outbox'`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	var before string
	waitFor(t, 30*time.Second, "the slot's restart_lsn to stop at the open transaction", func() (bool, string) {
		w.insertEvents("warm_up", 1)
		time.Sleep(time.Second)
		now := held()
		ok := now == before
		before = now
		return ok, now
	})
	w.refusingEventLog()
	good, refused := w.insertMixed("mixed", 40, 7)
	warm := w.chCount("SELECT count() FROM event_log WHERE event_type = 'warm_up'")
	w.waitRows(warm+uint64(len(good)), 60*time.Second)
	waitFor(t, 30*time.Second, "the dead letters", func() (bool, string) {
		n := len(w.letterIDs())
		return n >= len(refused), fmt.Sprintf("%d letters", n)
	})
	end := w.currentLSN()
	waitFor(t, 30*time.Second, "the slot to confirm the transaction", func() (bool, string) {
		c := w.slotConfirmed()
		return w.lsnLE(end, c), c
	})
	if now := held(); now != before {
		t.Fatalf("the slot's restart_lsn and catalog_xmin moved from %s to %s: saved to disk past the transaction", before, now)
	}
	sessions, logged := c.streamingCount(), len(c.out.String())

	w.env.CrashPostgres(t)
	w.pg.Reset()
	waitFor(t, 60*time.Second, "postgres to accept connections", func() (bool, string) {
		err := w.pg.Ping(context.Background())
		return err == nil, fmt.Sprint(err)
	})
	waitStreaming(t, c, sessions+1)
	m := alreadyStored.FindStringSubmatch(c.out.String()[logged:])
	t.Logf("first session after the crash: %v", m)
	w.insertEvents("after", 2)
	w.waitRows(warm+uint64(len(good)+2), 60*time.Second)
	w.assertExactlyOnce(warm + uint64(len(good)+2))
	sameIDs(t, "mixed events in event_log", w.eventLogIDs("mixed"), good)
	sameIDs(t, "dead letters", w.letterIDs(), refused)
	if m == nil || m[1] == "0" {
		t.Errorf("the crash sent nothing again (already_stored %v): the test did not test the replay", m)
	}
}

// cdc is killed while it bisects a refused batch: some halves are stored,
// the others not yet. The restart finds the stored halves, skips them and
// bisects the rest: each good event stored once, each refused one set
// aside once.
func TestFaults_Kill9DuringBisection(t *testing.T) {
	w := newWorld(t)
	w.auditInserts()
	w.refusingOnServer()
	// Each INSERT takes 300 ms longer: a bisection of 2,000 rows makes
	// tens of them, and the kill lands halfway.
	w.slowInserts(300 * time.Millisecond)
	good, refused := w.insertMixed("mixed", 2000, 997)
	c := w.start(map[string]string{"CDC_BATCH_MAX_ROWS": "5000"})
	waitFor(t, 60*time.Second, "part of the batch stored", func() (bool, string) {
		n := w.chCount("SELECT count() FROM event_log")
		return n > 0, fmt.Sprintf("%d rows", n)
	})
	c.kill()
	atKill := w.chCount("SELECT count() FROM event_log")
	t.Logf("SIGKILL with %d of %d good rows stored", atKill, len(good))
	if atKill >= uint64(len(good)) {
		t.Fatal("the bisection ended before the kill")
	}
	w.start(map[string]string{"CDC_BATCH_MAX_ROWS": "5000"})
	w.waitRows(uint64(len(good)), 120*time.Second)
	waitFor(t, 60*time.Second, "the dead letters", func() (bool, string) {
		n := len(w.letterIDs())
		return n >= len(refused), fmt.Sprintf("%d letters", n)
	})
	w.assertExactlyOnce(uint64(len(good)))
	sameIDs(t, "mixed events in event_log", w.eventLogIDs("mixed"), good)
	sameIDs(t, "dead letters", w.letterIDs(), refused)
}

// crashLoad is writers committing small outbox transactions through
// server crashes: a commit that fails may have committed all the same, so
// what was committed is read back from the outbox at the end, not counted
// here.
type crashLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	fails  int
}

func (w *world) startCrashLoad(writers int) *crashLoad {
	w.t.Helper()
	cfg, err := pgxpool.ParseConfig(w.pgDSN)
	if err != nil {
		w.t.Fatal(err)
	}
	cfg.MaxConns = int32(writers)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &crashLoad{cancel: cancel}
	for i := 0; i < writers; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				tctx, tcancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := pool.Exec(tctx, `INSERT INTO outbox (event_type, environment, event_context)
					SELECT 'load', 'test', json_build_object('n', g, 'pad', repeat('p', 64)) FROM generate_series(1, 1 + (random() * 7)::int) g`)
				tcancel()
				if err != nil {
					l.mu.Lock()
					l.fails++
					l.mu.Unlock()
					time.Sleep(50 * time.Millisecond)
					continue
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	w.t.Cleanup(func() { l.stop(); pool.Close() })
	return l
}

func (l *crashLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

// assertOutboxExactlyOnce checks event_log against the outbox: every
// outbox id there once, as a raw row and under FINAL, and nothing else.
func (w *world) assertOutboxExactlyOnce() {
	w.t.Helper()
	ids := w.outboxIDs("true")
	w.waitRows(uint64(len(ids)), 120*time.Second)
	w.assertExactlyOnce(uint64(len(ids)))
	if n := w.chCount("SELECT uniqExact(event_id) FROM event_log"); n != uint64(len(ids)) {
		w.t.Errorf("%d distinct event ids in event_log, want the outbox's %d", n, len(ids))
	}
	got := map[string]bool{}
	for _, id := range w.eventLogIDs("load") {
		got[id] = true
	}
	missing := 0
	for _, id := range ids {
		if !got[id] {
			missing++
		}
	}
	if missing > 0 {
		w.t.Errorf("%d outbox ids missing from event_log", missing)
	}
}

// PostgreSQL crashes (an immediate stop: no checkpoint, the slot's
// position on disk older than the one confirmed) three times under
// concurrent load: each restart replays from the older position, and the
// connector skips what it stored. event_log ends with the outbox's ids,
// once each.
func TestFaults_PostgresCrashesUnderConcurrentLoad(t *testing.T) {
	w := newWorld(t)
	if !w.env.Local() {
		t.Skip("servers come from the environment; cannot crash PostgreSQL")
	}
	w.auditInserts()
	c := w.start(map[string]string{"CDC_FLUSH_INTERVAL": "100ms", "CDC_BATCH_MAX_ROWS": "300"})
	waitStreaming(t, c, 1)
	l := w.startCrashLoad(4)
	replayed := 0
	for i := 0; i < 3; i++ {
		time.Sleep(1500*time.Millisecond + rand.N(time.Second))
		sessions, logged := c.streamingCount(), len(c.out.String())
		w.env.CrashPostgres(t)
		w.pg.Reset()
		waitStreaming(t, c, sessions+1)
		if m := alreadyStored.FindStringSubmatch(c.out.String()[logged:]); m != nil && m[1] != "0" {
			replayed++
		}
	}
	time.Sleep(time.Second)
	l.stop()
	t.Logf("%d of 3 crashes made the connector skip rows stored past the slot's position; %d commits failed", replayed, l.fails)
	w.assertOutboxExactlyOnce()
	if !c.alive() {
		t.Fatalf("connector exited: %v", c.err)
	}
}

// ClickHouse is killed (SIGKILL) under load, now while an INSERT's rows
// are in event_log and it has not returned, now anywhere: the connector
// retries, asks which rows landed and stores the rest. event_log ends with
// the outbox's ids, once each, as raw rows too: merges are stopped (again
// after each start), so none hides a duplicate, bar one in the moment
// between a start and the stop. (The insert-counting
// view of the other fault tests cannot count here: a kill between an
// INSERT's part of event_log and the view's leaves them apart.)
func TestFaults_ClickHouseKilledUnderLoad(t *testing.T) {
	w := newWorld(t)
	if !w.env.Local() {
		t.Skip("servers come from the environment; cannot kill ClickHouse")
	}
	stopMerges := func() { w.chExec(`SYSTEM STOP MERGES`) }
	stopMerges()
	t.Cleanup(func() { _ = w.ch.Exec(context.Background(), `SYSTEM START MERGES`) })
	w.slowInserts(300 * time.Millisecond)
	// Batches cut every half second: with merges stopped, event_log
	// must stay under the 300 parts past which ClickHouse refuses INSERTs.
	c := w.start(map[string]string{"CDC_FLUSH_INTERVAL": "500ms"})
	waitStreaming(t, c, 1)
	l := w.startCrashLoad(4)
	aimed := 0
	for i := 0; i < 4; i++ {
		time.Sleep(1500*time.Millisecond + rand.N(time.Second))
		if i%2 == 0 && w.waitStoredUnreturned(3*time.Second) {
			aimed++
		}
		w.env.CrashClickHouse(t)
		w.chReconnect()
		stopMerges()
	}
	time.Sleep(time.Second)
	l.stop()
	t.Logf("%d of 4 kills while an INSERT's rows were stored and it had not returned", aimed)
	ids := w.outboxIDs("true")
	want := uint64(len(ids))
	w.waitRows(want, 120*time.Second)
	final, raw, distinct := w.chCount("SELECT count() FROM event_log FINAL"), w.chCount("SELECT count() FROM event_log"), w.chCount("SELECT uniqExact(event_id) FROM event_log")
	t.Logf("outbox %d; event_log FINAL %d, raw %d, distinct ids %d", want, final, raw, distinct)
	if final != want || raw != want || distinct != want {
		t.Errorf("want exactly %d events: FINAL %d, raw %d, distinct %d", want, final, raw, distinct)
	}
	sameIDs(t, "event ids", w.eventLogIDs("load"), ids)
	if !c.alive() {
		t.Fatalf("connector exited: %v", c.err)
	}
}

// PostgreSQL crashes while cdc stores a committed transaction streamed in
// blocks (larger than logical_decoding_work_mem): part of it is in
// ClickHouse and nothing of it acknowledged. The same process reconnects,
// is sent the transaction again, finds the stored part and stores the
// rest: every row once.
func TestFaults_PostgresCrashDuringStreamedTransaction(t *testing.T) {
	w := newWorld(t)
	if !w.env.Local() {
		t.Skip("servers come from the environment; cannot crash PostgreSQL")
	}
	w.auditInserts()
	w.slowInserts(300 * time.Millisecond)
	w.insertEvents("big", 20000)
	c := w.start(map[string]string{
		"CDC_PG_DSN":         withDecodingMemory(t, w.pgDSN, "64kB"),
		"CDC_BATCH_MAX_ROWS": "1000",
	})
	waitFor(t, 60*time.Second, "the first rows in ClickHouse", func() (bool, string) {
		return w.chCount("SELECT count() FROM event_log") > 0, "none yet"
	})
	sessions, logged := c.streamingCount(), len(c.out.String())
	w.env.CrashPostgres(t)
	atCrash := w.chCount("SELECT count() FROM event_log")
	t.Logf("PostgreSQL crashed with %d of 20000 rows stored", atCrash)
	if atCrash >= 20000 {
		t.Fatal("the whole transaction was stored before the crash")
	}
	w.pg.Reset()
	waitStreaming(t, c, sessions+1)
	w.insertEvents("after", 2)
	w.waitRows(20002, 120*time.Second)
	w.assertExactlyOnce(20002)
	t.Logf("after the crash: %v", alreadyStored.FindStringSubmatch(c.out.String()[logged:]))
}

// Two `cdc run` on one slot, and the one streaming is frozen (SIGSTOP: a
// paused VM, a stopped container) under load, with batches in hand and
// INSERTs in flight. Its walsender times out, the standby takes the slot
// over and replays what was not acknowledged; the frozen one, woken, must
// not store or acknowledge what it held. Three freezes, the roles
// swapping; event_log ends with the outbox's ids, once each, as raw rows.
func TestFaults_FrozenConnectorAndAStandby(t *testing.T) {
	w := newWorld(t)
	w.auditInserts()
	w.slowInserts(200 * time.Millisecond)
	// The walsender of a frozen connector ends 2 s after it heard from it
	// last, PostgreSQL's default being a minute.
	dsn := w.pgDSN + "&options=-c%20wal_sender_timeout%3D2s"
	// A connector frozen while it sent an INSERT leaves it running on
	// ClickHouse, and the standby waits for it to end before it reads
	// what is stored (settle): ClickHouse ends it after its
	// receive_timeout without a byte, 300 s by default, 3 s here.
	chDSN := w.chDSN + "?receive_timeout=3"
	if strings.Contains(w.chDSN, "?") {
		chDSN = w.chDSN + "&receive_timeout=3"
	}
	env := map[string]string{"CDC_PG_DSN": dsn, "CDC_CLICKHOUSE_DSN": chDSN, "CDC_FLUSH_INTERVAL": "100ms", "CDC_BATCH_MAX_ROWS": "300"}
	a, b := w.start(env), w.start(env)
	t.Cleanup(func() {
		for _, c := range []*connector{a, b} {
			_ = c.cmd.Process.Signal(syscall.SIGCONT)
		}
	})
	l := w.startCrashLoad(4)
	active := func() (*connector, *connector) {
		var on, off *connector
		waitFor(t, 60*time.Second, "one connector streaming", func() (bool, string) {
			on, off = nil, nil
			var pid int
			if err := w.pg.QueryRow(context.Background(), `SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = 'cdc_outbox'`).Scan(&pid); err != nil || pid == 0 {
				return false, fmt.Sprint("no active walsender ", err)
			}
			// The one whose log ends in a streaming session.
			as, bs := strings.LastIndex(a.out.String(), "\tstreaming\t"), strings.LastIndex(b.out.String(), "\tstreaming\t")
			ai, bi := strings.LastIndex(a.out.String(), "standing by"), strings.LastIndex(b.out.String(), "standing by")
			switch {
			case as > ai && !(bs > bi):
				on, off = a, b
			case bs > bi && !(as > ai):
				on, off = b, a
			default:
				return false, "both or neither streaming"
			}
			return true, ""
		})
		return on, off
	}
	for i := 0; i < 3; i++ {
		on, off := active()
		time.Sleep(1500*time.Millisecond + rand.N(time.Second))
		_ = w.waitStoredUnreturned(2 * time.Second)
		sessions := off.streamingCount()
		if err := on.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		waitStreaming(t, off, sessions+1)
		time.Sleep(time.Second + rand.N(2*time.Second))
		if err := on.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
	}
	l.stop()
	ids := w.outboxIDs("true")
	w.waitRows(uint64(len(ids)), 120*time.Second)
	w.assertExactlyOnce(uint64(len(ids)))
	sameIDs(t, "event ids", w.eventLogIDs("load"), ids)
	for _, c := range []*connector{a, b} {
		if !c.alive() {
			t.Errorf("a connector exited: %v", c.err)
		}
	}
}

// cdc is killed while it sends an INSERT of many blocks over a slow link
// to ClickHouse, which may store what it received of it after the client
// went. The next process waits for that INSERT to end before it reads
// what is stored, and stores the rest: every row once, as raw rows.
func TestFaults_Kill9DuringAMultiBlockInsert(t *testing.T) {
	w := newWorld(t)
	w.auditInserts()
	u, err := url.Parse(w.chDSN)
	if err != nil {
		t.Fatal(err)
	}
	fz := testenv.NewFreezer(t, u.Host)
	slow := *u
	slow.Host = fz.Addr()
	// 20,000 events of about 1 KB that LZ4 cannot shrink (md5s): 20 MB, a
	// batch of 16 MiB in blocks of 2 MiB, sent at 2 MB/s.
	w.exec(`INSERT INTO outbox (event_type, environment, event_context)
		SELECT 'big', 'test', json_build_object('n', g, 'pad', (SELECT string_agg(md5(g::text || ':' || i::text), '') FROM generate_series(1, 30) i))
		FROM generate_series(1, 20000) g`)
	fz.SetRate(2 << 20)
	c := w.start(map[string]string{"CDC_CLICKHOUSE_DSN": slow.String()})
	waitFor(t, 60*time.Second, "an INSERT on its way", func() (bool, string) {
		n := w.chCount(`SELECT count() FROM system.processes WHERE query LIKE 'INSERT INTO event_log%'`)
		return n > 0, "none yet"
	})
	time.Sleep(3 * time.Second)
	c.kill()
	fz.SetRate(0)
	t.Logf("SIGKILL with %d rows in event_log", w.chCount("SELECT count() FROM event_log"))
	c = w.start(nil)
	w.insertEvents("after", 2)
	w.waitRows(20002, 120*time.Second)
	w.assertExactlyOnce(20002)
	t.Logf("restart: %v", alreadyStored.FindStringSubmatch(c.out.String()))
}

// SIGTERM while a batch's dead letters wait on a lock: the shutdown's
// budget runs out, cdc exits 0 without acknowledging the batch, and the
// next start stores each event once, in one place or the other.
func TestFaults_SIGTERMWhileDeadLettersWait(t *testing.T) {
	w := newWorld(t)
	w.auditInserts()
	env := map[string]string{"CDC_SHUTDOWN_TIMEOUT": "2s"}
	c := w.start(env)
	waitStreaming(t, c, 1)
	w.refusingEventLog()
	ctx := context.Background()
	lock, err := w.pg.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lock.Rollback(ctx) }()
	if _, err := lock.Exec(ctx, `LOCK TABLE cdc_dead_letter IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	good, refused := w.insertMixed("mixed", 40, 7)
	committed := w.currentLSN()
	w.waitRows(uint64(len(good)), 60*time.Second)
	waitFor(t, 30*time.Second, "the refused rows logged", func() (bool, string) {
		return strings.Count(c.out.String(), "row refused by the sink") >= len(refused), tail(c.out.String(), 3)
	})
	code, took := c.term(30 * time.Second)
	t.Logf("exit %d after %s; last lines:\n%s", code, took.Round(time.Millisecond), tail(c.out.String(), 4))
	if code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	// Not "cleanly": the dead letters were not stored, and the next start
	// replays their batch.
	if last := lastLine(c.out.String()); !strings.Contains(last, "shut down; what was not stored within CDC_SHUTDOWN_TIMEOUT (rows in ClickHouse, refused rows' dead letters in PostgreSQL)") {
		t.Errorf("last line %q, want the shutdown that left a batch unstored", last)
	}
	if now := w.slotConfirmed(); w.lsnLE(committed, now) {
		t.Fatalf("slot confirmed %s, past the transaction (%s), before its dead letters were stored", now, committed)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	w.start(env)
	waitFor(t, 60*time.Second, "the dead letters", func() (bool, string) {
		n := len(w.letterIDs())
		return n >= len(refused), fmt.Sprintf("%d letters", n)
	})
	w.insertEvents("after", 2)
	w.waitRows(uint64(len(good)+2), 60*time.Second)
	w.assertExactlyOnce(uint64(len(good) + 2))
	sameIDs(t, "dead letters", w.letterIDs(), refused)
}
