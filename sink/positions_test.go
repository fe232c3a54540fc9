package sink_test

import (
	"cmp"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/eventcdc/cdc/sink"
)

func pos(lsn pglogrepl.LSN, seq uint64) sink.Position { return sink.Position{CommitLSN: lsn, Seq: seq} }

func TestPositions(t *testing.T) {
	tests := []struct {
		name     string
		add      []sink.Position
		runs     int
		has, not []sink.Position
	}{
		{"empty", nil, 0, nil, []sink.Position{pos(0, 0), pos(1, 1)}},
		{"a transaction in order is one run", []sink.Position{pos(9, 1), pos(9, 2), pos(9, 3), pos(9, 4)}, 1,
			[]sink.Position{pos(9, 1), pos(9, 4)}, []sink.Position{pos(9, 0), pos(9, 5), pos(8, 2), pos(10, 2)}},
		{"a gap makes two runs", []sink.Position{pos(9, 1), pos(9, 2), pos(9, 5)}, 2,
			[]sink.Position{pos(9, 2), pos(9, 5)}, []sink.Position{pos(9, 3), pos(9, 4)}},
		{"filling the gap joins them", []sink.Position{pos(9, 1), pos(9, 3), pos(9, 2)}, 1,
			[]sink.Position{pos(9, 1), pos(9, 2), pos(9, 3)}, nil},
		{"backwards is one run too", []sink.Position{pos(9, 3), pos(9, 2), pos(9, 1)}, 1,
			[]sink.Position{pos(9, 1), pos(9, 3)}, []sink.Position{pos(9, 4)}},
		{"one run per transaction", []sink.Position{pos(1, 1), pos(2, 1), pos(3, 1), pos(3, 2)}, 3,
			[]sink.Position{pos(2, 1), pos(3, 2)}, []sink.Position{pos(2, 2), pos(1, 2)}},
		{"consecutive numbers of other transactions do not join", []sink.Position{pos(2, 1), pos(1, 2)}, 2,
			[]sink.Position{pos(2, 1), pos(1, 2)}, []sink.Position{pos(1, 1), pos(2, 2)}},
		{"added twice is there once", []sink.Position{pos(5, 7), pos(5, 7), pos(5, 6), pos(5, 7)}, 1,
			[]sink.Position{pos(5, 6), pos(5, 7)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p sink.Positions
			distinct := map[sink.Position]bool{}
			for _, a := range tt.add {
				p.Add(a)
				distinct[a] = true
			}
			if p.Len() != len(distinct) || p.Runs() != tt.runs {
				t.Fatalf("Len %d, Runs %d; want %d, %d", p.Len(), p.Runs(), len(distinct), tt.runs)
			}
			for _, h := range tt.has {
				if !p.Has(h) || !p.HasLSN(h.CommitLSN) {
					t.Errorf("Has(%v) %v, HasLSN %v; want both", h, p.Has(h), p.HasLSN(h.CommitLSN))
				}
			}
			for _, n := range tt.not {
				if p.Has(n) {
					t.Errorf("Has(%v) true", n)
				}
			}
		})
	}
	var nilSet *sink.Positions
	if nilSet.Has(pos(1, 1)) || nilSet.HasLSN(1) || nilSet.Len() != 0 || nilSet.MaxLSN() != 0 {
		t.Error("a nil set is not empty")
	}
}

// Against a map, the set it replaces: the same members whatever the
// order of adding, and as few runs as the members allow.
func TestPositions_AsAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var p, q sink.Positions
		want := map[sink.Position]struct{}{}
		for range rng.IntN(300) {
			a := pos(pglogrepl.LSN(rng.IntN(4)), uint64(rng.IntN(40)))
			if rng.IntN(2) == 0 {
				p.Add(a)
			} else {
				q.Add(a)
			}
			want[a] = struct{}{}
		}
		p.AddAll(&q)
		if p.Len() != len(want) {
			t.Fatalf("round %d: Len %d, want %d", round, p.Len(), len(want))
		}
		runs := 0
		var maxLSN pglogrepl.LSN
		for lsn := range pglogrepl.LSN(4) {
			for seq := range uint64(41) {
				_, in := want[pos(lsn, seq)]
				if p.Has(pos(lsn, seq)) != in {
					t.Fatalf("round %d: Has(%v) = %v, want %v", round, pos(lsn, seq), !in, in)
				}
				if _, prev := want[pos(lsn, seq-1)]; in && (seq == 0 || !prev) {
					runs++
				}
				if in {
					maxLSN = max(maxLSN, lsn)
				}
			}
		}
		all := slices.Collect(p.All())
		keys := slices.SortedFunc(maps.Keys(want), func(a, b sink.Position) int {
			return cmp.Or(cmp.Compare(a.CommitLSN, b.CommitLSN), cmp.Compare(a.Seq, b.Seq))
		})
		if !slices.Equal(all, keys) {
			t.Fatalf("round %d: All() = %v, want %v", round, all, keys)
		}
		if p.Runs() != runs || p.MaxLSN() != maxLSN {
			t.Fatalf("round %d: %d runs, max LSN %v; want %d, %v", round, p.Runs(), p.MaxLSN(), runs, maxLSN)
		}
	}
}

// BenchmarkPositionsAddAll merges the dead letters of a 400,000-row
// transaction that refused every other row into the sink's positions of
// the rest: 200,000 runs each side, interleaved. Inserted one at a time
// this took minutes; merged, it is linear.
func BenchmarkPositionsAddAll(b *testing.B) {
	var stored, dead sink.Positions
	for seq := uint64(1); seq <= 400_000; seq++ {
		if seq%2 == 0 {
			dead.Add(pos(0x1000, seq))
		} else {
			stored.Add(pos(0x1000, seq))
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		p := stored
		p.AddAll(&dead)
		if p.Len() != 400_000 || p.Runs() != 1 {
			b.Fatalf("Len %d, Runs %d; want 400000, 1", p.Len(), p.Runs())
		}
	}
}
