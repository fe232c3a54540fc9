package replication

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/decoder"
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

// A batch retried after its INSERT failed, in the middle of a transaction
// of more rows than a read keeps each event of, and with a second LSN
// span: the rows stored are told by their own events in each span's read,
// and only the rest is written again.
func TestUnstored_RetriedBatchOfALargeTransaction(t *testing.T) {
	const big, other = pglogrepl.LSN(0x1000), pglogrepl.LSN(0x1000 + 2*spanGap)
	s := &spanSink{stored: map[pglogrepl.LSN]uint64{big: 600_007, other: 1}}
	r := &Replicator{sink: s, log: zap.NewNop()}
	rel := &decoder.Relation{Columns: []decoder.Column{{Name: "id"}}}
	row := func(lsn pglogrepl.LSN, seq uint64) sink.Row {
		return sink.Row{Relation: rel, Pos: sink.Position{CommitLSN: lsn, Seq: seq},
			Values: []decoder.Value{{Kind: decoder.ValueText, Data: []byte(eventOf(lsn, seq).String())}}}
	}
	b := &sink.Batch{}
	for seq := uint64(600_001); seq <= 600_010; seq++ {
		b.Rows = append(b.Rows, row(big, seq))
	}
	b.Rows = append(b.Rows, row(other, 1), row(other, 2))
	rest, err := r.unstored(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, row := range rest.Rows {
		got = append(got, row.Pos.String())
	}
	if want := fmt.Sprint([]string{"0/1000#600008", "0/1000#600009", "0/1000#600010", fmt.Sprintf("%s#2", other)}); fmt.Sprint(got) != want {
		t.Errorf("rows left to write: %v, want %v", got, want)
	}
}
