package e2e

import (
	"context"
	"encoding/json"
	"fmt"
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
// operator follows docs/operations.md "Slot invalidated"; so does a migrate
// before the slot is dropped. Its recovery, as
// written there, ships the events the lost slot never streamed: migrate
// recreates the slot and names the oldest of them and the backfill to run,
// and after that backfill verify finds none missing.
func TestStartup_InvalidatedSlotExitsOneNamingTheCause(t *testing.T) {
	w := newWorld(t)
	w.env.PostgresDataDir(t) // needs a local server: it changes its settings
	w.exec(`INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT 'lost', 'test', json_build_object('n', g), timestamptz '2026-01-02 03:04:05.6+00' + g * interval '1 minute'
		FROM generate_series(0, 99) g`)
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

	// The lag in seconds cannot be told: the events the slot lost may
	// be older than event_log's newest, which the estimate starts from.
	out, stderr, code := w.runOperator(nil, "status", "--json")
	var lost struct {
		WALStatus       string   `json:"wal_status"`
		LagSeconds      *float64 `json:"lag_seconds"`
		LagSecondsError string   `json:"lag_seconds_error"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &lost) != nil || lost.WALStatus != "lost" || lost.LagSeconds != nil ||
		lost.LagSecondsError != "slot cdc_outbox is invalidated: the events it had not delivered are in the outbox only, for cdc backfill" {
		t.Fatalf("status --json on an invalidated slot exited %d:\n%s%s", code, out, stderr)
	}
	if out, code := w.runOnce(nil, "status"); code != 0 || !strings.Contains(out, " bytes, seconds unknown (the slot is invalidated)\n") {
		t.Fatalf("status on an invalidated slot exited %d:\n%s", code, out)
	}

	// A migrate before the slot is dropped (a deploy's migrate job, a
	// removed deployment's slot left behind) said `migrated` over a slot
	// cdc run exits 1 on at every start: it names the drop.
	if out, code := w.runOnce(nil, "migrate"); code != 1 || !strings.Contains(out,
		"replication slot cdc_outbox was invalidated (wal_status lost): PostgreSQL removed WAL it had not streamed, and cdc run cannot stream from it: "+
			"stop every cdc run for it, drop it (SELECT pg_drop_replication_slot('cdc_outbox')) and run cdc migrate again, which makes it anew and names the events to ship with cdc backfill (docs/operations.md, Slot invalidated)") {
		t.Fatalf("migrate over the invalidated slot exited %d, want 1 naming the drop:\n%s", code, out)
	}

	w.exec(`SELECT pg_drop_replication_slot('cdc_outbox')`)
	// One event dated -infinity, which ClickHouse cannot store: backfill
	// is to set it aside, verify to check the finite window.
	w.exec(`INSERT INTO outbox (event_type, environment, event_context, event_date_time) VALUES ('lost', 'test', '{}', '-infinity')`)
	// No slot: no lag to read, rather than none.
	out, stderr, code = w.runOperator(nil, "status", "--json")
	var noSlot struct {
		Exists          bool     `json:"exists"`
		LagSeconds      *float64 `json:"lag_seconds"`
		LagSecondsError string   `json:"lag_seconds_error"`
		OutboxRows      *int64   `json:"outbox_rows"`
		Estimated       bool     `json:"outbox_rows_estimated"`
		RetentionHeld   *bool    `json:"retention_held"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &noSlot) != nil || noSlot.Exists || noSlot.LagSeconds != nil ||
		noSlot.LagSecondsError != "slot cdc_outbox does not exist" || noSlot.OutboxRows == nil || *noSlot.OutboxRows != 101 || noSlot.Estimated ||
		noSlot.RetentionHeld == nil || *noSlot.RetentionHeld {
		t.Fatalf("status --json without a slot exited %d:\n%s%s", code, out, stderr)
	}
	out, code = w.runOnce(nil, "migrate")
	const oldest = "2026-01-02T03:04:05Z"
	if code != 0 || !strings.Contains(out, "the outbox already holds events from "+oldest+" on, which this slot will not stream: ship them with `cdc backfill --since -infinity`\n"+
		"outbox retention is held on every cdc run until `cdc verify --since "+oldest+"` finds none missing; then lift the hold: SELECT pg_drop_replication_slot('cdc_outbox_retention_hold');\n") {
		t.Fatalf("migrate exited %d and did not name the backfill to run and the hold:\n%s", code, out)
	}
	if out, code := w.runOnce(nil, "status"); code != 0 || !strings.Contains(out, "retention:         HELD by cdc_outbox_retention_hold: ") {
		t.Fatalf("status exited %d and does not show the hold:\n%s", code, out)
	}
	// Retention is held, so the backfill needs no word about it.
	// Exit 1: the row at -infinity is set aside, as a dead letter.
	stdout, stderr, code := w.runOperator(nil, "backfill", "--since", "-infinity")
	if code != 1 || !strings.Contains(stdout, "101 outbox rows read, 100 shipped to event_log, 1 refused (dead letters)") ||
		!strings.Contains(stderr, "1 rows refused by ClickHouse and set aside") {
		t.Fatalf("backfill exited %d:\n%s%s", code, stdout, stderr)
	}
	if strings.Contains(stderr, "CDC_OUTBOX_RETENTION") {
		t.Fatalf("backfill warned about retention while it is held:\n%s", stderr)
	}
	stdout, stderr, code = w.runOperator(nil, "verify", "--since", oldest)
	if code != 0 || !strings.Contains(stdout, "missing:           0\n") || !strings.Contains(stderr, "SELECT pg_drop_replication_slot('cdc_outbox_retention_hold')") {
		t.Fatalf("verify after the backfill exited %d, or did not say how to lift the hold:\n%s%s", code, stdout, stderr)
	}
	w.exec(`SELECT pg_drop_replication_slot('cdc_outbox_retention_hold')`)
	if r := w.verify(oldest, 0); r.OutboxRows != 100 || r.Found != 100 || r.Missing != 0 {
		t.Fatalf("verify after the backfill: %+v, want 100 found, none missing", r)
	}
	if out, code := w.runOnce(nil, "status"); code != 0 || !strings.Contains(out, "retention:         not held\n") {
		t.Fatalf("status exited %d and does not show the hold lifted:\n%s", code, out)
	}
	// Without the hold, a backfill older than the retention warns.
	if _, stderr, code := w.runOperator(nil, "backfill", "--since", oldest); code != 0 || !strings.Contains(stderr, "run cdc run with CDC_OUTBOX_RETENTION=0") {
		t.Fatalf("backfill of events older than the retention exited %d and did not warn:\n%s", code, stderr)
	}
	// Retention off in the operator's shell says nothing of the running
	// cdc run's: the backfill warns all the same.
	if _, stderr, code := w.runOperator(map[string]string{"CDC_OUTBOX_RETENTION": "0"}, "backfill", "--since", oldest); code != 0 || !strings.Contains(stderr, "run cdc run with CDC_OUTBOX_RETENTION=0") {
		t.Fatalf("backfill with CDC_OUTBOX_RETENTION=0 of its own exited %d and did not warn:\n%s", code, stderr)
	}
	if out, code := w.runOnce(nil, "migrate"); code != 0 || strings.Contains(out, "already holds") {
		t.Fatalf("a migrate that creates no slot exited %d and said:\n%s", code, out)
	}
}

// `cdc run` that finds its slot missing creates it and, since the outbox
// holds rows the new slot will never stream, holds retention in
// PostgreSQL: a second instance (a standby taking the slot over, or the
// same one restarted) finds the hold and deletes none of them either. As
// the least-privileged runner role: REPLICATION makes both slots.
func TestStartup_RecreatedSlotHoldsRetentionOnEveryInstance(t *testing.T) {
	w := newWorld(t)
	w.exec(`SELECT pg_drop_replication_slot('cdc_outbox')`)
	w.exec(`INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT 'gap', 'test', json_build_object('n', g), now() - interval '2 days' FROM generate_series(1, 10) g`)
	pgDSN, chDSN := w.leastPrivilege("")
	env := map[string]string{"CDC_PG_DSN": pgDSN, "CDC_CLICKHOUSE_DSN": chDSN, "CDC_OUTBOX_RETENTION": "1h"}
	for i := 0; i < 2; i++ {
		c := w.start(env)
		if i == 0 {
			// The slot exists from here on: what commits next is in it.
			// Not the hold's warning: the hold is made ahead of the slot,
			// and a row committed between the two was left to the gap,
			// never streamed (a run on a loaded machine waited 30 s for it).
			waitFor(t, 30*time.Second, "the first instance to make the slot and hold retention", func() (bool, string) {
				out := c.out.String()
				return strings.Contains(out, "replication slot did not exist and was created") &&
					strings.Contains(out, "outbox retention is held on every instance until an operator drops the hold"), ""
			})
		}
		// A transaction received: the horizon is known, and retention
		// would sweep but for the hold.
		w.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('after', 'test', '{}')`)
		w.waitRows(uint64(i+1), 30*time.Second)
		waitFor(t, 30*time.Second, "a sweep to find the hold", func() (bool, string) {
			return strings.Contains(c.out.String(), "outbox retention is held: the replication slot was created while the outbox held rows"), ""
		})
		if code, _ := c.term(30 * time.Second); code != 0 {
			t.Fatalf("instance %d exited %d:\n%s", i+1, code, tail(c.out.String(), 10))
		}
		if n := w.pgCount(`SELECT count(*) FROM outbox WHERE event_type = 'gap'`); n != 10 {
			t.Fatalf("instance %d left %d of the gap's 10 rows", i+1, n)
		}
		if i == 1 && strings.Contains(c.out.String(), "replication slot did not exist") {
			t.Fatalf("the second instance created the slot again:\n%s", tail(c.out.String(), 10))
		}
	}
}

// A slot created over an outbox whose only rows are dated infinity: those
// are never deleted, so nothing is held, and backfill is what sets them
// aside (it reads them whatever its --since).
func TestStartup_MigrateOverRowsAtInfinityOnlyHoldsNothing(t *testing.T) {
	w := newWorld(t)
	w.exec(`SELECT pg_drop_replication_slot('cdc_outbox')`)
	w.exec(`INSERT INTO outbox (event_type, environment, event_context, event_date_time) VALUES ('forever', 'test', '{}', 'infinity')`)
	out, code := w.runOnce(nil, "migrate")
	if code != 0 || !strings.Contains(out, "the outbox already holds events dated infinity, which this slot will not stream and ClickHouse cannot store: set them aside as dead letters with `cdc backfill --since ") ||
		strings.Contains(out, "retention is held") || strings.Contains(out, "events from") {
		t.Fatalf("migrate exited %d:\n%s", code, out)
	}
	if n := w.pgCount(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdc_outbox_retention_hold'`); n != 0 {
		t.Fatalf("%d retention holds made for rows retention never deletes", n)
	}
}

// A migrate that cannot reach ClickHouse fails before it creates the
// slot: a slot left behind by a failed deploy job would retain WAL with
// nothing reading it.
func TestStartup_MigrateThatFailsOnClickHouseMakesNoSlot(t *testing.T) {
	w := newWorld(t)
	w.exec(`SELECT pg_drop_replication_slot('cdc_outbox')`)
	out, code := w.runOnce(map[string]string{"CDC_CLICKHOUSE_DSN": "clickhouse://default@127.0.0.1:1/default?dial_timeout=1s"}, "migrate")
	if code != 1 || !strings.Contains(out, "connection refused") || strings.Contains(out, "created replication slot") {
		t.Fatalf("migrate exited %d:\n%s\nwant exit 1 on the refused ClickHouse connection, no slot made", code, out)
	}
	if n := w.pgCount(`SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'cdc_outbox%'`); n != 0 {
		t.Fatalf("%d slots made by a migrate that failed", n)
	}
}

// A new build started on the schema an earlier build's `cdc migrate` left
// (here that of builds before cbfce64: no index on cdc_dead_letter, the
// outbox's on event_date_time alone) streams, and names at its start,
// once each, what it lacks and what that costs. After `cdc migrate` a
// start names nothing. A migrate run while it streams (a rollout whose
// migrate job ran late) takes effect without a restart: its next letter
// names its slot.
func TestStartup_SchemaOfAnEarlierBuildIsNamedOnceAndStreams(t *testing.T) {
	w := newWorld(t)
	w.exec(`DROP INDEX cdc_dead_letter_position`)
	w.exec(`DROP INDEX cdc_dead_letter_event_id`)
	w.exec(`DROP INDEX outbox_event_date_time_id_idx`)
	w.exec(`CREATE INDEX outbox_event_date_time_idx ON outbox (event_date_time)`)
	w.exec(`ALTER TABLE cdc_dead_letter DROP COLUMN slot_name`)
	const lacks = "the schema lacks what `cdc migrate` makes; run it as the admin"
	missing := []string{
		`"missing": "cdc_dead_letter has no index on (commit_lsn, seq) (cdc_dead_letter_position)"`,
		`"missing": "cdc_dead_letter has no slot_name column"`,
		`"missing": "cdc_dead_letter has no index on event_id (cdc_dead_letter_event_id)"`,
		`"missing": "outbox has the index an earlier migrate made, on event_date_time alone, not outbox_event_date_time_id_idx on (event_date_time, id)"`,
	}
	letters := int64(0)
	// A row ClickHouse refuses is set aside on either schema.
	refuse := func(round int) {
		t.Helper()
		w.exec(`INSERT INTO outbox (event_type, environment, event_context, event_date_time) VALUES ('at_infinity', 'test', '{}', 'infinity')`)
		letters++
		waitFor(t, 30*time.Second, "the row at infinity set aside", func() (bool, string) {
			n := w.pgCount(`SELECT count(*) FROM cdc_dead_letter`)
			return n == letters, fmt.Sprintf("round %d: %d dead letters, want %d", round, n, letters)
		})
	}
	for round, want := range [][]string{missing, nil} {
		c := w.start(nil) // retention on, by default
		w.insertEvents("upgrade", 3)
		refuse(round)
		w.waitRows(uint64(3*(round+1)), 30*time.Second)
		if round == 0 {
			if out, code := w.runOnce(nil, "migrate"); code != 0 {
				t.Fatalf("migrate beside cdc run exited %d:\n%s", code, out)
			}
			refuse(round)
		}
		out := c.out.String()
		if n := strings.Count(out, lacks); n != len(want) {
			t.Fatalf("round %d: %d warnings %q, want %d:\n%s", round, n, lacks, len(want), tail(out, 20))
		}
		for _, m := range want {
			if strings.Count(out, m) != 1 {
				t.Fatalf("round %d: the log does not name %s once:\n%s", round, m, tail(out, 20))
			}
		}
		if code, _ := c.term(30 * time.Second); code != 0 {
			t.Fatalf("round %d: exit %d:\n%s", round, code, tail(c.out.String(), 10))
		}
	}
	// The letter set aside before the migrate is every pipeline's; those
	// after, by the instance that was running then and by the next, the
	// slot's.
	var slots string
	if err := w.pg.QueryRow(context.Background(), `SELECT string_agg(coalesce(slot_name, 'NULL'), ',' ORDER BY id) FROM cdc_dead_letter`).Scan(&slots); err != nil || slots != "NULL,cdc_outbox,cdc_outbox" {
		t.Fatalf("the dead letters' slots: %q, %v; want NULL,cdc_outbox,cdc_outbox", slots, err)
	}
}

// What cdc run cannot work without — cdc_dead_letter, which each
// session's start reads, and event_log — stops it at start with exit 1
// naming `cdc migrate`, as a missing publication does, instead of a
// retry for ever.
func TestStartup_MissingTableExitsOneNamingMigrate(t *testing.T) {
	for _, tc := range []struct {
		name string
		drop func(w *world)
		want string
	}{
		{"cdc_dead_letter", func(w *world) { w.exec(`DROP TABLE cdc_dead_letter`) },
			"schema: table cdc_dead_letter does not exist: every replication session's start reads it, and the rows ClickHouse refuses are set aside in it, so cdc would never stream: run `cdc migrate` as the admin"},
		{"event_log", func(w *world) { w.chExec(`DROP TABLE event_log`) },
			"schema: table event_log does not exist in ClickHouse's database: cdc has nowhere to store events and would retry its first batch for ever: run `cdc migrate` as the admin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			tc.drop(w)
			c := w.start(nil)
			select {
			case <-c.done:
			case <-time.After(30 * time.Second):
				t.Fatalf("connector still running without %s:\n%s", tc.name, tail(c.out.String(), 10))
			}
			if code := c.cmd.ProcessState.ExitCode(); code != 1 {
				t.Fatalf("exit code %d, want 1:\n%s", code, tail(c.out.String(), 10))
			}
			if out := c.out.String(); !strings.Contains(out, `"error": "`+tc.want+`"`) {
				t.Fatalf("log does not say %q:\n%s", tc.want, tail(out, 10))
			}
		})
	}
}
