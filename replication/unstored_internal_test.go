package replication

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/metrics"
	"github.com/eventcdc/cdc/sink"
)

// spanSink holds, at each commit LSN, rows 1..n with the event of
// eventOf, and reads them back as ClickHouse does: with a sink.Reader.
type spanSink struct {
	Sink
	stored map[pglogrepl.LSN]uint64
}

func (s *spanSink) Written(_ context.Context, from, to pglogrepl.LSN) (*sink.Positions, error) {
	var r sink.Reader
	for lsn := from; lsn < to; lsn++ {
		for seq := uint64(1); seq <= s.stored[lsn]; seq++ {
			r.Add(sink.Position{CommitLSN: lsn, Seq: seq}, sink.EventHash(eventOf(lsn, seq)))
		}
	}
	return r.Set(), nil
}

func eventOf(lsn pglogrepl.LSN, seq uint64) uuid.UUID {
	return uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "%d/%d", lsn, seq))
}

// idRel is a relation of one column, the event id.
var idRel = &decoder.Relation{Columns: []decoder.Column{{Name: "id"}}}

// idRow is a row of idRel at lsn/seq holding event, of size bytes.
func idRow(lsn pglogrepl.LSN, seq uint64, event uuid.UUID, size int) sink.Row {
	return sink.Row{Relation: idRel, Pos: sink.Position{CommitLSN: lsn, Seq: seq}, Size: size,
		Values: []decoder.Value{{Kind: decoder.ValueText, Data: []byte(event.String())}}}
}

// positionsOf is the positions of rows, in their order.
func positionsOf(rows []sink.Row) []string {
	var got []string
	for _, row := range rows {
		got = append(got, row.Pos.String())
	}
	return got
}

// A batch retried after its INSERT failed, in the middle of a transaction
// of more rows than a read keeps each event of, and with a second LSN
// span: the rows stored are told by their own events in each span's read,
// and only the rest is written again.
func TestUnstored_RetriedBatchOfALargeTransaction(t *testing.T) {
	const big, other = pglogrepl.LSN(0x1000), pglogrepl.LSN(0x1000 + 2*spanGap)
	s := &spanSink{stored: map[pglogrepl.LSN]uint64{big: 600_007, other: 1}}
	r := &Replicator{sink: s, log: zap.NewNop()}
	row := func(lsn pglogrepl.LSN, seq uint64) sink.Row { return idRow(lsn, seq, eventOf(lsn, seq), 0) }
	b := &sink.Batch{}
	for seq := uint64(600_001); seq <= 600_010; seq++ {
		b.Rows = append(b.Rows, row(big, seq))
	}
	b.Rows = append(b.Rows, row(other, 1), row(other, 2))
	rest, err := r.unstored(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	got := positionsOf(rest.Rows)
	if want := fmt.Sprint([]string{"0/1000#600008", "0/1000#600009", "0/1000#600010", fmt.Sprintf("%s#2", other)}); fmt.Sprint(got) != want {
		t.Errorf("rows left to write: %v, want %v", got, want)
	}
}

// readBackSink asks the read-back (sink.ReadBack) about every row of its
// INSERT, as the ClickHouse sink does for an INSERT that broke after
// some of its blocks went out, and keeps what it answered.
type readBackSink struct {
	spanSink
	lacked []string
}

func (s *readBackSink) Write(ctx context.Context, b *sink.Batch) ([]sink.Rejected, error) {
	rows, err := sink.ReadBack(ctx, b.Rows)
	for _, r := range rows {
		s.lacked = append(s.lacked, r.Pos.String())
	}
	return nil, err
}

// historyRows is a batch's rows against a spanSink holding rows 1 and 2 at
// 0/1000: row 1 is stored, row 2 holds another event (another history's
// row is at its position), rows 3 and 0/2000#1 are not stored. Each is 10
// bytes.
func historyRows() []sink.Row {
	return []sink.Row{
		idRow(0x1000, 1, eventOf(0x1000, 1), 10), idRow(0x1000, 2, uuid.New(), 10), idRow(0x1000, 3, eventOf(0x1000, 3), 10),
		idRow(0x2000, 1, eventOf(0x2000, 1), 10),
	}
}

// The store gives the sink a read-back that answers from event_log's
// positions, by position and event, as for a failed INSERT it retries:
// the rows stored are left out (at 0/1000, rows 1 and 2 of the three;
// at 0/2000, none), and a row at a stored position with another event
// (another history's) is not.
func TestStore_GivesTheSinkAReadBackOfWhatIsStored(t *testing.T) {
	s := &readBackSink{spanSink: spanSink{stored: map[pglogrepl.LSN]uint64{0x1000: 2}}}
	r := New(Config{Slot: "readback"}, s, nil, zap.NewNop(),
		metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() }))
	b := &sink.Batch{Rows: historyRows()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, stored := r.store(ctx, b, &fence{}); !stored {
		t.Fatal("not stored")
	}
	if got, want := fmt.Sprint(s.lacked), "[0/1000#2 0/1000#3 0/2000#1]"; got != want {
		t.Errorf("the read-back says ClickHouse lacks %s, want %s", got, want)
	}
}

// eventSink is a spanSink that can also tell rows stored by event
// (sink.ClickHouse.Unwritten), and may have more positions stored than a
// read may hold.
type eventSink struct {
	spanSink
	tooMany bool
	asked   int
}

func (s *eventSink) Written(ctx context.Context, from, to pglogrepl.LSN) (*sink.Positions, error) {
	if s.tooMany {
		return nil, &sink.TooManyPositions{Max: to}
	}
	return s.spanSink.Written(ctx, from, to)
}

func (s *eventSink) Unwritten(_ context.Context, rows []sink.Row) ([]sink.Row, error) {
	s.asked++
	var lacked []sink.Row
	for _, row := range rows {
		if row.Pos.Seq > s.stored[row.Pos.CommitLSN] || row.Event() != sink.EventHash(eventOf(row.Pos.CommitLSN, row.Pos.Seq)) {
			lacked = append(lacked, row)
		}
	}
	return lacked, nil
}

// Where positions cannot tell which rows of a failed INSERT are stored —
// another WAL history's may match (noSkip), or more are stored than a read
// holds — the rows were all written again. A sink that tells them by event
// is asked instead: a row at a stored position with another event (of the
// other history) is written, the stored rows are not. A sink that cannot
// has them all written again, as before.
func TestUnstored_AsksByEventWherePositionsCannotTell(t *testing.T) {
	for _, tc := range []struct {
		name            string
		noSkip, tooMany bool
		byEvent         bool // the sink can tell by event
		want            string
		wantAsked       int
	}{
		{"by position", false, false, true, "[0/1000#2 0/1000#3 0/2000#1] 30", 0},
		{"another history", true, false, true, "[0/1000#2 0/1000#3 0/2000#1] 30", 1},
		{"too many positions", false, true, true, "[0/1000#2 0/1000#3 0/2000#1] 30", 1},
		{"another history, a sink that cannot tell", true, false, false, "[0/1000#1 0/1000#2 0/1000#3 0/2000#1] 40", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &eventSink{spanSink: spanSink{stored: map[pglogrepl.LSN]uint64{0x1000: 2}}, tooMany: tc.tooMany}
			r := &Replicator{sink: s, log: zap.NewNop()}
			if !tc.byEvent {
				r.sink = &s.spanSink
			}
			r.noSkip.Store(tc.noSkip)
			b := &sink.Batch{Bytes: 40, Rows: historyRows()}
			rest, err := r.unstored(context.Background(), b)
			if err != nil {
				t.Fatal(err)
			}
			if g := fmt.Sprint(positionsOf(rest.Rows), " ", rest.Bytes); g != tc.want || s.asked != tc.wantAsked {
				t.Errorf("rows left to write and their bytes: %s, the sink asked by event %d times; want %s, %d", g, s.asked, tc.want, tc.wantAsked)
			}
		})
	}
}
