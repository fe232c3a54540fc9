package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/retention"
)

// A hold of another slot of the database (a second pipeline of the same
// outbox) keeps this pipeline's retention from deleting too, and cdc
// status said "retention: not held" meanwhile, while the outbox grew.
// It names that hold and the slot it holds for; a hold of a slot of
// another database is not this outbox's and is not named.
func TestStatus_NamesTheHoldOfAnotherSlotOfTheDatabase(t *testing.T) {
	ctx := context.Background()
	env := testenv.Get(t)
	for _, tc := range []struct {
		name     string
		sameDB   bool
		wantHeld bool
		wantText string
	}{
		{name: "a slot of the same database", sameDB: true, wantHeld: true,
			wantText: "retention:         HELD by %s, the hold of slot %s of this database, another pipeline's: no outbox row is deleted; once that pipeline's `cdc verify` finds nothing missing, lift it: SELECT pg_drop_replication_slot('%[1]s');\n"},
		{name: "a slot of another database", sameDB: false, wantText: "retention:         not held\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool := env.MigratedPostgres(t, "pub")
			otherPool := pool
			if !tc.sameDB {
				otherPool = env.MigratedPostgres(t, "pub")
			}
			slot := testenv.Name("s")
			other := slot + "_b"
			t.Cleanup(func() {
				_, _ = pool.Exec(context.Background(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, retention.HoldName(other))
			})
			if _, err := pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
				t.Fatal(err)
			}
			if _, err := otherPool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, other); err != nil {
				t.Fatal(err)
			}
			if created, err := retention.Hold(ctx, otherPool, other); err != nil || !created {
				t.Fatalf("Hold(%s): created %v, %v", other, created, err)
			}
			run := func(args ...string) string {
				t.Helper()
				vars := map[string]string{
					"CDC_PG_DSN":         pool.Config().ConnString(),
					"CDC_CLICKHOUSE_DSN": env.NewClickHouse(t),
					"CDC_SLOT_NAME":      slot,
					"CDC_PUBLICATION":    "pub",
					"CDC_METRICS_ADDR":   "off",
				}
				var stdout, stderr bytes.Buffer
				if code := Main(ctx, append([]string{"status"}, args...), func(k string) string { return vars[k] }, nil, &stdout, &stderr); code != 0 {
					t.Fatalf("cdc status %v: exit %d, stderr %s", args, code, stderr.String())
				}
				return stdout.String()
			}
			var r struct {
				Held    *bool  `json:"retention_held"`
				Hold    string `json:"retention_hold"`
				HeldFor string `json:"retention_held_for"`
			}
			if err := json.Unmarshal([]byte(run("--json")), &r); err != nil {
				t.Fatal(err)
			}
			wantHold, wantFor := retention.HoldName(slot), ""
			if tc.wantHeld {
				wantHold, wantFor = retention.HoldName(other), other
			}
			if r.Held == nil || *r.Held != tc.wantHeld || r.Hold != wantHold || r.HeldFor != wantFor {
				held := "null"
				if r.Held != nil {
					held = strconv.FormatBool(*r.Held)
				}
				t.Fatalf("retention_held %s, retention_hold %q, retention_held_for %q; want %v, %q, %q", held, r.Hold, r.HeldFor, tc.wantHeld, wantHold, wantFor)
			}
			want := tc.wantText
			if tc.wantHeld {
				want = strings.Replace(tc.wantText, "%s", wantHold, 1)
				want = strings.Replace(want, "%s", other, 1)
				want = strings.ReplaceAll(want, "%[1]s", wantHold)
			}
			if out := run(); !strings.Contains(out, want) {
				t.Fatalf("cdc status printed\n%s\nwant the line %q", out, want)
			}
		})
	}
}
