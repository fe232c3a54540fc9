package sink

import (
	"testing"
	"time"

	"github.com/ClickHouse/ch-go/compress"
	chgo "github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	chproto "github.com/ClickHouse/clickhouse-go/v2/lib/proto"
	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/internal/testenv"
)

// These benchmarks measure the client-side cost of one event on its way into
// an INSERT, without a server: converting pgoutput text to Go values, appending
// them to a clickhouse-go block, and encoding plus LZ4-compressing the block as
// Send does. One op is one event in ConvertRow and ConvertAppendRow, a block
// of 10,000 in EncodeBlock, an INSERT of 18,436 in Insert; each reports
// allocs/event and B/event (testenv.PerEvent).

// benchColumns is event_log as ClickHouse 18.16 reports it (sql/clickhouse.sql).
var benchColumns = []chColumn{
	{"event_id", "UUID"},
	{"event_type", "String"},
	{"event_date_time", "DateTime"},
	{"environment", "String"},
	{"event_context", "String"},
	{"metadata_version", "UInt64"},
	{"trace_id", "String"},
	{"cdc_commit_lsn", "UInt64"},
	{"cdc_seq", "UInt64"},
}

// benchRow is an outbox insert as the decoder hands it over, with the same
// 302-byte event_context as decoder/bench_test.go.
func benchRow() Row {
	rel := &decoder.Relation{ID: 16385, Namespace: "public", Name: "outbox", Columns: []decoder.Column{
		{Name: "id", TypeOID: 2950, Key: true},
		{Name: "event_type", TypeOID: 25},
		{Name: "event_date_time", TypeOID: 1184},
		{Name: "environment", TypeOID: 25},
		{Name: "event_context", TypeOID: 114},
		{Name: "metadata_version", TypeOID: 20},
		{Name: "traceparent", TypeOID: 25},
	}}
	text := func(s string) decoder.Value { return decoder.Value{Kind: decoder.ValueText, Data: []byte(s)} }
	values := []decoder.Value{
		text("0195a8e2-7c3d-7a10-9b4e-3f2d1c0b0a01"),
		text("order.created"),
		text("2025-03-01 12:00:00.123456+00"),
		text("production"),
		text(`{"order_id":"ord_01HQ3Z9K7M2N4P6R8T0V","customer_id":"cus_8f3a2b1c","currency":"EUR",` +
			`"total":"149.90","items":[{"sku":"SKU-1042","qty":2,"price":"49.95"},{"sku":"SKU-2210","qty":1,"price":"50.00"}],` +
			`"shipping":{"method":"express","country":"DE"},"locale":"de-DE","source":"web","campaign":"spring-sale"}`),
		text("1"),
		text("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
	}
	size := 0
	for _, v := range values {
		size += len(v.Data)
	}
	return Row{Relation: rel, Values: values, Pos: Position{CommitLSN: pglogrepl.LSN(0x16B3748), Seq: 1},
		CommitTime: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC), Size: size}
}

// benchPlan builds the INSERT plan and its cells exactly as write does,
// minus the server round trip that reports the column types.
func benchPlan(b testing.TB, row Row) (*plan, *rowCells) {
	b.Helper()
	c := &ClickHouse{columns: benchColumns, log: zap.NewNop(), warned: map[*decoder.Relation]bool{}}
	p := c.plan([]Row{row})
	if len(p.targets) != len(benchColumns) {
		b.Fatalf("plan targets %v, want all %d event_log columns", p.targets, len(benchColumns))
	}
	return p, p.cells(benchBlock(b, p).Columns)
}

func benchBlock(b testing.TB, p *plan) *chproto.Block {
	b.Helper()
	types := map[string]string{}
	for _, col := range benchColumns {
		types[col.name] = col.typ
	}
	block := chproto.NewBlock()
	for _, t := range p.targets {
		if err := block.AddColumn(t, column.Type(types[t])); err != nil {
			b.Fatal(err)
		}
	}
	return block
}

// BenchmarkConvertRow is rowCells.convert for one event: text to UUID,
// time, uint64 and the trace id.
func BenchmarkConvertRow(b *testing.B) {
	row := benchRow()
	p, cells := benchPlan(b, row)
	b.ReportAllocs()
	b.SetBytes(int64(row.Size))
	defer testenv.PerEvent(b, 1)()
	for b.Loop() {
		if _, err := cells.convert(p, row); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConvertAppendRow adds clickhouse-go's Block.Append, what
// batch.Append does per row, into blocks as write fills them: a new block
// for each INSERT of 18,436 rows (the batch size of `make bench`'s drain),
// presized, and reset when a 2 MiB block is sent. Its columns' allocation
// is spread over one INSERT's rows, whatever the number of iterations.
func BenchmarkConvertAppendRow(b *testing.B) {
	const insertRows = 18436
	row := benchRow()
	p, _ := benchPlan(b, row)
	batch := make([]Row, insertRows)
	for i := range batch {
		batch[i] = row
	}
	var block *chproto.Block
	var cells *rowCells
	inInsert, size, inBlock := insertRows, 0, 0
	b.ReportAllocs()
	b.SetBytes(int64(row.Size))
	defer testenv.PerEvent(b, 1)()
	for b.Loop() {
		if inInsert == insertRows {
			block = benchBlock(b, p)
			if err := p.presize(block.Columns, batch, blockBytes, blockRows); err != nil {
				b.Fatal(err)
			}
			cells = p.cells(block.Columns)
			inInsert, size, inBlock = 0, 0, 0
		}
		vals, err := cells.convert(p, row)
		if err != nil {
			b.Fatal(err)
		}
		if err := block.Append(vals...); err != nil {
			b.Fatal(err)
		}
		inInsert++
		size += row.Size
		if inBlock++; size >= blockBytes || inBlock >= blockRows {
			block.Reset()
			size, inBlock = 0, 0
		}
	}
}

// BenchmarkEncodeBlock is the per-event share of encoding a full block of
// 10,000 events and compressing it with LZ4, as batch.Send does before the
// bytes go on the wire.
func BenchmarkEncodeBlock(b *testing.B) {
	const rows = 10000
	row := benchRow()
	p, cells := benchPlan(b, row)
	block := benchBlock(b, p)
	for range rows {
		vals, err := cells.convert(p, row)
		if err != nil {
			b.Fatal(err)
		}
		if err := block.Append(vals...); err != nil {
			b.Fatal(err)
		}
	}
	buf := &chgo.Buffer{}
	zw := compress.NewWriter(compress.LevelZero, compress.LZ4)
	b.ReportAllocs()
	b.SetBytes(int64(row.Size) * rows)
	defer testenv.PerEvent(b, rows)()
	for b.Loop() {
		buf.Reset()
		if err := block.Encode(buf, chproto.DBMS_TCP_PROTOCOL_VERSION); err != nil {
			b.Fatal(err)
		}
		if err := zw.Compress(buf.Buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/rows, "ns/event")
}

// BenchmarkInsert is the client side of one INSERT of a backlog's batch as
// write builds it: a new block (PrepareBatch gives each INSERT empty
// columns), its rows converted and appended, and every 2 MiB block encoded
// and compressed, then reset for the next. "presized" is write's path;
// "grown" leaves the String columns to grow from empty, to show what
// presize saves. One op is one INSERT of 18,436 events (the batch size
// of `make bench`'s drain); B/event and ns/event are per event.
func BenchmarkInsert(b *testing.B) {
	const rows = 18436
	row := benchRow()
	batch := make([]Row, rows)
	for i := range batch {
		batch[i] = row
	}
	for _, presized := range []bool{true, false} {
		name := map[bool]string{true: "presized", false: "grown"}[presized]
		b.Run(name, func(b *testing.B) {
			p, _ := benchPlan(b, row)
			buf := &chgo.Buffer{}
			zw := compress.NewWriter(compress.LevelZero, compress.LZ4)
			b.ReportAllocs()
			b.SetBytes(int64(row.Size) * rows)
			defer testenv.PerEvent(b, rows)()
			for b.Loop() {
				block := benchBlock(b, p)
				if presized {
					if err := p.presize(block.Columns, batch, blockBytes, blockRows); err != nil {
						b.Fatal(err)
					}
				}
				cells := p.cells(block.Columns)
				size, n := 0, 0
				for i, r := range batch {
					vals, err := cells.convert(p, r)
					if err != nil {
						b.Fatal(err)
					}
					if err := block.Append(vals...); err != nil {
						b.Fatal(err)
					}
					size += r.Size
					n++
					if size >= blockBytes || n >= blockRows || i == len(batch)-1 {
						buf.Reset()
						if err := block.Encode(buf, chproto.DBMS_TCP_PROTOCOL_VERSION); err != nil {
							b.Fatal(err)
						}
						if err := zw.Compress(buf.Buf); err != nil {
							b.Fatal(err)
						}
						block.Reset()
						size, n = 0, 0
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/rows, "ns/event")
		})
	}
}
