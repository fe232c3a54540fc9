package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eventcdc/cdc/internal/testenv"
)

// withDecodingMemory returns dsn with logical_decoding_work_mem set for
// its sessions: at 64kB (PostgreSQL's smallest) the walsender streams any
// transaction over 64 kB before its commit instead of at it.
func withDecodingMemory(t *testing.T, dsn, mem string) string {
	t.Helper()
	out, err := testenv.DecodingMemoryDSN(dsn, mem)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A transaction streamed before its commit, with a subtransaction rolled
// back to its savepoint in the middle, and the connector killed while it
// is storing the transaction's blocks: after the restart every committed
// row is in ClickHouse exactly once — the restart asks ClickHouse which of
// the transaction's rows it holds and skips them — and none of the rolled
// back ones ever is.
func TestFaults_Kill9DuringStreamedTransaction(t *testing.T) {
	w := newWorld(t)
	w.auditInserts()
	// Twenty INSERTs of 1,000 rows, each 300 ms longer: the kill below,
	// once the first rows are in ClickHouse, lands with most of the
	// transaction still to store, however fast the host.
	w.slowInserts(300 * time.Millisecond)
	ctx := context.Background()
	tx, err := w.pg.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	insert := func(typ string, n int) {
		t.Helper()
		if _, err := tx.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context)
			SELECT $1, 'test', json_build_object('n', g, 'pad', repeat('x', 200)) FROM generate_series(1, $2) g`, typ, n); err != nil {
			t.Fatal(err)
		}
	}
	insert("kept", 10000)
	if _, err := tx.Exec(ctx, "SAVEPOINT sp"); err != nil {
		t.Fatal(err)
	}
	insert("rolled_back", 1000)
	if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT sp"); err != nil {
		t.Fatal(err)
	}
	insert("kept", 10000)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	env := map[string]string{
		"CDC_PG_DSN":         withDecodingMemory(t, w.pgDSN, "64kB"),
		"CDC_BATCH_MAX_ROWS": "1000",
	}
	c := w.start(env)
	waitFor(t, 60*time.Second, "the first rows in ClickHouse", func() (bool, string) {
		return w.chCount("SELECT count() FROM event_log") > 0, "none yet"
	})
	c.kill()
	atKill := w.chCount("SELECT count() FROM event_log")
	t.Logf("SIGKILL with %d of 20000 rows stored", atKill)
	if atKill >= 20000 {
		t.Fatalf("the whole transaction was stored before the kill; nothing was resumed")
	}
	if !strings.Contains(c.out.String(), `"large_transactions_streamed": true`) {
		t.Fatalf("the connector did not ask for streaming:\n%s", tail(c.out.String(), 20))
	}

	c = w.start(env)
	w.waitRows(20000, 90*time.Second)
	w.assertExactlyOnce(20000)
	if n := w.chCount("SELECT count() FROM event_log WHERE event_type = 'rolled_back'"); n != 0 {
		t.Errorf("%d rows of the rolled-back subtransaction in event_log", n)
	}
	if atKill > 0 && !strings.Contains(c.out.String(), "streamed transaction partly stored by an earlier session") {
		t.Errorf("the restart did not report skipping the stored part:\n%s", tail(c.out.String(), 20))
	}
}

// The transaction cdc waits out — a large one still open when it was
// streamed, read again without streaming until it ends — is stored whole at
// its commit, and so is any other large one committed meanwhile. A
// PostgreSQL crash soon after sends them once more, now streamed: the slot's position reaches disk only at a checkpoint or when
// its restart_lsn moves, which an older open transaction holds back here
// (a checkpoint first: none comes for the next 5 minutes). The replay finds
// the stored rows where cdc placed them, by the commit, in the replay
// window: every row once.
func TestFaults_PostgresCrashResendsAWaitedOutTransaction(t *testing.T) {
	w := newWorld(t)
	if !w.env.Local() {
		t.Skip("servers come from the environment; cannot crash PostgreSQL")
	}
	w.auditInserts()
	ctx := context.Background()
	w.exec(`CREATE TABLE hold_restart (x int)`)
	w.exec(`CHECKPOINT`)
	// Open, with a change of its own in the WAL: decoding keeps the slot's
	// restart_lsn before its first change (a transaction that only took
	// an xid would not hold it).
	older, err := w.pg.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = older.Rollback(ctx) }()
	if _, err := older.Exec(ctx, `INSERT INTO hold_restart VALUES (1)`); err != nil {
		t.Fatal(err)
	}

	c := w.start(map[string]string{"CDC_PG_DSN": withDecodingMemory(t, w.pgDSN, "64kB")})
	waitStreaming(t, c, 1)
	switched := func(streaming bool) func() (bool, string) {
		want := fmt.Sprintf(`"streaming": %v`, streaming)
		return func() (bool, string) {
			for _, line := range strings.Split(c.out.String(), "\n") {
				if strings.Contains(line, "reconnecting to switch streaming of large transactions") && strings.Contains(line, want) {
					return true, ""
				}
			}
			return false, tail(c.out.String(), 3)
		}
	}
	tx, err := w.pg.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `INSERT INTO outbox (event_type, environment, event_context)
		SELECT 'waited', 'test', json_build_object('n', g, 'pad', repeat('x', 200)) FROM generate_series(1, 600) g`); err != nil {
		t.Fatal(err)
	}
	w.exec(`SELECT pg_switch_wal()`) // the walsender reads only flushed WAL
	waitFor(t, 60*time.Second, "a reconnect without streaming", switched(false))
	// Another large transaction, committed while the session without
	// streaming runs: sent whole too, and streamed after the crash.
	w.insertEvents("during", 600)
	w.waitRows(600, 60*time.Second)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	w.waitRows(1200, 60*time.Second)
	waitFor(t, 60*time.Second, "a reconnect to stream again", switched(true))
	waitFor(t, 60*time.Second, "streaming again", func() (bool, string) {
		out := c.out.String()
		i := strings.LastIndex(out, "reconnecting to switch streaming of large transactions")
		return strings.Contains(out[i:], "\tstreaming\t"), tail(out, 3)
	})
	sessions, logged := c.streamingCount(), len(c.out.String())

	w.env.CrashPostgres(t)
	w.pg.Reset() // every pooled connection died with the server
	waitFor(t, 60*time.Second, "postgres to accept connections", func() (bool, string) {
		err := w.pg.Ping(context.Background())
		return err == nil, fmt.Sprint(err)
	})
	waitStreaming(t, c, sessions+1)
	replayed := -1 // as the first session after the crash found
	if m := alreadyStored.FindStringSubmatch(c.out.String()[logged:]); m != nil {
		replayed, _ = strconv.Atoi(m[1])
	}
	if replayed < 1200 {
		t.Fatalf("the first session after the crash found %d rows already stored past the slot's position, want the two transactions' 1200: they were not sent again\n%s", replayed, tail(c.out.String(), 20))
	}
	w.insertEvents("after", 1)
	w.waitRows(1201, 60*time.Second)
	if !c.alive() {
		t.Fatalf("connector exited: %v", c.err)
	}
	// Both were streamed this time, and found stored by their commits.
	if n := strings.Count(c.out.String()[logged:], "streamed transaction stored, in part or whole, by an earlier session that was sent it at its commit"); n != 2 {
		t.Errorf("%d streamed transactions found stored by their commit after the crash, want 2\n%s", n, tail(c.out.String(), 20))
	}
	w.assertExactlyOnce(1201)
}
