package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/google/uuid"

	"github.com/eventcdc/cdc/deadletter"
	"github.com/eventcdc/cdc/internal/testenv"
)

// runOperator runs a short cdc command with stdout and stderr apart, so JSON
// output can be parsed while the exit message goes to stderr.
func (w *world) runOperator(extra map[string]string, args ...string) (stdout, stderr string, code int) {
	w.t.Helper()
	env := w.baseEnv()
	for k, v := range extra {
		env[k] = v
	}
	return runBinary(w.t, env, args...)
}

func runBinary(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = envList(env)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run cdc %v: %v", args, err)
		}
		return out.String(), errOut.String(), ee.ExitCode()
	}
	return out.String(), errOut.String(), 0
}

// verifyReport mirrors `cdc verify --json`.
type verifyReport struct {
	OutboxRows          int64    `json:"outbox_rows"`
	Found               int64    `json:"found"`
	Missing             int64    `json:"missing"`
	MissingIDs          []string `json:"missing_ids"`
	MissingDeadLettered int64    `json:"missing_dead_lettered"`
	EventLogRows        int64    `json:"event_log_rows"`
	NotInOutbox         int64    `json:"not_in_outbox"`
	NotInOutboxIDs      []string `json:"not_in_outbox_ids"`
}

// verify runs `cdc verify --json` and checks the exit code.
func (w *world) verify(since string, wantCode int, extra ...string) verifyReport {
	w.t.Helper()
	args := append([]string{"verify", "--since", since, "--json", "--limit", "1000"}, extra...)
	stdout, stderr, code := w.runOperator(nil, args...)
	if code != wantCode {
		w.t.Fatalf("verify exited %d, want %d\nstdout: %s\nstderr: %s", code, wantCode, stdout, stderr)
	}
	var r verifyReport
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		w.t.Fatalf("verify --json printed %q: %v", stdout, err)
	}
	return r
}

// outboxIDs returns the ids of the outbox rows matching where, sorted.
func (w *world) outboxIDs(where string) []string {
	w.t.Helper()
	rows, err := w.pg.Query(context.Background(), `SELECT id::text FROM outbox WHERE `+where+` ORDER BY id::text`)
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

func (w *world) pgCount(query string, args ...any) int64 {
	w.t.Helper()
	var n int64
	if err := w.pg.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		w.t.Fatalf("%s: %v", query, err)
	}
	return n
}

func (w *world) chExec(query string) {
	w.t.Helper()
	if err := w.ch.Exec(context.Background(), query); err != nil {
		w.t.Fatalf("%s: %v", query, err)
	}
}

func sorted(ids []string) []string {
	out := append([]string(nil), ids...)
	sort.Strings(out)
	return out
}

func sameIDs(t *testing.T, what string, got, want []string) {
	t.Helper()
	g, w := sorted(got), sorted(want)
	if strings.Join(g, ",") != strings.Join(w, ",") {
		t.Fatalf("%s: got %d ids %v, want %d ids %v", what, len(g), g, len(w), w)
	}
}

// insertOld commits n events of type typ dated one minute ago, outside
// verify's default grace period.
func (w *world) insertOld(typ string, n int) {
	w.t.Helper()
	w.exec(`INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT $1, 'test', json_build_object('n', g), now() - interval '1 minute' FROM generate_series(1, $2) g`, typ, n)
}

// longAgo is before every event the tests write, even ones ClickHouse refuses.
const longAgo = "1950-01-01T00:00:00Z"

func TestCommands_VerifyReportsExactlyTheMissingEvents(t *testing.T) {
	w := newWorld(t)
	w.insertOld("before_run", 30)
	all := w.outboxIDs("true")

	// Nothing shipped yet: every event is missing, and verify says which.
	r := w.verify(longAgo, 1)
	if r.OutboxRows != 30 || r.Missing != 30 || r.Found != 0 || r.EventLogRows != 0 || r.NotInOutbox != 0 {
		t.Fatalf("before run: %+v", r)
	}
	sameIDs(t, "missing before run", r.MissingIDs, all)
	// The text form lists at most --limit ids and says how many more.
	out, stderr, code := w.runOperator(nil, "verify", "--since", longAgo, "--limit", "5")
	if code != 1 || !strings.Contains(out, "missing:           30\n") || !strings.Contains(out, "... and 25 more") ||
		!strings.Contains(stderr, "30 of 30 outbox rows are missing from event_log") {
		t.Fatalf("verify text output (exit %d):\n%s\n%s", code, out, stderr)
	}

	c := w.start(nil)
	w.waitRows(30, 30*time.Second)
	r = w.verify(longAgo, 0)
	if r.OutboxRows != 30 || r.Missing != 0 || r.Found != 30 || r.EventLogRows != 30 || r.NotInOutbox != 0 || len(r.MissingIDs) != 0 {
		t.Fatalf("after run: %+v", r)
	}
	if code, _ := c.term(20 * time.Second); code != 0 {
		t.Fatalf("connector exited %d", code)
	}

	// Outbox rows deleted after shipping (retention, the application) are
	// reported as such and do not fail verify.
	deleted := all[:4]
	w.exec(`DELETE FROM outbox WHERE id = ANY($1::uuid[])`, deleted)
	// Events lost on the ClickHouse side are missing again; a mutation is
	// asynchronous, so wait for it to be applied.
	lost := all[10:13]
	w.chExec(fmt.Sprintf("ALTER TABLE event_log DELETE WHERE toString(event_id) IN ('%s')", strings.Join(lost, "','")))
	waitFor(t, 30*time.Second, "the delete mutation", func() (bool, string) {
		n := w.chCount("SELECT count() FROM event_log")
		return n == 27, fmt.Sprintf("%d rows", n)
	})
	r = w.verify(longAgo, 1)
	if r.OutboxRows != 26 || r.Missing != 3 || r.Found != 23 || r.EventLogRows != 27 || r.NotInOutbox != 4 {
		t.Fatalf("after deletes: %+v", r)
	}
	sameIDs(t, "missing after ClickHouse delete", r.MissingIDs, lost)
	sameIDs(t, "not in outbox after outbox delete", r.NotInOutboxIDs, deleted)

	// A window that ends before it starts would pass having checked
	// nothing: a usage error naming --since and --grace.
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if stdout, stderr, code := w.runOperator(nil, "verify", "--since", future); code != 2 ||
		!strings.Contains(stderr, "--since "+future+" is not before the server's time minus --grace") {
		t.Fatalf("verify --since the future exited %d:\n%s%s", code, stdout, stderr)
	}
}

func TestCommands_VerifyGraceSkipsEventsStillOnTheirWay(t *testing.T) {
	w := newWorld(t)
	w.insertOld("old", 3)
	w.insertEvents("fresh", 2) // event_date_time now(): inside the grace period
	r := w.verify(longAgo, 1)
	if r.OutboxRows != 3 || r.Missing != 3 {
		t.Fatalf("default grace: %+v", r)
	}
	r = w.verify(longAgo, 1, "--grace", "0s")
	if r.OutboxRows != 5 || r.Missing != 5 {
		t.Fatalf("no grace: %+v", r)
	}
}

func TestCommands_BackfillShipsMissingRowsFieldForFieldAndIsIdempotent(t *testing.T) {
	w := newWorld(t)
	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type event struct {
		chEvent
		at time.Time // as stored in the outbox, with sub-second digits
		tp any
	}
	var want []event
	add := func(typ string, at time.Time, ctxJSON string, version uint64, traceID string) {
		e := event{chEvent: chEvent{ID: uuid.New(), Type: typ, Time: at.Truncate(time.Second).UTC(), Environment: "prod",
			Context: ctxJSON, MetadataVersion: version, TraceID: traceID}, at: at}
		if traceID != "" {
			e.tp = "00-" + traceID + "-00f067aa0ba902b7-01"
		}
		want = append(want, e)
	}
	add("user_created", time.Date(2026, 3, 1, 10, 20, 30, 123456000, time.UTC), `{"user_id": 42,  "note":"ünïcødé ✓"}`, 1, "")
	add("order_paid", time.Date(2026, 11, 24, 23, 59, 59, 999999000, time.UTC), `{"nested":{"deep":[1,2,{"x":null}]}}`, 7, "4bf92f3577b34da6a3ce929d0e0e4736")
	// Seven events in the same microsecond: pages of three must not skip
	// or repeat rows that tie on event_date_time.
	tie := time.Date(2026, 2, 2, 2, 2, 2, 500000000, time.UTC)
	for i := 0; i < 7; i++ {
		add("tied", tie, fmt.Sprintf(`{"i":%d}`, i), uint64(i), "")
	}
	add("at_since", since, `{}`, 3, "")
	ctx := context.Background()
	for _, e := range want {
		// +02:00 on purpose: the instant, not the zone, must survive.
		if _, err := w.pg.Exec(ctx, `INSERT INTO outbox (id, event_type, event_date_time, environment, event_context, metadata_version, traceparent)
			VALUES ($1, $2, $3, $4, $5::json, $6, $7)`, e.ID, e.Type, e.at.In(time.FixedZone("x", 2*3600)), e.Environment, e.Context, e.MetadataVersion, e.tp); err != nil {
			t.Fatal(err)
		}
	}
	// Older than --since: not shipped.
	w.exec(`INSERT INTO outbox (event_type, environment, event_context, event_date_time) VALUES ('too_old', 'prod', '{}', $1)`, since.Add(-time.Microsecond))

	settings := map[string]string{"CDC_BATCH_MAX_ROWS": "3"}
	for run := 1; run <= 2; run++ {
		out, stderr, code := w.runOperator(settings, "backfill", "--since", since.Format(time.RFC3339))
		wantOut := fmt.Sprintf("backfill since 2026-01-01T00:00:00Z: %d outbox rows read, %d shipped to event_log, 0 refused (dead letters)\n", len(want), len(want))
		if code != 0 || out != wantOut {
			t.Fatalf("backfill run %d exited %d:\n%q\nwant %q\n%s", run, code, out, wantOut, stderr)
		}
		if n := w.chCount("SELECT count() FROM event_log FINAL"); n != uint64(len(want)) {
			t.Fatalf("after backfill run %d: %d events in event_log FINAL, want %d", run, n, len(want))
		}
	}
	expectEvents(t, w.chEvents(""), want...)
	if n := w.chCount("SELECT count() FROM event_log WHERE cdc_commit_lsn != 0"); n != 0 {
		t.Fatalf("%d backfilled rows carry a WAL position", n)
	}
	w.verify(since.Format(time.RFC3339), 0)

	// The connector ships the same inserts from the slot (migrate created
	// it): had backfill converted anything differently, FINAL would show
	// two versions of an event instead of collapsing them.
	w.start(nil)
	waitFor(t, 30*time.Second, "the connector to ship the same events", func() (bool, string) {
		n := w.chCount("SELECT count() FROM event_log WHERE cdc_commit_lsn != 0")
		return n == uint64(len(want))+1, fmt.Sprintf("%d streamed rows", n)
	})
	if n := w.chCount("SELECT count() FROM event_log FINAL"); n != uint64(len(want))+1 {
		t.Fatalf("event_log FINAL holds %d events after streaming, want %d", n, len(want)+1)
	}
	// FINAL shows the streamed version of each event (the last inserted):
	// it must equal what backfill wrote, compared above.
	expectEvents(t, w.chEvents("WHERE event_type != 'too_old'"), want...)
}

// An outbox row at 'infinity' or '-infinity' is one ClickHouse cannot take:
// the connector sets it aside as a dead letter. Backfill does the same with
// it, ships every other row, and pages past such rows (several tied at
// infinity, pages of three) without failing or looping; --since -infinity
// reaches the rows at -infinity as well.
func TestCommands_BackfillSetsInfinityRowsAsideAsTheConnectorDoes(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	type row struct {
		id      uuid.UUID
		typ, at string
		ctxJSON string
	}
	var rows []row
	add := func(typ, at string, n int) []string {
		var ids []string
		for i := 0; i < n; i++ {
			r := row{id: uuid.New(), typ: typ, at: at, ctxJSON: fmt.Sprintf(`{"%s": %d}`, typ, i)}
			if _, err := w.pg.Exec(ctx, `INSERT INTO outbox (id, event_type, event_date_time, environment, event_context, metadata_version)
				VALUES ($1, $2, $3::timestamptz, 'prod', $4::json, 5)`, r.id, r.typ, r.at, r.ctxJSON); err != nil {
				t.Fatal(err)
			}
			rows = append(rows, r)
			ids = append(ids, r.id.String())
		}
		return ids
	}
	finite := add("finite", "2026-03-01 10:00:00+00", 1)
	finite = append(finite, add("tied", "2026-04-04 04:04:04.5+00", 7)...)
	finite = append(finite, add("finite", "2026-05-01 10:00:00+00", 1)...)
	plusInf := add("at_infinity", "infinity", 4)
	minusInf := add("at_minus_infinity", "-infinity", 2)
	add("too_old", "2025-12-31 23:59:59.999999+00", 1)

	// want is the dead letter of row r, as the connector keeps it.
	want := func(r row) letter {
		text := func(s string) *string { return &s }
		id := r.id.String()
		return letter{EventID: &id, Error: fmt.Sprintf(`column event_date_time: %q is not a timestamp`, r.at),
			RowData: map[string]*string{"id": &id, "event_type": text(r.typ), "event_date_time": text(r.at), "environment": text("prod"),
				"event_context": text(r.ctxJSON), "metadata_version": text("5"), "traceparent": nil}}
	}
	byID := map[string]row{}
	for _, r := range rows {
		byID[r.id.String()] = r
	}
	// Backfill's letters carry commit LSN 0/0: the rows were not streamed.
	checkLetter := func(what string, got letter) {
		t.Helper()
		if got.EventID == nil {
			t.Fatalf("%s: dead letter %d has no event id", what, got.ID)
		}
		r, ok := byID[*got.EventID]
		if !ok || r.at != "infinity" && r.at != "-infinity" {
			t.Fatalf("%s: dead letter %d is of event %s, not of a row at ±infinity", what, got.ID, *got.EventID)
		}
		exp := want(r)
		exp.ID, exp.CommitLSN = got.ID, got.CommitLSN
		if got.CommitLSN != "0/0" {
			t.Fatalf("%s: dead letter %d at commit lsn %s", what, got.ID, got.CommitLSN)
		}
		if !reflect.DeepEqual(got, exp) {
			g, _ := json.Marshal(got)
			e, _ := json.Marshal(exp)
			t.Fatalf("%s: dead letter\n got %s\nwant %s", what, g, e)
		}
	}

	settings := map[string]string{"CDC_BATCH_MAX_ROWS": "3"}
	// No merges: the counts below see each INSERT's rows, a row shipped
	// twice included.
	w.chExec("SYSTEM STOP MERGES event_log")
	// --until bounds the window, exclusively: the seven rows tied at it
	// are left out, the row at --since is in.
	out, stderr, code := w.runOperator(settings, "backfill", "--since", "2026-03-01T10:00:00Z", "--until", "2026-04-04T04:04:04.5Z")
	wantOut := "backfill since 2026-03-01T10:00:00Z until 2026-04-04T04:04:04.5Z: 1 outbox rows read, 1 shipped to event_log, 0 refused (dead letters)\n"
	if code != 0 || out != wantOut {
		t.Fatalf("backfill --until exited %d:\n%q\nwant %q\n%s", code, out, wantOut, stderr)
	}
	var stored []string
	for id := range w.chEvents("") {
		stored = append(stored, id.String())
	}
	sameIDs(t, "event_log after backfill --until", stored, finite[:1])

	out, stderr, code = w.runOperator(settings, "backfill", "--since", "2026-01-01T00:00:00Z")
	wantOut = "backfill since 2026-01-01T00:00:00Z: 13 outbox rows read, 9 shipped to event_log, 4 refused (dead letters)\n"
	if code != 1 || out != wantOut || !strings.Contains(stderr, "4 rows refused by ClickHouse and set aside: cdc deadletter list") {
		t.Fatalf("backfill exited %d:\n%q\nwant exit 1 and %q\n%s", code, out, wantOut, stderr)
	}
	// The row the bounded run shipped is there twice (until a merge).
	if n := w.chCount("SELECT count() FROM event_log"); n != 10 {
		t.Fatalf("%d rows in event_log after backfill, want 10", n)
	}
	stored = stored[:0]
	for id := range w.chEvents("") {
		stored = append(stored, id.String())
	}
	sameIDs(t, "event_log after backfill", stored, finite)
	letters := w.deadLetters()
	var lettered []string
	for _, l := range letters {
		checkLetter("backfill", l)
		lettered = append(lettered, *l.EventID)
	}
	sameIDs(t, "dead letters of backfill", lettered, plusInf)

	// --since -infinity reads every row, those at -infinity too. The rows
	// at infinity are refused again but not set aside twice: only the rows
	// at -infinity are new letters.
	out, stderr, code = w.runOperator(settings, "backfill", "--since", "-infinity")
	wantOut = "backfill since -infinity: 16 outbox rows read, 10 shipped to event_log, 6 refused (dead letters)\n"
	if code != 1 || out != wantOut || !strings.Contains(stderr, "6 rows refused by ClickHouse and set aside: cdc deadletter list") {
		t.Fatalf("backfill --since -infinity exited %d:\n%q\nwant exit 1 and %q\n%s", code, out, wantOut, stderr)
	}
	if n := w.chCount("SELECT count() FROM event_log FINAL"); n != 10 {
		t.Fatalf("%d events in event_log FINAL after backfill --since -infinity, want 10", n)
	}
	again := w.deadLetters()[len(letters):]
	lettered = lettered[:0]
	for _, l := range again {
		checkLetter("backfill --since -infinity", l)
		lettered = append(lettered, *l.EventID)
	}
	sameIDs(t, "dead letters of backfill --since -infinity", lettered, minusInf)
	letters = append(letters, again...)

	// -infinity up to a bound: the rows at -infinity (refused again, not
	// set aside twice), the row before 2026, and the finite rows up to and
	// including 2026-05-01T10:00:00Z; not those at infinity.
	out, stderr, code = w.runOperator(settings, "backfill", "--since", "-infinity", "--until", "2026-05-01T10:00:00.000001Z")
	wantOut = "backfill since -infinity until 2026-05-01T10:00:00.000001Z: 12 outbox rows read, 10 shipped to event_log, 2 refused (dead letters)\n"
	if code != 1 || out != wantOut {
		t.Fatalf("backfill --since -infinity --until exited %d:\n%q\nwant exit 1 and %q\n%s", code, out, wantOut, stderr)
	}
	if n := w.pgCount(`SELECT count(*) FROM cdc_dead_letter`); n != 6 {
		t.Fatalf("%d dead letters after backfill --since -infinity --until, want the 6 there were", n)
	}

	// The connector streams the same inserts from the slot `cdc migrate`
	// created: it stores the finite rows and refuses the rows at ±infinity
	// with the very row data backfill kept, so it finds them set aside
	// already and adds no letter. Retention off: verify below reads the
	// outbox rows.
	c := w.start(map[string]string{"CDC_OUTBOX_RETENTION": "0", "CDC_METRICS_ADDR": "auto"})
	waitFor(t, 30*time.Second, "the connector to store the rows and refuse the same ones", func() (bool, string) {
		streamed := w.chCount("SELECT count() FROM event_log WHERE cdc_commit_lsn != 0")
		refused, err := readMetric(c.MetricsAddr, "cdc_dead_letters_total")
		return err == nil && streamed == 10 && refused == 6, fmt.Sprintf("%d rows streamed, %v refused (%v)", streamed, refused, err)
	})
	if n := w.pgCount(`SELECT count(*) FROM cdc_dead_letter`); n != 6 {
		t.Fatalf("%d dead letters after the connector refused the 6 rows backfill set aside, want 6", n)
	}
	if code, _ := c.term(20 * time.Second); code != 0 {
		t.Fatalf("connector exited %d", code)
	}
	if n := w.chCount("SELECT count() FROM event_log FINAL"); n != 10 {
		t.Fatalf("event_log FINAL holds %d events, want 10", n)
	}
	if got := w.deadLetters(); !reflect.DeepEqual(got, letters) {
		g, _ := json.Marshal(got)
		e, _ := json.Marshal(letters)
		t.Fatalf("dead letters after the connector ran:\n got %s\nwant %s (backfill's, unchanged)", g, e)
	}

	// The operator sees them, and a replay refuses them again until the row
	// is fixed.
	out, _, code = w.runOperator(nil, "deadletter", "list")
	if code != 0 || !strings.Contains(out, plusInf[0]) || !strings.Contains(out, `column event_date_time: "infinity" is not a timestamp`) ||
		!strings.Contains(out, "6 of 6 dead letters shown") {
		t.Fatalf("deadletter list exited %d:\n%s", code, out)
	}
	out, stderr, code = w.runOperator(nil, "deadletter", "replay")
	if code != 1 || out != "replayed 0 dead letters into event_log; 6 refused again\n" {
		t.Fatalf("replay exited %d: %q %s", code, out, stderr)
	}
	fixed := letters[0]
	w.exec(`UPDATE cdc_dead_letter SET row_data = jsonb_set(row_data, '{event_date_time}', '"2026-07-01 00:00:00+00"') WHERE id = $1`, fixed.ID)
	out, stderr, code = w.runOperator(nil, "deadletter", "replay", "--id", fmt.Sprint(fixed.ID))
	if code != 0 || out != "replayed 1 dead letters into event_log; 0 refused again\n" {
		t.Fatalf("replay of the fixed letter exited %d: %q %s", code, out, stderr)
	}
	if n := w.pgCount(`SELECT count(*) FROM cdc_dead_letter`); n != 5 {
		t.Fatalf("%d dead letters after replaying one, want 5", n)
	}
	r := byID[*fixed.EventID]
	expectEvents(t, w.chEvents(fmt.Sprintf("WHERE event_id = '%s'", r.id)), chEvent{ID: r.id, Type: r.typ,
		Time: time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC), Environment: "prod", Context: r.ctxJSON, MetadataVersion: 5})

	// verify pages the same way; rows at infinity lie past its window, and
	// those at -infinity are in it only with --since -infinity: missing,
	// and dead letters.
	v := w.verify("2026-01-01T00:00:00Z", 0)
	if v.OutboxRows != 9 || v.Found != 9 || v.Missing != 0 || v.EventLogRows != 10 || v.NotInOutbox != 0 {
		t.Fatalf("verify: %+v", v)
	}
	v = w.verify("-infinity", 1)
	if v.OutboxRows != 12 || v.Found != 10 || v.Missing != 2 || v.MissingDeadLettered != 2 || v.EventLogRows != 11 || v.NotInOutbox != 0 {
		t.Fatalf("verify --since -infinity: %+v", v)
	}
	sameIDs(t, "missing with --since -infinity", v.MissingIDs, minusInf)
	out, stderr, code = w.runOperator(nil, "verify", "--since", "-infinity")
	if code != 1 || !strings.HasPrefix(out, "outbox rows with event_date_time from -infinity to ") ||
		!strings.Contains(out, "missing:           2 (2 of them dead letters: cdc deadletter list)\n") {
		t.Fatalf("verify --since -infinity exited %d:\n%s\n%s", code, out, stderr)
	}
}

func expectEvents[E interface{ event() chEvent }](t *testing.T, got map[uuid.UUID]chEvent, want ...E) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d events in event_log, want %d", len(got), len(want))
	}
	for _, w := range want {
		e := w.event()
		g, ok := got[e.ID]
		g.Time = g.Time.UTC()
		if !ok || g != e {
			t.Fatalf("event %s:\n got %+v\nwant %+v", e.ID, g, e)
		}
	}
}

func (e chEvent) event() chEvent { return e }

type letter struct {
	ID        int64              `json:"id"`
	EventID   *string            `json:"event_id"`
	CommitLSN string             `json:"commit_lsn"`
	RowData   map[string]*string `json:"row_data"`
	Error     string             `json:"error"`
}

func (w *world) deadLetters() []letter {
	w.t.Helper()
	stdout, stderr, code := w.runOperator(nil, "deadletter", "list", "--json")
	if code != 0 {
		w.t.Fatalf("deadletter list exited %d: %s", code, stderr)
	}
	var out []letter
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		w.t.Fatalf("deadletter list --json printed %q: %v", stdout, err)
	}
	return out
}

func TestCommands_DeadLetterReplayAfterFixingTheColumn(t *testing.T) {
	w := newWorld(t)
	// A column too narrow for the data: the connector sets the row aside.
	w.chExec("ALTER TABLE event_log MODIFY COLUMN metadata_version UInt8")
	w.start(nil)
	good, bad := uuid.New(), uuid.New()
	w.exec(`INSERT INTO outbox (id, event_type, environment, event_context, metadata_version, event_date_time) VALUES
		($1, 'fits', 'prod', '{"a":1}', 200, '2026-05-05 05:05:05+00'),
		($2, 'too_wide', 'prod', '{"b":2}', 300, '2026-05-05 05:05:06+00')`, good, bad)
	w.waitRows(1, 30*time.Second)
	waitFor(t, 30*time.Second, "one dead letter", func() (bool, string) {
		n := w.pgCount(`SELECT count(*) FROM cdc_dead_letter`)
		return n == 1, fmt.Sprintf("%d dead letters", n)
	})

	letters := w.deadLetters()
	if len(letters) != 1 || letters[0].EventID == nil || *letters[0].EventID != bad.String() ||
		!strings.Contains(letters[0].Error, "metadata_version") || *letters[0].RowData["metadata_version"] != "300" {
		t.Fatalf("dead letters: %+v", letters)
	}
	firstError := letters[0].Error
	out, _, code := w.runOperator(nil, "deadletter", "list")
	if code != 0 || !strings.Contains(out, bad.String()) || !strings.Contains(out, "1 of 1 dead letters shown") {
		t.Fatalf("deadletter list exited %d:\n%s", code, out)
	}

	// Not fixed yet: refused again, kept. Run with a DSN of one pooled
	// connection (an application's pgx URL), which the replay's lock
	// took, and it then waited for ever for a second.
	sep := "?"
	if strings.Contains(w.pgDSN, "?") {
		sep = "&"
	}
	out, stderr, code := w.runOperator(map[string]string{"CDC_PG_DSN": w.pgDSN + sep + "pool_max_conns=1"}, "deadletter", "replay")
	if code != 1 || out != "replayed 0 dead letters into event_log; 1 refused again\n" {
		t.Fatalf("replay before the fix exited %d: %q %s", code, out, stderr)
	}
	if l := w.deadLetters(); len(l) != 1 || l[0].ID != letters[0].ID || l[0].Error == "" {
		t.Fatalf("dead letters after a refused replay: %+v (first error %q)", l, firstError)
	}
	// An id that is not there is an error, and nothing changes.
	if out, stderr, code := w.runOperator(nil, "deadletter", "replay", "--id", fmt.Sprint(letters[0].ID+1000)); code != 1 || !strings.Contains(stderr, "no such dead letter") ||
		out != "replay failed after 0 dead letters replayed into event_log and 0 refused again\n" {
		t.Fatalf("replay of an unknown id exited %d: %q %s", code, out, stderr)
	}
	// Another replay running holds the lock: this one is refused, and
	// nothing changes.
	_, release, err := deadletter.New(w.pg, "cdc_outbox").LockReplay(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := w.runOperator(nil, "deadletter", "replay"); code != 1 || out != "" || !strings.Contains(stderr, "another `cdc deadletter replay` is running") {
		t.Fatalf("replay beside another exited %d: %q %s", code, out, stderr)
	}
	release()
	if l := w.deadLetters(); len(l) != 1 || l[0].ID != letters[0].ID {
		t.Fatalf("dead letters after a replay refused beside another: %+v", l)
	}

	w.chExec("ALTER TABLE event_log MODIFY COLUMN metadata_version UInt64")
	out, stderr, code = w.runOperator(nil, "deadletter", "replay", "--id", fmt.Sprint(letters[0].ID))
	if code != 0 || out != "replayed 1 dead letters into event_log; 0 refused again\n" {
		t.Fatalf("replay after the fix exited %d: %q %s", code, out, stderr)
	}
	if n := w.pgCount(`SELECT count(*) FROM cdc_dead_letter`); n != 0 {
		t.Fatalf("%d dead letters left after replay", n)
	}
	w.waitRows(2, 10*time.Second)
	expectEvents(t, w.chEvents(""),
		chEvent{ID: good, Type: "fits", Time: time.Date(2026, 5, 5, 5, 5, 5, 0, time.UTC), Environment: "prod", Context: `{"a":1}`, MetadataVersion: 200},
		chEvent{ID: bad, Type: "too_wide", Time: time.Date(2026, 5, 5, 5, 5, 6, 0, time.UTC), Environment: "prod", Context: `{"b":2}`, MetadataVersion: 300})
	// The replayed row keeps the WAL position it was refused at.
	lsn := w.chCount(fmt.Sprintf("SELECT cdc_commit_lsn FROM event_log WHERE event_id = '%s'", bad))
	wantLSN := w.pgCount(`SELECT ($1::pg_lsn - '0/0'::pg_lsn)::bigint`, letters[0].CommitLSN)
	if int64(lsn) != wantLSN || lsn == 0 {
		t.Fatalf("replayed row at commit lsn %d, dead letter was at %s (%d)", lsn, letters[0].CommitLSN, wantLSN)
	}
	// Nothing left: replaying again does nothing and succeeds.
	if out, _, code := w.runOperator(nil, "deadletter", "replay"); code != 0 || out != "replayed 0 dead letters into event_log; 0 refused again\n" {
		t.Fatalf("empty replay exited %d: %q", code, out)
	}
}

// Two pipelines of one database — a second slot streaming the same
// outbox into another ClickHouse — each keep their own dead letters. A row
// pipeline A's ClickHouse refused is set aside for A alone: B, started
// after A set it aside, stores it (an earlier build took it as stored and
// skipped it, so the event was missing from B's event_log for good); B's
// status and replay leave A's letter alone (B's replay running while A's
// does), and A's replay stores it once A's column is fixed.
func TestCommands_TwoPipelinesOfOneDatabaseKeepTheirOwnDeadLetters(t *testing.T) {
	w := newWorld(t)
	chB := w.env.NewClickHouse(t)
	b := map[string]string{"CDC_CLICKHOUSE_DSN": chB, "CDC_SLOT_NAME": "cdc_second"}
	if out, stderr, code := w.runOperator(b, "migrate"); code != 0 || !strings.Contains(out, "created replication slot cdc_second") {
		t.Fatalf("migrate of the second pipeline exited %d:\n%s%s", code, out, stderr)
	}
	opts, err := clickhouse.ParseDSN(chB)
	if err != nil {
		t.Fatal(err)
	}
	connB, err := clickhouse.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { connB.Close() })
	wb := &world{t: t, env: w.env, pgDSN: w.pgDSN, chDSN: chB, pg: w.pg, ch: connB}

	// A's event_log refuses metadata_version 300; B's takes it.
	w.chExec("ALTER TABLE event_log MODIFY COLUMN metadata_version UInt8")
	good, bad := uuid.New(), uuid.New()
	w.exec(`INSERT INTO outbox (id, event_type, environment, event_context, metadata_version, event_date_time) VALUES
		($1, 'fits', 'prod', '{"a":1}', 200, '2026-05-05 05:05:05+00'),
		($2, 'too_wide', 'prod', '{"b":2}', 300, '2026-05-05 05:05:06+00')`, good, bad)
	a := w.start(nil)
	w.waitRows(1, 30*time.Second)
	waitFor(t, 30*time.Second, "A's dead letter", func() (bool, string) {
		n := w.pgCount(`SELECT count(*) FROM cdc_dead_letter WHERE slot_name = 'cdc_outbox'`)
		return n == 1, fmt.Sprintf("%d dead letters", n)
	})
	if code, _ := a.term(15 * time.Second); code != 0 {
		t.Fatalf("A's cdc run exited %d", code)
	}

	// B starts behind A's letter: its session's start reads the letters
	// past its slot, and A's is not among them.
	cb := w.start(b)
	wb.waitRows(2, 30*time.Second)
	if code, _ := cb.term(15 * time.Second); code != 0 {
		t.Fatalf("B's cdc run exited %d", code)
	}
	if !strings.Contains(cb.out.String(), `"already_stored": 0`) {
		t.Errorf("B's session counted rows as already stored:\n%s", cb.out.String())
	}
	expectEvents(t, wb.chEvents(""),
		chEvent{ID: good, Type: "fits", Time: time.Date(2026, 5, 5, 5, 5, 5, 0, time.UTC), Environment: "prod", Context: `{"a":1}`, MetadataVersion: 200},
		chEvent{ID: bad, Type: "too_wide", Time: time.Date(2026, 5, 5, 5, 5, 6, 0, time.UTC), Environment: "prod", Context: `{"b":2}`, MetadataVersion: 300})
	if n := w.chCount("SELECT count() FROM event_log"); n != 1 {
		t.Fatalf("A's event_log holds %d rows, want the one that fits", n)
	}

	// Each pipeline's status counts its own, and names the other's.
	out, stderr, code := w.runOperator(nil, "status")
	if code != 0 || !strings.Contains(out, "dead letters:      1\n") {
		t.Fatalf("A's status exited %d:\n%s%s", code, out, stderr)
	}
	out, stderr, code = w.runOperator(b, "status")
	if code != 0 || !strings.Contains(out, "dead letters:      0 (and 1 set aside by other slots, not this pipeline's: 1 of slot cdc_outbox)\n") {
		t.Fatalf("B's status exited %d:\n%s%s", code, out, stderr)
	}
	out, stderr, code = w.runOperator(b, "status", "--json")
	var r struct {
		DeadLetters  int64            `json:"dead_letters"`
		OfOtherSlots map[string]int64 `json:"dead_letters_of_other_slots"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.DeadLetters != 0 || fmt.Sprint(r.OfOtherSlots) != "map[cdc_outbox:1]" {
		t.Fatalf("B's status --json exited %d:\n%s%s", code, out, stderr)
	}
	out, stderr, code = w.runOperator(b, "deadletter", "list")
	if code != 0 || strings.Contains(out, bad.String()) {
		t.Fatalf("B's deadletter list exited %d, or lists A's letter:\n%s%s", code, out, stderr)
	}
	letters := w.deadLetters()
	if len(letters) != 1 {
		t.Fatalf("dead letters: %+v", letters)
	}
	// B's replay of A's letter names its slot: "no such dead letter", of
	// a letter A lists, sent the operator looking for what took it.
	notB := fmt.Sprintf("dead letter %d is slot cdc_outbox's, another pipeline's, not that of slot cdc_second (CDC_SLOT_NAME): "+
		"replay it with the other pipeline's CDC_SLOT_NAME and CDC_CLICKHOUSE_DSN", letters[0].ID)
	if out, stderr, code := w.runOperator(b, "deadletter", "replay", "--id", fmt.Sprint(letters[0].ID)); code != 1 || !strings.Contains(stderr, notB) {
		t.Fatalf("B's replay of A's letter exited %d: %q %s; want 1 and %q", code, out, stderr, notB)
	}
	// B's replay runs while A's holds its lock: the lock is the slot's.
	// It was the table's, and B's replay exited 1 ("another `cdc
	// deadletter replay` is running") though it replays its own letters.
	_, releaseA, err := deadletter.New(w.pg, "cdc_outbox").LockReplay(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out, stderr, code = w.runOperator(b, "deadletter", "replay")
	releaseA()
	if code != 0 || out != "replayed 0 dead letters into event_log; 0 refused again\n" {
		t.Fatalf("B's replay beside A's exited %d: %q %s", code, out, stderr)
	}
	if n := w.pgCount(`SELECT count(*) FROM cdc_dead_letter`); n != 1 {
		t.Fatalf("%d dead letters after B's replay, want A's one", n)
	}

	w.chExec("ALTER TABLE event_log MODIFY COLUMN metadata_version UInt64")
	if out, stderr, code := w.runOperator(nil, "deadletter", "replay"); code != 0 || out != "replayed 1 dead letters into event_log; 0 refused again\n" {
		t.Fatalf("A's replay after the fix exited %d: %q %s", code, out, stderr)
	}
	w.waitRows(2, 10*time.Second)
	if n := w.pgCount(`SELECT count(*) FROM cdc_dead_letter`); n != 0 {
		t.Fatalf("%d dead letters after A's replay", n)
	}
	if n := wb.chCount("SELECT count() FROM event_log"); n != 2 {
		t.Fatalf("B's event_log holds %d rows after A's replay, want 2", n)
	}
}

// Replay cuts its INSERTs by CDC_BATCH_MAX_BYTES like backfill and the
// connector: a page of many large letters is not one INSERT held in memory
// whole. A letter larger than the limit goes alone; every letter arrives
// once, byte for byte, and is deleted.
func TestCommands_DeadLetterReplayCutsBatchesByBytes(t *testing.T) {
	w := newWorld(t)
	w.auditInserts()
	w.chExec("ALTER TABLE event_log MODIFY COLUMN metadata_version UInt8")
	c := w.start(nil)
	// Values of about 40 kB: two fit in 100 KiB, three do not.
	sizes := []int{40_000, 40_000, 40_000, 40_000, 40_000, 150_000, 40_000, 40_000}
	ids := make([]uuid.UUID, len(sizes))
	docs := map[uuid.UUID]string{}
	var values []string
	var args []any
	for i, size := range sizes {
		ids[i] = uuid.New()
		docs[ids[i]] = hugeJSON(size, uint64(i))
		values = append(values, fmt.Sprintf("($%d, 'e%d', 'prod', $%d::json, 300, '2026-05-05 05:05:05+00')", 2*i+1, i+1, 2*i+2))
		args = append(args, ids[i], docs[ids[i]])
	}
	// One statement: the connector refuses the rows in WAL order, so the
	// dead letter ids follow it.
	w.exec(`INSERT INTO outbox (id, event_type, environment, event_context, metadata_version, event_date_time) VALUES `+strings.Join(values, ", "), args...)
	waitFor(t, 30*time.Second, "eight dead letters", func() (bool, string) {
		n := w.pgCount(`SELECT count(*) FROM cdc_dead_letter`)
		return n == int64(len(sizes)), fmt.Sprintf("%d dead letters", n)
	})
	c.kill()
	for i, l := range w.deadLetters() {
		if l.EventID == nil || *l.EventID != ids[i].String() {
			t.Fatalf("dead letter %d is %+v, want event %s", i, l, ids[i])
		}
	}

	w.chExec("ALTER TABLE event_log MODIFY COLUMN metadata_version UInt64")
	// Each INSERT stays a part of its own.
	w.chExec("SYSTEM STOP MERGES event_log")
	out, stderr, code := w.runOperator(map[string]string{"CDC_BATCH_MAX_BYTES": "100KiB"}, "deadletter", "replay")
	if code != 0 || out != "replayed 8 dead letters into event_log; 0 refused again\n" {
		t.Fatalf("replay exited %d: %q %s", code, out, stderr)
	}
	if n := w.pgCount(`SELECT count(*) FROM cdc_dead_letter`); n != 0 {
		t.Fatalf("%d dead letters left after replay", n)
	}

	// The letters of each INSERT (each part), in id order.
	rows, err := w.ch.Query(context.Background(), `SELECT arrayStringConcat(arraySort(groupArray(event_type)), ',') AS types
		FROM event_log GROUP BY _part ORDER BY types`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var inserts []string
	for rows.Next() {
		var types string
		if err := rows.Scan(&types); err != nil {
			t.Fatal(err)
		}
		inserts = append(inserts, types)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(inserts, " | "), "e1,e2 | e3,e4 | e5 | e6 | e7,e8"; got != want {
		t.Fatalf("replay INSERTs held the letters %s, want %s", got, want)
	}

	w.assertExactlyOnce(uint64(len(sizes)))
	var want []chEvent
	for i, id := range ids {
		want = append(want, chEvent{ID: id, Type: fmt.Sprintf("e%d", i+1), Time: time.Date(2026, 5, 5, 5, 5, 5, 0, time.UTC),
			Environment: "prod", Context: docs[id], MetadataVersion: 300})
	}
	expectEvents(t, w.chEvents(""), want...)
}

// Replay reads dead letters in pages of about CDC_BATCH_MAX_BYTES, not of
// CDC_BATCH_MAX_ROWS: fifty letters of 3 MB are never all in memory at once.
func TestCommands_DeadLetterReplayMemoryStaysBounded(t *testing.T) {
	plain := buildPlain(t)
	w := newWorld(t)
	w.chExec("ALTER TABLE event_log MODIFY COLUMN metadata_version UInt8")
	c := w.start(nil)
	// md5s joined, so TOAST cannot shrink them.
	const size, letters = 3 << 20, 50
	w.exec(`INSERT INTO outbox (event_type, environment, event_context, metadata_version)
		SELECT 'big', 'test', json_build_object('blob', (
			SELECT string_agg(md5(i::text || ':' || g::text), '') FROM generate_series(1, $1::int) g)), 300
		FROM generate_series(1, $2::int) i`, size/32, letters)
	waitFor(t, 60*time.Second, "fifty dead letters", func() (bool, string) {
		n := w.pgCount(`SELECT count(*) FROM cdc_dead_letter`)
		return n == letters, fmt.Sprintf("%d dead letters", n)
	})
	c.kill()
	w.chExec("ALTER TABLE event_log MODIFY COLUMN metadata_version UInt64")

	w.runWithinMemory(plain, size, "replayed 50 dead letters into event_log; 0 refused again\n", "deadletter", "replay")
	if n := w.chCount("SELECT count() FROM event_log WHERE event_type = 'big' AND length(event_context) > " + fmt.Sprint(size)); n != letters {
		t.Fatalf("%d of %d letters in event_log", n, letters)
	}
	if n := w.pgCount(`SELECT count(*) FROM cdc_dead_letter`); n != 0 {
		t.Fatalf("%d dead letters left after replay", n)
	}
}

func TestCommands_BadFlagsExitTwo(t *testing.T) {
	// Flags are checked before any connection: unreachable servers are fine.
	env := map[string]string{
		"CDC_PG_DSN":         "postgres://nobody@127.0.0.1:1/none?sslmode=disable",
		"CDC_CLICKHOUSE_DSN": "clickhouse://nobody@127.0.0.1:1/none",
		"CDC_METRICS_ADDR":   "off",
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"verify"}, "cdc verify: --since is required: an RFC 3339 time"},
		{[]string{"verify", "--since", "yesterday"}, `cdc verify: --since "yesterday" is not an RFC 3339 time`},
		{[]string{"verify", "--since", "2026-03-01"}, `cdc verify: --since "2026-03-01" is not an RFC 3339 time`},
		{[]string{"verify", "--since", "2026-03-01T00:00:00Z", "--grace", "-1s"}, "cdc verify: --grace -1s must not be negative"},
		{[]string{"verify", "--since", "2026-03-01T00:00:00Z", "--grace", "soon"}, `cdc verify: invalid value "soon" for flag -grace`},
		{[]string{"verify", "--since", "2026-03-01T00:00:00Z", "--bogus"}, "cdc verify: flag provided but not defined: -bogus"},
		{[]string{"verify", "--since", "2026-03-01T00:00:00Z", "extra"}, `cdc verify: unexpected argument "extra"`},
		{[]string{"backfill"}, "cdc backfill: --since is required"},
		{[]string{"backfill", "--since", "2026-13-01T00:00:00Z"}, `cdc backfill: --since "2026-13-01T00:00:00Z" is not an RFC 3339 time`},
		{[]string{"backfill", "--since", "infinity"}, `cdc backfill: --since "infinity" is not an RFC 3339 time, e.g. 2026-03-01T00:00:00Z, or -infinity`},
		{[]string{"backfill", "--since", "2026-03-01T00:00:00Z", "--until", "infinity"}, `cdc backfill: --until "infinity" is not an RFC 3339 time`},
		{[]string{"backfill", "--since", "2026-03-01T00:00:00Z", "--until", "2026-03-01T00:00:00+00:00"}, "cdc backfill: --until 2026-03-01T00:00:00Z is not after --since 2026-03-01T00:00:00Z: no row lies between them"},
		{[]string{"deadletter"}, "cdc deadletter: want a subcommand: list [--json] [--limit N] or replay [--id N]"},
		{[]string{"deadletter", "purge"}, `cdc deadletter: unknown subcommand "purge"`},
		{[]string{"deadletter", "list", "--limit", "0"}, "cdc deadletter: --limit 0 must be positive"},
		{[]string{"deadletter", "replay", "--id", "seven"}, `cdc deadletter: invalid value "seven" for flag -id`},
		{[]string{"version", "--bogus"}, "cdc version: flag provided but not defined: -bogus"},
		{[]string{"version", "extra"}, `cdc version: unexpected argument "extra"`},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			stdout, stderr, code := runBinary(t, env, tc.args...)
			if code != 2 || stdout != "" || !strings.HasPrefix(stderr, tc.want) || strings.Count(stderr, "\n") != 1 {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2 and stderr starting %q", code, stdout, stderr, tc.want)
			}
		})
	}
}

// runWithinMemory runs bin (a build without -race) with args and
// CDC_BATCH_MAX_BYTES=8MiB, wants stdout exactly, and checks its peak RSS
// against the connector's bound (docs/operations.md#memory): a few
// batches' worth, or an event of size bytes held several times over, plus
// 100 MiB for the runtime and the clients.
func (w *world) runWithinMemory(bin string, size int, stdout string, args ...string) {
	w.t.Helper()
	const maxBytes = 8 << 20
	env := w.baseEnv()
	env["CDC_BATCH_MAX_BYTES"] = "8MiB"
	// Bounded: a command that hangs fails this test, not the package's
	// 45 minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = envList(env)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	peak, err := runPeakRSS(cmd)
	if err != nil || out.String() != stdout {
		w.t.Fatalf("cdc %s: %v: %q %s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	bound := max(3*maxBytes, 6*size) + 100<<20
	w.t.Logf("cdc %s: peak RSS %.1f MiB (bound %.1f MiB)", args[0], float64(peak)/(1<<20), float64(bound)/(1<<20))
	if peak > int64(bound) {
		w.t.Errorf("cdc %s: peak RSS %d bytes, want <= %d", args[0], peak, bound)
	}
}

// Backfill reads the outbox in pages of about CDC_BATCH_MAX_BYTES, not of
// CDC_BATCH_MAX_ROWS: fifty events of 3 MB are never all in memory at once.
func TestCommands_BackfillMemoryStaysBounded(t *testing.T) {
	plain := buildPlain(t)
	w := newWorld(t)
	// No connector runs: the events reach event_log only by backfill.
	const size, events = 3 << 20, 50
	w.exec(`INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT 'big', 'test', json_build_object('blob', (
			SELECT string_agg(md5(i::text || ':' || g::text), '') FROM generate_series(1, $1::int) g)),
			'2026-06-01 00:00:00+00'::timestamptz + i * interval '1 second'
		FROM generate_series(1, $2::int) i`, size/32, events)

	want := fmt.Sprintf("backfill since 2026-06-01T00:00:00Z: %d outbox rows read, %d shipped to event_log, 0 refused (dead letters)\n", events, events)
	w.runWithinMemory(plain, size, want, "backfill", "--since", "2026-06-01T00:00:00Z")
	if n := w.chCount("SELECT count() FROM event_log WHERE event_type = 'big' AND length(event_context) > " + fmt.Sprint(size)); n != events {
		t.Fatalf("%d of %d events in event_log", n, events)
	}
}

// `cdc status` estimates the lag in seconds from the events not yet in
// event_log: WAL of other tables left unconfirmed is not lag, an event
// committed and not yet stored is, by its age.
func TestCommands_StatusLagSecondsCountsOnlyEventsNotStored(t *testing.T) {
	w := newWorld(t)
	c := w.start(nil)
	w.exec(`INSERT INTO outbox (event_type, environment, event_context, event_date_time) VALUES ('stored', 'test', '{}', now() - interval '300 seconds')`)
	w.waitRows(1, 30*time.Second)
	if code, _ := c.term(15 * time.Second); code != 0 {
		t.Fatalf("cdc run exited %d", code)
	}

	w.exec(`CREATE TABLE other (v int)`)
	w.exec(`INSERT INTO other SELECT generate_series(1, 1000)`)
	if bytes, secs := w.statusLag(t); bytes == 0 || secs != 0 {
		t.Fatalf("other tables' WAL only: lag %d bytes, %.1f s; want some bytes and 0 s", bytes, secs)
	}
	w.exec(`INSERT INTO outbox (event_type, environment, event_context, event_date_time) VALUES ('pending', 'test', '{}', now() - interval '100 seconds')`)
	if bytes, secs := w.statusLag(t); bytes == 0 || secs < 100 || secs > 130 {
		t.Fatalf("one event pending since 100 s: lag %d bytes, %.1f s; want 100-130 s", bytes, secs)
	}

	// ClickHouse out of reach: the seconds are unknown, and status says
	// why instead of leaving them out silently.
	away := map[string]string{"CDC_CLICKHOUSE_DSN": "clickhouse://127.0.0.1:1/default?dial_timeout=1s"}
	out, stderr, code := w.runOperator(away, "status", "--json")
	var r struct {
		LagBytes        int64    `json:"lag_bytes"`
		LagSeconds      *float64 `json:"lag_seconds"`
		LagSecondsError string   `json:"lag_seconds_error"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.LagBytes == 0 || r.LagSeconds != nil ||
		!strings.HasPrefix(r.LagSecondsError, "read the newest event in clickhouse: ") {
		t.Fatalf("status --json without ClickHouse exited %d: %s %s; want lag_seconds null and its error", code, out, stderr)
	}
	out, stderr, code = w.runOperator(away, "status")
	if code != 0 || !strings.Contains(out, " bytes, seconds unknown (see the warning)\n") || !strings.Contains(stderr, "lag in seconds unknown") {
		t.Fatalf("status without ClickHouse exited %d:\n%s\n%s", code, out, stderr)
	}

	// A signal while ClickHouse does not answer stops status like any
	// other one-shot command: exit 1, context canceled, no report. So
	// does it stop migrate, whose ClickHouse dial does not heed the
	// signal: the error still says that a signal cut it short.
	for _, tc := range []struct{ cmd, want string }{
		{"status", "ask clickhouse for the lag: context canceled"},
		{"migrate", "context canceled; "},
	} {
		stdout, stderr, err := w.signalledWhileClickHouseIsSilent(tc.cmd)
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || (tc.cmd == "status" && stdout != "") || !strings.Contains(stderr, tc.want) {
			t.Fatalf("%s stopped by SIGTERM while ClickHouse is silent: %v\nstdout: %s\nstderr: %s\nwant exit 1 and %q", tc.cmd, err, stdout, stderr, tc.want)
		}
	}

	// Stray arguments are refused; -h lists the flags.
	if _, stderr, code := w.runOperator(nil, "status", "extra"); code != 2 || !strings.Contains(stderr, `cdc status: unexpected argument "extra"`) {
		t.Errorf("status extra: exit %d, %q; want 2 naming the argument", code, stderr)
	}
	if _, stderr, code := w.runOperator(nil, "status", "-h"); code != 0 || !strings.HasPrefix(stderr, "usage: cdc status [flags]\n  -json\n") {
		t.Errorf("status -h: exit %d, %q; want 0 and the flags", code, stderr)
	}
}

// A part of the report that cannot be read in time leaves the others
// reported: with the outbox locked behind an ALTER TABLE's lock, the
// outbox count and the lag in seconds are unknown, saying why, while the
// slot and the dead letters are there, and status exits 0.
func TestCommands_StatusReportsWhatItCanReadPastALockedOutbox(t *testing.T) {
	w := newWorld(t)
	w.insertEvents("pending", 1) // the slot is behind: the lag in seconds is asked for
	ctx := context.Background()
	tx, err := w.pg.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := w.runOperator(nil, "status", "--json")
	var r struct {
		Exists          bool     `json:"exists"`
		LagBytes        int64    `json:"lag_bytes"`
		LagSeconds      *float64 `json:"lag_seconds"`
		LagSecondsError string   `json:"lag_seconds_error"`
		OutboxRows      *int64   `json:"outbox_rows"`
		OutboxRowsError string   `json:"outbox_rows_error"`
		DeadLetters     *int64   `json:"dead_letters"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || !r.Exists || r.LagBytes == 0 ||
		r.OutboxRows != nil || !strings.Contains(r.OutboxRowsError, "lock timeout") ||
		r.LagSeconds != nil || !strings.Contains(r.LagSecondsError, "lock timeout") ||
		r.DeadLetters == nil || *r.DeadLetters != 0 {
		t.Fatalf("status --json with the outbox locked exited %d:\n%s\n%s", code, out, stderr)
	}
	out, stderr, code = w.runOperator(nil, "status")
	if code != 0 || !strings.Contains(out, "outbox rows:       unknown (see the warning)\n") || !strings.Contains(out, "dead letters:      0\n") ||
		!strings.Contains(stderr, "outbox rows unknown") {
		t.Fatalf("status with the outbox locked exited %d:\n%s\n%s", code, out, stderr)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	out, stderr, code = w.runOperator(nil, "status", "--json")
	var after struct {
		OutboxRows      *int64 `json:"outbox_rows"`
		OutboxRowsError string `json:"outbox_rows_error"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &after) != nil || after.OutboxRows == nil || *after.OutboxRows != 1 || after.OutboxRowsError != "" {
		t.Fatalf("status --json after the lock exited %d:\n%s\n%s", code, out, stderr)
	}
}

// Outbox rows dated 'infinity' or '-infinity' never reach event_log: the
// connector sets them aside as dead letters. They are not lag: the
// connector's gauge returns to 0 once they are set aside, and `cdc status`
// computes the seconds from the other rows, as if they were not there,
// while it counts them apart. A row at infinity lies past event_log's newest
// event for ever; it used to make the seconds unknown for as long as it
// stayed in the outbox (and retention never deletes it).
func TestCommands_StatusLagSecondsLeavesOutRowsAtInfinity(t *testing.T) {
	w := newWorld(t)
	// Retention off: it would delete the row at -infinity.
	c := w.start(map[string]string{"CDC_OUTBOX_RETENTION": "0", "CDC_METRICS_ADDR": "auto"})
	w.exec(`INSERT INTO outbox (event_type, environment, event_context, event_date_time) VALUES
		('stored', 'test', '{}', now() - interval '300 seconds'),
		('dated_ahead', 'test', '{}', now() + interval '10 years'),
		('at_infinity', 'test', '{}', 'infinity'),
		('at_minus_infinity', 'test', '{}', '-infinity')`)
	w.waitRows(2, 30*time.Second)
	waitFor(t, 30*time.Second, "the two rows at ±infinity set aside", func() (bool, string) {
		n := w.pgCount(`SELECT count(*) FROM cdc_dead_letter`)
		return n == 2, fmt.Sprintf("%d dead letters", n)
	})
	waitFor(t, 10*time.Second, "cdc_replication_lag_seconds 0", func() (bool, string) {
		v := scrapeMetric(t, c.MetricsAddr, "cdc_replication_lag_seconds")
		return v == 0, fmt.Sprintf("%v s", v)
	})
	if code, _ := c.term(15 * time.Second); code != 0 {
		t.Fatalf("cdc run exited %d", code)
	}

	type report struct {
		LagBytes             int64    `json:"lag_bytes"`
		LagSeconds           *float64 `json:"lag_seconds"`
		OutboxRows           int64    `json:"outbox_rows"`
		OutboxRowsAtInfinity int64    `json:"outbox_rows_at_infinity"`
		DeadLetters          int64    `json:"dead_letters"`
	}
	status := func() report {
		t.Helper()
		out, stderr, code := w.runOperator(nil, "status", "--json")
		var r report
		if code != 0 || json.Unmarshal([]byte(out), &r) != nil {
			t.Fatalf("status --json exited %d: %s %s", code, out, stderr)
		}
		return r
	}
	// Other tables' WAL leaves the slot behind: the outbox is asked. The
	// event dated ten years ahead, stored, hides nothing pending.
	w.exec(`CREATE TABLE other (v int)`)
	w.exec(`INSERT INTO other SELECT generate_series(1, 1000)`)
	r := status()
	if r.LagBytes == 0 || r.LagSeconds == nil || *r.LagSeconds != 0 || r.OutboxRows != 4 || r.OutboxRowsAtInfinity != 2 || r.DeadLetters != 2 {
		g, _ := json.Marshal(r)
		t.Fatalf("rows at ±infinity set aside, nothing pending: status %s; want some lag bytes, lag_seconds 0, 4 outbox rows, 2 at infinity, 2 dead letters", g)
	}

	w.exec(`INSERT INTO outbox (event_type, environment, event_context, event_date_time) VALUES ('pending', 'test', '{}', now() - interval '100 seconds')`)
	r = status()
	if r.LagBytes == 0 || r.LagSeconds == nil || *r.LagSeconds < 100 || *r.LagSeconds > 130 || r.OutboxRows != 5 || r.OutboxRowsAtInfinity != 2 {
		g, _ := json.Marshal(r)
		t.Fatalf("one event pending since 100 s beside the rows at ±infinity and one dated ahead: status %s; want lag_seconds 100-130, 5 outbox rows, 2 at infinity", g)
	}
	out, stderr, code := w.runOperator(nil, "status")
	const line = "outbox rows:       5 (2 at infinity or -infinity: dead letters, not lag)\n"
	if code != 0 || !strings.Contains(out, line) || !strings.Contains(out, "dead letters:      2\n") {
		t.Fatalf("status exited %d:\n%s\nwant the line %q\n%s", code, out, line, stderr)
	}
}

// A setting that would only fail at its first use is a configuration error
// too: every command exits 2 naming the variable, before any connection,
// and never echoes a password.
func TestCommands_UnusableSettingExitsTwo(t *testing.T) {
	env := func(kv ...string) map[string]string {
		m := map[string]string{
			"CDC_PG_DSN":         "postgres://nobody:s3cret@127.0.0.1:1/none?sslmode=disable",
			"CDC_CLICKHOUSE_DSN": "clickhouse://nobody@127.0.0.1:1/none",
			"CDC_METRICS_ADDR":   "off",
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	badDSN := env("CDC_PG_DSN", "postgres://nobody:s3cret@127.0.0.1:1/none?sslmode=bogus")
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"migrate_dsn", []string{"migrate"}, badDSN, "cdc: invalid configuration: CDC_PG_DSN: cannot parse"},
		{"run_dsn", []string{"run"}, badDSN, "cdc: invalid configuration: CDC_PG_DSN: cannot parse"},
		{"status_dsn", []string{"status"}, badDSN, "cdc: invalid configuration: CDC_PG_DSN: cannot parse"},
		{"backfill_clickhouse_dsn", []string{"backfill", "--since", "-infinity"}, env("CDC_CLICKHOUSE_DSN", "clickhouse://nobody:s3cret@127.0.0.1:1/none?dial_timeout=5"),
			"cdc: invalid configuration: CDC_CLICKHOUSE_DSN: parse clickhouse dsn: clickhouse [dsn parse]: dial timeout: time: missing unit"},
		{"metrics_addr", []string{"run"}, env("CDC_METRICS_ADDR", "abc"), `cdc: invalid configuration: CDC_METRICS_ADDR: "abc" is not host:port`},
		{"log_level", []string{"status"}, env("CDC_LOG_LEVEL", "fatal"), `cdc: invalid configuration: CDC_LOG_LEVEL: "fatal" is not a level`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// run logs its settings before it opens anything; the error
			// is the last line.
			stdout, stderr, code := runBinary(t, tc.env, tc.args...)
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if code != 2 || stdout != "" || !strings.HasPrefix(lines[len(lines)-1], tc.want) || strings.Contains(stderr, "s3cret") {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2, a last line starting %q and no password", code, stdout, stderr, tc.want)
			}
		})
	}
}

// leastPrivilege creates a PostgreSQL role with only what `cdc run` needs in
// the world's database and returns a DSN for it (with a password, which the
// local trust authentication ignores, to check it never reaches the logs),
// plus a ClickHouse DSN for the localdb user "cdc" (allow_ddl=0).
func (w *world) leastPrivilege(pgPassword string) (pgDSN, chDSN string) {
	w.t.Helper()
	role := testenv.Name("cdc_runner")
	w.exec(`CREATE ROLE ` + role + ` WITH LOGIN REPLICATION`)
	w.t.Cleanup(func() {
		ctx := context.Background()
		_, _ = w.pg.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, role)
		_, _ = w.pg.Exec(ctx, `DROP OWNED BY `+role)
		if _, err := w.pg.Exec(ctx, `DROP ROLE `+role); err != nil {
			w.t.Logf("drop role %s: %v", role, err)
		}
	})
	for _, grant := range []string{
		`GRANT SELECT, DELETE ON outbox TO ` + role,
		`GRANT SELECT, INSERT ON cdc_dead_letter TO ` + role,
		`GRANT USAGE ON SEQUENCE cdc_dead_letter_id_seq TO ` + role,
	} {
		w.exec(grant)
	}
	u, err := url.Parse(w.pgDSN)
	if err != nil {
		w.t.Fatal(err)
	}
	u.User = url.UserPassword(role, pgPassword)
	pgDSN = u.String()
	c, err := url.Parse(w.chDSN)
	if err != nil {
		w.t.Fatal(err)
	}
	c.User = url.UserPassword("cdc", "cdc-secret")
	return pgDSN, c.String()
}

func TestCommands_RunsWithLeastPrivilege(t *testing.T) {
	w := newWorld(t) // migrated as the superuser
	const pgSecret = "pg-runner-secret"
	pgDSN, chDSN := w.leastPrivilege(pgSecret)
	runner := map[string]string{"CDC_PG_DSN": pgDSN, "CDC_CLICKHOUSE_DSN": chDSN, "CDC_OUTBOX_RETENTION": "0"}

	// The role really is restricted: it cannot run the DDL. The tables
	// exist, so migrate creates none (it creates them only where the
	// search path finds none), and the first DDL it runs is an index's.
	if _, stderr, code := w.runOperator(runner, "migrate"); code != 1 || !strings.Contains(stderr, "must be owner of table cdc_dead_letter") {
		t.Fatalf("migrate as the restricted users exited %d: %s", code, stderr)
	}
	if _, stderr, code := w.runOperator(map[string]string{"CDC_CLICKHOUSE_DSN": chDSN}, "migrate"); code != 1 || !strings.Contains(stderr, "DDL queries are prohibited") {
		t.Fatalf("migrate as the ClickHouse user cdc exited %d: %s", code, stderr)
	}

	c := w.start(runner)
	w.insertOld("least_privilege", 20)
	w.waitRows(20, 30*time.Second)
	// A refused row needs the dead letter grants.
	w.exec(`INSERT INTO outbox (event_type, environment, event_context, event_date_time) VALUES ('refused', 'prod', '{}', '1960-01-01 00:00:00+00')`)
	waitFor(t, 30*time.Second, "one dead letter", func() (bool, string) {
		n := w.pgCount(`SELECT count(*) FROM cdc_dead_letter`)
		return n == 1, fmt.Sprintf("%d dead letters", n)
	})

	// The operator's read-only commands work with the same rights.
	if out, stderr, code := w.runOperator(runner, "status"); code != 0 || !strings.Contains(out, "dead letters:      1\n") ||
		!strings.Contains(out, "retention:         not held\n") || strings.Contains(out+stderr, "unknown") {
		t.Fatalf("status as the runner exited %d:\n%s\n%s", code, out, stderr)
	}
	r := w.verify(longAgo, 1) // the refused event is missing, and known
	if r.OutboxRows != 21 || r.Missing != 1 || r.MissingDeadLettered != 1 {
		t.Fatalf("verify: %+v", r)
	}
	if _, stderr, code := w.runOperator(runner, "verify", "--since", longAgo); code != 1 || !strings.Contains(stderr, "1 of 21 outbox rows are missing") {
		t.Fatalf("verify as the runner exited %d: %s", code, stderr)
	}

	if code, _ := c.term(20 * time.Second); code != 0 {
		t.Fatalf("connector exited %d:\n%s", code, tail(c.out.String(), 40))
	}
	logs := c.out.String()
	for _, secret := range []string{pgSecret, "cdc-secret"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("connector output contains the password %q", secret)
		}
	}
	if strings.Contains(logs, "permission denied") {
		t.Fatalf("connector hit a missing grant:\n%s", tail(logs, 40))
	}
	// The look at the schema at start reads only what these rights show.
	if strings.Contains(logs, "could not look at the") || strings.Contains(logs, "the schema lacks") {
		t.Fatalf("the runner's look at the schema failed or found a lack on a migrated schema:\n%s", tail(logs, 40))
	}
}

// TestCommands_RetentionRunsWithLeastPrivilege checks that the runner role
// (SELECT and DELETE on outbox, no UPDATE) can delete old outbox rows.
func TestCommands_RetentionRunsWithLeastPrivilege(t *testing.T) {
	w := newWorld(t)
	pgDSN, chDSN := w.leastPrivilege("pg-runner-secret")
	w.exec(`INSERT INTO outbox (event_type, environment, event_context, event_date_time)
		SELECT 'old', 'test', '{}', now() - interval '2 hours' FROM generate_series(1, 5)`)
	w.insertEvents("recent", 3)
	c := w.start(map[string]string{"CDC_PG_DSN": pgDSN, "CDC_CLICKHOUSE_DSN": chDSN, "CDC_OUTBOX_RETENTION": "1h"})
	w.waitRows(8, 30*time.Second)
	waitFor(t, 30*time.Second, "retention to delete the 5 old outbox rows", func() (bool, string) {
		if strings.Contains(c.out.String(), "retention sweep failed") {
			t.Fatalf("retention failed as the runner:\n%s", tail(c.out.String(), 10))
		}
		n := w.pgCount(`SELECT count(*) FROM outbox`)
		return n == 3, fmt.Sprintf("%d outbox rows", n)
	})
}

// deadletter list --json prints the letters a page at a time, and the
// array it prints is what json.Encoder with a two-space indent prints for
// them all at once: every letter once, in id order, up to --limit.
func TestCommands_DeadLetterListJSONIsPrintedPageByPage(t *testing.T) {
	w := newWorld(t)
	if stdout, stderr, code := w.runOperator(nil, "deadletter", "list", "--json"); code != 0 || stdout != "[]\n" {
		t.Fatalf("list --json of no letters: exit %d, %q (%s); want 0, \"[]\\n\"", code, stdout, stderr)
	}
	// 40 KiB letters: pages of CDC_BATCH_MAX_BYTES=64KiB hold two each.
	w.exec(`INSERT INTO cdc_dead_letter (event_id, commit_lsn, seq, row_data, error)
		SELECT gen_random_uuid(), '0/16B3748', i, jsonb_build_object('event_context', repeat('<x&>', 10240), 'n', i::text, 'nothing', null), 'refused ' || i
		FROM generate_series(1, 7) i`)
	type fullLetter struct {
		ID        int64              `json:"id"`
		EventID   *string            `json:"event_id"`
		CommitLSN string             `json:"commit_lsn"`
		Seq       int64              `json:"seq"`
		RowData   map[string]*string `json:"row_data"`
		Error     string             `json:"error"`
		CreatedAt time.Time          `json:"created_at"`
	}
	want := func(limit int) string {
		rows, err := w.pg.Query(context.Background(), `SELECT id, event_id::text, commit_lsn::text, seq, row_data, error, created_at FROM cdc_dead_letter ORDER BY id LIMIT $1`, limit)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var all []fullLetter
		for rows.Next() {
			var l fullLetter
			if err := rows.Scan(&l.ID, &l.EventID, &l.CommitLSN, &l.Seq, &l.RowData, &l.Error, &l.CreatedAt); err != nil {
				t.Fatal(err)
			}
			l.CreatedAt = l.CreatedAt.UTC()
			all = append(all, l)
		}
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetIndent("", "  ")
		if err := enc.Encode(all); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	for _, limit := range []int{7, 5, 1, 100} {
		// A zone far from UTC: created_at is printed in UTC whatever it is.
		stdout, stderr, code := w.runOperator(map[string]string{"CDC_BATCH_MAX_BYTES": "64KiB", "TZ": "Pacific/Kiritimati"}, "deadletter", "list", "--json", "--limit", strconv.Itoa(limit))
		if code != 0 {
			t.Fatalf("list --json --limit %d: exit %d: %s", limit, code, stderr)
		}
		if exp := want(limit); stdout != exp {
			t.Fatalf("list --json --limit %d printed %d bytes, json.Encoder %d; they differ from byte %d", limit, len(stdout), len(exp), firstDiff(stdout, exp))
		}
	}
}

func firstDiff(a, b string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// A login the server refuses — an unknown user, a wrong password, a
// database that does not exist — is a setting to fix: every command,
// run included, exits 2 naming the variable, at once rather than after
// retrying for ever, and never echoes the password.
func TestCommands_RefusedLoginExitsTwo(t *testing.T) {
	w := newWorld(t)
	with := func(dsn string, change func(*url.URL)) string {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		change(u)
		return u.String()
	}
	user := func(u *url.URL) { u.User = url.UserPassword("cdc_no_such_user", "s3cret") }
	database := func(u *url.URL) { u.Path = "/cdc_no_such_db" }
	// A parameter pgx does not know it sends as a session setting, which
	// PostgreSQL refuses at the login: a misspelling (sslmod), or a value
	// a setting does not take.
	setting := func(name, value string) func(*url.URL) {
		return func(u *url.URL) {
			q := u.Query()
			q.Set(name, value)
			u.RawQuery = q.Encode()
		}
	}
	const (
		pgSetting = "CDC_PG_DSN: PostgreSQL refused a setting the DSN sends when connecting (a parameter it does not know, often a misspelling, or a value it does not take): "
		pgRefused = "CDC_PG_DSN: PostgreSQL refused the login (check the DSN's user, password and database, the server's pg_hba.conf, and the role's REPLICATION attribute and CONNECT privilege): "
		chSetting = "CDC_CLICKHOUSE_DSN: ClickHouse refused a setting the DSN sends with every query (a parameter that is not an option of the client goes to the server as a setting: a misspelling, or one this server does not have), or one the user's profile forbids (the error names it): "
		chRefused = "CDC_CLICKHOUSE_DSN: ClickHouse refused the login (check the DSN's user, password and database): "
	)
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		want     string // the last line starts with it
		sqlstate string // and ends with it
		stdout   string // what stdout starts with ("": nothing on it)
	}{
		{"run_pg_user", []string{"run"}, map[string]string{"CDC_PG_DSN": with(w.pgDSN, user)}, "cdc run: " + pgRefused, `role "cdc_no_such_user" does not exist (SQLSTATE 28000)`, ""},
		{"run_pg_database", []string{"run"}, map[string]string{"CDC_PG_DSN": with(w.pgDSN, database)}, "cdc run: " + pgRefused, `database "cdc_no_such_db" does not exist (SQLSTATE 3D000)`, ""},
		{"run_clickhouse_user", []string{"run"}, map[string]string{"CDC_CLICKHOUSE_DSN": with(w.chDSN, user)}, "cdc run: " + chRefused, "Unknown user cdc_no_such_user", ""},
		{"run_clickhouse_database", []string{"run"}, map[string]string{"CDC_CLICKHOUSE_DSN": with(w.chDSN, database)}, "cdc run: " + chRefused, "Database cdc_no_such_db doesn't exist", ""},
		{"migrate_pg_user", []string{"migrate"}, map[string]string{"CDC_PG_DSN": with(w.pgDSN, user)}, "cdc migrate: " + pgRefused, "(SQLSTATE 28000)", ""},
		{"migrate_clickhouse_user", []string{"migrate"}, map[string]string{"CDC_CLICKHOUSE_DSN": with(w.chDSN, user)}, "cdc migrate: " + chRefused, "Unknown user cdc_no_such_user", ""},
		{"status_pg_database", []string{"status"}, map[string]string{"CDC_PG_DSN": with(w.pgDSN, database)}, "cdc status: " + pgRefused, "(SQLSTATE 3D000)", ""},
		{"run_pg_unknown_setting", []string{"run"}, map[string]string{"CDC_PG_DSN": with(w.pgDSN, setting("sslmod", "require"))}, "cdc run: " + pgSetting, `unrecognized configuration parameter "sslmod" (SQLSTATE 42704)`, ""},
		{"run_pg_setting_value", []string{"run"}, map[string]string{"CDC_PG_DSN": with(w.pgDSN, setting("statement_timeout", "soon"))}, "cdc run: " + pgSetting, "(SQLSTATE 22023)", ""},
		{"migrate_pg_unknown_setting", []string{"migrate"}, map[string]string{"CDC_PG_DSN": with(w.pgDSN, setting("sslmod", "require"))}, "cdc migrate: " + pgSetting, "(SQLSTATE 42704)", ""},
		// The server's message differs between versions: no suffix.
		{"run_clickhouse_unknown_setting", []string{"run"}, map[string]string{"CDC_CLICKHOUSE_DSN": with(w.chDSN, setting("cdc_no_such_setting", "1"))}, "cdc run: " + chSetting, "", ""},
		{"migrate_clickhouse_unknown_setting", []string{"migrate"}, map[string]string{"CDC_CLICKHOUSE_DSN": with(w.chDSN, setting("cdc_no_such_setting", "1"))}, "cdc migrate: " + chSetting, "", ""},
		{"status_pg_unknown_setting", []string{"status"}, map[string]string{"CDC_PG_DSN": with(w.pgDSN, setting("sslmod", "require"))}, "cdc status: " + pgSetting, "(SQLSTATE 42704)", ""},
		{"deadletter_pg_setting_value", []string{"deadletter", "list"}, map[string]string{"CDC_PG_DSN": with(w.pgDSN, setting("default_transaction_isolation", "sometimes"))}, "cdc deadletter: " + pgSetting, "(SQLSTATE 22023)", ""},
		// The slot lags (an event committed, nothing streams), so status
		// asks ClickHouse for the lag in seconds.
		{"status_clickhouse_user", []string{"status"}, map[string]string{"CDC_CLICKHOUSE_DSN": with(w.chDSN, user)}, "cdc status: " + chRefused, "Unknown user cdc_no_such_user", ""},
		{"deadletter_pg_user", []string{"deadletter", "list"}, map[string]string{"CDC_PG_DSN": with(w.pgDSN, user)}, "cdc deadletter: " + pgRefused, "(SQLSTATE 28000)", ""},
		// The outbox holds the lagging event: backfill reads it, and its
		// first INSERT meets the refusal, which is not retried.
		{"backfill_clickhouse_user", []string{"backfill", "--since", "2000-01-01T00:00:00Z"}, map[string]string{"CDC_CLICKHOUSE_DSN": with(w.chDSN, user)}, "cdc backfill: " + chRefused, "Unknown user cdc_no_such_user",
			"backfill since 2000-01-01T00:00:00Z: 1 outbox rows read, 0 shipped to event_log, 0 refused (dead letters)\n"},
	} {
		if tc.name == "status_clickhouse_user" {
			w.insertEvents("lagging", 1)
		}
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			stdout, stderr, code := w.runOperator(tc.env, tc.args...)
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			last := lines[len(lines)-1]
			if code != 2 || !strings.HasPrefix(stdout, tc.stdout) || tc.stdout == "" && stdout != "" || !strings.HasPrefix(last, tc.want) || !strings.HasSuffix(last, tc.sqlstate) || strings.Contains(stderr, "s3cret") {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2, a last line %q…%q and no password", code, stdout, stderr, tc.want, tc.sqlstate)
			}
			if strings.Contains(stderr, "reconnecting") || strings.Contains(stderr, "retrying") {
				t.Fatalf("retried a refused login before exiting:\n%s", stderr)
			}
			t.Logf("exited 2 in %s", time.Since(start).Round(time.Millisecond))
		})
	}
}

// signalledWhileClickHouseIsSilent runs cdc cmd against a ClickHouse that
// accepts the connection and never answers, sends it SIGTERM once it has
// connected, and returns what it wrote and how it ended; a cdc that does
// not end within 30 s of the signal is killed, and the test fails.
func (w *world) signalledWhileClickHouseIsSilent(command string) (stdout, stderr string, err error) {
	w.t.Helper()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		w.t.Fatal(err)
	}
	defer silent.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := silent.Accept(); err == nil {
			accepted <- c
		}
	}()
	env := w.baseEnv()
	env["CDC_CLICKHOUSE_DSN"] = "clickhouse://" + silent.Addr().String() + "/default?dial_timeout=5s&read_timeout=60s"
	cmd := exec.Command(binary, command)
	cmd.Env = envList(env)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case c := <-accepted:
		defer c.Close()
	case err := <-done:
		w.t.Fatalf("%s ended before it connected to ClickHouse (%v): %s %s", command, err, out.String(), errOut.String())
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		w.t.Fatalf("%s never connected to ClickHouse: %s %s", command, out.String(), errOut.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		w.t.Fatal(err)
	}
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		w.t.Fatalf("%s still runs 30 s after SIGTERM: %s %s", command, out.String(), errOut.String())
	}
	return out.String(), errOut.String(), err
}

// A runner role without a dead-letter grant cannot work: without SELECT
// every replication session's start fails, without INSERT (or the
// sequence) the first refused row stops acknowledging. cdc run says so at
// its start, naming the role, the privilege and the GRANT, and exits 1,
// rather than reconnecting for ever or stalling at a refused row. So too
// a role whose transactions are read-only by default, which holds every
// grant and stalled at the first refused row all the same.
func TestCommands_RunWithoutADeadLetterGrantExitsOneNamingIt(t *testing.T) {
	for _, tc := range []struct {
		name   string
		revoke string // from the documented cdc_runner grants; %s is the role
		want   string // %s is the role
	}{
		{"select", `REVOKE SELECT ON cdc_dead_letter FROM %s`,
			"schema: role %[1]s has no SELECT on cdc_dead_letter: every replication session's start reads the rows set aside in it, so cdc would never stream: GRANT SELECT ON cdc_dead_letter TO %[1]s: grant, as the admin, what the role cdc connects as lacks (docs/operations.md, Grants)"},
		{"insert", `REVOKE INSERT ON cdc_dead_letter FROM %s`,
			"schema: role %[1]s has no INSERT on cdc_dead_letter: the rows ClickHouse refuses are set aside in it, so at the first one cdc would stop acknowledging and retry for ever: GRANT INSERT ON cdc_dead_letter TO %[1]s: grant, as the admin, what the role cdc connects as lacks (docs/operations.md, Grants)"},
		{"sequence", `REVOKE USAGE ON SEQUENCE cdc_dead_letter_id_seq FROM %s`,
			"schema: role %[1]s has no USAGE on sequence public.cdc_dead_letter_id_seq: the rows ClickHouse refuses are set aside in cdc_dead_letter, whose ids it numbers, so at the first one cdc would stop acknowledging and retry for ever: GRANT USAGE ON SEQUENCE public.cdc_dead_letter_id_seq TO %[1]s: grant, as the admin, what the role cdc connects as lacks (docs/operations.md, Grants)"},
		{"read-only", `ALTER ROLE %s SET default_transaction_read_only = on`,
			"schema: role %[1]s's transactions are read-only (default_transaction_read_only = on, set for the role): PostgreSQL refuses every write of cdc's: the rows ClickHouse refuses are set aside in cdc_dead_letter, so at the first one cdc would stop acknowledging and retry for ever, and each retention sweep (CDC_OUTBOX_RETENTION) fails: as a superuser, ALTER ROLE %[1]s SET default_transaction_read_only = off: lift the setting that makes the role cdc connects as read-only (docs/operations.md, Grants)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			pgDSN, chDSN := w.leastPrivilege("pg-runner-secret")
			u, err := url.Parse(pgDSN)
			if err != nil {
				t.Fatal(err)
			}
			role := u.User.Username()
			w.exec(fmt.Sprintf(tc.revoke, role))
			c := w.start(map[string]string{"CDC_PG_DSN": pgDSN, "CDC_CLICKHOUSE_DSN": chDSN})
			select {
			case <-c.done:
			case <-time.After(30 * time.Second):
				t.Fatalf("connector still running without the grant:\n%s", tail(c.out.String(), 10))
			}
			if code := c.cmd.ProcessState.ExitCode(); code != 1 {
				t.Fatalf("exit code %d, want 1:\n%s", code, tail(c.out.String(), 10))
			}
			want := fmt.Sprintf(tc.want, role)
			if out := c.out.String(); !strings.Contains(out, `"error": "`+want+`"`) || strings.Contains(out, "pg-runner-secret") {
				t.Fatalf("log does not say %q, or names the password:\n%s", want, tail(out, 10))
			}
		})
	}
}

// A ClickHouse user that may not insert (readonly = 1, or 2, in its
// profile or sent by the DSN) reads event_log and has every INSERT
// refused ("Cannot insert into table in readonly mode", code 164): cdc
// run retried its first batch for ever, never ready. It says so at its
// start and exits 1.
func TestCommands_RunAsAReadOnlyClickHouseUserExitsOneNamingIt(t *testing.T) {
	w := newWorld(t)
	sep := "?"
	if strings.Contains(w.chDSN, "?") {
		sep = "&"
	}
	c := w.start(map[string]string{"CDC_CLICKHOUSE_DSN": w.chDSN + sep + "readonly=1"})
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("connector still running as a read-only ClickHouse user:\n%s", tail(c.out.String(), 10))
	}
	if code := c.cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit code %d, want 1:\n%s", code, tail(c.out.String(), 10))
	}
	const want = `"error": "schema: the ClickHouse user of CDC_CLICKHOUSE_DSN is read-only (readonly = 1): ClickHouse refuses every INSERT into event_log, so cdc would retry its first batch for ever: set readonly = 0 for that user (its profile in users.xml, or ALTER USER … SETTINGS readonly = 0 where SQL access control is on; allow_ddl = 0 still keeps it from DDL) and take readonly out of CDC_CLICKHOUSE_DSN: make the ClickHouse user cdc connects as writable (docs/operations.md, Grants)"`
	if out := c.out.String(); !strings.Contains(out, want) {
		t.Fatalf("log does not say %q:\n%s", want, tail(out, 10))
	}
}

// TLS the DSN asks for and the server does not speak (sslmode=require to
// a PostgreSQL without ssl, secure=true to ClickHouse's plain port) is a
// setting to fix, as a refused login is: every command, run included,
// exits 2 naming the variable, at once rather than after retrying for
// ever, and never echoes the password. (TestTLS_* check a certificate
// cdc does not trust, against servers with TLS on.)
func TestCommands_TLSTheServerDoesNotSpeakExitsTwo(t *testing.T) {
	w := newWorld(t)
	with := func(dsn, name, value string) string {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(u.User.Username(), "s3cret")
		q := u.Query()
		q.Set(name, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	const (
		pgTLS = "CDC_PG_DSN: TLS with PostgreSQL failed (the server refused TLS, or its certificate failed the check sslmode asks for: check sslmode and sslrootcert against the server's ssl settings; docs/operations.md, TLS): "
		chTLS = "CDC_CLICKHOUSE_DSN: TLS with ClickHouse failed (secure=true to a port that does not speak TLS, or a certificate the system's CAs, or SSL_CERT_FILE, do not trust or that names another host; docs/operations.md, TLS): "
	)
	pg := map[string]string{"CDC_PG_DSN": with(w.pgDSN, "sslmode", "require")}
	ch := map[string]string{"CDC_CLICKHOUSE_DSN": with(w.chDSN, "secure", "true")}
	w.insertEvents("lagging", 1) // status asks ClickHouse for the lag in seconds
	for _, tc := range []struct {
		name   string
		args   []string
		env    map[string]string
		want   string // the last line starts with it
		suffix string // and ends with it
	}{
		{"run_pg", []string{"run"}, pg, "cdc run: " + pgTLS, "tls error: server refused TLS connection"},
		{"run_clickhouse", []string{"run"}, ch, "cdc run: " + chTLS, "tls: first record does not look like a TLS handshake"},
		{"status_pg", []string{"status"}, pg, "cdc status: " + pgTLS, "tls error: server refused TLS connection"},
		{"status_clickhouse", []string{"status"}, ch, "cdc status: " + chTLS, "tls: first record does not look like a TLS handshake"},
		{"verify_clickhouse", []string{"verify", "--since", longAgo}, ch, "cdc verify: " + chTLS, "tls: first record does not look like a TLS handshake"},
		{"migrate_pg", []string{"migrate"}, pg, "cdc migrate: " + pgTLS, "tls error: server refused TLS connection"},
		// Its first INSERT meets the failure, which is not retried.
		{"backfill_clickhouse", []string{"backfill", "--since", longAgo}, ch, "cdc backfill: " + chTLS, "tls: first record does not look like a TLS handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr string
			var code int
			if tc.args[0] == "run" {
				c := w.start(tc.env)
				select {
				case <-c.done:
				case <-time.After(30 * time.Second):
					t.Fatalf("cdc run still running:\n%s", tail(c.out.String(), 10))
				}
				stderr, code = c.out.String(), c.cmd.ProcessState.ExitCode()
			} else {
				_, stderr, code = w.runOperator(tc.env, tc.args...)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			last := lines[len(lines)-1]
			if code != 2 || !strings.HasPrefix(last, tc.want) || !strings.HasSuffix(last, tc.suffix) || strings.Contains(stderr, "s3cret") {
				t.Fatalf("exit %d, stderr %q; want exit 2, a last line %q…%q and no password", code, tail(stderr, 6), tc.want, tc.suffix)
			}
			if strings.Contains(stderr, "reconnecting") {
				t.Fatalf("retried before exiting:\n%s", tail(stderr, 6))
			}
		})
	}
}

// cdc migrate needs no superuser: the rights docs/operations.md (Grants)
// lists — the outbox's owner, CREATE on its schema (cdc_dead_letter) and
// on the database (the publication), REPLICATION (the slot) — serve, and
// without each one it exits with PostgreSQL's word for what is missing: 1,
// or 2 without REPLICATION, whose message names the ALTER ROLE.
func TestCommands_MigrateRunsWithTheDocumentedAdminRights(t *testing.T) {
	for _, tc := range []struct {
		name   string
		revoke string // one of the rights, taken back; %s is the role, %[2]s the database
		code   int
		want   string // in the last line
	}{
		{"all of them", "", 0, "migrated: postgres outbox, cdc_dead_letter, publication cdc_outbox; clickhouse event_log"},
		{"no REPLICATION", `ALTER ROLE %[1]s NOREPLICATION`, 2, "create slot cdc_outbox: ERROR: must be superuser or replication role to use replication slots (SQLSTATE 42501)"},
		{"no CREATE on the database", `REVOKE CREATE ON DATABASE %[2]s FROM %[1]s`, 1, "migrate postgres: ERROR: permission denied for database"},
		{"no CREATE on the schema", `REVOKE CREATE ON SCHEMA public FROM %[1]s`, 1, "migrate postgres: ERROR: permission denied for schema public (SQLSTATE 42501)"},
		{"not the outbox's owner", `REASSIGN OWNED BY %[1]s TO current_user`, 1, "must be owner of table outbox (SQLSTATE 42501): cdc migrate builds indexes and a publication of cdc's tables, which only their owner may: run it as the owner of the table named (or a superuser), or, as that owner, ALTER TABLE … OWNER TO "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t) // migrated as the superuser: take back what migrate makes but the outbox
			w.exec(`SELECT pg_drop_replication_slot('cdc_outbox')`)
			w.exec(`DROP PUBLICATION cdc_outbox`)
			w.exec(`DROP TABLE cdc_dead_letter`)
			var db string
			if err := w.pg.QueryRow(context.Background(), `SELECT current_database()`).Scan(&db); err != nil {
				t.Fatal(err)
			}
			role := testenv.Name("cdc_admin")
			w.exec(`CREATE ROLE ` + role + ` WITH LOGIN REPLICATION`)
			t.Cleanup(func() {
				ctx := context.Background()
				_, _ = w.pg.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'cdc_outbox' AND database = current_database()`)
				_, _ = w.pg.Exec(ctx, `REASSIGN OWNED BY `+role+` TO current_user`)
				_, _ = w.pg.Exec(ctx, `DROP OWNED BY `+role)
				if _, err := w.pg.Exec(ctx, `DROP ROLE `+role); err != nil {
					t.Logf("drop role %s: %v", role, err)
				}
			})
			w.exec(`ALTER TABLE outbox OWNER TO ` + role)
			w.exec(`GRANT CREATE ON SCHEMA public TO ` + role)
			w.exec(`GRANT CREATE ON DATABASE "` + db + `" TO ` + role)
			if tc.revoke != "" {
				w.exec(fmt.Sprintf(tc.revoke, role, `"`+db+`"`))
			}
			u, err := url.Parse(w.pgDSN)
			if err != nil {
				t.Fatal(err)
			}
			u.User = url.UserPassword(role, "s3cret")
			stdout, stderr, code := w.runOperator(map[string]string{"CDC_PG_DSN": u.String()}, "migrate")
			out := strings.TrimSuffix(stdout+stderr, "\n")
			last := out[strings.LastIndex(out, "\n")+1:]
			if code != tc.code || !strings.Contains(last, tc.want) || strings.Contains(out, "s3cret") {
				t.Fatalf("migrate exited %d, last line %q; want %d and %q, no password", code, last, tc.code, tc.want)
			}
		})
	}
}

// The operator's commands run with exactly the cdc_operator grants of
// docs/operations.md (Grants): no REPLICATION, SELECT on outbox, and the
// dead letters' table and sequence.
func TestCommands_OperatorCommandsRunWithTheOperatorGrants(t *testing.T) {
	w := newWorld(t)
	w.insertEvents("operator", 5)
	c := w.start(nil)
	w.waitRows(5, 30*time.Second)
	if code, _ := c.term(20 * time.Second); code != 0 {
		t.Fatalf("connector exited %d:\n%s", code, tail(c.out.String(), 20))
	}
	// A letter ClickHouse takes on replay.
	w.exec(`INSERT INTO cdc_dead_letter (event_id, commit_lsn, seq, row_data, error)
		SELECT id, '0/1', 1, jsonb_build_object('id', id::text, 'event_type', 'operator_replayed', 'environment', 'prod',
			'event_context', '{}', 'event_date_time', now()::text, 'metadata_version', '1'), 'refused once'
		FROM (SELECT gen_random_uuid() AS id) AS l`)

	role := testenv.Name("cdc_operator")
	w.exec(`CREATE ROLE ` + role + ` WITH LOGIN`)
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = w.pg.Exec(ctx, `DROP OWNED BY `+role)
		if _, err := w.pg.Exec(ctx, `DROP ROLE `+role); err != nil {
			t.Logf("drop role %s: %v", role, err)
		}
	})
	for _, grant := range []string{
		`GRANT SELECT ON outbox TO ` + role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON cdc_dead_letter TO ` + role,
		`GRANT USAGE ON SEQUENCE cdc_dead_letter_id_seq TO ` + role,
	} {
		w.exec(grant)
	}
	u, err := url.Parse(w.pgDSN)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, "pg-operator-secret")
	operator := map[string]string{"CDC_PG_DSN": u.String()}
	for _, tc := range []struct {
		args []string
		want string // in stdout
	}{
		{[]string{"status"}, "dead letters:      1\n"},
		{[]string{"verify", "--since", longAgo}, "missing:           0\n"},
		{[]string{"backfill", "--since", longAgo}, "5 outbox rows read, 5 shipped to event_log, 0 refused (dead letters)\n"},
		{[]string{"deadletter", "list"}, "1 of 1 dead letters shown\n"},
		{[]string{"deadletter", "replay"}, "replayed 1 dead letters into event_log; 0 refused again\n"},
	} {
		stdout, stderr, code := w.runOperator(operator, tc.args...)
		if code != 0 || !strings.Contains(stdout, tc.want) || strings.Contains(stdout+stderr, "unknown") ||
			strings.Contains(stderr, "permission denied") || strings.Contains(stderr, "pg-operator-secret") {
			t.Fatalf("%v as the operator exited %d, want 0 and %q:\n%s%s", tc.args, code, tc.want, stdout, stderr)
		}
	}
	if n := w.pgCount(`SELECT count(*) FROM cdc_dead_letter`); n != 0 {
		t.Fatalf("%d dead letters left after the replay, want 0", n)
	}
	if n := w.chCount(`SELECT count() FROM event_log FINAL WHERE event_type = 'operator_replayed'`); n != 1 {
		t.Fatalf("event_log holds %d replayed events, want 1", n)
	}
}

// A publication with a column list keeps columns out of ClickHouse, on
// purpose more often than not: cdc run is never sent them, and event_log
// gives them their defaults. A backfill ships what cdc run would have
// been sent; it shipped every column.
func TestCommands_BackfillShipsOnlyThePublishedColumns(t *testing.T) {
	w := newWorld(t)
	w.needPostgres15(t, "column lists")
	w.exec(`ALTER PUBLICATION cdc_outbox SET TABLE outbox (id, event_type, event_date_time, event_context, metadata_version)`)
	id := uuid.New()
	w.exec(`INSERT INTO outbox (id, event_type, event_date_time, environment, event_context, traceparent)
		VALUES ($1, 'kept_out', '2026-06-01T00:00:00Z', 'secret-env', '{}', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')`, id)
	out, stderr, code := w.runOperator(nil, "backfill", "--since", "2026-01-01T00:00:00Z")
	if code != 0 || out != "backfill since 2026-01-01T00:00:00Z: 1 outbox rows read, 1 shipped to event_log, 0 refused (dead letters)\n" {
		t.Fatalf("backfill exited %d: %q\n%s", code, out, stderr)
	}
	if !strings.Contains(stderr, `"columns_left_out": ["environment", "traceparent"]`) {
		t.Errorf("backfill did not name the columns left out:\n%s", stderr)
	}
	var env, trace, typ string
	if err := w.ch.QueryRow(context.Background(), `SELECT environment, trace_id, event_type FROM event_log FINAL WHERE event_id = ?`, id).Scan(&env, &trace, &typ); err != nil {
		t.Fatal(err)
	}
	if env != "" || trace != "" || typ != "kept_out" {
		t.Fatalf("event_log has environment %q, trace_id %q, event_type %q; want the defaults for the columns left out and kept_out", env, trace, typ)
	}
}

// A publication's row filter keeps rows from cdc run, one environment's
// events say: a backfill shipped them all the same, and a verify called
// them missing, exit 1, for ever.
func TestCommands_BackfillAndVerifyApplyThePublicationsRowFilter(t *testing.T) {
	w := newWorld(t)
	w.needPostgres15(t, "row filters")
	w.exec(`ALTER PUBLICATION cdc_outbox SET TABLE outbox WHERE (environment = 'prod')`)
	ids := map[string]uuid.UUID{"prod": uuid.New(), "staging": uuid.New(), "prod-2": uuid.New()}
	for name, id := range ids {
		env := strings.TrimSuffix(name, "-2")
		w.exec(`INSERT INTO outbox (id, event_type, event_date_time, environment, event_context)
			VALUES ($1, $2, '2026-06-01T00:00:00Z', $3, '{}')`, id, name, env)
	}
	out, stderr, code := w.runOperator(nil, "backfill", "--since", "2026-01-01T00:00:00Z")
	if code != 0 || out != "backfill since 2026-01-01T00:00:00Z: 2 outbox rows read, 2 shipped to event_log, 0 refused (dead letters)\n" {
		t.Fatalf("backfill exited %d: %q\n%s", code, out, stderr)
	}
	if !strings.Contains(stderr, `"row_filter": "(environment = 'prod'::text)"`) {
		t.Errorf("backfill did not name the row filter:\n%s", stderr)
	}
	rows, err := w.ch.Query(context.Background(), `SELECT event_type FROM event_log FINAL ORDER BY event_type`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var typ string
		if err := rows.Scan(&typ); err != nil {
			t.Fatal(err)
		}
		got = append(got, typ)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "prod,prod-2" {
		t.Fatalf("event_log holds %q; want prod,prod-2 (staging is kept out by the row filter)", got)
	}
	out, stderr, code = w.runOperator(nil, "verify", "--since", "2026-01-01T00:00:00Z", "--json")
	if code != 0 {
		t.Fatalf("verify exited %d: %s\n%s", code, out, stderr)
	}
	var rep struct {
		OutboxRows  int64 `json:"outbox_rows"`
		Found       int64 `json:"found"`
		Missing     int64 `json:"missing"`
		NotInOutbox int64 `json:"not_in_outbox"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("verify printed %q: %v", out, err)
	}
	if rep.OutboxRows != 2 || rep.Found != 2 || rep.Missing != 0 || rep.NotInOutbox != 0 {
		t.Fatalf("verify reported %+v; want 2 outbox rows, 2 found, none missing, none not in outbox", rep)
	}
}

// The rows a publication's row filter keeps from cdc run never reach
// event_log, so they are not lag: `cdc status` computes the seconds from
// the rows the filter passes. It counted the others too, and an hour of
// another environment's events past event_log's newest read as an hour
// of lag, growing until the filter's own next event was stored.
func TestCommands_StatusLagSecondsAppliesThePublicationsRowFilter(t *testing.T) {
	w := newWorld(t)
	w.needPostgres15(t, "row filters")
	w.exec(`ALTER PUBLICATION cdc_outbox SET TABLE outbox WHERE (environment = 'prod')`)
	c := w.start(nil)
	w.exec(`INSERT INTO outbox (event_type, environment, event_context, event_date_time) VALUES ('stored', 'prod', '{}', now() - interval '300 seconds')`)
	w.waitRows(1, 30*time.Second)
	if code, _ := c.term(15 * time.Second); code != 0 {
		t.Fatalf("cdc run exited %d", code)
	}
	w.exec(`INSERT INTO outbox (event_type, environment, event_context, event_date_time) VALUES ('kept_out', 'staging', '{}', now() - interval '200 seconds')`)
	if bytes, secs := w.statusLag(t); bytes == 0 || secs != 0 {
		t.Fatalf("only an event the row filter keeps from cdc run past event_log's newest: lag %d bytes, %.1f s; want some bytes and 0 s", bytes, secs)
	}
	w.exec(`INSERT INTO outbox (event_type, environment, event_context, event_date_time) VALUES ('pending', 'prod', '{}', now() - interval '100 seconds')`)
	if bytes, secs := w.statusLag(t); bytes == 0 || secs < 100 || secs > 130 {
		t.Fatalf("one event the filter passes pending since 100 s: lag %d bytes, %.1f s; want 100-130 s", bytes, secs)
	}
}

// needPostgres15 skips the test, saying what needs it, on a PostgreSQL
// older than 15: publications' column lists and row filters.
func (w *world) needPostgres15(t *testing.T, what string) {
	t.Helper()
	var v15 bool
	if err := w.pg.QueryRow(context.Background(), `SELECT current_setting('server_version_num')::int >= 150000`).Scan(&v15); err != nil {
		t.Fatal(err)
	}
	if !v15 {
		t.Skip(what + " need PostgreSQL 15")
	}
}

// statusLag is `cdc status --json`'s lag in bytes and in seconds; the
// test fails when status does not exit 0 or reads no lag in seconds.
func (w *world) statusLag(t *testing.T) (int64, float64) {
	t.Helper()
	out, stderr, code := w.runOperator(nil, "status", "--json")
	var r struct {
		LagBytes   int64    `json:"lag_bytes"`
		LagSeconds *float64 `json:"lag_seconds"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.LagSeconds == nil {
		t.Fatalf("status --json exited %d: %s %s", code, out, stderr)
	}
	return r.LagBytes, *r.LagSeconds
}
