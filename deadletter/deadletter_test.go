package deadletter_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcdc/cdc/deadletter"
	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/replication"
	"github.com/eventcdc/cdc/sink"
	ddl "github.com/eventcdc/cdc/sql"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// slotA names the pipeline the tests' stores are of.
const slotA = "pipe_a"

// Written reads the positions in [from, to) and no others: a replay skips
// exactly those, and a streamed transaction's ordinals are read by its one
// LSN, not by everything stored since.
func TestStore_WrittenReadsARangeOfPositions(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	rel := &decoder.Relation{Columns: []decoder.Column{{Name: "event_type"}}}
	var rejected []sink.Rejected
	for _, p := range []sink.Position{{CommitLSN: 0x100, Seq: 1}, {CommitLSN: 0x200, Seq: 1}, {CommitLSN: 0x200, Seq: 2}, {CommitLSN: 0x300, Seq: 1}} {
		row := sink.Row{Relation: rel, Values: []decoder.Value{{Kind: decoder.ValueText, Data: []byte("x")}}, Pos: p}
		rejected = append(rejected, sink.Rejected{Row: row, Err: errors.New("refused")})
	}
	store := deadletter.New(pool, slotA)
	if err := store.Put(ctx, rejected); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		from, to pglogrepl.LSN
		want     []sink.Position
	}{
		{0x200, 0x201, []sink.Position{{CommitLSN: 0x200, Seq: 1}, {CommitLSN: 0x200, Seq: 2}}},
		{0x101, 0x300, []sink.Position{{CommitLSN: 0x200, Seq: 1}, {CommitLSN: 0x200, Seq: 2}}},
		{0x200, sink.LastLSN, []sink.Position{{CommitLSN: 0x200, Seq: 1}, {CommitLSN: 0x200, Seq: 2}, {CommitLSN: 0x300, Seq: 1}}},
		{0, 0x100, nil},
	}
	for _, tt := range tests {
		got, err := store.Written(ctx, tt.from, tt.to)
		if err != nil {
			t.Fatal(err)
		}
		if all := slices.Collect(got.All()); !slices.Equal(all, tt.want) {
			t.Errorf("Written(%s, %s) = %v, want %v", tt.from, tt.to, all, tt.want)
		}
	}
}

// Put's commit is durable where the session sets synchronous_commit =
// off: the batch is acknowledged on its strength. Its transaction starts
// with DurableCommit, which raises off to local and leaves the stronger
// settings alone.
func TestStore_PutCommitsDurablyUnderAsynchronousCommit(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	for _, tt := range []struct{ session, want string }{
		{"off", "local"}, {"local", "local"}, {"on", "on"}, {"remote_apply", "remote_apply"},
	} {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		if _, err := tx.Exec(ctx, `SELECT set_config('synchronous_commit', $1, true)`, tt.session); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, deadletter.DurableCommit); err != nil {
			t.Fatal(err)
		}
		if err := tx.QueryRow(ctx, `SELECT current_setting('synchronous_commit')`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		_ = tx.Rollback(ctx)
		if got != tt.want {
			t.Errorf("synchronous_commit %s, after DurableCommit: %s; want %s", tt.session, got, tt.want)
		}
	}

	async, rec := testenv.RecordedPool(t, pool, map[string]string{"synchronous_commit": "off"})
	rel := &decoder.Relation{Columns: []decoder.Column{{Name: "event_type"}}}
	row := sink.Row{Relation: rel, Values: []decoder.Value{{Kind: decoder.ValueText, Data: []byte("x")}}, Pos: sink.Position{CommitLSN: 0x100, Seq: 1}}
	if err := deadletter.New(async, slotA).Put(ctx, []sink.Rejected{{Row: row, Err: errors.New("refused")}}); err != nil {
		t.Fatal(err)
	}
	// The store's first statement looks the slot column up, once.
	if sql := rec.SQL(); len(sql) != 6 || sql[0] != deadletter.SlotColumnQuery || sql[1] != "begin isolation level read committed" || sql[2] != deadletter.DurableCommit ||
		sql[3] != deadletter.UnboundedStatements || !strings.HasPrefix(sql[4], "INSERT INTO cdc_dead_letter") || sql[5] != "commit" {
		t.Fatalf("Put ran %q; want the slot column's look-up, begin (read committed), DurableCommit, UnboundedStatements, the INSERT, commit", sql)
	}
}

// A row already set aside — the same event with the same values — is not
// added again, whoever sets it aside and at whatever position; the first
// letter stays as it was. Another event, the same event with other values,
// and rows without an event id are added.
func TestStore_PutSetsAnEventAsideOnce(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	store := deadletter.New(pool, slotA)
	rel := &decoder.Relation{Columns: []decoder.Column{{Name: "id"}, {Name: "event_date_time"}}}
	const a, b = "6f1c2a34-0b1e-4c55-9d3e-1a2b3c4d5e6f", "0d9e8f7a-6b5c-4d3e-8f1a-2b3c4d5e6f70"
	refused := func(id, at string, pos sink.Position, why string) sink.Rejected {
		idv := decoder.Value{Kind: decoder.ValueNull}
		if id != "" {
			idv = decoder.Value{Kind: decoder.ValueText, Data: []byte(id)}
		}
		row := sink.Row{Relation: rel, Values: []decoder.Value{idv, {Kind: decoder.ValueText, Data: []byte(at)}}, Pos: pos}
		return sink.Rejected{Row: row, Err: errors.New(why)}
	}
	first := refused(a, "infinity", sink.Position{Seq: 1}, "backfill's reason")
	if err := store.Put(ctx, []sink.Rejected{first}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		put   []sink.Rejected
		added int
	}{
		{"the same row by another backfill run", []sink.Rejected{refused(a, "infinity", sink.Position{Seq: 7}, "backfill's reason")}, 0},
		{"the same row streamed, with another reason", []sink.Rejected{refused(a, "infinity", sink.Position{CommitLSN: 0x500, Seq: 1}, "connector's reason")}, 0},
		{"the same event with other values", []sink.Rejected{refused(a, "-infinity", sink.Position{CommitLSN: 0x600, Seq: 1}, "refused")}, 1},
		{"another event, twice in one call", []sink.Rejected{refused(b, "infinity", sink.Position{Seq: 1}, "refused"), refused(b, "infinity", sink.Position{Seq: 2}, "refused")}, 1},
		{"rows without an event id", []sink.Rejected{refused("", "infinity", sink.Position{Seq: 1}, "refused"), refused("", "infinity", sink.Position{Seq: 2}, "refused")}, 2},
	}
	for _, tt := range tests {
		before, err := store.Count(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Put(ctx, tt.put); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		after, err := store.Count(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if after-before != int64(tt.added) {
			t.Errorf("%s: %d dead letters added, want %d", tt.name, after-before, tt.added)
		}
	}
	letters, err := store.List(ctx, 10, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 5 {
		t.Fatalf("%d dead letters, want 5", len(letters))
	}
	got := letters[0]
	if got.EventID == nil || *got.EventID != a || got.CommitLSN != "0/0" || got.Seq != 1 || got.Error != "backfill's reason" ||
		got.RowData["event_date_time"] == nil || *got.RowData["event_date_time"] != "infinity" {
		t.Fatalf("first letter %+v, want event %s at 0/0 seq 1 with backfill's reason, unchanged", got, a)
	}
}

// Two transactions setting aside the same event at the same moment —
// backfill beside the connector — keep one letter, not two; also where
// the role's transactions default to repeatable read, whose snapshot would
// not see the letter the other committed while this one waited.
func TestStore_PutAtOnceSetsAnEventAsideOnce(t *testing.T) {
	for _, isolation := range []string{"read committed", "repeatable read"} {
		t.Run(strings.ReplaceAll(isolation, " ", "_"), func(t *testing.T) {
			putAtOnce(t, isolation)
		})
	}
}

func putAtOnce(t *testing.T, isolation string) {
	ctx := context.Background()
	migrated := testenv.Get(t).MigratedPostgres(t, "pub")
	pool, _ := testenv.RecordedPool(t, migrated, map[string]string{"default_transaction_isolation": isolation})
	store := deadletter.New(pool, slotA)
	rel := &decoder.Relation{Columns: []decoder.Column{{Name: "id"}, {Name: "event_date_time"}}}
	const events = 40
	for i := range events {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		row := sink.Row{Relation: rel, Values: []decoder.Value{{Kind: decoder.ValueText, Data: []byte(id)}, {Kind: decoder.ValueText, Data: []byte("infinity")}}}
		start := make(chan struct{})
		errs := make(chan error, 2)
		for range 2 {
			go func() {
				<-start
				errs <- store.Put(ctx, []sink.Rejected{{Row: row, Err: errors.New("refused")}})
			}()
		}
		close(start)
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}
	if n, err := store.Count(ctx); err != nil || n != events {
		t.Fatalf("%d dead letters (%v) after setting aside each of %d events twice at once, want %d", n, err, events, events)
	}
}

// A batch in which every row is refused — a column narrowed in ClickHouse
// while a backlog drains — can hold tens of thousands of events. Setting
// them aside takes a bounded number of locks: one per event filled
// PostgreSQL's shared lock table and failed with "out of shared memory",
// again at every retry.
func TestStore_PutOfAWholeBatchOfRefusedEvents(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	store := deadletter.New(pool, slotA)
	rel := &decoder.Relation{Columns: []decoder.Column{{Name: "id"}, {Name: "metadata_version"}}}
	const events = 50000
	rejected := make([]sink.Rejected, events)
	for i := range rejected {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		row := sink.Row{Relation: rel, Values: []decoder.Value{{Kind: decoder.ValueText, Data: []byte(id)}, {Kind: decoder.ValueText, Data: []byte("300")}},
			Pos: sink.Position{CommitLSN: 0x1000, Seq: uint64(i + 1)}}
		rejected[i] = sink.Rejected{Row: row, Err: errors.New(`column metadata_version: "300" does not fit UInt8`)}
	}
	if err := store.Put(ctx, rejected); err != nil {
		t.Fatalf("Put of %d refused events: %v", events, err)
	}
	if n, err := store.Count(ctx); err != nil || n != events {
		t.Fatalf("%d dead letters (%v), want %d", n, err, events)
	}
	if err := store.Put(ctx, rejected); err != nil {
		t.Fatalf("Put of the same %d events again: %v", events, err)
	}
	if n, err := store.Count(ctx); err != nil || n != events {
		t.Fatalf("%d dead letters (%v) after setting the same events aside again, want %d", n, err, events)
	}
}

// Replay reads letters in pages sized from the largest letter of the page
// before; a page ends once its letters' values reach maxBytes, so letters
// larger than those before are not all read at once. List leaves the
// letters' values out unless asked, for a listing of their errors only.
func TestStore_PageStopsAtMaxBytesAndListLeavesValuesOut(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	store := deadletter.New(pool, slotA)
	rel := &decoder.Relation{Columns: []decoder.Column{{Name: "id"}, {Name: "event_context"}}}
	letter := func(i int, context string) sink.Rejected {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		row := sink.Row{Relation: rel, Values: []decoder.Value{{Kind: decoder.ValueText, Data: []byte(id)}, {Kind: decoder.ValueText, Data: []byte(context)}}}
		return sink.Rejected{Row: row, Err: errors.New("refused")}
	}
	var put []sink.Rejected
	for i := range 3 {
		put = append(put, letter(i, "{}"))
	}
	pad := `"` + strings.Repeat("x", 256<<10) + `"`
	for i := 3; i < 23; i++ {
		put = append(put, letter(i, pad))
	}
	if err := store.Put(ctx, put); err != nil {
		t.Fatal(err)
	}
	// 3 small letters of 38 bytes, then 262,182-byte ones: the fourth of
	// those takes the page past 1 MiB.
	last, err := store.LastID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	page, more, err := store.Page(ctx, 0, last, 1000, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 7 || !more {
		t.Fatalf("page of %d letters, more %v; want 7, cut by bytes, more to come", len(page), more)
	}
	rest, more, err := store.Page(ctx, page[len(page)-1].ID, last, 1000, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 16 || rest[0].ID <= page[len(page)-1].ID || more {
		t.Fatalf("the next unbounded page holds %d letters from id %d, more %v; want the other 16 after id %d, and no more", len(rest), rest[0].ID, more, page[len(page)-1].ID)
	}
	listed, err := store.List(ctx, 100, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 23 || listed[0].RowData != nil || listed[0].Error != "refused" {
		t.Fatalf("listed %d letters, the first with values %v and error %q; want 23, no values, \"refused\"", len(listed), listed[0].RowData, listed[0].Error)
	}
}

// A page cut by its bytes ends its query there: the letters after the cut,
// up to the page's LIMIT, are neither sent nor read and dropped. The pool
// goes on working.
func TestStore_PageCutByBytesReadsNoFurther(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	rel := &decoder.Relation{Columns: []decoder.Column{{Name: "id"}, {Name: "event_context"}}}
	letter := func(i int, context string) sink.Rejected {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		row := sink.Row{Relation: rel, Values: []decoder.Value{{Kind: decoder.ValueText, Data: []byte(id)}, {Kind: decoder.ValueText, Data: []byte(context)}}}
		return sink.Rejected{Row: row, Err: errors.New("refused")}
	}
	pad := `"` + strings.Repeat("x", 1<<20) + `"`
	for i := range 40 {
		put := []sink.Rejected{letter(i, pad)}
		if i < 3 {
			put = []sink.Rejected{letter(i, "{}")}
		}
		if err := deadletter.New(pool, slotA).Put(ctx, put); err != nil {
			t.Fatal(err)
		}
	}
	counted, read := testenv.CountingPool(t, pool)
	store := deadletter.New(counted, slotA)
	last, err := store.LastID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := read.Load()
	page, more, err := store.Page(ctx, 0, last, 1000, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	got := read.Load() - before
	if len(page) != 4 || !more {
		t.Fatalf("page of %d letters, more %v; want 4 (the first 1 MiB one crosses 1 MiB), more to come", len(page), more)
	}
	// The 37 letters of 1 MiB would be 37 MiB; the page is 1 MiB, and
	// what was in flight when the query was cancelled a few more.
	if got > 8<<20 {
		t.Fatalf("reading a page of 1 MiB read %d bytes from the server; want under 8 MiB", got)
	}
	if n, err := store.Count(ctx); err != nil || n != 40 {
		t.Fatalf("count after the cut page: %d, %v; want 40", n, err)
	}
}

// A letter repaired by hand, with a number or an object where cdc writes a
// string, reads with each value as its JSON text, which is what a replay
// sends on; a row_data that is not an object is an error naming the letter.
func TestStore_HandEditedRowDataReadsAsJSONText(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	store := deadletter.New(pool, slotA)
	rel := &decoder.Relation{Columns: []decoder.Column{{Name: "id"}, {Name: "event_context"}, {Name: "metadata_version"}, {Name: "environment"}}}
	text := func(s string) decoder.Value { return decoder.Value{Kind: decoder.ValueText, Data: []byte(s)} }
	row := sink.Row{Relation: rel, Values: []decoder.Value{text("00000000-0000-4000-8000-000000000001"), text(`{"a":1}`), text("300"), {Kind: decoder.ValueNull}}}
	if err := store.Put(ctx, []sink.Rejected{{Row: row, Err: errors.New("does not fit UInt8")}}); err != nil {
		t.Fatal(err)
	}
	id, err := store.LastID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE cdc_dead_letter SET row_data = row_data
		|| jsonb_build_object('metadata_version', 1, 'event_context', '{"a": [1, true, "é\""]}'::jsonb, 'environment', 'prod')`); err != nil {
		t.Fatal(err)
	}
	l, ok, err := store.Get(ctx, id)
	if err != nil || !ok {
		t.Fatalf("get letter %d: %v, found %v", id, err, ok)
	}
	want := map[string]string{"id": "00000000-0000-4000-8000-000000000001", "event_context": `{"a": [1, true, "é\""]}`, "metadata_version": "1", "environment": "prod"}
	for name, w := range want {
		if v := l.RowData[name]; v == nil || *v != w {
			t.Errorf("row_data[%s] = %v, want %q", name, v, w)
		}
	}
	if len(l.RowData) != len(want) {
		t.Errorf("row_data has %d columns, want %d", len(l.RowData), len(want))
	}
	if _, err := pool.Exec(ctx, `UPDATE cdc_dead_letter SET row_data = '[1]'`); err != nil {
		t.Fatal(err)
	}
	_, _, err = store.Get(ctx, id)
	if wantErr := fmt.Sprintf("read dead letter %d: row_data: json: cannot unmarshal array", id); err == nil || !strings.HasPrefix(err.Error(), wantErr) {
		t.Fatalf("get a letter whose row_data is an array: %v; want an error starting %q", err, wantErr)
	}
}

// More dead letters in a range than a set may hold (sink.Reader's bounds,
// here its 1 Mi runs) are not held: Written says how far they go instead.
// One fewer is read whole.
func TestStore_WrittenPastTheBoundsGivesTheGreatestLSN(t *testing.T) {
	if testing.Short() {
		t.Skip("inserts a million dead letters")
	}
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	const runs = 1 << 20
	// One letter per commit LSN 0/10000, 0/10001, …: a run each.
	if _, err := pool.Exec(ctx, `INSERT INTO cdc_dead_letter (commit_lsn, seq, row_data, error)
		SELECT '0/10000'::pg_lsn + g, 1, '{}', 'refused' FROM generate_series(0, $1) g`, runs); err != nil {
		t.Fatal(err)
	}
	store := deadletter.New(pool, slotA)
	last := pglogrepl.LSN(0x10000 + runs)
	got, err := store.Written(ctx, 0x10000, last)
	if err != nil || got.Len() != runs || got.MaxLSN() != last-1 {
		t.Fatalf("Written of %d letters = %d up to %s, %v; want all of them", runs, got.Len(), got.MaxLSN(), err)
	}
	got, err = store.Written(ctx, 0x10000, sink.LastLSN)
	var tooMany *sink.TooManyPositions
	if !errors.As(err, &tooMany) || tooMany.Max != last || got != nil {
		t.Fatalf("Written of %d letters = %v, %v; want a TooManyPositions up to %s", runs+1, got.Len(), err, last)
	}
	// The cancelled read left the pool usable.
	if n, err := store.Count(ctx); err != nil || n != runs+1 {
		t.Errorf("Count after a cut read = %d, %v; want %d", n, err, runs+1)
	}
}

// Written keeps the event of each run's first dead letter: a replayed row
// at that position matches only with the same event (sink.Positions.Match).
func TestStore_WrittenKeepsTheEvent(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	rel := &decoder.Relation{Columns: []decoder.Column{{Name: "id"}, {Name: "event_type"}}}
	id := "6f1c2a8e-0d3b-4c5a-9e7f-1a2b3c4d5e6f"
	row := sink.Row{Relation: rel, Values: []decoder.Value{{Kind: decoder.ValueText, Data: []byte(id)}, {Kind: decoder.ValueText, Data: []byte("x")}},
		Pos: sink.Position{CommitLSN: 0x100, Seq: 1}}
	store := deadletter.New(pool, slotA)
	if err := store.Put(ctx, []sink.Rejected{{Row: row, Err: errors.New("refused")}}); err != nil {
		t.Fatal(err)
	}
	other := sink.Row{Relation: rel, Values: []decoder.Value{{Kind: decoder.ValueText, Data: []byte("00000000-0d3b-4c5a-9e7f-1a2b3c4d5e6f")}, {Kind: decoder.ValueText, Data: []byte("x")}}}
	for _, tc := range []struct {
		row  sink.Row
		want bool
	}{{other, false}, {row, true}} {
		got, err := store.Written(ctx, 0x100, 0x101)
		if err != nil {
			t.Fatal(err)
		}
		if m := got.Match(row.Pos, tc.row.Event()); m != tc.want {
			t.Errorf("Match with event %s = %v, want %v", tc.row.Values[0].Data, m, tc.want)
		}
	}
}

// The start of every session reads the letters past the slot's position:
// that read goes by an index, however many older letters the table keeps.
func TestStore_WrittenReadsByAnIndex(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	if _, err := pool.Exec(ctx, `INSERT INTO cdc_dead_letter (event_id, commit_lsn, seq, row_data, error)
		SELECT gen_random_uuid(), ('0/' || to_hex(1000 + n))::pg_lsn, 1, '{}', 'refused'
		FROM generate_series(1, 50000) AS n`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE cdc_dead_letter`); err != nil {
		t.Fatal(err)
	}
	if text := explain(t, pool, deadletter.WrittenQuery, "1/0", sink.LastLSN.String(), sink.ReadLimit(), slotA); !strings.Contains(text, "cdc_dead_letter_position") || strings.Contains(text, "Seq Scan") {
		t.Errorf("the read of positions past the slot is not planned by cdc_dead_letter_position:\n%s", text)
	}
}

// The count of the pipeline's letters (cdc_dead_letters_waiting, every
// minute) goes by an index, however many letters another pipeline's
// outage left: it read each of them (51 ms for 500,000 on a local
// PostgreSQL 15, against 1 ms by the index).
func TestStore_CountReadsByAnIndex(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	if _, err := pool.Exec(ctx, `INSERT INTO cdc_dead_letter (event_id, commit_lsn, seq, row_data, error, slot_name)
		SELECT gen_random_uuid(), ('0/' || to_hex(1000 + n))::pg_lsn, 1, '{}', 'refused', 'pipe_b'
		FROM generate_series(1, 50000) AS n`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO cdc_dead_letter (event_id, commit_lsn, seq, row_data, error, slot_name)
		VALUES (gen_random_uuid(), '1/0', 1, '{}', 'refused', $1)`, slotA); err != nil {
		t.Fatal(err)
	}
	store := deadletter.New(pool, slotA)
	if _, err := pool.Exec(ctx, `ANALYZE cdc_dead_letter`); err != nil {
		t.Fatal(err)
	}
	if n, err := store.CountUpTo(ctx, 10000); err != nil || n != 1 {
		t.Fatalf("CountUpTo = %d, %v; want the pipeline's 1", n, err)
	}
	if text := explain(t, pool, deadletter.CountQuery, 10000, slotA); !strings.Contains(text, "cdc_dead_letter_slot") || strings.Contains(text, "Seq Scan") {
		t.Errorf("the count of the pipeline's letters is not planned by cdc_dead_letter_slot:\n%s", text)
	}
}

// explain is PostgreSQL's plan of query with args, a line a node.
func explain(t *testing.T, pool *pgxpool.Pool, query string, args ...any) string {
	t.Helper()
	rows, err := pool.Query(context.Background(), "EXPLAIN "+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

// One replay at a time: a second, while the first holds the lock, is
// refused with ErrReplayRunning, and may go once the first released it.
func TestStore_LockReplayLetsOneReplayRunAtATime(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	store := deadletter.New(pool, slotA)
	held, release, err := store.LockReplay(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, second, err := deadletter.New(pool, slotA).LockReplay(ctx); !errors.Is(err, deadletter.ErrReplayRunning) {
		if err == nil {
			second()
		}
		t.Fatalf("second replay while the first runs: %v, want %v", err, deadletter.ErrReplayRunning)
	}
	release()
	if held.Err() == nil || context.Cause(held) != context.Canceled {
		t.Fatalf("the released replay's context: %v (cause %v), want canceled", held.Err(), context.Cause(held))
	}
	_, again, err := store.LockReplay(ctx)
	if err != nil {
		t.Fatalf("replay after the first released the lock: %v", err)
	}
	again()
}

// The replay lock is the pipeline's: two pipelines of one database (two
// slots, two ClickHouses) replay their own letters side by side, while a
// second replay of one pipeline, or one of a build before per-slot locks
// (the lock of the whole table, taken while it runs), is refused.
func TestStore_ReplayLockIsThePipelines(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	for _, tc := range []struct {
		name    string
		holder  func(t *testing.T) (release func())
		slot    string
		refused bool
	}{
		{"a replay of the same slot", lockOf(pool, slotA), slotA, true},
		{"a replay of another slot", lockOf(pool, "pipe_b"), slotA, false},
		{"an earlier build's replay", func(t *testing.T) func() {
			conn, err := pool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var got bool
			if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, deadletter.ReplayLockKeys[0], deadletter.ReplayLockKeys[1]).Scan(&got); err != nil || !got {
				// Released before the test stops: the pool's Close, a
				// cleanup, waits for every connection and would hang.
				conn.Release()
				t.Fatalf("take an earlier build's replay lock: %v, %v", got, err)
			}
			return func() {
				conn.Exec(ctx, `SELECT pg_advisory_unlock_all()`) //nolint:errcheck // the test fails on the next lock if it did not
				conn.Release()
			}
		}, slotA, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := tc.holder(t)
			_, second, err := deadletter.New(pool, tc.slot).LockReplay(ctx)
			if err == nil {
				second()
			}
			switch {
			case tc.refused && !errors.Is(err, deadletter.ErrReplayRunning):
				t.Errorf("replay of %s beside %s: %v, want %v", tc.slot, tc.name, err, deadletter.ErrReplayRunning)
			case !tc.refused && err != nil:
				t.Errorf("replay of %s beside %s: %v, want it to run", tc.slot, tc.name, err)
			}
			release()
			// Every lock is free again: the slot's replay runs.
			_, again, err := deadletter.New(pool, tc.slot).LockReplay(ctx)
			if err != nil {
				t.Fatalf("replay of %s after %s ended: %v", tc.slot, tc.name, err)
			}
			again()
		})
	}
}

// lockOf holds the replay lock of slot's pipeline for a test case.
func lockOf(pool *pgxpool.Pool, slot string) func(t *testing.T) func() {
	return func(t *testing.T) func() {
		_, release, err := deadletter.New(pool, slot).LockReplay(context.Background())
		if err != nil {
			t.Fatalf("replay lock of slot %s: %v", slot, err)
		}
		return release
	}
}

// The lock is its connection's: when PostgreSQL ends that connection, the
// replay holding it is told to stop (a second could start and store the
// same letters), and while the replay runs the connection is never idle
// long enough for idle_session_timeout to end it.
func TestStore_ReplayStopsWhenItsLockIsLost(t *testing.T) {
	ctx := context.Background()
	base := testenv.Get(t).MigratedPostgres(t, "pub")
	cfg := base.Config()
	cfg.ConnConfig.RuntimeParams["idle_session_timeout"] = "1500"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	held, release, err := deadletter.New(pool, slotA).LockReplay(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()

	// Twice idle_session_timeout: the lock is still held.
	time.Sleep(3 * time.Second)
	if held.Err() != nil {
		t.Fatalf("replay stopped with its connection idle for twice idle_session_timeout: %v", context.Cause(held))
	}
	if _, second, err := deadletter.New(base, slotA).LockReplay(ctx); !errors.Is(err, deadletter.ErrReplayRunning) {
		if err == nil {
			second()
		}
		t.Fatalf("second replay after the first's connection sat through idle_session_timeout: %v, want %v", err, deadletter.ErrReplayRunning)
	}

	// Its backend terminated, the lock is gone, and so is the replay.
	var n int
	if err := base.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid::bigint = $1 AND objid::bigint = $2
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		deadletter.ReplayLockKeys[0], deadletter.ReplayLockKeys[1]).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminate the backend holding the replay lock: %d terminated, %v", n, err)
	}
	select {
	case <-held.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("replay still running 10 s after its lock's backend was terminated")
	}
	if cause := context.Cause(held); !errors.Is(cause, deadletter.ErrReplayLockLost) {
		t.Fatalf("replay stopped by %v, want %v", cause, deadletter.ErrReplayLockLost)
	}
}

// A replay told to stop (a signal ends its context) still settles what it
// stored: its lock stays held, and its connection kept from idling, until
// it is released.
func TestStore_ReplayLockOutlivesAStopUntilReleased(t *testing.T) {
	base := testenv.Get(t).MigratedPostgres(t, "pub")
	cfg := base.Config()
	cfg.ConnConfig.RuntimeParams["idle_session_timeout"] = "1500"
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	ctx, signal := context.WithCancel(context.Background())
	held, release, err := deadletter.New(pool, slotA).LockReplay(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	signal()
	time.Sleep(3 * time.Second) // twice idle_session_timeout
	if cause := context.Cause(held); cause != context.Canceled {
		t.Fatalf("stopped replay's cause: %v, want %v", cause, context.Canceled)
	}
	if _, second, err := deadletter.New(base, slotA).LockReplay(context.Background()); !errors.Is(err, deadletter.ErrReplayRunning) {
		if err == nil {
			second()
		}
		t.Fatalf("second replay while a stopped one settles: %v, want %v", err, deadletter.ErrReplayRunning)
	}
}

// A row's JSON is written as encoding/json writes a map of its values
// (keys in name order), without the HTML escapes: a "<" stays one byte.
func TestRowData(t *testing.T) {
	rel := &decoder.Relation{Columns: []decoder.Column{{Name: "id"}, {Name: "event_context"}, {Name: "b"}}}
	text := func(s string) decoder.Value { return decoder.Value{Kind: decoder.ValueText, Data: []byte(s)} }
	for _, tc := range []struct {
		name   string
		values []decoder.Value
		want   string
		id     string // "" for none
	}{
		{"plain", []decoder.Value{text("e1"), text(`{"a":1}`), text("x")}, `{"b":"x","event_context":"{\"a\":1}","id":"e1"}`, "e1"},
		{"html and escapes", []decoder.Value{text("e2"), text("<a href=\"x\">&\\</a>"), text("tab\there\nnew\x01\x1f")},
			`{"b":"tab\there\nnew\u0001\u001f","event_context":"<a href=\"x\">&\\</a>","id":"e2"}`, "e2"},
		{"not UTF-8, and UTF-8", []decoder.Value{text("e3"), text("caf\xe9 ü \u2028 \xff\xfe"), {Kind: decoder.ValueNull}},
			`{"b":null,"event_context":"caf` + "\xe9" + ` ü ` + "\u2028" + ` ` + "\xff\xfe" + `","id":"e3"}`, "e3"},
		{"no id", []decoder.Value{{Kind: decoder.ValueNull}, {Kind: decoder.ValueUnchanged}, text("")}, `{"b":"","event_context":null,"id":null}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, id := deadletter.RowData(sink.Row{Relation: rel, Values: tc.values})
			if string(data) != tc.want {
				t.Errorf("RowData = %s, want %s", data, tc.want)
			}
			if !json.Valid(data) {
				t.Errorf("RowData = %s: not valid JSON", data)
			}
			switch {
			case tc.id == "" && id != nil:
				t.Errorf("event id %q, want none", *id)
			case tc.id != "" && id == nil:
				t.Errorf("no event id, want %q", tc.id)
			case id != nil && *id != tc.id:
				t.Errorf("event id %q, want %q", *id, tc.id)
			}
		})
	}
}

// Put sends its letters in batches of a few MB, all in one transaction: a
// later batch that fails leaves none of the earlier ones stored, and the
// whole Put can be tried again.
func TestStore_PutInSeveralBatchesIsOneTransaction(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	store := deadletter.New(pool, slotA)
	rel := &decoder.Relation{Columns: []decoder.Column{{Name: "id"}, {Name: "event_context"}}}
	big := `{"blob":"` + strings.Repeat("<x>", 1<<20) + `"}` // 3 MiB
	letter := func(i int, id string) sink.Rejected {
		return sink.Rejected{Row: sink.Row{Relation: rel, Pos: sink.Position{CommitLSN: 0x1000, Seq: uint64(i)},
			Values: []decoder.Value{{Kind: decoder.ValueText, Data: []byte(id)}, {Kind: decoder.ValueText, Data: []byte(big)}}},
			Err: errors.New("refused")}
	}
	good := []sink.Rejected{
		letter(1, "00000000-0000-4000-8000-000000000001"),
		letter(2, "00000000-0000-4000-8000-000000000002"),
		letter(3, "00000000-0000-4000-8000-000000000003"),
	}
	// Two letters of 3 MiB make a batch: the second batch's last id is
	// no uuid, and its INSERT fails after the first batch went.
	bad := append(slices.Clone(good), letter(4, "not-a-uuid"))
	if err := store.Put(ctx, bad); err == nil || !strings.Contains(err.Error(), "store 2 dead letters (after 2 sent earlier in this transaction, all rolled back)") {
		t.Fatalf("Put with a bad id in its last batch: %v, want it to fail in the second batch", err)
	}
	if n, err := store.Count(ctx); err != nil || n != 0 {
		t.Fatalf("%d dead letters (%v) after a failed Put, want 0", n, err)
	}
	if err := store.Put(ctx, good); err != nil {
		t.Fatal(err)
	}
	var n int
	var bytes int64
	if err := pool.QueryRow(ctx, `SELECT count(*), sum(octet_length(row_data->>'event_context')) FROM cdc_dead_letter`).Scan(&n, &bytes); err != nil {
		t.Fatal(err)
	}
	if n != 3 || bytes != 3*int64(len(big)) {
		t.Fatalf("%d letters holding %d bytes of event_context, want 3 holding %d", n, bytes, 3*len(big))
	}
}

// In a SQL_ASCII database — the one encoding whose bytes reach cdc
// unconverted, valid UTF-8 or not — a refused row with a byte that is not
// UTF-8 is stored with that byte, and read back with it: a replay stores
// what the connector and backfill store. Written as the escape \u00e9,
// jsonb refused it there ("conversion between UTF8 and SQL_ASCII is not
// supported"), and the writer retried the Put for ever: one Latin-1 byte
// in a refused row stalled the stream. Written as U+FFFD, the replay
// stored U+FFFD in its place.
func TestStore_PutInASQLASCIIDatabaseKeepsWhatIsNotUTF8(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testenv.Get(t).NewPostgresWith(t, "ENCODING 'SQL_ASCII' TEMPLATE template0 LOCALE 'C'"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := ddl.MigratePostgres(ctx, pool, "pub", io.Discard); err != nil {
		t.Fatal(err)
	}
	store := deadletter.New(pool, slotA)
	rel := &decoder.Relation{Columns: []decoder.Column{{Name: "id"}, {Name: "event_type"}}}
	for i, tc := range []struct{ name, value string }{
		{"ASCII", "plain"},
		{"UTF-8", "caf\u00e9 \U0001F600"},
		{"a Latin-1 byte", "caf\xe9"},
		{"bytes of no encoding", "\xff\xfe!\x80"},
		{"escapes beside them", "\xe9\"\\\n\t\x01\x7f\xed\xa0\x80"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("6f1c1b52-3c4e-4d1a-9f7e-0a1b2c3d4e%02d", i)
			row := sink.Row{Relation: rel, Values: []decoder.Value{
				{Kind: decoder.ValueText, Data: []byte(id)},
				{Kind: decoder.ValueText, Data: []byte(tc.value)},
			}, Pos: sink.Position{CommitLSN: 0x100, Seq: uint64(i + 1)}}
			if err := store.Put(ctx, []sink.Rejected{{Row: row, Err: errors.New("refused")}}); err != nil {
				t.Fatalf("Put: %v", err)
			}
			var letterID int64
			var got string
			if err := pool.QueryRow(ctx, `SELECT id, row_data->>'event_type' FROM cdc_dead_letter WHERE event_id = $1`, id).Scan(&letterID, &got); err != nil {
				t.Fatal(err)
			}
			if got != tc.value {
				t.Errorf("stored %q, want %q", got, tc.value)
			}
			l, ok, err := store.Get(ctx, letterID)
			if err != nil || !ok {
				t.Fatalf("Get: %v, %v", ok, err)
			}
			v := l.RowData["event_type"]
			if v == nil {
				t.Fatalf("read back NULL, want %q", tc.value)
			}
			if *v != tc.value {
				t.Errorf("read back %q, want %q", *v, tc.value)
			}
		})
	}
}

// A statement_timeout the role or the database sets for the application is
// not Put's: storing a letter costs time with its size (PostgreSQL reads
// jsonb at tens of ms a MB), and a refused event of tens of MB over that
// timeout failed every try, the pipeline stalled behind it for ever.
func TestStore_PutOutlastsTheDatabasesStatementTimeout(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	if _, err := pool.Exec(ctx, `DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET statement_timeout = %L', current_database(), '50ms'); END $$`); err != nil {
		t.Fatal(err)
	}
	pool.Reset() // new sessions take the database's setting
	rel := &decoder.Relation{Columns: []decoder.Column{{Name: "id"}, {Name: "event_context"}}}
	id := "00000000-0000-4000-8000-000000000001"
	big := `{"pad": "` + strings.Repeat("x", 24<<20) + `"}`
	row := sink.Row{Relation: rel, Values: []decoder.Value{{Kind: decoder.ValueText, Data: []byte(id)}, {Kind: decoder.ValueText, Data: []byte(big)}}}
	if err := deadletter.New(pool, slotA).Put(ctx, []sink.Rejected{{Row: row, Err: errors.New("refused")}}); err != nil {
		t.Fatalf("Put of a 24 MiB letter under a 50ms statement_timeout: %v", err)
	}
	var n, size int64
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = 0`); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT count(*), sum(length(row_data->>'event_context')) FROM cdc_dead_letter WHERE event_id = $1`, id).Scan(&n, &size)
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || size != int64(len(big)) {
		t.Fatalf("%d letters holding %d bytes of event_context; want 1 of %d", n, size, len(big))
	}
	var timeout string
	if err := pool.QueryRow(ctx, `SHOW statement_timeout`).Scan(&timeout); err != nil || timeout != "50ms" {
		t.Fatalf("after Put, statement_timeout %q, %v; want the session's own 50ms back", timeout, err)
	}
}

// Put lifts a statement_timeout the role or the database sets, not the
// one the DSN sets: that one is cdc's own, chosen by the operator, and
// the operator commands' bound on PostgreSQL's silence is counted from it
// (statement_timeout + 15 s; `cdc backfill` stores dead letters too). A
// Put that lifted it ran on past that bound, and a letter PostgreSQL was
// still storing was cut as a frozen server ("postgres sent nothing"),
// after which the command opened no connection at all, in place of the
// statement_timeout error that says to set a longer one in CDC_PG_DSN.
func TestStore_PutKeepsTheDSNsStatementTimeout(t *testing.T) {
	for _, tc := range []struct {
		name          string
		database, dsn string        // statement_timeout set by ALTER DATABASE, by the DSN; "" none
		silence       time.Duration // replication.BoundSilence's limit, as the operator commands set it; 0 none
		want          string        // "" stored, else the SQLSTATE
	}{
		{name: "the DSN's, shorter than the letter", dsn: "200ms", want: "57014"},
		{name: "an operator command's, under its silence bound", dsn: "200ms", silence: 700 * time.Millisecond, want: "57014"},
		{name: "the DSN's 0 (none), over the database's", database: "50ms", dsn: "0"},
		{name: "the database's alone", database: "50ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			pool := testenv.Get(t).MigratedPostgres(t, "pub")
			stmts := []string{
				// Each letter takes a second to store.
				`CREATE FUNCTION slow_letter() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(1); RETURN NEW; END $$`,
				`CREATE TRIGGER slow_letter BEFORE INSERT ON cdc_dead_letter FOR EACH ROW EXECUTE FUNCTION slow_letter()`,
			}
			if tc.database != "" {
				stmts = append(stmts, `DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET statement_timeout = %L', current_database(), '`+tc.database+`'); END $$`)
			}
			for _, stmt := range stmts {
				if _, err := pool.Exec(ctx, stmt); err != nil {
					t.Fatal(err)
				}
			}
			cfg := pool.Config()
			if tc.dsn != "" {
				cfg.ConnConfig.RuntimeParams["statement_timeout"] = tc.dsn
			}
			if tc.silence > 0 {
				replication.BoundSilence(&cfg.ConnConfig.Config, tc.silence)
			}
			own, err := pgxpool.NewWithConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer own.Close()
			rel := &decoder.Relation{Columns: []decoder.Column{{Name: "id"}, {Name: "event_context"}}}
			id := "00000000-0000-4000-8000-000000000001"
			row := sink.Row{Relation: rel, Values: []decoder.Value{{Kind: decoder.ValueText, Data: []byte(id)}, {Kind: decoder.ValueText, Data: []byte(`{}`)}}}
			err = deadletter.New(own, slotA).Put(ctx, []sink.Rejected{{Row: row, Err: errors.New("refused")}})
			var n int
			if qerr := pool.QueryRow(ctx, `SELECT count(*) FROM cdc_dead_letter WHERE event_id = $1`, id).Scan(&n); qerr != nil {
				t.Fatal(qerr)
			}
			if tc.want == "" {
				if err != nil || n != 1 {
					t.Fatalf("Put: %v, %d letters; want it stored", err, n)
				}
				return
			}
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != tc.want || n != 0 {
				t.Fatalf("Put: %v, %d letters; want SQLSTATE %s (the DSN's statement_timeout) and none stored", err, n, tc.want)
			}
		})
	}
}

// Two pipelines of one database (two slots, two ClickHouses) share
// cdc_dead_letter, and each sees its own letters and those of no slot
// (an earlier build's): a row one pipeline's ClickHouse refused is not
// taken as stored by the other, nor replayed into the other's, nor
// counted there. The same event refused by both is set aside once for
// each.
func TestStore_TwoPipelinesKeepTheirOwnLetters(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	a, b := deadletter.New(pool, slotA), deadletter.New(pool, "pipe_b")
	const both, onlyA, old = "10000000-0000-4000-8000-000000000001", "20000000-0000-4000-8000-000000000002", "30000000-0000-4000-8000-000000000003"
	for _, put := range []struct {
		store *deadletter.Store
		id    string
		lsn   pglogrepl.LSN
	}{{a, both, 0x100}, {b, both, 0x100}, {a, both, 0x100}, {a, onlyA, 0x200}} {
		if err := put.store.Put(ctx, refusedEvent(put.id, put.lsn)); err != nil {
			t.Fatal(err)
		}
	}
	// A letter an earlier build set aside: no slot.
	if _, err := pool.Exec(ctx, `INSERT INTO cdc_dead_letter (event_id, commit_lsn, seq, row_data, error) VALUES ($1, '0/300', 1, '{"id":"x"}', 'refused')`, old); err != nil {
		t.Fatal(err)
	}
	var ids = map[string]int64{}
	rows, err := pool.Query(ctx, `SELECT coalesce(slot_name, '') || ' ' || event_id::text, id FROM cdc_dead_letter`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var key string
		var id int64
		if err := rows.Scan(&key, &id); err != nil {
			t.Fatal(err)
		}
		ids[key] = id
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 4 || ids["pipe_a "+both] == 0 || ids["pipe_b "+both] == 0 || ids["pipe_a "+onlyA] == 0 || ids[" "+old] == 0 {
		t.Fatalf("letters by slot and event: %v; want one of both events for each pipeline, one of A's alone and the old one", ids)
	}

	for _, tc := range []struct {
		name       string
		store      *deadletter.Store
		positions  []sink.Position
		letters    []int64 // by id, oldest first
		events     int64   // of both, onlyA and old
		others     map[string]int64
		notMine    int64 // a letter Get does not give
		lastLetter int64
	}{
		{"A", a, []sink.Position{{CommitLSN: 0x100, Seq: 1}, {CommitLSN: 0x200, Seq: 1}, {CommitLSN: 0x300, Seq: 1}},
			[]int64{ids["pipe_a "+both], ids["pipe_a "+onlyA], ids[" "+old]}, 3, map[string]int64{"pipe_b": 1}, ids["pipe_b "+both], ids[" "+old]},
		{"B", b, []sink.Position{{CommitLSN: 0x100, Seq: 1}, {CommitLSN: 0x300, Seq: 1}},
			[]int64{ids["pipe_b "+both], ids[" "+old]}, 2, map[string]int64{"pipe_a": 2}, ids["pipe_a "+onlyA], ids[" "+old]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.store.Written(ctx, 0, sink.LastLSN)
			if err != nil {
				t.Fatal(err)
			}
			if all := slices.Collect(got.All()); !slices.Equal(all, tc.positions) {
				t.Errorf("Written = %v, want %v", all, tc.positions)
			}
			if n, err := tc.store.Count(ctx); err != nil || n != int64(len(tc.letters)) {
				t.Errorf("Count = %d, %v; want %d", n, err, len(tc.letters))
			}
			listed, total, err := tc.store.Listing(ctx, 100)
			if err != nil || total != int64(len(tc.letters)) || !slices.Equal(letterIDs(listed), tc.letters) {
				t.Errorf("Listing = %v of %d, %v; want %v", letterIDs(listed), total, err, tc.letters)
			}
			if l, err := tc.store.List(ctx, 100, true); err != nil || !slices.Equal(letterIDs(l), tc.letters) {
				t.Errorf("List = %v, %v; want %v", letterIDs(l), err, tc.letters)
			}
			page, more, err := tc.store.Page(ctx, 0, math.MaxInt64, 100, 0)
			if err != nil || more || !slices.Equal(letterIDs(page), tc.letters) {
				t.Errorf("Page = %v (more %v), %v; want %v", letterIDs(page), more, err, tc.letters)
			}
			if last, err := tc.store.LastID(ctx); err != nil || last != tc.lastLetter {
				t.Errorf("LastID = %d, %v; want %d", last, err, tc.lastLetter)
			}
			var other *deadletter.OtherSlotError
			if _, ok, err := tc.store.Get(ctx, tc.notMine); !errors.As(err, &other) || ok || other.ID != tc.notMine {
				t.Errorf("Get(another slot's letter %d) = %v, %v; want an OtherSlotError", tc.notMine, ok, err)
			}
			if l, ok, err := tc.store.Get(ctx, tc.letters[0]); err != nil || !ok || l.ID != tc.letters[0] {
				t.Errorf("Get(%d) = %+v, %v, %v; want the letter", tc.letters[0], l, ok, err)
			}
			if n, err := tc.store.Events(ctx, []string{both, onlyA, old}); err != nil || n != tc.events {
				t.Errorf("Events = %d, %v; want %d", n, err, tc.events)
			}
			if o, err := tc.store.Others(ctx); err != nil || fmt.Sprint(o) != fmt.Sprint(tc.others) {
				t.Errorf("Others = %v, %v; want %v", o, err, tc.others)
			}
			if shared, err := tc.store.Shared(ctx); err != nil || shared {
				t.Errorf("Shared = %v, %v; want false", shared, err)
			}
		})
	}
}

// On a cdc_dead_letter an earlier migrate made, without slot_name, every
// letter is every pipeline's, as it was: Put adds letters without a slot
// and finds an event set aside by any pipeline; every read sees them all.
func TestStore_WithoutTheSlotColumnLettersAreShared(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	if _, err := pool.Exec(ctx, `ALTER TABLE cdc_dead_letter DROP COLUMN slot_name`); err != nil {
		t.Fatal(err)
	}
	a, b := deadletter.New(pool, slotA), deadletter.New(pool, "pipe_b")
	for _, s := range []*deadletter.Store{a, b} {
		if err := s.Put(ctx, refusedEvent("10000000-0000-4000-8000-000000000001", 0x100)); err != nil {
			t.Fatal(err)
		}
	}
	for name, s := range map[string]*deadletter.Store{"A": a, "B": b} {
		if shared, err := s.Shared(ctx); err != nil || !shared {
			t.Errorf("%s: Shared = %v, %v; want true", name, shared, err)
		}
		if n, err := s.Count(ctx); err != nil || n != 1 {
			t.Errorf("%s: Count = %d, %v; want the one letter", name, n, err)
		}
		got, err := s.Written(ctx, 0, sink.LastLSN)
		if err != nil || got.Len() != 1 {
			t.Errorf("%s: Written = %d positions, %v; want 1", name, got.Len(), err)
		}
		if o, err := s.Others(ctx); err != nil || o != nil {
			t.Errorf("%s: Others = %v, %v; want none", name, o, err)
		}
		if n, err := s.Events(ctx, []string{"10000000-0000-4000-8000-000000000001"}); err != nil || n != 1 {
			t.Errorf("%s: Events = %d, %v; want 1", name, n, err)
		}
	}
}

// refusedEvent is an event of id refused at lsn, as a writer hands it to Put.
func refusedEvent(id string, lsn pglogrepl.LSN) []sink.Rejected {
	rel := &decoder.Relation{Columns: []decoder.Column{{Name: "id"}, {Name: "event_type"}}}
	row := sink.Row{Relation: rel, Values: []decoder.Value{{Kind: decoder.ValueText, Data: []byte(id)}, {Kind: decoder.ValueText, Data: []byte("x")}},
		Pos: sink.Position{CommitLSN: lsn, Seq: 1}}
	return []sink.Rejected{{Row: row, Err: errors.New("refused")}}
}

func letterIDs(letters []deadletter.Letter) []int64 {
	var ids []int64
	for _, l := range letters {
		ids = append(ids, l.ID)
	}
	return ids
}

// A cdc run started on a cdc_dead_letter without slot_name (its warning
// at start) keeps running while `cdc migrate` adds the column, and while
// the other pipeline, restarted, sets its letters aside under its slot.
// From the migrate on, the running one reads, dedupes and sets aside as a
// pipeline of its own slot. It read the column once and kept to it until
// its restart: it took the other pipeline's letters as its own (their
// rows as stored, skipped at its next session) and set its own aside of
// no slot, every pipeline's, for the other to skip and to replay into
// the other ClickHouse.
func TestStore_TheSlotColumnCountsFromTheMigrateThatAddsIt(t *testing.T) {
	ctx := context.Background()
	const before, ofB, ofA = "10000000-0000-4000-8000-000000000001", "20000000-0000-4000-8000-000000000002", "30000000-0000-4000-8000-000000000003"
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	if _, err := pool.Exec(ctx, `ALTER TABLE cdc_dead_letter DROP COLUMN slot_name`); err != nil {
		t.Fatal(err)
	}
	a := deadletter.New(pool, slotA)
	if err := a.Put(ctx, refusedEvent(before, 0x100)); err != nil {
		t.Fatal(err)
	}
	if shared, err := a.Shared(ctx); err != nil || !shared {
		t.Fatalf("before the migrate: Shared = %v, %v; want true", shared, err)
	}
	if err := ddl.MigratePostgres(ctx, pool, "pub", io.Discard); err != nil {
		t.Fatal(err)
	}
	// The other pipeline, started after the migrate, and A, still
	// running, each have a row refused.
	if err := deadletter.New(pool, "pipe_b").Put(ctx, refusedEvent(ofB, 0x200)); err != nil {
		t.Fatal(err)
	}
	if err := a.Put(ctx, refusedEvent(ofA, 0x300)); err != nil {
		t.Fatal(err)
	}
	var slots string
	if err := pool.QueryRow(ctx, `SELECT string_agg(coalesce(slot_name, '-'), ' ' ORDER BY commit_lsn) FROM cdc_dead_letter`).Scan(&slots); err != nil {
		t.Fatal(err)
	}
	if slots != "- pipe_b "+slotA {
		t.Errorf("the letters' slots, by position: %s; want - pipe_b %s", slots, slotA)
	}
	if shared, err := a.Shared(ctx); err != nil || shared {
		t.Errorf("after the migrate: Shared = %v, %v; want false", shared, err)
	}
	got, err := a.Written(ctx, 0, sink.LastLSN)
	if err != nil {
		t.Fatal(err)
	}
	want := []sink.Position{{CommitLSN: 0x100, Seq: 1}, {CommitLSN: 0x300, Seq: 1}}
	if all := slices.Collect(got.All()); !slices.Equal(all, want) {
		t.Errorf("A's Written = %v, want %v (not B's letter at 0x200)", all, want)
	}
	if n, err := a.Count(ctx); err != nil || n != 2 {
		t.Errorf("A's Count = %d, %v; want 2", n, err)
	}
	if o, err := a.Others(ctx); err != nil || fmt.Sprint(o) != fmt.Sprint(map[string]int64{"pipe_b": 1}) {
		t.Errorf("A's Others = %v, %v; want pipe_b's 1", o, err)
	}
}

// `cdc deadletter replay --id` of another pipeline's letter says whose it
// is and how to replay it; it said "no such dead letter", of a letter the
// other pipeline's list shows, and psql too. An id of no letter, and one
// of the pipeline's, are read as ever.
func TestStore_GetOfAnotherSlotsLetterNamesItsSlot(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Get(t).MigratedPostgres(t, "pub")
	var ofB, ofA, ofNone int64
	if err := pool.QueryRow(ctx, `WITH l AS (INSERT INTO cdc_dead_letter (commit_lsn, seq, row_data, error, slot_name)
		VALUES ('0/100', 1, '{}', 'refused', 'pipe_b'), ('0/200', 1, '{}', 'refused', $1), ('0/300', 1, '{}', 'refused', NULL) RETURNING id, slot_name)
		SELECT (SELECT id FROM l WHERE slot_name = 'pipe_b'), (SELECT id FROM l WHERE slot_name = $1), (SELECT id FROM l WHERE slot_name IS NULL)`, slotA).
		Scan(&ofB, &ofA, &ofNone); err != nil {
		t.Fatal(err)
	}
	store := deadletter.New(pool, slotA)
	for _, tc := range []struct {
		name string
		id   int64
		ok   bool
		err  string
	}{
		{"another slot's", ofB, false, fmt.Sprintf("dead letter %d is slot pipe_b's, another pipeline's, not that of slot %s (CDC_SLOT_NAME): "+
			"replay it with the other pipeline's CDC_SLOT_NAME and CDC_CLICKHOUSE_DSN", ofB, slotA)},
		{"the pipeline's", ofA, true, ""},
		{"of no slot", ofNone, true, ""},
		{"none", ofNone + 100, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, ok, err := store.Get(ctx, tc.id)
			if msg := fmt.Sprint(err); tc.err == "" && err != nil || tc.err != "" && msg != tc.err {
				t.Fatalf("Get(%d) error: %v; want %q", tc.id, err, tc.err)
			}
			if ok != tc.ok || ok && l.ID != tc.id {
				t.Fatalf("Get(%d) = %d, %v; want ok %v", tc.id, l.ID, ok, tc.ok)
			}
		})
	}
}
