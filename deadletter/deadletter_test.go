package deadletter_test

import (
	"context"
	"errors"
	"maps"
	"os"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/eventcdc/cdc/deadletter"
	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/sink"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

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
	store := deadletter.New(pool)
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
		want := map[sink.Position]struct{}{}
		for _, p := range tt.want {
			want[p] = struct{}{}
		}
		if !maps.Equal(got, want) {
			t.Errorf("Written(%s, %s) = %v, want %v", tt.from, tt.to, got, want)
		}
	}
}
