package sink_test

import (
	"cmp"
	"hash/fnv"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"

	"github.com/eventcdc/cdc/decoder"
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
				// HasLSN is true only for a commit LSN some position has.
				sameLSN := false
				for _, a := range tt.add {
					sameLSN = sameLSN || a.CommitLSN == n.CommitLSN
				}
				if p.HasLSN(n.CommitLSN) != sameLSN {
					t.Errorf("HasLSN(%v) %v, want %v", n.CommitLSN, p.HasLSN(n.CommitLSN), sameLSN)
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
	// Sequence numbers from 0 and up to the largest, where seq+1 would
	// wrap to 0.
	var seqs []uint64
	for seq := range uint64(36) {
		seqs = append(seqs, seq)
	}
	seqs = append(seqs, math.MaxUint64-3, math.MaxUint64-2, math.MaxUint64-1, math.MaxUint64)
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var p, q sink.Positions
		want := map[sink.Position]struct{}{}
		for range rng.IntN(300) {
			a := pos(pglogrepl.LSN(rng.IntN(4)), seqs[rng.IntN(len(seqs))])
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
			for _, seq := range seqs {
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

// A run of positions matches a replayed row only once the row at its first
// position was the event stored there: a run of another WAL history at the
// same positions does not make the replay skip this history's events.
func TestPositions_Match(t *testing.T) {
	const a, b, c = 11, 22, 33 // events
	type try struct {
		pos   sink.Position
		event uint64
		want  bool
	}
	for _, tc := range []struct {
		name  string
		build func(p *sink.Positions)
		tries []try
	}{
		{"the same event at the run's start: the run matches", func(p *sink.Positions) {
			p.AddEvent(pos(9, 1), a)
			p.AddEvent(pos(9, 2), b)
			p.AddEvent(pos(9, 3), c)
		}, []try{{pos(9, 1), a, true}, {pos(9, 2), 0, true}, {pos(9, 3), 999, true}, {pos(9, 4), c, false}}},
		{"another event at the run's start: none of it matches", func(p *sink.Positions) {
			p.AddEvent(pos(9, 1), a)
			p.AddEvent(pos(9, 2), b)
		}, []try{{pos(9, 1), b, false}, {pos(9, 2), b, false}, {pos(9, 1), a, true}}},
		{"before its start was replayed, a run does not match", func(p *sink.Positions) {
			p.AddEvent(pos(9, 1), a)
			p.AddEvent(pos(9, 2), b)
		}, []try{{pos(9, 2), b, false}, {pos(9, 1), a, true}, {pos(9, 2), b, true}}},
		{"two events at a run's start: it never matches", func(p *sink.Positions) {
			p.AddEvent(pos(9, 1), a)
			p.AddEvent(pos(9, 1), b)
			p.AddEvent(pos(9, 2), c)
		}, []try{{pos(9, 1), a, false}, {pos(9, 1), b, false}, {pos(9, 2), c, false}}},
		{"the same event read twice is one", func(p *sink.Positions) {
			p.AddEvent(pos(9, 1), a)
			p.AddEvent(pos(9, 1), a)
		}, []try{{pos(9, 1), a, true}}},
		{"an unknown event matches by position", func(p *sink.Positions) {
			p.Add(pos(9, 1))
			p.Add(pos(9, 2))
		}, []try{{pos(9, 2), a, true}, {pos(9, 1), b, true}}},
		{"runs are checked apart", func(p *sink.Positions) {
			p.AddEvent(pos(9, 1), a)
			p.AddEvent(pos(9, 5), b)
			p.AddEvent(pos(10, 1), c)
		}, []try{{pos(9, 1), c, false}, {pos(9, 5), b, true}, {pos(10, 1), c, true}}},
		{"a position added before a run's start becomes its start", func(p *sink.Positions) {
			p.AddEvent(pos(9, 2), b)
			p.AddEvent(pos(9, 1), a)
		}, []try{{pos(9, 1), a, true}, {pos(9, 2), b, true}}},
		{"merged sets keep each run's start, and two events there", func(p *sink.Positions) {
			p.AddEvent(pos(9, 1), a)
			p.AddEvent(pos(9, 2), b)
			p.AddEvent(pos(10, 1), a)
			var q sink.Positions
			q.AddEvent(pos(9, 3), c)  // joins 9's run
			q.AddEvent(pos(10, 1), c) // another event at 10's start
			p.AddAll(&q)
		}, []try{{pos(9, 1), a, true}, {pos(9, 3), c, true}, {pos(10, 1), a, false}}},
		{"merged runs overlapping past a start cannot be told one history's", func(p *sink.Positions) {
			p.AddEvent(pos(9, 1), a)
			p.AddEvent(pos(9, 2), b)
			p.AddEvent(pos(9, 3), c)
			var q sink.Positions
			q.AddEvent(pos(9, 2), c)
			p.AddAll(&q)
		}, []try{{pos(9, 1), a, false}, {pos(9, 3), c, false}}},
		{"a dead letter without an event merged at a run's start", func(p *sink.Positions) {
			var q sink.Positions
			q.Add(pos(9, 1))
			p.AddEvent(pos(9, 1), a)
			p.AddEvent(pos(9, 2), b)
			q.AddAll(p)
			*p = q
		}, []try{{pos(9, 1), c, false}, {pos(9, 2), b, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p sink.Positions
			tc.build(&p)
			for _, tr := range tc.tries {
				if got := p.Match(tr.pos, tr.event); got != tr.want {
					t.Fatalf("Match(%v, %d) = %v, want %v", tr.pos, tr.event, got, tr.want)
				}
			}
		})
	}
	var nilSet *sink.Positions
	if nilSet.Match(pos(1, 1), 1) {
		t.Error("a nil set matches")
	}
}

// The identity kept of an event is its UUID's; 0 means none.
func TestRow_Event(t *testing.T) {
	rel := &decoder.Relation{Columns: []decoder.Column{{Name: "event_type"}, {Name: "id"}}}
	id := uuid.MustParse("6f1c2a8e-0d3b-4c5a-9e7f-1a2b3c4d5e6f")
	text := func(s string) decoder.Value { return decoder.Value{Kind: decoder.ValueText, Data: []byte(s)} }
	for _, tc := range []struct {
		name string
		row  sink.Row
		want uint64
	}{
		{"a UUID", sink.Row{Relation: rel, Values: []decoder.Value{text("t"), text(id.String())}}, sink.EventHash(id)},
		{"upper case is the same UUID", sink.Row{Relation: rel, Values: []decoder.Value{text("t"), text(strings.ToUpper(id.String()))}}, sink.EventHash(id)},
		{"not a UUID", sink.Row{Relation: rel, Values: []decoder.Value{text("t"), text("42")}}, 0},
		{"NULL", sink.Row{Relation: rel, Values: []decoder.Value{text("t"), {Kind: decoder.ValueNull}}}, 0},
		{"no id column", sink.Row{Relation: &decoder.Relation{Columns: []decoder.Column{{Name: "event_type"}}}, Values: []decoder.Value{text("t")}}, 0},
	} {
		if got := tc.row.Event(); got != tc.want {
			t.Errorf("%s: Event() = %d, want %d", tc.name, got, tc.want)
		}
	}
	if sink.EventHash(id) == sink.EventHash(uuid.MustParse("6f1c2a8e-0d3b-4c5a-9e7f-1a2b3c4d5e60")) || sink.EventHash([16]byte{}) == 0 {
		t.Error("EventHash tells two UUIDs apart, and is never 0")
	}
}

// A set read keeps the events of the last exactLimit positions read, and
// Match checks each row there against its own, wherever its run began;
// before them, each run's first event only.
func TestReader_ExactEvents(t *testing.T) {
	defer sink.SetExactLimit(3)() // at least the last 3 positions; 6 kept before the first 3 are dropped
	const a, b, c = 11, 22, 33
	read := func(adds ...struct {
		p sink.Position
		e uint64
	}) *sink.Positions {
		var r sink.Reader
		for _, x := range adds {
			r.Add(x.p, x.e)
		}
		return r.Set()
	}
	type pe = struct {
		p sink.Position
		e uint64
	}
	type try struct {
		pos   sink.Position
		event uint64
		want  bool
	}
	for _, tc := range []struct {
		name  string
		set   func() *sink.Positions
		tries []try
	}{
		{"each row its own event, in any order", func() *sink.Positions {
			return read(pe{pos(9, 1), a}, pe{pos(9, 2), b}, pe{pos(9, 2), b}, pe{pos(10, 1), a}, pe{pos(10, 1), c}, pe{pos(11, 1), 0})
		}, []try{{pos(9, 2), c, false}, {pos(9, 2), b, true}, {pos(9, 1), a, true}, {pos(10, 1), a, false}, {pos(10, 1), c, false}, {pos(11, 1), c, true}, {pos(12, 1), a, false}}},
		{"past the limit, the last positions' events, before them each run's first", func() *sink.Positions {
			return read(pe{pos(8, 1), a}, pe{pos(8, 2), b}, pe{pos(9, 1), a}, pe{pos(9, 2), b}, pe{pos(9, 3), c}, pe{pos(9, 4), a}, pe{pos(9, 5), b}, pe{pos(9, 6), c})
		}, []try{{pos(9, 2), b, true}, {pos(9, 2), a, false}, {pos(9, 6), b, false}, {pos(8, 2), b, false}, {pos(8, 1), a, true}, {pos(8, 2), c, true}}},
		{"past the limit, two events anywhere in a run make it unusable", func() *sink.Positions {
			return read(pe{pos(9, 1), a}, pe{pos(9, 2), b}, pe{pos(9, 3), c}, pe{pos(9, 3), a}, pe{pos(9, 4), b}, pe{pos(9, 5), c}, pe{pos(9, 6), a}, pe{pos(10, 1), b})
		}, []try{{pos(9, 1), a, false}, {pos(9, 3), c, false}, {pos(9, 4), b, true}, {pos(10, 1), b, true}}},
		{"past the limit, the same event twice is one", func() *sink.Positions {
			return read(pe{pos(9, 1), a}, pe{pos(9, 2), b}, pe{pos(9, 2), b}, pe{pos(9, 3), 0}, pe{pos(9, 3), c}, pe{pos(9, 4), b}, pe{pos(9, 5), c}, pe{pos(9, 6), a})
		}, []try{{pos(9, 1), a, true}, {pos(9, 6), a, true}}},
		{"two read sets merged keep every event", func() *sink.Positions {
			p := read(pe{pos(9, 1), a}, pe{pos(9, 3), c})
			p.AddAll(read(pe{pos(9, 1), 0}, pe{pos(9, 2), b}, pe{pos(9, 3), a}))
			return p
		}, []try{{pos(9, 2), b, true}, {pos(9, 1), a, true}, {pos(9, 3), c, false}, {pos(9, 3), a, false}}},
		{"an empty set takes a read set's events", func() *sink.Positions {
			p := &sink.Positions{}
			p.AddAll(read(pe{pos(9, 1), a}, pe{pos(9, 2), b}))
			return p
		}, []try{{pos(9, 2), a, false}, {pos(9, 2), b, true}}},
		{"a position added by hand: first events only", func() *sink.Positions {
			p := read(pe{pos(9, 1), a}, pe{pos(9, 2), b})
			p.AddEvent(pos(9, 3), c)
			return p
		}, []try{{pos(9, 2), b, false}, {pos(9, 1), a, true}, {pos(9, 3), c, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.set()
			for _, tr := range tc.tries {
				if got := p.Match(tr.pos, tr.event); got != tr.want {
					t.Fatalf("Match(%v, %d) = %v, want %v", tr.pos, tr.event, got, tr.want)
				}
			}
		})
	}
}

// EventHash is 64-bit FNV-1a of the event id's 16 bytes, never 0.
func TestEventHash_IsFNV1a(t *testing.T) {
	for _, s := range []string{"4bf92f35-77b3-4da6-a3ce-929d0e0e4736", "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"} {
		id := uuid.MustParse(s)
		h := fnv.New64a()
		h.Write(id[:])
		if got, want := sink.EventHash(id), max(h.Sum64(), 1); got != want {
			t.Errorf("EventHash(%s) = %#x, want %#x", s, got, want)
		}
	}
}

// Two sets read with their events merge them: each position keeps its
// event, one in both with another event there holds two (and matches
// neither), and the positions past the end of either list are kept.
func TestPositions_AddAllMergesExactEvents(t *testing.T) {
	read := func(entries ...[3]uint64) *sink.Positions {
		var r sink.Reader
		for _, e := range entries {
			if !r.Add(pos(pglogrepl.LSN(e[0]), e[1]), e[2]) {
				t.Fatal("the reader refused a position")
			}
		}
		return r.Set()
	}
	a := read([3]uint64{0x10, 1, 11}, [3]uint64{0x10, 2, 12}, [3]uint64{0x10, 3, 13})
	b := read([3]uint64{0x10, 2, 12}, [3]uint64{0x10, 3, 99}, [3]uint64{0x10, 5, 15}, [3]uint64{0x20, 1, 21})
	a.AddAll(b)
	for _, tc := range []struct {
		at    sink.Position
		event uint64
		want  bool
	}{
		{pos(0x10, 1), 11, true}, {pos(0x10, 1), 12, false},
		{pos(0x10, 2), 12, true},
		{pos(0x10, 3), 13, false}, {pos(0x10, 3), 99, false}, // two events there
		{pos(0x10, 5), 15, true}, {pos(0x10, 5), 11, false},
		{pos(0x20, 1), 21, true},
		{pos(0x10, 4), 14, false}, {pos(0, 0), 1, false},
	} {
		if got := a.Match(tc.at, tc.event); got != tc.want {
			t.Errorf("Match(%s, %d) = %v, want %v", tc.at, tc.event, got, tc.want)
		}
	}
	if a.Len() != 5 {
		t.Errorf("%d positions, want 5", a.Len())
	}
}

// A run's first position learns its event when it is added again with
// one, and keeps it when added again without; a run joined to the one
// before it keeps "two events there".
func TestPositions_RunEvents(t *testing.T) {
	var p sink.Positions
	p.Add(pos(0x10, 1))
	p.AddEvent(pos(0x10, 1), 7)
	if p.Match(pos(0x10, 1), 8) || !p.Match(pos(0x10, 1), 7) {
		t.Errorf("a position added again with its event: Match(8) %v, Match(7) %v; want false, true",
			p.Match(pos(0x10, 1), 8), p.Match(pos(0x10, 1), 7))
	}
	p.Add(pos(0x10, 1))
	if !p.Match(pos(0x10, 1), 7) {
		t.Error("a position added again without an event lost the one it had")
	}

	var q sink.Positions
	q.Add(pos(0x20, 1))
	q.AddEvent(pos(0x20, 3), 5)
	q.AddEvent(pos(0x20, 3), 6) // two events at 3
	q.Add(pos(0x20, 2))         // joins 1..1 and 3..3
	if q.Runs() != 1 {
		t.Fatalf("%d runs, want 1", q.Runs())
	}
	for _, e := range []uint64{5, 6, 0} {
		if q.Match(pos(0x20, 3), e) {
			t.Errorf("Match(0/20#3, %d) = true in a run that holds two events there", e)
		}
	}
}

// A run whose first position holds two events stays unusable when AddAll
// joins it to the run before: merged, its positions match no event, not
// even the earlier run's own at its first position.
func TestPositions_AddAllKeepsTwoEventsAcrossAJoin(t *testing.T) {
	var p, o sink.Positions
	p.AddEvent(pos(0x30, 1), 7)
	p.Add(pos(0x30, 2))
	p.Add(pos(0x30, 3))
	o.AddEvent(pos(0x30, 4), 5)
	o.Add(pos(0x30, 5))
	o.AddEvent(pos(0x30, 4), 6) // two events at 4
	p.AddAll(&o)
	if p.Runs() != 1 || p.Len() != 5 {
		t.Fatalf("%d runs of %d positions, want 1 of 5", p.Runs(), p.Len())
	}
	for _, c := range []struct {
		seq   uint64
		event uint64
	}{{1, 7}, {4, 5}, {4, 6}, {5, 0}} {
		if p.Match(pos(0x30, c.seq), c.event) {
			t.Errorf("Match(0/30#%d, %d) = true in a run joined to one holding two events", c.seq, c.event)
		}
	}
}

// LSNs lists each commit LSN of the set once, in order, whatever the runs.
func TestPositions_LSNs(t *testing.T) {
	for _, tc := range []struct {
		name string
		add  []sink.Position
		want []pglogrepl.LSN
	}{
		{"empty", nil, nil},
		{"one run", []sink.Position{{CommitLSN: 10, Seq: 1}, {CommitLSN: 10, Seq: 2}}, []pglogrepl.LSN{10}},
		{"two runs at one LSN", []sink.Position{{CommitLSN: 10, Seq: 1}, {CommitLSN: 10, Seq: 5}, {CommitLSN: 20, Seq: 1}}, []pglogrepl.LSN{10, 20}},
		{"added out of order", []sink.Position{{CommitLSN: 30, Seq: 1}, {CommitLSN: 10, Seq: 1}, {CommitLSN: 20, Seq: 3}}, []pglogrepl.LSN{10, 20, 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p sink.Positions
			for _, pos := range tc.add {
				p.Add(pos)
			}
			if got := p.LSNs(); !slices.Equal(got, tc.want) {
				t.Errorf("LSNs() = %v, want %v", got, tc.want)
			}
		})
	}
	var none *sink.Positions
	if got := none.LSNs(); got != nil {
		t.Errorf("nil set: LSNs() = %v", got)
	}
}

// FirstRunOf finds where a transaction, known by the event of its first
// row, was placed by its commit: a run past the given LSN starting at
// ordinal 1 with that event, and not one holding two events.
func TestPositions_FirstRunOf(t *testing.T) {
	const a, b, c = 11, 22, 33
	var r sink.Reader
	for _, x := range []struct {
		p sink.Position
		e uint64
	}{
		{pos(5, 1), a},  // before the first row: another transaction's
		{pos(9, 2), a},  // not at ordinal 1
		{pos(10, 1), b}, // another event
		{pos(12, 1), a}, // this one, rows 1 to 3
		{pos(12, 2), b},
		{pos(12, 3), c},
		{pos(14, 1), c}, // two events at ordinal 1
		{pos(14, 1), b},
		{pos(15, 1), 0}, // event not known
		{pos(16, 1), 44},
		{pos(16, 1), 55}, // two events at ordinal 1, the first known
	} {
		r.Add(x.p, x.e)
	}
	p := r.Set()
	for _, tc := range []struct {
		after pglogrepl.LSN
		event uint64
		want  pglogrepl.LSN
		found bool
	}{
		{6, a, 12, true},
		{4, a, 0, false}, // two runs begin with a past 4
		{12, a, 0, false},
		{6, b, 10, true},
		{11, c, 0, false},
		{11, 0, 0, false},
		{11, 44, 0, false},
	} {
		if got, found := p.FirstRunOf(tc.after, tc.event); got != tc.want || found != tc.found {
			t.Errorf("FirstRunOf(%d, %d) = %d, %v; want %d, %v", tc.after, tc.event, got, found, tc.want, tc.found)
		}
	}
	var none *sink.Positions
	if _, found := none.FirstRunOf(0, a); found {
		t.Error("nil set found a run")
	}
	// An event that begins two runs (an id used again) finds neither.
	var again sink.Positions
	again.AddEvent(pos(12, 1), a)
	again.AddEvent(pos(20, 1), a)
	if _, found := again.FirstRunOf(6, a); found {
		t.Error("an event beginning two runs found one")
	}
	if got, found := again.FirstRunOf(15, a); !found || got != 20 {
		t.Errorf("FirstRunOf(15, a) = %d, %v; want 20, true: one run past 15", got, found)
	}
}

// At is the positions placed at one LSN, with their events: a row there
// matches as it does in the whole set, and no other position is in it.
func TestPositions_At(t *testing.T) {
	const a, b, c = 11, 22, 33
	type pe = struct {
		p sink.Position
		e uint64
	}
	read := func(adds ...pe) *sink.Positions {
		var r sink.Reader
		for _, x := range adds {
			r.Add(x.p, x.e)
		}
		return r.Set()
	}
	all := []pe{{pos(9, 1), a}, {pos(10, 1), a}, {pos(10, 2), b}, {pos(10, 4), c}, {pos(11, 1), c}}
	t.Run("every event kept", func(t *testing.T) {
		at := read(all...).At(10)
		if got := slices.Collect(at.All()); !slices.Equal(got, []sink.Position{pos(10, 1), pos(10, 2), pos(10, 4)}) {
			t.Fatalf("At(10) holds %v", got)
		}
		if at.Len() != 3 {
			t.Fatalf("Len = %d, want 3", at.Len())
		}
		for _, tr := range []struct {
			p     sink.Position
			event uint64
			want  bool
		}{{pos(10, 2), b, true}, {pos(10, 2), a, false}, {pos(10, 4), c, true}, {pos(9, 1), a, false}, {pos(10, 3), b, false}} {
			if got := at.Match(tr.p, tr.event); got != tr.want {
				t.Errorf("Match(%v, %d) = %v, want %v", tr.p, tr.event, got, tr.want)
			}
		}
	})
	t.Run("events kept from the middle of its runs: the runs' first events", func(t *testing.T) {
		defer sink.SetExactLimit(2)() // the last 2 to 4 positions keep their events
		at := read(append(all, pe{pos(12, 1), a}, pe{pos(12, 2), b})...).At(10)
		for _, tr := range []struct {
			p     sink.Position
			event uint64
			want  bool
		}{{pos(10, 1), a, true}, {pos(10, 2), c, true}, {pos(10, 4), b, false}, {pos(10, 4), c, true}} {
			if got := at.Match(tr.p, tr.event); got != tr.want {
				t.Errorf("Match(%v, %d) = %v, want %v", tr.p, tr.event, got, tr.want)
			}
		}
	})
	t.Run("a position of two events, or of an unknown one, matches nothing", func(t *testing.T) {
		at := read(pe{pos(10, 1), a}, pe{pos(10, 2), b}, pe{pos(10, 2), c}, pe{pos(10, 3), 0}, pe{pos(11, 1), 0}).At(10)
		for _, tr := range []struct {
			p     sink.Position
			event uint64
			want  bool
		}{{pos(10, 1), a, true}, {pos(10, 2), b, false}, {pos(10, 2), c, false}, {pos(10, 3), a, false}} {
			if got := at.Match(tr.p, tr.event); got != tr.want {
				t.Errorf("Match(%v, %d) = %v, want %v", tr.p, tr.event, got, tr.want)
			}
		}
		var byHand sink.Positions // runs only: an unknown first event
		byHand.AddEvent(pos(10, 1), 0)
		byHand.AddEvent(pos(10, 2), 0)
		if at := byHand.At(10); at.Match(pos(10, 1), a) || at.Match(pos(10, 2), a) {
			t.Error("a run of unknown events matched")
		}
	})
	if n := (*sink.Positions)(nil).At(10).Len(); n != 0 {
		t.Errorf("nil set: At(10).Len() = %d", n)
	}
}
