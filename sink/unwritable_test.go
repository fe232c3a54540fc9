package sink

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/eventcdc/cdc/decoder"
)

// Types as system.columns and an INSERT's header block print them on
// 23.8 and later: clickhouse-go v2.51 builds a column of each but
// Object('json') (the experimental JSON of 22.3 to 24.x, whose support
// clickhouse-go removed) and AggregateFunction.
func TestUnwritableType(t *testing.T) {
	for typ, want := range map[string]bool{
		"Object('json')":                       true,
		"Object(Nullable('json'))":             true,
		"Array(Object('json'))":                true,
		"AggregateFunction(uniq, UInt64)":      true,
		"String":                               false,
		"UUID":                                 false,
		"Bool":                                 false,
		"DateTime('UTC')":                      false,
		"DateTime64(3, 'Europe/Amsterdam')":    false,
		"Date32":                               false,
		"LowCardinality(Nullable(String))":     false,
		"Nullable(Decimal(10, 2))":             false,
		"Map(String, UInt64)":                  false,
		"Array(Nullable(IPv4))":                false,
		"Enum8('a' = 1, 'b' = 2)":              false,
		"JSON":                                 false,
		"Variant(String, UInt64)":              false,
		"Dynamic":                              false,
		"SimpleAggregateFunction(max, UInt64)": false,
	} {
		if got := unwritableType(typ); got != want {
			t.Errorf("unwritableType(%q) = %v, want %v", typ, got, want)
		}
	}
}

// schemaConn is a server whose event_log has the columns cols (name and
// type, as system.columns prints them), without asynchronous inserts.
// PrepareBatch builds the named columns from their types as clickhouse-go
// does from the header block, and fails as it does on one it cannot
// build; queries collects the INSERTs prepared.
type schemaConn struct {
	driver.Conn
	cols    [][2]string
	queries []string
}

func (s *schemaConn) Query(_ context.Context, q string, _ ...any) (driver.Rows, error) {
	r := &listRows{}
	if strings.Contains(q, "system.columns") {
		for _, c := range s.cols {
			r.rows = append(r.rows, []string{c[0], c[1], ""})
		}
	}
	return r, nil
}

func (s *schemaConn) QueryRow(context.Context, string, ...any) driver.Row {
	return &listRows{rows: [][]string{{"2149-06-06"}}, i: 0}
}

var insertColumns = regexp.MustCompile("`([^`]*)`")

func (s *schemaConn) PrepareBatch(_ context.Context, q string, _ ...driver.PrepareBatchOption) (driver.Batch, error) {
	s.queries = append(s.queries, q)
	var cols []column.Interface
	for _, m := range insertColumns.FindAllStringSubmatch(q, -1) {
		for _, c := range s.cols {
			if c[0] == m[1] {
				col, err := column.Type(c[1]).Column(c[0], &column.ServerContext{})
				if err != nil {
					return nil, err
				}
				cols = append(cols, col)
			}
		}
	}
	return &schemaBatch{cols: cols}, nil
}

type schemaBatch struct {
	driver.Batch
	cols []column.Interface
}

func (b *schemaBatch) Columns() []column.Interface { return b.cols }
func (b *schemaBatch) Append(v ...any) error {
	if len(v) != len(b.cols) {
		return fmt.Errorf("%d values for %d columns", len(v), len(b.cols))
	}
	return nil
}
func (b *schemaBatch) Send() error  { return nil }
func (b *schemaBatch) Abort() error { return nil }
func (b *schemaBatch) Close() error { return nil }

// listRows is rows of text, a Row when QueryRow gives it.
type listRows struct {
	driver.Rows
	rows [][]string
	i    int
}

func (r *listRows) Next() bool { r.i++; return r.i <= len(r.rows) }
func (r *listRows) Scan(dest ...any) error {
	row := r.rows[max(r.i-1, 0)]
	for i, d := range dest {
		*d.(*string) = row[i]
	}
	return nil
}
func (r *listRows) Err() error   { return nil }
func (r *listRows) Close() error { return nil }

// An event_log column of a type clickhouse-go cannot build, such as
// Object('json') on 23.8 to 24.x, is not named in an INSERT: clickhouse-go
// refused the header block of every INSERT that named it ("unsupported
// column type"), no server exception, so each batch was retried for ever
// and no row was stored. The outbox column is warned of as not carried.
func TestWrite_ColumnOfATypeClickHouseGoCannotBuildIsNotCarried(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	conn := &schemaConn{cols: [][2]string{
		{"event_id", "UUID"}, {"payload", "Object('json')"}, {"cdc_commit_lsn", "UInt64"}, {"cdc_seq", "UInt64"},
	}}
	c := &ClickHouse{insertPrefix: "cdc-insert-test-", conn: conn, big: conn, log: zap.New(core), warned: map[*decoder.Relation]bool{}, live: &liveConns{},
		blockBytes: blockBytes, blockRows: blockRows}
	rel := &decoder.Relation{Namespace: "public", Name: "outbox", Columns: []decoder.Column{{Name: "id"}, {Name: "payload"}}}
	row := Row{Relation: rel, Values: []decoder.Value{text("0b6a2f4e-8f5c-4a8e-9d1e-3c2b1a0f9e8d"), text(`{"a":1}`)},
		Pos: Position{CommitLSN: pglogrepl.LSN(16), Seq: 1}, Size: 60}
	rejected, err := c.Write(context.Background(), &Batch{Rows: []Row{row}})
	if err != nil || len(rejected) != 0 {
		t.Fatalf("Write = %v, %v; want the row stored without payload", rejected, err)
	}
	if want := "INSERT INTO event_log (`event_id`, `cdc_commit_lsn`, `cdc_seq`)"; len(conn.queries) != 1 || conn.queries[0] != want {
		t.Fatalf("INSERTs %q, want %q", conn.queries, want)
	}
	const msg = "outbox columns whose event_log column is of a type clickhouse-go cannot write (Object('json'), AggregateFunction) are not carried: make the event_log column a String"
	if warned := logs.FilterMessage(msg).All(); len(warned) != 1 || fmt.Sprint(warned[0].ContextMap()["columns"]) != "[payload]" {
		t.Fatalf("warnings: %v, want one naming payload", logs.All())
	}
}
