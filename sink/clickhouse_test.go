package sink_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

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

// sinkWithColumns is newSink with event_log altered by alter first (its
// columns added), and a second sink opened after, which learns them, for
// the test to write through, logging to log.
func sinkWithColumns(t *testing.T, alter string, log *zap.Logger) (admin, s *sink.ClickHouse) {
	t.Helper()
	admin, dsn := newSink(t)
	if err := admin.Conn().Exec(context.Background(), alter); err != nil {
		t.Fatal(err)
	}
	s, err := sink.Open(dsn, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return admin, s
}

// withColumns is the outbox without ip (which event_log lacks: a column
// with nowhere to go would have the sink look at event_log again anyway)
// and with the columns named; rowOf makes its row seq with their values.
func withColumns(names ...string) *decoder.Relation {
	n := len(outboxRel.Columns) - 1
	rel := &decoder.Relation{ID: 1, Namespace: "public", Name: "outbox", Columns: slices.Clone(outboxRel.Columns[:n])}
	for _, name := range names {
		rel.Columns = append(rel.Columns, decoder.Column{Name: name})
	}
	return rel
}

func rowOf(rel *decoder.Relation, seq uint64, values ...decoder.Value) sink.Row {
	r := row(seq, "1", "")
	n := len(outboxRel.Columns) - 1
	r.Relation, r.Values = rel, append(r.Values[:n:n], values...)
	return r
}

func TestClickHouse_RefusedRowsComeBackAndTheRestIsStored(t *testing.T) {
	ch, _ := newSink(t)
	ctx := context.Background()
	// UInt8 makes "300" unconvertible on the client; Enum8 is a type the
	// sink does not convert, so a value outside the enum is refused when
	// the sink tries it on a column of its own — both must end as
	// rejected rows, not a stuck batch.
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
	if len(got) != 2 || !strings.HasPrefix(got[0], "0/1000#2 column metadata_version: \"300\" does not fit UInt8") || got[1] != `0/1000#3 column ip: "not-an-ip" is not a Enum8('10.0.0.1' = 1, '10.0.0.2' = 2, '10.0.0.4' = 4): Enum8('10.0.0.1' = 1, '10.0.0.2' = 2, '10.0.0.4' = 4): unknown element "not-an-ip"` {
		t.Fatalf("rejected = %q", got)
	}
	var n uint64
	if err := ch.Conn().QueryRow(ctx, "SELECT count() FROM event_log WHERE cdc_seq IN (1, 4)").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("stored good rows = %d, want 2", n)
	}
	written, err := ch.Written(ctx, pglogrepl.LSN(0x1000), pglogrepl.LSN(0x1001))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := slices.Collect(written.All()), []sink.Position{{CommitLSN: 0x1000, Seq: 1}, {CommitLSN: 0x1000, Seq: 4}}; !slices.Equal(got, want) {
		t.Fatalf("Written = %v, want %v", got, want)
	}
	if w, err := ch.Written(ctx, pglogrepl.LSN(0x1001), sink.LastLSN); err != nil || w.Len() != 0 {
		t.Errorf("Written from a later LSN = %v, %v; want none", w, err)
	}
	if w, err := ch.Written(ctx, pglogrepl.LSN(0xfff), pglogrepl.LSN(0x1000)); err != nil || w.Len() != 0 {
		t.Errorf("Written up to the LSN, exclusive = %v, %v; want none", w, err)
	}
}

// A row the server refuses in an early block of an INSERT of many blocks
// is set aside like any other. 18.16 answers such a block with its
// exception and closes the connection when the next block arrives: the
// client sees a reset while sending, not the exception. Taken for a network
// error, the batch was retried whole, refused the same way each time, for
// ever. Here the server refuses the row through a DEFAULT it computes.
func TestClickHouse_RowRefusedInAnEarlyBlockIsSetAside(t *testing.T) {
	ch, _ := newSink(t)
	ctx := context.Background()
	if err := ch.Conn().Exec(ctx, "ALTER TABLE event_log ADD COLUMN chk UInt8 DEFAULT toUInt8(if(metadata_version = 7, 'x', '1'))"); err != nil {
		t.Fatal(err)
	}
	sink.SetBlockSize(ch, 1<<30, 1000)
	const n = 60000
	b := &sink.Batch{}
	for seq := uint64(1); seq <= n; seq++ {
		b.Rows = append(b.Rows, row(seq, strconv.FormatUint(seq, 10), ""))
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	rejected, err := ch.Write(wctx, b)
	if err != nil {
		t.Fatalf("Write: %v; want row 7 refused and the rest stored", err)
	}
	if len(rejected) != 1 || rejected[0].Row.Pos.Seq != 7 || !sink.IsRowError(rejected[0].Err) {
		t.Fatalf("rejected %v; want row 7 with the server's error", rejected)
	}
	var rows, positions uint64
	if err := ch.Conn().QueryRow(ctx, "SELECT count(), uniqExact(cdc_seq) FROM event_log WHERE cdc_seq != 7").Scan(&rows, &positions); err != nil {
		t.Fatal(err)
	}
	if rows != n-1 || positions != n-1 {
		t.Fatalf("stored %d rows at %d positions; want %d once each", rows, positions, n-1)
	}
}

// A row the server refuses in a later block of an INSERT of many blocks
// (or in its last, whose refusal the client reads) is set aside, and the
// rows of the blocks before it are stored once.
// Written in halves after the break, as above, those blocks were written
// again: where the server writes blocks as they come (it squashes them
// into min_insert_block_size_rows or _bytes first, 1,048,576 rows or 256
// MiB by default), the broken INSERT had stored them, and 16,000 rows were
// raw duplicates here. The rows are written again now only as the
// read-back (WithReadBack) says ClickHouse lacks them; where the server
// cannot have stored a block before the break (what it sent is below both
// thresholds), the read-back, which may read a whole column of event_log,
// is not asked, and the counts show that nothing was stored twice. event_log
// is a plain MergeTree here, whose merges keep duplicates.
func TestClickHouse_RowRefusedInALaterBlockLeavesTheBlocksBeforeStoredOnce(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings string // DSN parameters: settings of each query
		refused  uint64
		readBack bool // the read-back is asked which rows are stored
	}{
		// Nothing stored before the INSERT ends: the read-back, which
		// may read a whole column, is not asked.
		{"blocks squashed into one", "", 4500, false},
		{"blocks squashed by rows alone", "?min_insert_block_size_rows=100000&min_insert_block_size_bytes=0", 4500, false},
		{"blocks stored as they come", "?min_insert_block_size_rows=1&min_insert_block_size_bytes=1", 4500, true},
		{"no squashing", "?min_insert_block_size_rows=0&min_insert_block_size_bytes=0", 4500, true},
		{"blocks squashed by bytes alone", "?min_insert_block_size_rows=0&min_insert_block_size_bytes=268435456", 4500, false},
		{"squashed up to fewer rows than sent", "?min_insert_block_size_rows=3000&min_insert_block_size_bytes=0", 4500, true},
		{"squashed up to fewer bytes than sent", "?min_insert_block_size_rows=0&min_insert_block_size_bytes=100000", 4500, true},
		{"refused in the first block", "?min_insert_block_size_rows=1&min_insert_block_size_bytes=1", 7, true},
		// The last block's refusal is read at the end of the data.
		{"refused in the last block", "?min_insert_block_size_rows=1&min_insert_block_size_bytes=1", 59500, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			admin, dsn := newSink(t)
			ctx := context.Background()
			testenv.RefuseVersionInPlainEventLog(t, admin.Conn(), int(tc.refused))
			ch, err := sink.Open(dsn+tc.settings, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ch.Close() })
			sink.SetBlockSize(ch, 1<<30, 1000)
			const n = 60000
			b := &sink.Batch{}
			for seq := uint64(1); seq <= n; seq++ {
				b.Rows = append(b.Rows, row(seq, strconv.FormatUint(seq, 10), ""))
			}
			var asked, stored int
			readBack := func(ctx context.Context, rows []sink.Row) ([]sink.Row, error) {
				asked++
				w, err := ch.Written(ctx, 0x1000, 0x1001)
				if err != nil {
					return nil, err
				}
				var lacked []sink.Row
				for _, r := range rows {
					if w.Has(r.Pos) && w.Match(r.Pos, r.Event()) {
						stored++
						continue
					}
					lacked = append(lacked, r)
				}
				return lacked, nil
			}
			wctx, cancel := context.WithTimeout(sink.WithReadBack(ctx, readBack), time.Minute)
			defer cancel()
			rejected, err := ch.Write(wctx, b)
			if err != nil {
				t.Fatalf("Write: %v; want row %d refused and the rest stored", err, tc.refused)
			}
			if len(rejected) != 1 || rejected[0].Row.Pos.Seq != tc.refused || !sink.IsRowError(rejected[0].Err) {
				t.Fatalf("rejected %v; want row %d with the server's error", rejected, tc.refused)
			}
			if (asked > 0) != tc.readBack {
				t.Errorf("the read-back was asked %d times which rows the broken INSERT stored; want asked: %v", asked, tc.readBack)
			}
			var rows, positions uint64
			if err := admin.Conn().QueryRow(ctx, "SELECT count(), uniqExact(cdc_seq) FROM event_log").Scan(&rows, &positions); err != nil {
				t.Fatal(err)
			}
			if rows != n-1 || positions != n-1 {
				t.Fatalf("stored %d rows at %d positions (%d found stored by the read-back); want %d once each", rows, positions, stored, n-1)
			}
		})
	}
}

// ClickHouse refuses an INSERT that needs more memory than it may use
// (MEMORY_LIMIT_EXCEEDED, code 241). It was retried whole, refused the
// same way each time, for ever: the stream stopped. A batch is now written
// in halves, as for a refused row, so the rows that fit are stored. A row
// over the query's limit (max_memory_usage) alone never passes while the
// limit stays: it is set aside with a reason that names the setting. Over
// the user's limit, which other queries share, it is retried, with an
// error that names what to raise.
//
// A query's limit below what any INSERT into event_log needs (its
// buffers, a MiB a column, whatever the rows: 5 MB here) refused the
// smallest row alone too, and every event of the stream was set aside as
// one that "alone needs more memory": event_log got nothing, and the
// dead letters every event. A row smaller than the blocks every INSERT
// sends is not what the limit is short for: the batch is retried, the
// error naming max_memory_usage.
func TestClickHouse_RowOverAMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name, setting string
		limit         int
		wantErr       string // Write's error; "" for row 2 set aside
		wantStored    []uint64
	}{
		// 40 MB: the small rows fit, the 24 MiB one does not (the
		// server holds its value more than once while it writes it).
		{name: "query", setting: "max_memory_usage", limit: 40000000, wantStored: []uint64{1, 3, 4}},
		{name: "user", setting: "max_memory_usage_for_user", limit: 40000000, wantErr: "insert 1 rows into event_log: ClickHouse's memory for cdc's user or for all queries ran short", wantStored: []uint64{1}},
		{name: "query, below any INSERT's", setting: "max_memory_usage", limit: 5000000, wantErr: "insert 1 rows into event_log: ClickHouse's max_memory_usage for cdc's user is below what an INSERT into event_log needs, however small its rows", wantStored: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			admin, dsn := newSink(t)
			ctx := context.Background()
			sep := "?"
			if strings.Contains(dsn, "?") {
				sep = "&"
			}
			if tc.wantStored == nil {
				// The limit must refuse one small row alone, as it does
				// 18.16's INSERT (and 23.8's: a MiB a column).
				pctx, cancel := context.WithTimeout(clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{tc.setting: tc.limit})), time.Minute)
				defer cancel()
				probe, err := admin.Conn().PrepareBatch(pctx, "INSERT INTO event_log (event_type)")
				if err != nil {
					t.Fatal(err)
				}
				if err := probe.Append("probe"); err != nil {
					t.Fatal(err)
				}
				if err := probe.Send(); !sink.IsRowError(err) {
					t.Skipf("one small row inserted under %s = %d: %v; this server needs less", tc.setting, tc.limit, err)
				}
			}
			ch, err := sink.Open(dsn+sep+tc.setting+"="+strconv.Itoa(tc.limit), zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ch.Close() })
			b := &sink.Batch{}
			for seq := uint64(1); seq <= 4; seq++ {
				r := row(seq, strconv.FormatUint(seq, 10), "")
				if seq == 2 {
					r.Values[4] = text(`{"blob":"` + strings.Repeat("x", 24<<20) + `"}`)
					r.Size = 24 << 20
				}
				b.Rows = append(b.Rows, r)
			}
			wctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			rejected, err := ch.Write(wctx, b)
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "code: 241") {
					t.Fatalf("Write = %v, %v; want the error %q…", rejected, err, tc.wantErr)
				}
			} else {
				const reason = "the row alone needs more memory than ClickHouse lets one INSERT use: raise max_memory_usage for cdc's ClickHouse user, then replay it: code: 241"
				if err != nil {
					t.Fatalf("Write: %v; want row 2 set aside and the rest stored", err)
				}
				if len(rejected) != 1 || rejected[0].Row.Pos.Seq != 2 || !sink.IsRowError(rejected[0].Err) || !strings.HasPrefix(rejected[0].Err.Error(), reason) {
					t.Fatalf("rejected %v; want row 2: %s…", rejected, reason)
				}
			}
			var got []uint64
			rows, err := admin.Conn().Query(ctx, "SELECT cdc_seq FROM event_log ORDER BY cdc_seq")
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			for rows.Next() {
				var seq uint64
				if err := rows.Scan(&seq); err != nil {
					t.Fatal(err)
				}
				got = append(got, seq)
			}
			if !slices.Equal(got, tc.wantStored) {
				t.Fatalf("stored %v; want %v", got, tc.wantStored)
			}
		})
	}
}

// On a server without asynchronous inserts (18.16 here) an INSERT sends
// no setting. One learnt from another server (a DSN's hosts in a rolling
// upgrade) is refused as unknown; the sink reads the settings again and
// the INSERT goes through without it: so what it sends does reach the
// server, which is what makes async_insert = 0 work on one that has them.
func TestClickHouse_InsertSettingsLearntFromTheServer(t *testing.T) {
	ch, _ := newSink(t)
	ctx := context.Background()
	var known uint64
	if err := ch.Conn().QueryRow(ctx, "SELECT count() FROM system.settings WHERE name = 'async_insert'").Scan(&known); err != nil {
		t.Fatal(err)
	}
	if known > 0 {
		t.Skip("the server has asynchronous inserts; this test needs one without (18.16)")
	}
	if _, err := ch.Write(ctx, &sink.Batch{Rows: []sink.Row{row(1, "1", "")}}); err != nil {
		t.Fatal(err)
	}
	if got := sink.InsertSettings(ch); got != nil {
		t.Fatalf("insert settings %v on a server without asynchronous inserts, want none", got)
	}
	sink.SetInsertSettings(ch, map[string]any{"async_insert": 0})
	if _, err := ch.Write(ctx, &sink.Batch{Rows: []sink.Row{row(2, "2", "")}}); err != nil {
		t.Fatalf("Write with a setting the server does not know: %v; want it learnt again and the INSERT through", err)
	}
	if got := sink.InsertSettings(ch); got != nil {
		t.Fatalf("insert settings %v after the server refused them, want none", got)
	}
	var n uint64
	if err := ch.Conn().QueryRow(ctx, "SELECT count() FROM event_log").Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d rows stored (%v), want 2", n, err)
	}
}

// compress=false in the DSN sends blocks uncompressed, and the server
// takes them.
func TestClickHouse_WritesUncompressedWhenTheDSNSaysSo(t *testing.T) {
	_, dsn := newSink(t)
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	ch, err := sink.Open(dsn+sep+"compress=false", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	ctx := context.Background()
	if _, err := ch.Write(ctx, &sink.Batch{Rows: []sink.Row{row(1, "1", ""), row(2, "2", "")}}); err != nil {
		t.Fatal(err)
	}
	var n uint64
	if err := ch.Conn().QueryRow(ctx, "SELECT count() FROM event_log").Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d rows stored (%v), want 2", n, err)
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

// With as many statements running as INSERTs may be in flight (16), the
// pool still has a connection for the readiness ping.
func TestClickHouse_PingAnswersBesideTheMostInsertsInFlight(t *testing.T) {
	ch, dsn := newSink(t)
	ctx := context.Background()
	// Nine seconds each (sleep sleeps at most 3 s a block), so that all
	// sixteen are still running when the ping goes, however long a loaded
	// host takes to start them.
	const statement = "SELECT sleep(3) FROM numbers(3) SETTINGS max_block_size = 1"
	var running sync.WaitGroup
	for range 16 {
		running.Add(1)
		go func() {
			defer running.Done()
			if err := ch.Conn().Exec(ctx, statement); err != nil {
				t.Error(err)
			}
		}()
	}
	defer running.Wait()
	// Counted on a connection of another sink: one of ch's pool would
	// take the connection the ping is to find.
	watch, err := sink.Open(dsn, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var n uint64
		if err := watch.Conn().QueryRow(ctx, "SELECT count() FROM system.processes WHERE query = '"+statement+"'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 16 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the 16 statements running after 5 s", n)
		}
	}
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := ch.Ping(pctx); err != nil {
		t.Fatalf("ping beside 16 running statements: %v", err)
	}
}

func TestOpen_BadDSNNeverEchoesThePassword(t *testing.T) {
	_, err := sink.Open("clickhouse://u:hunter2@host:notaport/db", zap.NewNop())
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("err = %v; want an error without the password", err)
	}
}

func TestOpen_NegativeTimeoutIsRefused(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"clickhouse://host:9000/db?read_timeout=-1s", "read_timeout -1s must be positive"},
		{"clickhouse://host:9000/db?dial_timeout=-5s", "dial_timeout -5s must be positive"},
	} {
		_, err := sink.Open(tc.dsn, zap.NewNop())
		if err == nil || err.Error() != tc.want {
			t.Errorf("Open(%q) = %v, want %q", tc.dsn, err, tc.want)
		}
	}
	ch, err := sink.Open("clickhouse://host:9000/db?read_timeout=30s", zap.NewNop())
	if err != nil {
		t.Fatalf("a positive read_timeout: %v", err)
	}
	ch.Close()
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
	// The String columns were presized for the first block (presize.go):
	// every value is the row's own, with nothing of the presizing left.
	var wrong, contextBytes uint64
	if err := ch.Conn().QueryRow(ctx, `SELECT
		countIf(event_type != 't' OR environment != 'test' OR event_context != concat('{"seq":', toString(metadata_version), '}')),
		sum(length(event_context)) FROM event_log`).Scan(&wrong, &contextBytes); err != nil {
		t.Fatal(err)
	}
	// {"seq":N} is 8 bytes plus N's digits: per batch 10 one-digit, 90
	// two-digit and 100 three-digit values of N, five times over.
	if want := uint64(2 * 5 * (10*9 + 90*10 + 100*11)); wrong != 0 || contextBytes != want {
		t.Fatalf("%d rows with a wrong String value, %d bytes of event_context; want 0, %d", wrong, contextBytes, want)
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

// Every type the sink converts reaches ClickHouse with the value the text
// said, and NULL with the type's zero (or NULL in a Nullable column): the
// cells hand clickhouse-go pointers for most types and values for the rest,
// and a wrong pairing would fail here, not only in a benchmark.
func TestClickHouse_EveryConvertedTypeRoundTrips(t *testing.T) {
	ch, _ := newSink(t)
	ctx := context.Background()
	extra := []struct{ name, typ, in, want string }{
		{"c_date", "Date", "2026-11-30", "20787"}, // days since 1970
		{"c_u8", "UInt8", "t", "1"},
		{"c_u16", "UInt16", "65535", "65535"},
		{"c_u32", "UInt32", "4294967295", "4294967295"},
		{"c_i8", "Int8", "-128", "-128"},
		{"c_i16", "Int16", "-32768", "-32768"},
		{"c_i32", "Int32", "-2147483648", "-2147483648"},
		{"c_i64", "Int64", "-9223372036854775808", "-9223372036854775808"},
		{"c_f32", "Float32", "1.5", "1.5"},
		{"c_f64", "Float64", "-0.25", "-0.25"},
		{"c_ns", "Nullable(String)", "x", "x"},
		{"c_nu32", "Nullable(UInt32)", "7", "7"},
		{"c_fs", "FixedString(3)", "abc", "616263"},
		{"c_dec", "Decimal(9, 2)", "1.50", "1.50"}, // NULL is clickhouse-go's zero
		{"c_dec18", "Decimal(18, 4)", "-12345678901234.5000", "-12345678901234.5000"},
		// PostgreSQL arrays, as array_out writes them; a NULL array is [].
		{"c_ai32", "Array(Int32)", "{1,-2,NULL}", "[1,-2,0]"},
		{"c_as", "Array(String)", `{a,"b c","d\"e,f",NULL,"NULL",""}`, `['a','b c','d"e,f','','NULL','']`},
		{"c_ans", "Array(Nullable(String))", "{x,NULL}", "['x',NULL]"},
		{"c_aau8", "Array(Array(UInt8))", "{{1,2},{3,4}}", "[[1,2],[3,4]]"},
		{"c_adt", "Array(DateTime)", `{"2026-11-30 01:02:03.456+00","2026-11-30 03:02:03+02"}`, "[1796000523,1796000523]"},
		{"c_adec", "Array(Decimal(9, 2))", "{1.50,-2}", "[1.50,-2.00]"},
		{"c_auuid", "Array(UUID)", "{3f2a1e3c-1f3a-4a8e-9d2c-0a1b2c3d4e5f}", "['3f2a1e3c-1f3a-4a8e-9d2c-0a1b2c3d4e5f']"},
	}
	cols := []decoder.Column{{Name: "id"}, {Name: "event_type"}, {Name: "event_date_time"}, {Name: "environment"},
		{Name: "event_context"}, {Name: "metadata_version"}, {Name: "traceparent"}}
	full := []decoder.Value{text("3f2a1e3c-1f3a-4a8e-9d2c-0a1b2c3d4e5f"), text("order.created"), text("2026-11-30 01:02:03.456+00"),
		text("prod"), text(`{"a":"é"}`), text("18446744073709551615"), text("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")}
	nulls := make([]decoder.Value, len(cols))
	for i := range nulls {
		nulls[i] = decoder.Value{Kind: decoder.ValueNull}
	}
	nulls[0] = text("00000000-0000-0000-0000-000000000001") // event_id is the key
	for _, e := range extra {
		if err := ch.Conn().Exec(ctx, "ALTER TABLE event_log ADD COLUMN "+e.name+" "+e.typ); err != nil {
			t.Fatal(err)
		}
		cols = append(cols, decoder.Column{Name: e.name})
		full = append(full, text(e.in))
		nulls = append(nulls, decoder.Value{Kind: decoder.ValueNull})
	}
	rel := &decoder.Relation{ID: 2, Namespace: "public", Name: "outbox", Columns: cols}
	rejected, err := ch.Write(ctx, &sink.Batch{Rows: []sink.Row{
		{Relation: rel, Values: full, Pos: sink.Position{CommitLSN: 0x2000, Seq: 1}},
		{Relation: rel, Values: nulls, Pos: sink.Position{CommitLSN: 0x2000, Seq: 2}},
	}})
	if err != nil || len(rejected) != 0 {
		t.Fatalf("Write: rejected %v, err %v", rejected, err)
	}
	names := []string{"event_id", "event_type", "event_date_time", "environment", "event_context", "metadata_version", "trace_id", "cdc_commit_lsn", "cdc_seq"}
	for _, e := range extra {
		names = append(names, e.name)
	}
	// Dates as numbers and FixedString as hex: 18.16 prints the epoch as
	// 0000-00-00 and a FixedString without its zero bytes.
	exprs := make([]string, len(names))
	for i, n := range names {
		switch n {
		case "event_date_time":
			n = "toUInt32(" + n + ")"
		case "c_date":
			n = "toUInt16(" + n + ")"
		case "c_fs":
			n = "hex(" + n + ")"
		case "c_adt":
			n = "arrayMap(t -> toUInt32(t), " + n + ")"
		}
		exprs[i] = "ifNull(toString(" + n + "), 'NULL')"
	}
	want := map[uint64][]string{
		1: {"3f2a1e3c-1f3a-4a8e-9d2c-0a1b2c3d4e5f", "order.created", "1796000523", "prod", `{"a":"é"}`, "18446744073709551615",
			"4bf92f3577b34da6a3ce929d0e0e4736", "8192", "1"},
		2: {"00000000-0000-0000-0000-000000000001", "", "0", "", "", "0", "", "8192", "2",
			"0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "NULL", "NULL", "000000", "0.00", "0.0000",
			"[]", "[]", "[]", "[]", "[]", "[]", "[]"},
	}
	for _, e := range extra {
		want[1] = append(want[1], e.want)
	}
	rows, err := ch.Conn().Query(ctx, "SELECT cdc_seq, "+strings.Join(exprs, ", ")+" FROM event_log ORDER BY cdc_seq SETTINGS max_threads = 1")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var seq uint64
		got := make([]string, len(names))
		dest := []any{&seq}
		for i := range got {
			dest = append(dest, &got[i])
		}
		if err := rows.Scan(dest...); err != nil {
			t.Fatal(err)
		}
		seen++
		for i, n := range names {
			if got[i] != want[seq][i] {
				t.Errorf("row %d %s = %q, want %q", seq, n, got[i], want[seq][i])
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if seen != 2 {
		t.Fatalf("%d rows read back, want 2", seen)
	}
}

// A batch that spans ALTER TABLE outbox ADD COLUMN is written as one INSERT
// per outbox shape, each naming only the columns its rows carry: the rows
// from before the ALTER get the event_log column's DEFAULT, not the type's
// zero value or, for an Enum, a refusal. Versions of one shape (PostgreSQL
// sends an unchanged relation again) share an INSERT.
func TestClickHouse_BatchAcrossAnOutboxColumnAddedUsesTheDefault(t *testing.T) {
	ch, _ := newSink(t)
	ctx := context.Background()
	if err := ch.Conn().Exec(ctx, "ALTER TABLE event_log ADD COLUMN level String DEFAULT 'info', ADD COLUMN kind Enum8('a' = 1, 'b' = 2) DEFAULT 'b'"); err != nil {
		t.Fatal(err)
	}
	v1 := outboxRel
	again := &decoder.Relation{ID: v1.ID, Namespace: v1.Namespace, Name: v1.Name, Columns: slices.Clone(v1.Columns)}
	v2 := &decoder.Relation{ID: v1.ID, Namespace: v1.Namespace, Name: v1.Name,
		Columns: append(slices.Clone(v1.Columns), decoder.Column{Name: "level"}, decoder.Column{Name: "kind"})}
	at := func(seq uint64, rel *decoder.Relation, extra ...decoder.Value) sink.Row {
		r := row(seq, "1", "10.0.0.1")
		r.Relation, r.Values = rel, append(r.Values, extra...)
		return r
	}
	b := &sink.Batch{Rows: []sink.Row{
		at(1, v1), at(2, again), at(3, v2, text("warn"), text("a")), at(4, v2, text("error"), text("b")), at(5, v1),
	}}
	rejected, err := ch.Write(ctx, b)
	if err != nil || len(rejected) != 0 {
		t.Fatalf("write: %v, %d rejected (%v)", err, len(rejected), rejected)
	}
	rows, err := ch.Conn().Query(ctx, "SELECT cdc_seq, level, toString(kind) FROM event_log ORDER BY cdc_seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var seq uint64
		var level, kind string
		if err := rows.Scan(&seq, &level, &kind); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d/%s/%s", seq, level, kind))
	}
	if want := "1/info/b 2/info/b 3/warn/a 4/error/b 5/info/b"; strings.Join(got, " ") != want {
		t.Fatalf("rows %q, want %q", strings.Join(got, " "), want)
	}
	// Three runs of one shape: seqs 1–2, 3–4 and 5.
	var parts uint64
	if err := ch.Conn().QueryRow(ctx, "SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'event_log' AND level = 0").Scan(&parts); err != nil {
		t.Fatal(err)
	}
	if parts != 3 {
		t.Fatalf("%d level-0 parts, want 3: one INSERT per run of one outbox shape", parts)
	}
}

// Outbox columns meet event_log columns an INSERT cannot name as they are:
// one ClickHouse computes (MATERIALIZED, ALIAS), which it refuses by
// name, so it is left out with a warning and computed; one whose name
// needs quoting ("tenant id"); one whose name clickhouse-go cannot carry
// ("amount (eur)"), left out with a warning; and an Array, filled from
// the PostgreSQL array's text, where a row with an element that is not an
// Int32 is refused as a dead letter. The other rows are stored.
// event_id made MATERIALIZED stops the sink, naming it.
func TestClickHouse_ComputedQuotedAndArrayColumns(t *testing.T) {
	ch, dsn := newSink(t)
	ctx := context.Background()
	if err := ch.Conn().Exec(ctx, "ALTER TABLE event_log ADD COLUMN tenant String MATERIALIZED concat('t-', environment), ADD COLUMN region String ALIAS upper(environment), ADD COLUMN `tenant id` String, ADD COLUMN `amount (eur)` String, ADD COLUMN ids Array(Int32)"); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.WarnLevel)
	s, err := sink.Open(dsn, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rel := &decoder.Relation{ID: 1, Namespace: "public", Name: "outbox", Columns: append(slices.Clone(outboxRel.Columns),
		decoder.Column{Name: "tenant"}, decoder.Column{Name: "region"}, decoder.Column{Name: "tenant id"}, decoder.Column{Name: "amount (eur)"}, decoder.Column{Name: "ids"})}
	at := func(seq uint64, ids decoder.Value) sink.Row {
		r := row(seq, "1", "10.0.0.1")
		r.Relation, r.Values = rel, append(r.Values, text("mine"), text("mine"), text(fmt.Sprintf("acme %d", seq)), text("9.50"), ids)
		return r
	}
	// Rows 1 and 3 are of an outbox version without ids: their INSERT
	// does not name it, and ClickHouse stores its default.
	before := &decoder.Relation{ID: 1, Namespace: "public", Name: "outbox", Columns: rel.Columns[:len(rel.Columns)-1]}
	first, third := at(1, text("")), at(3, text(""))
	first.Relation, first.Values = before, first.Values[:len(first.Values)-1]
	third.Relation, third.Values = before, third.Values[:len(third.Values)-1]
	// Row 6's ids is a box[] (its elements are separated by ';'): refused,
	// not split at the commas.
	boxes := at(6, text("{(1,1),(0,0);(2,2),(1,1)}"))
	boxRel := &decoder.Relation{ID: 1, Namespace: "public", Name: "outbox", Columns: slices.Clone(rel.Columns)}
	boxRel.Columns[len(boxRel.Columns)-1].TypeOID = 1020
	boxes.Relation = boxRel
	b := &sink.Batch{Rows: []sink.Row{first, at(2, text("{1,2,3}")), third, at(4, decoder.Value{Kind: decoder.ValueNull}), at(5, text("{1,x}")), boxes}}
	rejected, err := s.Write(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	var refused []string
	for _, r := range rejected {
		refused = append(refused, fmt.Sprintf("%d: %v", r.Row.Pos.Seq, r.Err))
	}
	if want := []string{`5: column ids: element 2 of "{1,x}": "x" does not fit Int32`,
		"6: column ids: a box[] value is not read into an Array column (its elements are separated by ';'): make the event_log column a String"}; !slices.Equal(refused, want) {
		t.Fatalf("refused %q, want %q: the row whose array has a bad element, and the box[]", refused, want)
	}
	rows, err := ch.Conn().Query(ctx, "SELECT cdc_seq, tenant, region, `tenant id`, `amount (eur)`, toString(ids) FROM event_log ORDER BY cdc_seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var seq uint64
		var tenant, region, tid, amount, ids string
		if err := rows.Scan(&seq, &tenant, &region, &tid, &amount, &ids); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d/%s/%s/%s/%q/%s", seq, tenant, region, tid, amount, ids))
	}
	if want := `1/t-test/TEST/acme 1/""/[] 2/t-test/TEST/acme 2/""/[1,2,3] 3/t-test/TEST/acme 3/""/[] 4/t-test/TEST/acme 4/""/[]`; strings.Join(got, " ") != want {
		t.Fatalf("rows %q, want %q", strings.Join(got, " "), want)
	}
	// Once for both outbox versions, which lack the same; ip is the one
	// column event_log lacks.
	for msg, want := range map[string]string{
		"outbox columns whose event_log column ClickHouse computes itself (MATERIALIZED or ALIAS) are not carried":                                                   "[tenant (MATERIALIZED) region (ALIAS)]",
		"outbox columns without an event_log column are not carried":                                                                                                 "[ip]",
		"outbox columns named with a backtick, a backslash or a parenthesis are not carried: clickhouse-go cannot name them in an INSERT; rename them on both sides": "[amount (eur)]",
	} {
		warned := logs.FilterMessage(msg).All()
		if len(warned) != 1 || fmt.Sprint(warned[0].ContextMap()["columns"]) != want {
			t.Fatalf("warnings %q: %v, want one naming %s", msg, warned, want)
		}
	}
	if err := ch.Conn().Exec(ctx, "ALTER TABLE event_log MODIFY COLUMN event_id UUID MATERIALIZED generateUUIDv4()"); err != nil {
		t.Fatal(err)
	}
	s2, err := sink.Open(dsn, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := s2.Write(ctx, &sink.Batch{Rows: []sink.Row{at(5, decoder.Value{Kind: decoder.ValueNull})}}); err == nil ||
		!strings.Contains(err.Error(), "event_log column event_id is MATERIALIZED: cdc writes it, make it an ordinary column") {
		t.Fatalf("write with event_id MATERIALIZED: %v, want the sink to refuse, naming it", err)
	}
}

// An outbox column whose event_log column ClickHouse computes is carried
// once an admin makes that column an ordinary one: the sink looks at
// event_log's columns again, as it does for a column event_log lacks.
func TestClickHouse_ComputedColumnMadeOrdinaryIsCarried(t *testing.T) {
	ch, s := sinkWithColumns(t, "ALTER TABLE event_log ADD COLUMN tenant String MATERIALIZED 'computed'", zap.NewNop())
	ctx := context.Background()
	rel := withColumns("tenant")
	at := func(seq uint64) sink.Row { return rowOf(rel, seq, text("acme")) }
	if _, err := s.Write(ctx, &sink.Batch{Rows: []sink.Row{at(1)}}); err != nil {
		t.Fatal(err)
	}
	// 18.16 has no MODIFY COLUMN … REMOVE MATERIALIZED: drop and add.
	for _, q := range []string{"ALTER TABLE event_log DROP COLUMN tenant", "ALTER TABLE event_log ADD COLUMN tenant String"} {
		if err := ch.Conn().Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	sink.AgeColumns(s)
	if _, err := s.Write(ctx, &sink.Batch{Rows: []sink.Row{at(2)}}); err != nil {
		t.Fatal(err)
	}
	var got []string
	rows, err := ch.Conn().Query(ctx, "SELECT cdc_seq, tenant FROM event_log ORDER BY cdc_seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq uint64
		var tenant string
		if err := rows.Scan(&seq, &tenant); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d:%q", seq, tenant))
	}
	if want := `1:"" 2:"acme"`; strings.Join(got, " ") != want {
		t.Fatalf("rows %s, want %s: the first written while ClickHouse computed tenant, the second carrying it", strings.Join(got, " "), want)
	}
}

// An outbox column named like the event_log column a renamed one fills —
// event_id (filled by id), trace_id (by traceparent) — is not carried: the
// renamed column's value is stored, and a warning names the other.
func TestClickHouse_OutboxColumnsNamedLikeRenamedTargetsAreNotCarried(t *testing.T) {
	_, dsn := newSink(t)
	ctx := context.Background()
	core, logs := observer.New(zapcore.WarnLevel)
	s, err := sink.Open(dsn, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rel := &decoder.Relation{ID: 1, Namespace: "public", Name: "outbox", Columns: []decoder.Column{
		{Name: "trace_id"}, {Name: "id"}, {Name: "event_type"}, {Name: "event_date_time"}, {Name: "environment"},
		{Name: "event_context"}, {Name: "traceparent"}, {Name: "event_id"}}}
	id := uuid.NewString()
	r := sink.Row{Relation: rel, Values: []decoder.Value{
		text("ffffffffffffffffffffffffffffffff"), text(id), text("t"), text("2026-11-25 12:00:00+00"), text("test"),
		text(`{}`), text("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), text(uuid.NewString())},
		Pos: sink.Position{CommitLSN: 0x1000, Seq: 1}}
	if rejected, err := s.Write(ctx, &sink.Batch{Rows: []sink.Row{r}}); err != nil || len(rejected) != 0 {
		t.Fatalf("write: %v, %d refused", err, len(rejected))
	}
	var gotID, gotTrace string
	if err := s.Conn().QueryRow(ctx, "SELECT toString(event_id), trace_id FROM event_log").Scan(&gotID, &gotTrace); err != nil {
		t.Fatal(err)
	}
	if gotID != id || gotTrace != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("stored event_id %s, trace_id %q; want %s and the traceparent's trace id", gotID, gotTrace, id)
	}
	warned := logs.FilterMessage("outbox columns named like the event_log column another outbox column fills (id fills event_id, traceparent trace_id) are not carried: rename them").All()
	if len(warned) != 1 || fmt.Sprint(warned[0].ContextMap()["columns"]) != "[trace_id event_id]" {
		t.Fatalf("warnings %v, want one naming [trace_id event_id]", logs.All())
	}
}

// An INSERT of cdc's the server still runs when Written is called — one
// whose client gave up on it after sending every block — commits after
// all; Written waits for it, so its rows are among the positions it
// returns and a replay does not store them again. Past the wait's bound
// it returns without them, warning with the INSERT's query id. INSERTs
// into other databases' event_log (their query ids say so) are not
// waited for: another pipeline's, on the same server.
func TestClickHouse_WrittenWaitsForInsertsStillRunning(t *testing.T) {
	for _, tc := range []struct {
		name    string
		wait    time.Duration
		from    string // the INSERT's rows: the time they take is the INSERT's
		waitsIt bool
		id      func(database string) string // the INSERT's query id, before a UUID
	}{
		// sleep(2): the INSERT commits 2 s after it starts.
		{"waited for", time.Minute, "system.one WHERE sleep(2) = 0", true, sink.InsertIDPrefix},
		// An older build's, whose ids name no database: it may be this
		// pipeline's, left running by the process an upgrade replaced.
		{"an older build's", time.Minute, "system.one WHERE sleep(2) = 0", true, func(string) string { return "cdc-insert-" }},
		// Another pipeline's, into another database of the server.
		{"another database's", time.Minute, "system.one WHERE sleep(2) = 0", false, func(string) string { return sink.InsertIDPrefix("other") }},
		// Another client's query named with cdc's prefix, and a quote:
		// not waited for, its id never put into a query.
		{"an id with a quote", time.Minute, "system.one WHERE sleep(2) = 0", false, func(string) string { return "cdc-insert-o'brien-" }},
		// A second a row, a row a block: 6 s, far past the 300 ms bound
		// even on a loaded host.
		{"past the bound", 300 * time.Millisecond, "numbers(6) WHERE sleepEachRow(1) = 0 SETTINGS max_block_size = 1", false, sink.InsertIDPrefix},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, dsn := newSink(t)
			ctx := context.Background()
			core, logs := observer.New(zapcore.InfoLevel)
			s, err := sink.Open(dsn, zap.New(core))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			sink.SetSettle(s, tc.wait, 20*time.Millisecond)
			var database string
			if err := s.Conn().QueryRow(ctx, "SELECT currentDatabase()").Scan(&database); err != nil {
				t.Fatal(err)
			}
			// Only an INSERT waited for, and not given up, warns.
			warns := tc.wait < time.Minute
			id := tc.id(database) + uuid.NewString()
			done := make(chan error, 1)
			go func() {
				done <- s.Conn().Exec(clickhouse.Context(ctx, clickhouse.WithQueryID(id)),
					"INSERT INTO event_log (event_id, event_type, cdc_commit_lsn, cdc_seq) SELECT generateUUIDv4(), 'slow', 4096, 7 FROM "+tc.from)
			}()
			deadline := time.Now().Add(10 * time.Second)
			for {
				var n uint64
				if err := s.Conn().QueryRow(ctx, "SELECT count() FROM system.processes WHERE query_id = ?", id).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the slow INSERT never showed in system.processes")
				}
				time.Sleep(10 * time.Millisecond)
			}
			p, err := s.Written(ctx, 0, 8192)
			if err != nil {
				t.Fatal(err)
			}
			var finished bool
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
				finished = true
			default:
			}
			got := fmt.Sprintf("INSERT finished %v, position read %v", finished, p.Has(sink.Position{CommitLSN: 4096, Seq: 7}))
			if want := fmt.Sprintf("INSERT finished %v, position read %v", tc.waitsIt, tc.waitsIt); got != want {
				t.Fatalf("Written returned with %s; want %s", got, want)
			}
			warned := logs.FilterMessage("INSERTs into event_log still run on the server: the replay may write their rows again (FINAL shows each event once)").All()
			if warns != (len(warned) == 1) || len(warned) > 1 || warns && fmt.Sprint(warned[0].ContextMap()["query_ids"]) != "["+id+"]" {
				t.Fatalf("warnings %v; want one naming %s only past the bound", warned, id)
			}
			if !tc.waitsIt {
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// An event_log Enum whose element names hold an escaped character is not
// named in an INSERT: clickhouse-go misreads such a type, mapping names to
// the wrong values or panicking in a goroutine of its own (the process
// died at every INSERT that named it). The outbox column is warned of as
// not carried, and carried once the type is fixed.
func TestClickHouse_EnumWithAnEscapeInANameIsNotCarried(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	ch, s := sinkWithColumns(t, `ALTER TABLE event_log ADD COLUMN mood Enum8('it\'s' = 1, 'ok' = 2), ADD COLUMN moods Array(Enum8('a\\b' = 1, 'okay' = 2))`, zap.New(core))
	ctx := context.Background()
	rel := withColumns("mood", "moods")
	at := func(seq uint64) sink.Row { return rowOf(rel, seq, text("ok"), text("{okay}")) }
	if rejected, err := s.Write(ctx, &sink.Batch{Rows: []sink.Row{at(1)}}); err != nil || len(rejected) != 0 {
		t.Fatalf("Write = %v, %v", rejected, err)
	}
	const msg = "outbox columns whose event_log column is an Enum with an escaped character in an element's name are not carried: clickhouse-go misreads such a type; rename the elements or make the column a String"
	if warned := logs.FilterMessage(msg).All(); len(warned) != 1 || fmt.Sprint(warned[0].ContextMap()["columns"]) != "[mood moods]" {
		t.Fatalf("warnings: %v, want one naming mood and moods", logs.All())
	}
	// Fixed: carried from the next look at event_log's columns on.
	if err := ch.Conn().Exec(ctx, `ALTER TABLE event_log MODIFY COLUMN mood Enum8('its' = 1, 'ok' = 2), MODIFY COLUMN moods Array(String)`); err != nil {
		t.Fatal(err)
	}
	sink.AgeColumns(s)
	if rejected, err := s.Write(ctx, &sink.Batch{Rows: []sink.Row{at(2)}}); err != nil || len(rejected) != 0 {
		t.Fatalf("Write = %v, %v", rejected, err)
	}
	var got []string
	rows, err := ch.Conn().Query(ctx, "SELECT cdc_seq, toString(mood), toString(moods) FROM event_log ORDER BY cdc_seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq uint64
		var mood, moods string
		if err := rows.Scan(&seq, &mood, &moods); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d/%s/%s", seq, mood, moods))
	}
	// Row 1 has the columns' defaults: the Enum's first element (renamed
	// since), an empty array.
	if want := `1/its/[] 2/ok/['okay']`; strings.Join(got, " ") != want {
		t.Fatalf("rows %q, want %q", strings.Join(got, " "), want)
	}
}

// The same type given to a column while cdc runs: the sink had read the
// column as a String, and the next INSERT naming it had clickhouse-go read
// the Enum from the server's header block and panic in a goroutine of its
// own, killing the process. The sink looks at the types again before it
// writes, so the column is left out with the warning a start gives.
func TestClickHouse_EnumWithAnEscapeGivenWhileRunningIsNotCarried(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	ch, s := sinkWithColumns(t, `ALTER TABLE event_log ADD COLUMN mood String`, zap.New(core))
	ctx := context.Background()
	rel := withColumns("mood")
	if rejected, err := s.Write(ctx, &sink.Batch{Rows: []sink.Row{rowOf(rel, 1, text("ok"))}}); err != nil || len(rejected) != 0 {
		t.Fatalf("Write = %v, %v", rejected, err)
	}
	if err := ch.Conn().Exec(ctx, `ALTER TABLE event_log MODIFY COLUMN mood Enum8('it\'s' = 1, 'ok' = 2)`); err != nil {
		t.Fatal(err)
	}
	if rejected, err := s.Write(ctx, &sink.Batch{Rows: []sink.Row{rowOf(rel, 2, text("ok"))}}); err != nil || len(rejected) != 0 {
		t.Fatalf("Write = %v, %v", rejected, err)
	}
	const msg = "outbox columns whose event_log column is an Enum with an escaped character in an element's name are not carried: clickhouse-go misreads such a type; rename the elements or make the column a String"
	if warned := logs.FilterMessage(msg).All(); len(warned) != 1 || fmt.Sprint(warned[0].ContextMap()["columns"]) != "[mood]" {
		t.Fatalf("warnings: %v, want one naming mood", logs.All())
	}
	var got []string
	rows, err := ch.Conn().Query(ctx, "SELECT cdc_seq, toString(mood) FROM event_log ORDER BY cdc_seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq uint64
		var mood string
		if err := rows.Scan(&seq, &mood); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d/%s", seq, mood))
	}
	// Row 2 has the column's default: the Enum's first element.
	if want := `1/ok 2/it's`; strings.Join(got, " ") != want {
		t.Fatalf("rows %q, want %q", strings.Join(got, " "), want)
	}
}

// An event_log column of a type clickhouse-go cannot build is not named
// in an INSERT: it refused the header block of every INSERT that named
// it, so each batch failed and was retried for ever. AggregateFunction is
// one on every server; Object('json') (23.8 to 24.x) is another, which
// TestWrite_ColumnOfATypeClickHouseGoCannotBuildIsNotCarried covers.
func TestClickHouse_ColumnOfATypeClickHouseGoCannotBuildIsNotCarried(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	ch, s := sinkWithColumns(t, "ALTER TABLE event_log ADD COLUMN agg AggregateFunction(uniq, UInt64)", zap.New(core))
	ctx := context.Background()
	rel := withColumns("agg")
	if rejected, err := s.Write(ctx, &sink.Batch{Rows: []sink.Row{rowOf(rel, 1, text("7"))}}); err != nil || len(rejected) != 0 {
		t.Fatalf("Write = %v, %v; want the row stored without agg", rejected, err)
	}
	const msg = "outbox columns whose event_log column is of a type clickhouse-go cannot write (Object('json'), AggregateFunction) are not carried: make the event_log column a String"
	if warned := logs.FilterMessage(msg).All(); len(warned) != 1 || fmt.Sprint(warned[0].ContextMap()["columns"]) != "[agg]" {
		t.Fatalf("warnings: %v, want one naming agg", logs.All())
	}
	var n uint64
	if err := ch.Conn().QueryRow(ctx, "SELECT count() FROM event_log").Scan(&n); err != nil || n != 1 {
		t.Fatalf("event_log holds %d rows (%v), want 1", n, err)
	}
}

// A Date is stored only where the server reads it back as the same day:
// 18.16 reads every day after 2106-02-07 as 1970-01-01, so there those
// days are refused (dead letters), in an Array too; a server that reads
// them (23.8) stores them. Which days a server reads is asked of the
// server itself, by day number. (Not day 0: 18.16 prints it 0000-00-00.)
func TestClickHouse_DatesAreStoredOnlyAsTheServerReadsThem(t *testing.T) {
	ch, s := sinkWithColumns(t, "ALTER TABLE event_log ADD COLUMN due Date, ADD COLUMN dues Array(Date)", zap.NewNop())
	ctx := context.Background()
	rel := withColumns("due", "dues")
	days := []string{"1970-01-02", "2106-02-07", "2106-02-08", "2120-01-01", "2149-06-06"}
	var rows []sink.Row
	for i, day := range days {
		for j, vals := range [][]decoder.Value{{text(day), text("{}")}, {text("2000-01-01"), text("{2000-01-01," + day + "}")}} {
			rows = append(rows, rowOf(rel, uint64(2*i+j+1), vals...))
		}
	}
	rejected, err := s.Write(ctx, &sink.Batch{Rows: rows})
	if err != nil {
		t.Fatal(err)
	}
	refused := map[uint64]bool{}
	for _, r := range rejected {
		refused[r.Row.Pos.Seq] = true
	}
	stored := map[uint64]string{}
	got, err := ch.Conn().Query(ctx, "SELECT cdc_seq, toString(due), toString(dues) FROM event_log")
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	for got.Next() {
		var seq uint64
		var due, dues string
		if err := got.Scan(&seq, &due, &dues); err != nil {
			t.Fatal(err)
		}
		stored[seq] = due + " " + dues
	}
	for i, day := range days {
		d, _ := time.Parse("2006-01-02", day)
		var printed string
		if err := ch.Conn().QueryRow(ctx, fmt.Sprintf("SELECT toString(toDate(toUInt16(%d)))", d.Unix()/86400)).Scan(&printed); err != nil {
			t.Fatal(err)
		}
		readable := printed == day
		for j, want := range []string{day + " []", "2000-01-01 ['2000-01-01','" + day + "']"} {
			seq := uint64(2*i + j + 1)
			switch {
			case readable && stored[seq] != want:
				t.Errorf("%s (row %d): stored %q, refused %v; want %q", day, seq, stored[seq], refused[seq], want)
			case !readable && (!refused[seq] || stored[seq] != ""):
				t.Errorf("%s (row %d), which the server reads as %s: stored %q, refused %v; want it refused", day, seq, printed, stored[seq], refused[seq])
			}
		}
	}
	if len(stored)+len(refused) != len(rows) {
		t.Errorf("%d rows stored and %d refused of %d", len(stored), len(refused), len(rows))
	}
}

// An INSERT of rows larger than a block leaves no buffer of its blocks on
// its connection once idle: after two INSERTs of one 32 MiB event each, on
// two connections, the heap is back near where it was (it stayed 128 MiB
// above, two encoded and compressed copies per connection, until the
// connections' lifetime ended).
func TestClickHouse_IdleConnectionsKeepNoBlockBuffers(t *testing.T) {
	ch, _ := newSink(t)
	ctx := context.Background()
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	base := heap()
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rowOf(withColumns(), uint64(i+1))
			r.Values[4] = text(`{"b":"` + strings.Repeat("x", 32<<20) + `"}`)
			r.Size = len(r.Values[4].Data)
			if _, err := ch.Write(ctx, &sink.Batch{Rows: []sink.Row{r}, Bytes: r.Size}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	var stored uint64
	if err := ch.Conn().QueryRow(ctx, "SELECT count() FROM event_log WHERE length(event_context) > 32000000").Scan(&stored); err != nil || stored != 2 {
		t.Fatalf("%d large events stored (%v), want 2", stored, err)
	}
	if above := int64(heap()) - int64(base); above > 16<<20 {
		t.Errorf("heap %.1f MiB above its start once both INSERTs are done, want under 16 MiB", float64(above)/(1<<20))
	}
}

// INSERTs in flight at once keep their connections for the next ones:
// with CDC_INSERTS_IN_FLIGHT above 2, the pool kept 2 idle and closed the
// others as they were released, so each round of INSERTs past the second
// opened new connections.
func TestClickHouse_ConcurrentInsertsReuseTheirConnections(t *testing.T) {
	ch, _ := newSink(t)
	ctx := context.Background()
	const inFlight, rounds = 4, 6
	seq := uint64(0)
	for range rounds {
		var wg sync.WaitGroup
		errs := make(chan error, inFlight)
		for range inFlight {
			b := &sink.Batch{}
			for range 100 {
				seq++
				b.Rows = append(b.Rows, row(seq, "1", ""))
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if rejected, err := ch.Write(ctx, b); err != nil || len(rejected) > 0 {
					errs <- fmt.Errorf("Write: %d rejected, %v", len(rejected), err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	var stored uint64
	if err := ch.Conn().QueryRow(ctx, "SELECT count() FROM event_log").Scan(&stored); err != nil {
		t.Fatal(err)
	}
	// One connection for each INSERT in flight, and one that read
	// event_log's columns (reused by an INSERT, or not).
	if dials := sink.Dials(ch); stored != seq || dials > inFlight+1 {
		t.Fatalf("%d rows stored of %d; %d connections opened for %d rounds of %d INSERTs at once, want at most %d", stored, seq, dials, rounds, inFlight, inFlight+1)
	}
}

// The tag in an INSERT's query id is of the database the server puts the
// INSERT in, not of the DSN's text: a DSN that leaves the database to the
// user's default and one that names it reach one event_log, and their
// sinks (a standby's and the old streamer's) must settle for each other's
// INSERTs.
func TestClickHouse_InsertIDsTagTheDatabaseTheServerUses(t *testing.T) {
	_, dsn := newSink(t)
	ctx := context.Background()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"": sink.InsertIDPrefix("default"), "/default": sink.InsertIDPrefix("default"), u.Path: sink.InsertIDPrefix(strings.TrimPrefix(u.Path, "/"))}
	for path, prefix := range want {
		u.Path = path
		s, err := sink.Open(u.String(), zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		got, err := sink.IDPrefix(ctx, s)
		s.Close()
		if err != nil || got != prefix {
			t.Errorf("database path %q: query ids start %q, %v; want %q", path, got, err, prefix)
		}
	}
}

// A send gate (WithSendGate) that refuses stops the INSERT right there: a
// gate refusing at the end of the data leaves nothing stored, one refusing
// at the third block leaves the two blocks sent before, and Write returns
// the gate's error either way. The connection serves the next Write.
func TestClickHouse_SendGateStopsTheInsertWhereItRefuses(t *testing.T) {
	ch, _ := newSink(t)
	ctx := context.Background()
	sink.SetBlockSize(ch, 1<<30, 100)
	errFrozen := errors.New("frozen since the look at the slot")
	for _, tc := range []struct {
		name     string
		openFor  int // calls the gate lets through
		rows     int
		wantRows uint64
	}{
		{"at the end of the data", 0, 50, 0},
		{"at the third block", 2, 450, 200},
		{"never", 1 << 30, 450, 450},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := ch.Conn().Exec(ctx, "TRUNCATE TABLE event_log"); err != nil {
				t.Fatal(err)
			}
			b := &sink.Batch{}
			for seq := 1; seq <= tc.rows; seq++ {
				b.Rows = append(b.Rows, row(uint64(seq), "1", ""))
			}
			calls := 0
			gated := sink.WithSendGate(ctx, func() error {
				if calls++; calls > tc.openFor {
					return errFrozen
				}
				return nil
			})
			_, err := ch.Write(gated, b)
			if refused := tc.openFor < 1<<30; refused != errors.Is(err, errFrozen) {
				t.Fatalf("Write = %v; want the gate's error: %v", err, refused)
			}
			// Read as the writer reads what a failed INSERT stored:
			// once the INSERT has ended on the server (Written waits),
			// which may write the blocks it received after the client
			// went.
			stored, err := ch.Written(ctx, 0, sink.LastLSN)
			if err != nil {
				t.Fatal(err)
			}
			if uint64(stored.Len()) != tc.wantRows {
				t.Fatalf("%d rows stored, want %d", stored.Len(), tc.wantRows)
			}
			// The connection the aborted INSERT used serves the next.
			if _, err := ch.Write(ctx, &sink.Batch{Rows: []sink.Row{row(9999, "1", "")}}); err != nil {
				t.Fatalf("the next Write: %v", err)
			}
		})
	}
}
