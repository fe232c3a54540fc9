package sink

import (
	"bytes"
	"math"
	"runtime"
	"strings"
	"testing"

	chgo "github.com/ClickHouse/ch-go/proto"
	chproto "github.com/ClickHouse/clickhouse-go/v2/lib/proto"

	"github.com/eventcdc/cdc/decoder"
)

// allocated is the bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// appendRows converts and appends rows to block as write does.
func appendRows(t *testing.T, p *plan, block *chproto.Block, rows []Row) {
	t.Helper()
	cells := p.cells(block.Columns)
	for _, r := range rows {
		vals, err := cells.convert(p, r)
		if err != nil {
			t.Fatal(err)
		}
		if err := block.Append(vals...); err != nil {
			t.Fatal(err)
		}
	}
}

func encoded(t *testing.T, block *chproto.Block) []byte {
	t.Helper()
	buf := &chgo.Buffer{}
	if err := block.Encode(buf, chproto.DBMS_TCP_PROTOCOL_VERSION); err != nil {
		t.Fatal(err)
	}
	return buf.Buf
}

// A block of small events is appended into String columns that already
// have its size: what appending allocates is the other columns, not the
// doubling of event_context. The block holds exactly the rows appended.
func TestPresize_FirstBlockOfSmallEventsDoesNotGrowTheStringColumns(t *testing.T) {
	row := benchRow()
	rows := make([]Row, 3000)
	for i := range rows {
		rows[i] = row
	}
	p, _ := benchPlan(t, row)
	contextBytes := uint64(len(rows) * len(row.Values[4].Data))

	plain := benchBlock(t, p)
	grown := allocated(func() { appendRows(t, p, plain, rows) })

	block := benchBlock(t, p)
	if err := p.presize(block.Columns, rows, blockBytes, blockRows); err != nil {
		t.Fatal(err)
	}
	for i, col := range block.Columns {
		if col.Rows() != 0 {
			t.Fatalf("column %s holds %d rows after presize, want 0", p.targets[i], col.Rows())
		}
	}
	presized := allocated(func() { appendRows(t, p, block, rows) })

	// Growing by appending allocates several times a column's final size;
	// presized, what is left is the columns' row offsets and the
	// fixed-width columns.
	if grown < 3*contextBytes {
		t.Fatalf("appending to empty columns allocated %d bytes, under 3 × event_context's %d: the test no longer measures growth", grown, contextBytes)
	}
	if presized > grown/4 {
		t.Fatalf("appending to presized columns allocated %d bytes, empty columns %d; want under a quarter", presized, grown)
	}
	for i, col := range block.Columns {
		if col.Rows() != len(rows) {
			t.Fatalf("column %s holds %d rows, want %d", p.targets[i], col.Rows(), len(rows))
		}
	}
	if want, got := encoded(t, plain), encoded(t, block); !bytes.Equal(got, want) {
		t.Fatalf("presized block encodes to %d bytes that differ from the plain block's %d", len(got), len(want))
	}
}

// presize allocates a String column the first block's share of it, and
// leaves alone a column whose share is larger than presizeFrom: a few large
// values, which grow in few steps.
func TestPresize_LeavesFewLargeValuesAlone(t *testing.T) {
	small := benchRow()
	large := func(n int) Row {
		r := small // the same relation: one plan covers both
		values := append([]decoder.Value(nil), r.Values...)
		values[4] = decoder.Value{Kind: decoder.ValueText, Data: []byte(`"` + strings.Repeat("x", n-2) + `"`)}
		r.Values, r.Size = values, r.Size-len(r.Values[4].Data)+n
		return r
	}
	for _, tc := range []struct {
		name    string
		rows    []Row
		wantMin uint64 // bytes presize allocates, at least
		wantMax uint64 // and at most
	}{
		{"one small event", []Row{small}, uint64(len(small.Values[4].Data)), 2 << 10},
		{"one event larger than a block", []Row{large(5 << 20)}, 0, 1 << 10},
		// The second starts the next block (write): the first block is
		// the first event's alone, and its column is given that size.
		{"two events, each a block", []Row{large(1500 << 10), large(1500 << 10)}, 1500 << 10, 1500<<10 + 8<<10},
		{"two small events", []Row{small, small}, 2 * uint64(len(small.Values[4].Data)), 4 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The fewest bytes of a few tries: allocated counts the whole
			// process's, and another goroutine (a connection an earlier
			// test closed, the runtime) may allocate during one.
			var p *plan
			var block *chproto.Block
			n := uint64(math.MaxUint64)
			for range 5 {
				p, _ = benchPlan(t, tc.rows[0])
				block = benchBlock(t, p)
				var err error
				n = min(n, allocated(func() { err = p.presize(block.Columns, tc.rows, blockBytes, blockRows) }))
				if err != nil {
					t.Fatal(err)
				}
			}
			if n < tc.wantMin || n > tc.wantMax {
				t.Fatalf("presize allocated %d bytes, want %d to %d", n, tc.wantMin, tc.wantMax)
			}
			appendRows(t, p, block, tc.rows)
			for i, col := range block.Columns {
				if col.Rows() != len(tc.rows) {
					t.Fatalf("column %s holds %d rows, want %d", p.targets[i], col.Rows(), len(tc.rows))
				}
			}
		})
	}
}
