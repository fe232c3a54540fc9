package sink_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/sink"
	ddl "github.com/eventcdc/cdc/sql"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func text(s string) decoder.Value { return decoder.Value{Kind: decoder.ValueText, Data: []byte(s)} }

var outboxRel = &decoder.Relation{ID: 1, Namespace: "public", Name: "outbox", Columns: []decoder.Column{
	{Name: "id"}, {Name: "event_type"}, {Name: "event_date_time"}, {Name: "environment"},
	{Name: "event_context"}, {Name: "metadata_version"}, {Name: "traceparent"}, {Name: "ip"},
}}

func row(seq uint64, version, ip string) sink.Row {
	return sink.Row{
		Relation: outboxRel,
		Values: []decoder.Value{
			text(uuid.NewString()), text("t"), text("2026-11-25 12:00:00+00"), text("test"),
			text(`{"seq":` + version + `}`), text(version), {Kind: decoder.ValueNull}, text(ip),
		},
		Pos: sink.Position{CommitLSN: 0x1000, Seq: seq},
	}
}

func newSink(t *testing.T) (*sink.ClickHouse, string) {
	t.Helper()
	env := testenv.Get(t)
	dsn := env.NewClickHouse(t)
	ch, err := sink.Open(dsn, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	if err := ddl.MigrateClickHouse(context.Background(), ch.Conn()); err != nil {
		t.Fatal(err)
	}
	return ch, dsn
}

func TestClickHouse_RefusedRowsComeBackAndTheRestIsStored(t *testing.T) {
	ch, _ := newSink(t)
	ctx := context.Background()
	// UInt8 makes "300" unconvertible on the client; Enum8 is a type the
	// sink does not convert, so a value outside the enum is refused by clickhouse-go's
	// own Append — both must end as rejected rows, not a stuck batch.
	if err := ch.Conn().Exec(ctx, "ALTER TABLE event_log MODIFY COLUMN metadata_version UInt8"); err != nil {
		t.Fatal(err)
	}
	if err := ch.Conn().Exec(ctx, "ALTER TABLE event_log ADD COLUMN ip Enum8('10.0.0.1' = 1, '10.0.0.2' = 2, '10.0.0.4' = 4)"); err != nil {
		t.Fatal(err)
	}
	b := &sink.Batch{Rows: []sink.Row{
		row(1, "1", "10.0.0.1"), row(2, "300", "10.0.0.2"), row(3, "3", "not-an-ip"), row(4, "4", "10.0.0.4"),
	}}
	rejected, err := ch.Write(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rejected {
		got = append(got, r.Row.Pos.String()+" "+r.Err.Error())
	}
	sort.Strings(got)
	if len(got) != 2 || !strings.HasPrefix(got[0], "0/1000#2 column metadata_version: \"300\" does not fit UInt8") || !strings.HasPrefix(got[1], "0/1000#3 append:") {
		t.Fatalf("rejected = %q", got)
	}
	var n uint64
	if err := ch.Conn().QueryRow(ctx, "SELECT count() FROM event_log WHERE cdc_seq IN (1, 4)").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("stored good rows = %d, want 2", n)
	}
	written, err := ch.Written(ctx, pglogrepl.LSN(0x1000))
	if err != nil {
		t.Fatal(err)
	}
	if len(written) != 2 {
		t.Fatalf("Written = %v, want positions 1 and 4", written)
	}
	for _, seq := range []uint64{1, 4} {
		if _, ok := written[sink.Position{CommitLSN: 0x1000, Seq: seq}]; !ok {
			t.Errorf("Written lacks seq %d", seq)
		}
	}
	if w, _ := ch.Written(ctx, pglogrepl.LSN(0x1001)); len(w) != 0 {
		t.Errorf("Written from a later LSN = %v, want none", w)
	}
}

func TestClickHouse_MissingTableIsARetriableErrorNamingTheFix(t *testing.T) {
	env := testenv.Get(t)
	ch, err := sink.Open(env.NewClickHouse(t), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	_, err = ch.Write(context.Background(), &sink.Batch{Rows: []sink.Row{row(1, "1", "10.0.0.1")}})
	if err == nil || !strings.Contains(err.Error(), "table event_log not found") || !strings.Contains(err.Error(), "run `cdc migrate`") {
		t.Fatalf("err = %v", err)
	}
}

func TestOpen_BadDSNNeverEchoesThePassword(t *testing.T) {
	_, err := sink.Open("clickhouse://u:hunter2@host:notaport/db", zap.NewNop())
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("err = %v; want an error without the password", err)
	}
}

// Two INSERTs in flight on one sink, each sent as ten blocks: every row is
// stored once with its own values, and each INSERT is still one part.
func TestClickHouse_ConcurrentWritesInBlocks(t *testing.T) {
	ch, _ := newSink(t)
	sink.SetBlockSize(ch, 1<<30, 100)
	ctx := context.Background()
	batches := make([]*sink.Batch, 2)
	for i := range batches {
		b := &sink.Batch{}
		for seq := uint64(1); seq <= 1000; seq++ {
			r := row(seq, strconv.Itoa(int(seq%200)), "10.0.0.1")
			r.Pos.CommitLSN = pglogrepl.LSN(0x1000 + i)
			b.Rows = append(b.Rows, r)
		}
		batches[i] = b
	}
	var wg sync.WaitGroup
	errs := make([]error, len(batches))
	for i, b := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var rejected []sink.Rejected
			rejected, errs[i] = ch.Write(ctx, b)
			if len(rejected) > 0 {
				errs[i] = fmt.Errorf("%d rows rejected: %v", len(rejected), rejected[0].Err)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var rows, positions, sumVersion uint64
	if err := ch.Conn().QueryRow(ctx, "SELECT count(), uniqExact(cdc_commit_lsn, cdc_seq), sum(toUInt64(metadata_version)) FROM event_log").Scan(&rows, &positions, &sumVersion); err != nil {
		t.Fatal(err)
	}
	// metadata_version is seq % 200: 5 rounds of 0..199 per batch.
	if rows != 2000 || positions != 2000 || sumVersion != 2*5*(199*200/2) {
		t.Fatalf("rows %d, distinct positions %d, sum(metadata_version) %d; want 2000, 2000, %d", rows, positions, sumVersion, 2*5*(199*200/2))
	}
	// Unmerged parts, active or already merged away: one per INSERT, not
	// one per block.
	var parts uint64
	if err := ch.Conn().QueryRow(ctx, "SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'event_log' AND level = 0").Scan(&parts); err != nil {
		t.Fatal(err)
	}
	if parts != 2 {
		t.Fatalf("%d level-0 parts after two INSERTs of ten blocks each, want 2", parts)
	}
}
