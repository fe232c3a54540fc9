package sink

import (
	"context"
	"errors"
	"fmt"
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

// fakeConn opens fakeBatches: Send refuses a batch holding the row at
// sequence bad, Append refuses the row at appendFails, and sent collects
// the sequences of the batches sent.
type fakeConn struct {
	driver.Conn
	n           *liveCount
	bad         uint64
	appendFails uint64
	flushFails  bool
	sent        []uint64
	// flushedAt is how many rows the batch held at each Flush: where
	// its blocks end.
	flushedAt []int
	// closed and aborted count how batches ended: Close sends the end of
	// the data, which commits what was flushed; Abort drops the
	// connection.
	closed, aborted int
}

// Query fails: the server's settings are not known here, and a broken
// INSERT's rows are asked about (storedNone says false).
func (f *fakeConn) Query(context.Context, string, ...any) (driver.Rows, error) {
	return nil, errors.New("fakeConn runs no query")
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
	return &fakeBatch{conn: f, n: f.n, cols: cols, bad: f.bad}, nil
}

type fakeBatch struct {
	driver.Batch
	conn   *fakeConn
	seqs   []uint64
	n      *liveCount
	cols   []column.Interface
	bad    uint64
	hasBad bool
	closed bool
}

func (b *fakeBatch) Columns() []column.Interface { return b.cols }
func (b *fakeBatch) Append(v ...any) error {
	seq := *(v[2].(*uint64))
	if seq == b.conn.appendFails {
		return errors.New("append refused")
	}
	if seq == b.bad {
		b.hasBad = true
	}
	b.seqs = append(b.seqs, seq)
	return nil
}
func (b *fakeBatch) Flush() error {
	if b.conn.flushFails {
		return errors.New("flush failed")
	}
	b.conn.flushedAt = append(b.conn.flushedAt, len(b.seqs))
	return nil
}
func (b *fakeBatch) Send() error {
	if b.hasBad {
		return &clickhouse.Exception{Code: 6, Message: "bad"}
	}
	b.conn.sent = append(b.conn.sent, b.seqs...)
	return nil
}
func (b *fakeBatch) done() {
	if !b.closed {
		b.closed = true
		b.n.live--
	}
}
func (b *fakeBatch) Abort() error { b.conn.aborted++; b.done(); return nil }
func (b *fakeBatch) Close() error { b.conn.closed++; b.done(); return nil }

// seqRows is n rows of one byte each, at sequences 1..n of one commit.
func seqRows(n int) []Row {
	rel := &decoder.Relation{Name: "outbox", Columns: []decoder.Column{{Name: "id"}}}
	rows := make([]Row, n)
	for i := range rows {
		rows[i] = Row{Relation: rel, Values: []decoder.Value{{Kind: decoder.ValueText, Data: []byte("x")}},
			Pos: Position{CommitLSN: pglogrepl.LSN(1), Seq: uint64(i + 1)}, Size: 1}
	}
	return rows
}

// fakeSink writes to conn (a fakeConn) in blocks of at most bytes and rows.
func fakeSink(conn driver.Conn, bytes, rows int) *ClickHouse {
	return &ClickHouse{insertPrefix: "cdc-insert-test-", conn: conn, log: zap.NewNop(), warned: map[*decoder.Relation]bool{},
		columns:    []chColumn{{"event_id", "String"}, {"cdc_commit_lsn", "UInt64"}, {"cdc_seq", "UInt64"}},
		blockBytes: bytes, blockRows: rows}
}

// A block that fails to go out ends the INSERT by Abort, not Close: Close
// sends the end of the data, and the server would commit the blocks sent
// before it while Write reports the batch not stored.
func TestWrite_AFailedBlockAbortsTheInsert(t *testing.T) {
	rows := seqRows(100)
	fc := &fakeConn{n: &liveCount{}, flushFails: true}
	c := fakeSink(fc, blockBytes, 10)
	_, err := c.write(context.Background(), rows, false)
	if err == nil || err.Error() != "send block of 10 rows to event_log: flush failed" {
		t.Fatalf("write with a failing block: %v", err)
	}
	if fc.aborted != 1 || fc.closed != 0 {
		t.Fatalf("the INSERT ended by %d Aborts and %d Closes, want one Abort", fc.aborted, fc.closed)
	}
}

// Setting a refused row aside bisects the batch; each level closes the
// batch it sent before the next opens its own, so the blocks' columns of
// log2(rows) levels are not held at once. fakeConn counts the batches
// open; the last of 4,096 rows is refused.
func TestWrite_BisectionHoldsOneBatchPerLevelAtMost(t *testing.T) {
	const n = 1 << 12
	rows := seqRows(n)
	lc := &liveCount{}
	c := fakeSink(&fakeConn{n: lc, bad: n}, blockBytes, blockRows)
	rej, err := c.write(context.Background(), rows, false)
	if err != nil || len(rej) != 1 {
		t.Fatalf("rejected %d, err %v", len(rej), err)
	}
	if rej[0].Row.Pos.Seq != n {
		t.Fatalf("refused row %d, want %d", rej[0].Row.Pos.Seq, n)
	}
	if lc.max > 1 || lc.live != 0 {
		t.Errorf("%d INSERT batches (each with its last block's columns) held at once, %d left open; want 1 and none", lc.max, lc.live)
	}
}

// A row Append refuses (conversion should make that impossible) aborts
// the INSERT, which is released before the rows are written again without
// it: one batch open at a time, every other row sent once, the refused one
// set aside with Append's error.
func TestWrite_AppendRefusalReleasesTheAbortedBatch(t *testing.T) {
	rows := seqRows(100)
	var want []uint64
	for i := range rows {
		if i+1 != 50 {
			want = append(want, uint64(i+1))
		}
	}
	lc := &liveCount{}
	conn := &fakeConn{n: lc, appendFails: 50}
	c := fakeSink(conn, blockBytes, blockRows)
	rej, err := c.write(context.Background(), rows, false)
	if err != nil || len(rej) != 1 || rej[0].Row.Pos.Seq != 50 || rej[0].Err.Error() != "append: append refused" {
		t.Fatalf("write = %+v, %v; want row 50 refused by append", rej, err)
	}
	if fmt.Sprint(conn.sent) != fmt.Sprint(want) {
		t.Fatalf("sent %v; want every row but 50 once", conn.sent)
	}
	if lc.max != 1 || lc.live != 0 {
		t.Errorf("%d INSERT batches open at once, %d left open; want 1 and none", lc.max, lc.live)
	}
}

// A row Append refuses after blocks of the INSERT went out: those blocks
// may be stored (ClickHouse writes blocks as they come once it squashed
// enough of them), so the rows are written again only as the read-back
// says ClickHouse lacks them. Rows 1..40 went out in four blocks of 10
// before row 50 was refused; the read-back says they are stored.
func TestWrite_AppendRefusalAfterBlocksWentOutWritesOnlyWhatIsNotStored(t *testing.T) {
	rows := seqRows(100)
	var want []uint64
	for i := range rows {
		if seq := i + 1; seq > 40 && seq != 50 {
			want = append(want, uint64(seq))
		}
	}
	conn := &fakeConn{n: &liveCount{}, appendFails: 50}
	c := fakeSink(conn, blockBytes, 10)
	var asked []uint64
	ctx := WithReadBack(context.Background(), func(_ context.Context, rows []Row) ([]Row, error) {
		var lacked []Row
		for _, r := range rows {
			asked = append(asked, r.Pos.Seq)
			if r.Pos.Seq > 40 {
				lacked = append(lacked, r)
			}
		}
		return lacked, nil
	})
	rej, err := c.write(ctx, rows, false)
	if err != nil || len(rej) != 1 || rej[0].Row.Pos.Seq != 50 || rej[0].Err.Error() != "append: append refused" {
		t.Fatalf("write = %+v, %v; want row 50 refused by append", rej, err)
	}
	if len(asked) != 49 || asked[0] != 1 || asked[48] != 49 {
		t.Errorf("read-back asked about rows %v; want 1..49, those appended before row 50", asked)
	}
	if fmt.Sprint(conn.sent) != fmt.Sprint(want) {
		t.Fatalf("sent %v; want rows 41..100 but 50, once", conn.sent)
	}
}

// A block is at most blockBytes, or one row larger than that alone: the
// writer budgets three copies of the larger of the two for an INSERT
// (Batch.Footprint). A large row that came after smaller ones joined
// their block, which then held it and them: 11.5 MiB where 10 were
// counted.
func TestWrite_ALargeRowIsABlockOfItsOwn(t *testing.T) {
	rel := &decoder.Relation{Name: "outbox", Columns: []decoder.Column{{Name: "id"}}}
	const mib = 1 << 20
	sizes := []int{mib, mib / 2, 10 * mib, mib / 5, 3 * mib, mib, mib}
	rows := make([]Row, len(sizes))
	for i, size := range sizes {
		rows[i] = Row{Relation: rel, Values: []decoder.Value{{Kind: decoder.ValueText, Data: []byte("x")}},
			Pos: Position{CommitLSN: pglogrepl.LSN(1), Seq: uint64(i + 1)}, Size: size}
	}
	fc := &fakeConn{n: &liveCount{}}
	c := fakeSink(fc, 2*mib, blockRows)
	c.big = fc
	rej, err := c.write(context.Background(), rows, false)
	if err != nil || len(rej) != 0 {
		t.Fatalf("write: %d rejected, %v", len(rej), err)
	}
	// Blocks: 1 + 0.5 MiB; 10 MiB; 0.2 MiB; 3 MiB; then 1 + 1 MiB, sent
	// by Flush as it reaches 2 MiB.
	if want := []int{2, 3, 4, 5, 7}; fmt.Sprint(fc.flushedAt) != fmt.Sprint(want) {
		t.Fatalf("blocks ended after rows %v, want %v", fc.flushedAt, want)
	}
	if fmt.Sprint(fc.sent) != "[1 2 3 4 5 6 7]" {
		t.Fatalf("sent %v, want each row once in order", fc.sent)
	}
}

// squashedWhole: below every threshold set, nothing is written before the
// INSERT ends; at or past one, or with none set, blocks are written as
// they come.
func TestSquashedWhole(t *testing.T) {
	for _, tc := range []struct {
		rows, bytes, minRows, minBytes uint64
		want                           bool
	}{
		{60000, 50 << 20, 1048576, 256 << 20, true},
		{1048576, 50 << 20, 1048576, 256 << 20, false},
		{60000, 256 << 20, 1048576, 256 << 20, false},
		{60000, 1 << 40, 100000, 0, true},
		{60000, 1, 0, 1 << 20, true},
		{60000, 1 << 20, 0, 1 << 20, false},
		{1, 1, 0, 0, false},
	} {
		if got := squashedWhole(tc.rows, tc.bytes, tc.minRows, tc.minBytes); got != tc.want {
			t.Errorf("squashedWhole(%d rows, %d bytes; min %d rows, %d bytes) = %v, want %v", tc.rows, tc.bytes, tc.minRows, tc.minBytes, got, tc.want)
		}
	}
}
