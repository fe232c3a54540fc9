package sink_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/sink"
)

// withTime is r with its event_date_time (the outbox's third column) set to
// v, its other values shared.
func withTime(r sink.Row, v decoder.Value) sink.Row {
	r.Values = append([]decoder.Value(nil), r.Values...)
	r.Values[2] = v
	return r
}

// Unwritten returns the rows event_log holds no row of at their position
// with their event under their second: a stored event at another position
// (another run of a backfill) is not this row stored, nor is one under
// another second (a letter repaired in place), and a row without an event
// id cannot be asked about. A row whose second cdc cannot tell (NULL) is
// asked about by id alone. It asks in chunks of event ids; event_log
// without the position columns cannot tell any row, and all are returned.
func TestClickHouse_Unwritten(t *testing.T) {
	ctx := context.Background()
	stored := []sink.Row{row(1, "1", ""), row(2, "2", ""), row(3, "3", "")}
	noID := row(9, "9", "")
	noID.Values[0] = decoder.Value{Kind: decoder.ValueNull}
	elsewhere := stored[1]
	elsewhere.Pos.Seq = 7
	otherLSN := stored[2]
	otherLSN.Pos.CommitLSN = 0
	moved := withTime(stored[0], text("2026-11-25 12:00:01+00"))
	untimed := withTime(stored[1], decoder.Value{Kind: decoder.ValueNull})
	unreadable := withTime(stored[2], text("noon"))
	later := withTime(row(5, "5", ""), text("2026-12-25 12:00:00+00"))
	asked := []sink.Row{stored[0], row(4, "4", ""), elsewhere, noID, stored[2], otherLSN, stored[1], moved, untimed, unreadable, later}
	for _, tc := range []struct {
		name    string
		chunk   int
		prepare []string // statements run on event_log first
		want    []uint64
	}{
		{"one query", 100, nil, []uint64{4, 7, 9, 3, 1, 5}},
		{"a query per event", 1, nil, []uint64{4, 7, 9, 3, 1, 5}},
		{"no position columns", 100, []string{"ALTER TABLE event_log DROP COLUMN cdc_commit_lsn, DROP COLUMN cdc_seq"},
			[]uint64{1, 4, 7, 9, 3, 3, 2, 1, 2, 3, 5}},
		// Not a DateTime: every row is asked by id alone, and moved,
		// stored at its position as another second, passes for stored.
		{"event_date_time a String", 100, []string{"DROP TABLE event_log", `CREATE TABLE event_log (event_id UUID, event_type String,
			event_date_time String, environment String, event_context String, metadata_version UInt64,
			cdc_commit_lsn UInt64, cdc_seq UInt64) ENGINE = ReplacingMergeTree() ORDER BY event_id`},
			[]uint64{4, 7, 9, 3, 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer sink.SetUnwrittenChunk(tc.chunk)()
			admin, dsn := newSink(t)
			for _, q := range tc.prepare {
				if err := admin.Conn().Exec(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			ch, err := sink.Open(dsn, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ch.Close() })
			if rejected, err := ch.Write(ctx, &sink.Batch{Rows: stored}); err != nil || len(rejected) != 0 {
				t.Fatalf("Write = %v, %v", rejected, err)
			}
			checkUnwritten(ctx, t, ch, asked, tc.want)
		})
	}
}

// Unwritten asks for the ids of rows with a time within their seconds:
// ClickHouse reads the partition of those seconds, not event_log's whole
// event_id column. 100,000 events of another month, which a read by id
// alone would read, are not read, nor when they lie between the months of
// the rows asked about.
func TestClickHouse_UnwrittenReadsTheRowsSeconds(t *testing.T) {
	ctx := context.Background()
	admin, dsn := newSink(t)
	const others = 100_000
	if err := admin.Conn().Exec(ctx, fmt.Sprintf(`INSERT INTO event_log (event_id, event_type, event_date_time, environment, event_context, metadata_version, cdc_commit_lsn, cdc_seq)
		SELECT generateUUIDv4(), 't', toDateTime('2026-06-15 00:00:00') + number, 'test', '{}', 1, 4096, 100 + number FROM system.numbers LIMIT %d`, others)); err != nil {
		t.Fatal(err)
	}
	ch, err := sink.Open(dsn, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	stored := []sink.Row{row(1, "1", ""), row(2, "2", "")}
	if rejected, err := ch.Write(ctx, &sink.Batch{Rows: stored}); err != nil || len(rejected) != 0 {
		t.Fatalf("Write = %v, %v", rejected, err)
	}
	for _, tc := range []struct {
		name    string
		asked   []sink.Row
		want    []uint64
		atMost  uint64 // rows read by all of Unwritten's queries
		atLeast uint64
	}{
		// The partition of 2026-11 holds the 2 stored rows; the rest is
		// system.columns, system.processes, system.settings and the ids.
		{"within the seconds", []sink.Row{stored[0], stored[1], row(3, "3", "")}, []uint64{3}, 1000, 0},
		{"months apart", []sink.Row{stored[0], withTime(row(3, "3", ""), text("2026-01-10 08:00:00+00"))}, []uint64{3}, 1000, 0},
		{"by id alone", []sink.Row{withTime(stored[0], decoder.Value{Kind: decoder.ValueNull}), stored[1]}, nil, others + 1000, others},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var read atomic.Uint64
			qctx := clickhouse.Context(ctx, clickhouse.WithProgress(func(p *clickhouse.Progress) { read.Add(p.Rows) }))
			checkUnwritten(qctx, t, ch, tc.asked, tc.want)
			if n := read.Load(); n > tc.atMost || n < tc.atLeast {
				t.Fatalf("Unwritten's queries read %d rows; want %d to %d", n, tc.atLeast, tc.atMost)
			}
		})
	}
}

// checkUnwritten fails t unless ch.Unwritten returns the rows of asked at
// the ordinals want, in that order.
func checkUnwritten(ctx context.Context, t *testing.T, ch *sink.ClickHouse, asked []sink.Row, want []uint64) {
	t.Helper()
	lacked, err := ch.Unwritten(ctx, asked)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, r := range lacked {
		got = append(got, r.Pos.Seq)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Unwritten returned the rows at ordinals %v; want %v", got, want)
	}
}
