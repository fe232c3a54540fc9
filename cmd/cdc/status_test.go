package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/eventcdc/cdc/status"
)

// The lines of the report that depend on what could be read: a missing
// slot has no lag, a count past the bound is an estimate, and the
// retention hold is shown with the SQL that lifts it.
func TestPrintStatus(t *testing.T) {
	n := func(v int64) *int64 { return &v }
	yes, no := true, false
	lag := 2.5
	safe := int64(1 << 30)
	base := func() statusReport {
		return statusReport{
			Slot: status.Slot{Name: "cdc_outbox", Exists: true, Active: true, ActivePID: 7, ConfirmedLSN: "0/10", CurrentLSN: "0/20",
				WALStatus: "reserved", LagBytes: 16, RetainedWAL: 32, SafeWALBytes: &safe},
			LagSeconds: &lag, OutboxRows: n(12), OutboxRowsAtInfinity: n(0), DeadLetters: n(1),
			RetentionHeld: &no, RetentionHold: "cdc_outbox_retention_hold",
		}
	}
	for _, tc := range []struct {
		name   string
		change func(*statusReport)
		want   []string
	}{
		// The whole report, in order.
		{"streaming", func(*statusReport) {}, []string{
			"slot:              cdc_outbox (exists: true, active: true, pid 7)\n" +
				"confirmed lsn:     0/10 (server at 0/20)\n" +
				"lag:               16 bytes, 2.5 s\n" +
				"wal retained:      32 bytes (wal_status reserved)\n" +
				"wal before invalidation: 1073741824 bytes\n" +
				"outbox rows:       12\n" +
				"dead letters:      1\n" +
				"retention:         not held\n",
		}},
		{"slot invalidated", func(r *statusReport) {
			r.WALStatus, r.SafeWALBytes = "lost", nil
			r.LagSeconds, r.LagSecondsError = nil, "slot cdc_outbox is invalidated: the events it had not delivered are in the outbox only, for cdc backfill"
		}, []string{
			"lag:               16 bytes, seconds unknown (the slot is invalidated)\n",
			"wal retained:      32 bytes (wal_status lost)\n",
			"wal before invalidation: none: the slot IS invalidated (see docs/operations.md, Slot invalidated)\n",
		}},
		{"no WAL limit", func(r *statusReport) { r.SafeWALBytes = nil }, []string{
			"wal before invalidation: unlimited (max_slot_wal_keep_size = -1)\n",
		}},
		{"no slot", func(r *statusReport) {
			r.Slot = status.Slot{Name: "cdc_outbox", CurrentLSN: "0/20"}
			r.LagSeconds, r.LagSecondsError = nil, "slot cdc_outbox does not exist"
		}, []string{
			"slot:              cdc_outbox (exists: false, active: false)\n",
			"lag:               - (no slot)\n",
			"wal before invalidation: - (no slot)\n",
		}},
		// Another database's slot: the whole report, nothing of the slot's
		// read as this outbox's.
		{"another database's slot", func(r *statusReport) {
			r.OtherDatabase = "billing"
			r.LagSeconds, r.LagSecondsError = nil, "slot cdc_outbox belongs to database billing, not this one"
		}, []string{
			"slot:              cdc_outbox belongs to database billing, not this one: set CDC_SLOT_NAME to a slot of this database's (cdc run and migrate refuse this one)\n" +
				"outbox rows:       12\n" +
				"dead letters:      1\n" +
				"retention:         not held\n",
		}},
		{"lag seconds unknown", func(r *statusReport) { r.LagSeconds = nil }, []string{
			"lag:               16 bytes, seconds unknown (see the warning)\n",
		}},
		{"estimated rows", func(r *statusReport) { r.OutboxRows, r.OutboxRowsEstimated = n(412_000_000), true }, []string{
			"outbox rows:       about 412000000 (the planner's estimate: more than 1000000 to count)\n",
		}},
		{"estimated rows, some at infinity", func(r *statusReport) {
			r.OutboxRows, r.OutboxRowsEstimated, r.OutboxRowsAtInfinity = n(2_000_000), true, n(3)
		}, []string{
			"outbox rows:       about 2000000 (the planner's estimate: more than 1000000 to count), 3 at infinity or -infinity\n",
		}},
		{"more than the bound, no estimate", func(r *statusReport) { r.OutboxRows, r.OutboxRowsEstimated = n(1_000_001), true }, []string{
			"outbox rows:       more than 1000000\n",
		}},
		{"rows at infinity", func(r *statusReport) { r.OutboxRowsAtInfinity = n(2) }, []string{
			"outbox rows:       12 (2 at infinity or -infinity: dead letters, not lag)\n",
		}},
		{"held", func(r *statusReport) { r.RetentionHeld = &yes }, []string{
			"retention:         HELD by cdc_outbox_retention_hold: no outbox row is deleted; once `cdc verify` finds nothing missing, lift it: SELECT pg_drop_replication_slot('cdc_outbox_retention_hold');\n",
		}},
		{"hold unknown", func(r *statusReport) { r.RetentionHeld = nil }, []string{
			"retention:         unknown (see the warning)\n",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := base()
			tc.change(&r)
			var b bytes.Buffer
			printStatus(&b, r)
			for _, line := range tc.want {
				if !strings.Contains(b.String(), line) {
					t.Errorf("no line %q in:\n%s", line, b.String())
				}
			}
		})
	}
}
