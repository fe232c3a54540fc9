package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/eventcdc/cdc/internal/testenv"
)

// An unreachable database at start is a runtime condition, not a
// configuration error: the connector logs what is wrong and keeps trying.
func TestStartup_UnreachablePostgresIsLoggedAndRetried(t *testing.T) {
	w := newWorld(t)
	dead := "postgres://postgres@127.0.0.1:" + strings.Split(testenv.FreeAddr(t), ":")[1] + "/nowhere?sslmode=disable"
	c := w.start(map[string]string{"CDC_PG_DSN": dead})
	waitFor(t, 30*time.Second, "two reconnect attempts logged", func() (bool, string) {
		return strings.Count(c.out.String(), "replication interrupted; reconnecting") >= 2, ""
	})
	out := c.out.String()
	if !strings.Contains(out, "connect to postgres for replication") || !strings.Contains(out, "connection refused") {
		t.Fatalf("log does not say what failed:\n%s", tail(out, 10))
	}
	select {
	case <-c.done:
		t.Fatalf("connector exited (%v); want it to keep retrying", c.err)
	default:
	}
}

// A missing publication needs an operator (run `cdc migrate`): exit 1 with
// the cause, instead of retrying forever in silence.
func TestStartup_MissingPublicationExitsOneNamingTheFix(t *testing.T) {
	w := newWorld(t)
	w.exec(`DROP PUBLICATION cdc_outbox`)
	c := w.start(nil)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		t.Fatal("connector still running without its publication")
	}
	if code := c.cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if out := c.out.String(); !strings.Contains(out, "publication does not exist: run `cdc migrate`") || !strings.Contains(out, `publication \"cdc_outbox\"`) {
		t.Fatalf("log does not name the publication and the fix:\n%s", tail(out, 10))
	}
	var n int
	if err := w.pg.QueryRow(context.Background(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdc_outbox' AND active`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("slot left active (%d, %v)", n, err)
	}
}

// A slot PostgreSQL invalidated (max_slot_wal_keep_size exceeded while the
// connector was down) cannot be resumed: exit 1 naming the cause, so the
// operator follows docs/operations.md "Slot invalidated".
func TestStartup_InvalidatedSlotExitsOneNamingTheCause(t *testing.T) {
	w := newWorld(t)
	w.env.PostgresDataDir(t) // needs a local server: it changes its settings
	w.exec(`ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`)
	w.exec(`SELECT pg_reload_conf()`)
	t.Cleanup(func() {
		_, _ = w.pg.Exec(context.Background(), `ALTER SYSTEM RESET max_slot_wal_keep_size`)
		_, _ = w.pg.Exec(context.Background(), `SELECT pg_reload_conf()`)
	})
	w.exec(`CREATE TABLE filler (b text)`)
	waitFor(t, 60*time.Second, "the slot to be invalidated", func() (bool, string) {
		// Write WAL past the limit and checkpoint: invalidation happens
		// when a checkpoint finds the slot too far behind.
		w.exec(`INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 20000)`)
		w.exec(`SELECT pg_switch_wal()`)
		w.exec(`CHECKPOINT`)
		var status string
		_ = w.pg.QueryRow(context.Background(), `SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = 'cdc_outbox'`).Scan(&status)
		return status == "lost", status
	})
	c := w.start(nil)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		t.Fatal("connector still running on an invalidated slot")
	}
	if code := c.cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if out := c.out.String(); !strings.Contains(out, "replication slot was invalidated (wal_status=lost)") {
		t.Fatalf("log does not name the cause:\n%s", tail(out, 10))
	}
}
