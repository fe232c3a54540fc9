package sink_test

import (
	"context"
	"fmt"
	"testing"

	"go.uber.org/zap"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/sink"
)

// Unwritten returns the rows event_log holds no row of at their position
// with their event: a stored event at another position (another run of a
// backfill) is not this row stored, and a row without an event id cannot
// be asked about. It asks in chunks of event ids; event_log without the
// position columns cannot tell any row, and all are returned.
func TestClickHouse_Unwritten(t *testing.T) {
	ctx := context.Background()
	stored := []sink.Row{row(1, "1", ""), row(2, "2", ""), row(3, "3", "")}
	noID := row(9, "9", "")
	noID.Values[0] = decoder.Value{Kind: decoder.ValueNull}
	elsewhere := stored[1]
	elsewhere.Pos.Seq = 7
	otherLSN := stored[2]
	otherLSN.Pos.CommitLSN = 0
	asked := []sink.Row{stored[0], row(4, "4", ""), elsewhere, noID, stored[2], otherLSN, stored[1]}
	for _, tc := range []struct {
		name      string
		chunk     int
		positions bool // event_log has cdc_commit_lsn and cdc_seq
		want      []uint64
	}{
		{"one query", 100, true, []uint64{4, 7, 9, 3}},
		{"a query per event", 1, true, []uint64{4, 7, 9, 3}},
		{"no position columns", 100, false, []uint64{1, 4, 7, 9, 3, 3, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer sink.SetUnwrittenChunk(tc.chunk)()
			admin, dsn := newSink(t)
			if !tc.positions {
				if err := admin.Conn().Exec(ctx, "ALTER TABLE event_log DROP COLUMN cdc_commit_lsn, DROP COLUMN cdc_seq"); err != nil {
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
			lacked, err := ch.Unwritten(ctx, asked)
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			for _, r := range lacked {
				got = append(got, r.Pos.Seq)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("Unwritten returned the rows at ordinals %v; want %v", got, tc.want)
			}
		})
	}
}
