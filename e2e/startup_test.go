package e2e

import (
	"context"
	"strings"
	"testing"
	"time"
)

// An unreachable database at start is a runtime condition, not a
// configuration error: the connector logs what is wrong and keeps trying.
func TestStartup_UnreachablePostgresIsLoggedAndRetried(t *testing.T) {
	w := newWorld(t)
	dead := "postgres://postgres@127.0.0.1:" + strings.Split(freePort(t), ":")[1] + "/nowhere?sslmode=disable"
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
