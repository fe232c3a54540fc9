package replication

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/sink"
)

// A stored position past the server's WAL end marks another WAL history,
// and rows are not skipped by position until the slot has confirmed past
// it, even once the server's WAL has passed it: a failover to a standby
// that lagged reaches those positions again, and a replay from below them
// would meet the old rows. Positions too many to hold as a set are not
// skipped by either, wherever they lie.
func TestNoSkipRule(t *testing.T) {
	for _, tc := range []struct {
		name                          string
		upTo, confirmed, last, walEnd pglogrepl.LSN
		tooMany                       bool
		wantUpTo                      pglogrepl.LSN
		want                          bool
	}{
		{"nothing stored", 0, 100, 0, 200, false, 0, false},
		{"stored within the WAL: this history", 0, 100, 150, 200, false, 0, false},
		{"stored up to the WAL end exactly", 0, 100, 200, 200, false, 0, false},
		{"stored past the WAL end", 0, 100, 300, 200, false, 300, true},
		{"the WAL has passed it, the slot not yet", 300, 250, 300, 400, false, 300, true},
		{"a later read sees more of it", 300, 250, 500, 400, false, 500, true},
		{"the slot has passed it", 300, 301, 350, 400, false, 0, false},
		{"the slot at it", 300, 300, 350, 400, false, 300, true},
		{"too many, within the WAL", 0, 100, 150, 200, true, 150, true},
		{"too many, past the WAL end", 0, 100, 300, 200, true, 300, true},
		{"too many again, fewer than before", 300, 250, 280, 400, true, 300, true},
		{"too many once, the slot past them now", 150, 160, 170, 200, false, 0, false},
	} {
		upTo, noSkip := noSkipRule(tc.upTo, tc.confirmed, tc.last, tc.walEnd, tc.tooMany)
		if upTo != tc.wantUpTo || noSkip != tc.want {
			t.Errorf("%s: noSkipRule(%d, %d, %d, %d, %v) = %d, %v; want %d, %v", tc.name, tc.upTo, tc.confirmed, tc.last, tc.walEnd, tc.tooMany, upTo, noSkip, tc.wantUpTo, tc.want)
		}
	}
}

// PostgreSQL's insert position at a page boundary lies past the next
// page's header; the end of the record before it lies at the boundary.
func TestRecordEnd(t *testing.T) {
	const block, segment = 8192, 16 << 20
	for _, tc := range []struct{ pos, want pglogrepl.LSN }{
		{0x2000 + 24, 0x2000},                   // past a page's header
		{0x1000000 + 40, 0x1000000},             // past a segment's first page's header
		{0x2000 + 40, 0x2000 + 40},              // a record's rest ending there
		{0x2000 + 48, 0x2000 + 48},              // any other position
		{0x3_0000_0000 + 24, 0x3_0000_0000 + 0}, // high up, the same
	} {
		if got := recordEnd(tc.pos, block, segment); got != tc.want {
			t.Errorf("recordEnd(%s) = %s, want %s", tc.pos, got, tc.want)
		}
	}
	if got := recordEnd(0x2000+24, 0, 0); got != 0x2000+24 {
		t.Errorf("recordEnd without the sizes = %s, want the position unchanged", got)
	}
}

// A streamed transaction remembered as partly stored is forgotten once its
// commit was received and is durable — whichever session received it —
// and kept while its commit is unknown or not yet stored.
func TestForgetPartials(t *testing.T) {
	r := &Replicator{partial: map[uint32]pglogrepl.LSN{
		1: 0,     // commit not received
		2: 0x100, // commit received, stored
		3: 0x200, // commit received, not stored
		4: 0x180, // at the durable position exactly
	}}
	r.forgetPartials(0x180)
	want := map[uint32]pglogrepl.LSN{1: 0, 3: 0x200}
	if fmt.Sprint(r.partial) != fmt.Sprint(want) {
		t.Errorf("partial after forgetPartials(0/180) = %v, want %v", r.partial, want)
	}
	r.rememberPartial(3) // a later session's end keeps what it knew
	r.rememberPartial(5)
	r.forgetPartials(0x200)
	if want := map[uint32]pglogrepl.LSN{1: 0, 5: 0}; fmt.Sprint(r.partial) != fmt.Sprint(want) {
		t.Errorf("partial after forgetPartials(0/200) = %v, want %v", r.partial, want)
	}
}

// readCounter is a sink that records the ranges it is asked about and
// holds nothing.
type readCounter struct {
	Sink
	reads []string
}

func (c *readCounter) Written(_ context.Context, from, to pglogrepl.LSN) (*sink.Positions, error) {
	c.reads = append(c.reads, fmt.Sprintf("%s-%s", from, to))
	return &sink.Positions{}, nil
}

// A transaction sent whole is looked for in the sink, by its first row's
// LSN, when the process remembers its xid as partly stored and its first
// row lies before the remembered commit's end, or when the skip set places
// stored rows at that LSN. A first row at or past the remembered end
// belongs to another transaction that took the xid after wraparound.
func TestFindStreamed_WhenTheSinkIsAsked(t *testing.T) {
	const xid, at = 7, pglogrepl.LSN(0x5000)
	var placedAt sink.Reader
	placedAt.Add(sink.Position{CommitLSN: at, Seq: 1}, 1)
	for _, tc := range []struct {
		name       string
		partial    map[uint32]pglogrepl.LSN
		placed     *sink.Positions
		wantLookup bool
	}{
		{"not remembered, nothing placed", nil, &sink.Positions{}, false},
		{"another xid remembered", map[uint32]pglogrepl.LSN{8: 0}, &sink.Positions{}, false},
		{"remembered, commit not received", map[uint32]pglogrepl.LSN{xid: 0}, &sink.Positions{}, true},
		{"remembered, first row before its commit's end", map[uint32]pglogrepl.LSN{xid: at + 1}, &sink.Positions{}, true},
		{"remembered, first row at its commit's end: wrapped", map[uint32]pglogrepl.LSN{xid: at}, &sink.Positions{}, false},
		{"remembered, first row past its commit's end: wrapped", map[uint32]pglogrepl.LSN{xid: at - 0x100}, &sink.Positions{}, false},
		{"wrapped but placed by the skip set", map[uint32]pglogrepl.LSN{xid: at - 0x100}, placedAt.Set(), true},
		{"not remembered, placed by the skip set", nil, placedAt.Set(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &readCounter{}
			s := &stream{r: &Replicator{sink: c, log: zap.NewNop(), partial: tc.partial}, placed: tc.placed.LSNs(),
				nextStatus: time.Now().Add(time.Hour)} // no status is due while the read runs
			s.tx.xid = xid
			if err := s.findStreamed(context.Background(), at); err != nil {
				t.Fatal(err)
			}
			var want []string
			if tc.wantLookup {
				want = []string{"0/5000-0/5001"}
			}
			if fmt.Sprint(c.reads) != fmt.Sprint(want) {
				t.Errorf("sink asked about %v, want %v", c.reads, want)
			}
		})
	}
}

// A streamed transaction's first row is looked for in the sink when it
// lies before the session's start, or when the skip set places stored
// rows at its LSN: another connector that held the slot while this session
// set up may have stored part of it, past the WAL position read first.
func TestStreamedRow_WhenTheSinkIsAsked(t *testing.T) {
	const start = pglogrepl.LSN(0x5000)
	var placedAt sink.Reader
	placedAt.Add(sink.Position{CommitLSN: 0x6000, Seq: 1}, 1)
	for _, tc := range []struct {
		name       string
		at         pglogrepl.LSN
		placed     *sink.Positions
		wantLookup bool
	}{
		{"before the session's start", 0x4000, &sink.Positions{}, true},
		{"after it, nothing placed there", 0x6000, &sink.Positions{}, false},
		{"after it, placed by the skip set", 0x6000, placedAt.Set(), true},
		{"after it, placed elsewhere", 0x7000, placedAt.Set(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &readCounter{}
			s := &stream{r: &Replicator{sink: c, log: zap.NewNop()}, placed: tc.placed.LSNs(), startWAL: start,
				nextStatus: time.Now().Add(time.Hour)}
			if _, _, err := s.streamedRow(context.Background(), &streamedTx{xid: 9}, tc.at, decoder.Message{}); err != nil {
				t.Fatal(err)
			}
			var want []string
			if tc.wantLookup {
				want = []string{fmt.Sprintf("%s-%s", tc.at, tc.at+1)}
			}
			if fmt.Sprint(c.reads) != fmt.Sprint(want) {
				t.Errorf("sink asked about %v, want %v", c.reads, want)
			}
		})
	}
}
