package sink_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"

	"github.com/eventcdc/cdc/sink"
)

// A Reader keeps reading while the set is within both bounds, and says
// so at the first position past either.
func TestReader_Bounds(t *testing.T) {
	defer sink.SetReadBounds(5, 2, 5)()
	for _, tc := range []struct {
		name string
		pos  []sink.Position
		ok   int // how many Adds report true before the first false
	}{
		{"one run, five rows", runOf(0x10, 1, 5), 5},
		{"one run, six rows", runOf(0x10, 1, 6), 5},
		{"two runs", append(runOf(0x10, 1, 2), runOf(0x20, 1, 2)...), 4},
		{"a third run", append(append(runOf(0x10, 1, 1), runOf(0x20, 1, 1)...), runOf(0x30, 1, 1)...), 2},
		{"a gap makes a run", []sink.Position{{CommitLSN: 0x10, Seq: 1}, {CommitLSN: 0x10, Seq: 3}, {CommitLSN: 0x10, Seq: 5}}, 2},
	} {
		var r sink.Reader
		ok := 0
		for _, p := range tc.pos {
			if !r.Add(p, 0) {
				break
			}
			ok++
		}
		if ok != tc.ok {
			t.Errorf("%s: %d positions added within the bounds, want %d", tc.name, ok, tc.ok)
		}
		if tc.ok == len(tc.pos) && !slices.Equal(slices.Collect(r.Set().All()), tc.pos) {
			t.Errorf("%s: set %v, want %v", tc.name, slices.Collect(r.Set().All()), tc.pos)
		}
	}
}

func runOf(lsn pglogrepl.LSN, lo, hi uint64) []sink.Position {
	var out []sink.Position
	for s := lo; s <= hi; s++ {
		out = append(out, sink.Position{CommitLSN: lsn, Seq: s})
	}
	return out
}

// Positions past the read bounds are not held: Written says how far they
// go instead, so that the replay skips nothing up to there. Below the
// bounds it returns the set, exactly, read in pages (here of 25 rows).
func TestClickHouse_WrittenPastTheBoundsGivesTheGreatestLSN(t *testing.T) {
	ch, _ := newSink(t)
	ctx := context.Background()
	defer sink.SetReadBounds(100, 10, 25)()
	insert := func(q string) {
		t.Helper()
		err := ch.Conn().Exec(ctx, `INSERT INTO event_log (event_id, event_type, event_date_time, environment, event_context, metadata_version, cdc_commit_lsn, cdc_seq) `+q)
		if err != nil {
			t.Fatal(err)
		}
	}
	// 0x1000: one run of 100 rows (seq 1–100); 0x2000 … 0x2009: ten
	// transactions of one row; 0x9000: one row more; 0x5000 below.
	insert(`SELECT generateUUIDv4(), 't', now(), 'e', '{}', 1, 4096, number + 1 FROM system.numbers LIMIT 100`)
	insert(`SELECT generateUUIDv4(), 't', now(), 'e', '{}', 1, 8192 + number, 1 FROM system.numbers LIMIT 10`)
	insert(`SELECT generateUUIDv4(), 't', now(), 'e', '{}', 1, 36864, 1 FROM system.numbers LIMIT 1`)
	// 0x5000: 50 rows, and seq 25 stored twice with another event (a row
	// of another WAL history at the same position), across the end of the
	// first page.
	insert(`SELECT generateUUIDv4(), 't', now(), 'e', '{}', 1, 20480, number + 1 FROM system.numbers LIMIT 50`)
	insert(`SELECT generateUUIDv4(), 't', now(), 'e', '{}', 1, 20480, 25 FROM system.numbers LIMIT 1`)

	for _, tc := range []struct {
		name     string
		from, to pglogrepl.LSN
		want     int           // positions in the set, when within the bounds
		max      pglogrepl.LSN // TooManyPositions.Max, when past them
	}{
		{"100 rows in one run, four full pages: within", 0x1000, 0x1001, 100, 0},
		{"50 rows and a duplicate across pages: within", 0x5000, 0x5001, 50, 0},
		{"101 rows: past the rows' bound", 0x1000, 0x2001, 0, 0x2000},
		{"ten runs: within", 0x2000, 0x200a, 10, 0},
		{"eleven runs: past the runs' bound", 0x2000, sink.LastLSN, 0, 0x9000},
	} {
		got, err := ch.Written(ctx, tc.from, tc.to)
		var tooMany *sink.TooManyPositions
		switch {
		case tc.max != 0:
			if !errors.As(err, &tooMany) || tooMany.Max != tc.max || got != nil {
				t.Errorf("%s: Written = %v, %v; want a TooManyPositions up to %s", tc.name, got.Len(), err, tc.max)
			}
		case err != nil || got.Len() != tc.want:
			t.Errorf("%s: Written = %d positions, %v; want %d", tc.name, got.Len(), err, tc.want)
		}
	}
	// Both events at 0x5000#25 were read, though a page ended between
	// them: kept by its first event only (past the exact limit), the run
	// cannot be told one history's, and its first row does not match.
	func() {
		defer sink.SetExactLimit(0)()
		var first uuid.UUID
		if err := ch.Conn().QueryRow(ctx, "SELECT event_id FROM event_log WHERE cdc_commit_lsn = 20480 AND cdc_seq = 1").Scan(&first); err != nil {
			t.Fatal(err)
		}
		got, err := ch.Written(ctx, 0x5000, 0x5001)
		if err != nil || got.Match(sink.Position{CommitLSN: 0x5000, Seq: 1}, sink.EventHash(first)) {
			t.Errorf("the run holding two events at 0x5000#25 matched its first row (%v)", err)
		}
		got, err = ch.Written(ctx, 0x1000, 0x1001)
		if err := ch.Conn().QueryRow(ctx, "SELECT event_id FROM event_log WHERE cdc_commit_lsn = 4096 AND cdc_seq = 1").Scan(&first); err != nil {
			t.Fatal(err)
		}
		if err != nil || !got.Match(sink.Position{CommitLSN: 0x1000, Seq: 1}, sink.EventHash(first)) || !got.Match(sink.Position{CommitLSN: 0x1000, Seq: 100}, 0) {
			t.Errorf("the run of one event each at 0x1000 did not match (%v)", err)
		}
	}()
	// A batch retried after its INSERT failed lies at the end of its
	// transaction's stored rows: past the exact limit, the last positions
	// read still match their own events, without the run's first.
	func() {
		defer sink.SetExactLimit(30)()
		event := func(seq int) uint64 {
			var id uuid.UUID
			if err := ch.Conn().QueryRow(ctx, fmt.Sprintf("SELECT event_id FROM event_log WHERE cdc_commit_lsn = 4096 AND cdc_seq = %d", seq)).Scan(&id); err != nil {
				t.Fatal(err)
			}
			return sink.EventHash(id)
		}
		got, err := ch.Written(ctx, 0x1000, 0x1001)
		if err != nil || !got.Match(sink.Position{CommitLSN: 0x1000, Seq: 90}, event(90)) || got.Match(sink.Position{CommitLSN: 0x1000, Seq: 91}, event(90)) {
			t.Errorf("a position among the last read does not match its own event only (%v)", err)
		}
		if got.Match(sink.Position{CommitLSN: 0x1000, Seq: 10}, event(10)) {
			t.Error("a position before the last read matched before its run's first")
		}
	}()
	// The cancelled read left the sink usable.
	if got, err := ch.Written(ctx, 0x9000, 0x9001); err != nil || fmt.Sprint(slices.Collect(got.All())) != "[0/9000#1]" {
		t.Errorf("Written after a cut read = %v, %v; want [0/9000#1]", slices.Collect(got.All()), err)
	}
}

// Written reads each position with its event: a replayed row matches the
// stored one only with the same event id, and two events stored at a
// run's first position match none.
func TestClickHouse_WrittenKeepsEachRunsEvent(t *testing.T) {
	ch, _ := newSink(t)
	ctx := context.Background()
	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New(), uuid.New()}
	for _, r := range []struct {
		id       uuid.UUID
		lsn, seq uint64
	}{{ids[0], 0x1000, 1}, {ids[1], 0x1000, 2}, {ids[2], 0x2000, 1}, {ids[3], 0x2000, 1}} {
		err := ch.Conn().Exec(ctx, fmt.Sprintf(`INSERT INTO event_log (event_id, event_type, event_date_time, environment, event_context, metadata_version, cdc_commit_lsn, cdc_seq)
			SELECT toUUID('%s'), 't', now(), 'e', '{}', 1, %d, %d`, r.id, r.lsn, r.seq))
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name  string
		pos   sink.Position
		event uuid.UUID
		want  bool
	}{
		{"another event at a run's start", sink.Position{CommitLSN: 0x1000, Seq: 1}, ids[1], false},
		{"the stored event at a run's start", sink.Position{CommitLSN: 0x1000, Seq: 1}, ids[0], true},
		{"the rest of that run", sink.Position{CommitLSN: 0x1000, Seq: 2}, ids[1], true},
		{"two events stored at a run's start", sink.Position{CommitLSN: 0x2000, Seq: 1}, ids[2], false},
	} {
		// A fresh read each: Match remembers what it found.
		got, err := ch.Written(ctx, 0x1000, sink.LastLSN)
		if err != nil {
			t.Fatal(err)
		}
		if tc.pos.Seq == 2 {
			got.Match(sink.Position{CommitLSN: 0x1000, Seq: 1}, sink.EventHash(ids[0]))
		}
		if m := got.Match(tc.pos, sink.EventHash(tc.event)); m != tc.want {
			t.Errorf("%s: Match = %v, want %v", tc.name, m, tc.want)
		}
	}
}
