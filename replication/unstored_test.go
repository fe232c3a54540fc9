package replication

import (
	"slices"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/eventcdc/cdc/sink"
)

func TestLSNSpans(t *testing.T) {
	batch := func(lsns ...pglogrepl.LSN) *sink.Batch {
		b := &sink.Batch{}
		for i, l := range lsns {
			b.Rows = append(b.Rows, sink.Row{Pos: sink.Position{CommitLSN: l, Seq: uint64(i + 1)}})
		}
		return b
	}
	const gb = pglogrepl.LSN(1 << 30)
	tests := []struct {
		name  string
		batch *sink.Batch
		want  [][2]pglogrepl.LSN
	}{
		{"one transaction", batch(0x5000, 0x5000), [][2]pglogrepl.LSN{{0x5000, 0x5001}}},
		{"consecutive commits: one range", batch(0x5000, 0x6000, 0x7000), [][2]pglogrepl.LSN{{0x5000, 0x7001}}},
		{"a streamed transaction placed a GB before the commits after it: read apart",
			batch(5*gb+0x100, 5*gb+0x200, gb, gb, gb, 5*gb+0x300),
			[][2]pglogrepl.LSN{{gb, gb + 1}, {5*gb + 0x100, 5*gb + 0x301}}},
		{"exactly the gap apart: one range", batch(0x1000, 0x1000+spanGap), [][2]pglogrepl.LSN{{0x1000, 0x1000 + spanGap + 1}}},
		{"a byte more: two", batch(0x1000, 0x1001+spanGap), [][2]pglogrepl.LSN{{0x1000, 0x1001}, {0x1001 + spanGap, 0x1002 + spanGap}}},
	}
	for _, tt := range tests {
		if got := lsnSpans(tt.batch); !slices.Equal(got, tt.want) {
			t.Errorf("%s: spans %v, want %v", tt.name, got, tt.want)
		}
	}
}
