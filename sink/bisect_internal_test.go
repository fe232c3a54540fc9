package sink

import (
	"context"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/decoder"
)

// liveCount counts the INSERT batches open now and at most.
type liveCount struct{ live, max int }

type fakeConn struct {
	driver.Conn
	n   *liveCount
	bad uint64
}

func (f *fakeConn) PrepareBatch(ctx context.Context, q string, _ ...driver.PrepareBatchOption) (driver.Batch, error) {
	f.n.live++
	f.n.max = max(f.n.max, f.n.live)
	var cols []column.Interface
	for _, c := range []struct{ n, t string }{{"event_id", "String"}, {"cdc_commit_lsn", "UInt64"}, {"cdc_seq", "UInt64"}} {
		col, err := column.Type(c.t).Column(c.n, nil)
		if err != nil {
			return nil, err
		}
		cols = append(cols, col)
	}
	return &fakeBatch{n: f.n, cols: cols, bad: f.bad}, nil
}

type fakeBatch struct {
	driver.Batch
	n      *liveCount
	cols   []column.Interface
	bad    uint64
	hasBad bool
	closed bool
}

func (b *fakeBatch) Columns() []column.Interface { return b.cols }
func (b *fakeBatch) Append(v ...any) error {
	if *(v[2].(*uint64)) == b.bad {
		b.hasBad = true
	}
	return nil
}
func (b *fakeBatch) Flush() error { return nil }
func (b *fakeBatch) Send() error {
	if b.hasBad {
		return &clickhouse.Exception{Code: 6, Message: "bad"}
	}
	return nil
}
func (b *fakeBatch) done() {
	if !b.closed {
		b.closed = true
		b.n.live--
	}
}
func (b *fakeBatch) Abort() error { b.done(); return nil }
func (b *fakeBatch) Close() error { b.done(); return nil }

// Setting a refused row aside bisects the batch; each level closes the
// batch it sent before the next opens its own, so the blocks' columns of
// log2(rows) levels are not held at once. fakeConn counts the batches
// open; the last of 4,096 rows is refused.
func TestWrite_BisectionHoldsOneBatchPerLevelAtMost(t *testing.T) {
	rel := &decoder.Relation{Name: "outbox", Columns: []decoder.Column{{Name: "id"}}}
	const n = 1 << 12
	rows := make([]Row, n)
	for i := range rows {
		rows[i] = Row{Relation: rel, Values: []decoder.Value{{Kind: decoder.ValueText, Data: []byte("x")}},
			Pos: Position{CommitLSN: pglogrepl.LSN(1), Seq: uint64(i + 1)}, Size: 1}
	}
	lc := &liveCount{}
	c := &ClickHouse{conn: &fakeConn{n: lc, bad: n}, log: zap.NewNop(), warned: map[*decoder.Relation]bool{},
		columns:    []chColumn{{"event_id", "String"}, {"cdc_commit_lsn", "UInt64"}, {"cdc_seq", "UInt64"}},
		blockBytes: blockBytes, blockRows: blockRows}
	rej, err := c.write(context.Background(), rows, false)
	if err != nil || len(rej) != 1 {
		t.Fatalf("rejected %d, err %v", len(rej), err)
	}
	if rej[0].Row.Pos.Seq != n {
		t.Fatalf("refused row %d, want %d", rej[0].Row.Pos.Seq, n)
	}
	if lc.max > 2 || lc.live != 0 {
		t.Errorf("%d INSERT batches (each with its last block's columns) held at once, %d left open; want at most 2 and none", lc.max, lc.live)
	}
}
