package replication_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/replication"
	"github.com/eventcdc/cdc/sink"
)

// typedColumns are a column of every type the decoder prints from binary,
// with values at the edges of each type's range and random ones between.
var typedColumns = []struct{ name, typ, values string }{
	{"b", "bool", "(ARRAY[true, false])[1 + n % 2]"},
	{"i2", "int2", "(ARRAY[-32768, 32767, 0, -1, 1, (random() * 65535 - 32768)::int])[1 + n % 6]::int2"},
	{"i4", "int4", "(ARRAY[-2147483648, 2147483647, 0, -7, (random() * 4294967295 - 2147483648)::bigint])[1 + n % 5]::int4"},
	{"i8", "int8", "(ARRAY[-9223372036854775808, 9223372036854775807, 0, -10, (random() * 1e18)::bigint, (random() * -1e12)::bigint])[1 + n % 6]"},
	{"t", "text", `(ARRAY['', 'ünïcødé ✓', e'tab\there "quoted" \\ back', repeat('x', 3000), md5(n::text)])[1 + n % 5]`},
	{"vc", "varchar(40)", "(ARRAY['', 'v' || n])[1 + n % 2]"},
	{"bp", "char(5)", "(ARRAY['ab', 'abcde', ''])[1 + n % 3]"},
	{"j", "json", `(ARRAY['{"a" : [1, 2.50],  "b":null}', '[]', '"ü"', '{"n": ' || n || '}'])[1 + n % 4]::json`},
	{"jb", "jsonb", `(ARRAY['{"b": 1, "a" : [1, 2.50]}', '[]', '"ü"', '{"n": ' || n || ', "deep": {"x": [true]}}'])[1 + n % 4]::jsonb`},
	{"d", "date", `(ARRAY['infinity', '-infinity', '4714-11-24 BC', '5874897-12-31', '0001-01-01', '0001-12-31 BC', '2000-01-01', '1999-12-31', '0044-03-15 BC', '10000-01-01',
		(date '2000-01-01' + (random() * 4000000 - 2000000)::int)::text])[1 + n % 11]::date`},
	{"ts", "timestamp", `(ARRAY['infinity', '-infinity', '4714-11-24 00:00:00 BC', '294276-12-31 23:59:59.999999', '2000-01-01 00:00:00', '1999-12-31 23:59:59.999999',
		'0001-01-01 00:00:00', '0001-12-31 23:59:59.5 BC', '0999-05-05 05:05:05.000001', '10000-01-01 12:00:00.12',
		(timestamp '2000-01-01' + (random() * 9e12 - 2e11) * interval '1 second' + (random() * 1e6)::int * interval '1 microsecond')::text])[1 + n % 11]::timestamp`},
	{"tz", "timestamptz", `(ARRAY['infinity', '-infinity', '4714-11-24 00:00:00+00 BC', '294276-12-31 23:59:59.999999+00', '2000-01-01 00:00:00+00', '1999-12-31 23:59:59.999999+00',
		'0001-01-01 00:00:00+00', '0001-12-31 23:59:59.5+00 BC', '2026-12-01 14:36:36.12+02', '1970-01-01 00:00:00.000100+00',
		(timestamptz '2000-01-01 00:00:00+00' + (random() * 9e12 - 2e11) * interval '1 second' + (random() * 1e6)::int * interval '1 microsecond')::text])[1 + n % 11]::timestamptz`},
	{"u", "uuid", "(ARRAY['00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff', gen_random_uuid()::text])[1 + n % 3]::uuid"},
}

// A session that asks for binary values gets, out of the decoder, exactly
// the text PostgreSQL prints for each value under the session's settings:
// every column of a type the decoder reads in binary, compared value by
// value with its output function's text in a session with the same
// settings, over edge
// values and random ones, NULLs among them.
func TestBinaryValuesDecodeToPostgreSQLsText(t *testing.T) {
	const rows = 3000
	dsn := testenv.Get(t).NewPostgres(t)
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	replication.SetTextParams(cfg.RuntimeParams)
	pg, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)

	var cols, sel, vals []string
	for _, c := range typedColumns {
		cols = append(cols, c.name+" "+c.typ)
		// The output function, as pgoutput calls it: not a cast to text,
		// which for bool says "true" and for char(n) drops the padding.
		sel = append(sel, fmt.Sprintf("CASE WHEN %[1]s IS NULL THEN NULL ELSE format('%%s', %[1]s) END", c.name))
		// Every seventh row of a column is NULL, on different rows per column.
		vals = append(vals, fmt.Sprintf("CASE WHEN (n + %d) %% 7 = 0 THEN NULL ELSE %s END", len(vals), c.values))
	}
	for _, sql := range []string{
		"CREATE TABLE typed (n int PRIMARY KEY, " + strings.Join(cols, ", ") + ")",
		"CREATE PUBLICATION typed_pub FOR TABLE typed",
		"SELECT pg_create_logical_replication_slot('typed_binary', 'pgoutput')",
		"SELECT pg_create_logical_replication_slot('typed_text', 'pgoutput')",
		fmt.Sprintf("INSERT INTO typed SELECT n, %s FROM generate_series(1, %d) AS n", strings.Join(vals, ", "), rows),
	} {
		if _, err := pg.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	want := map[int][]*string{}
	res, err := pg.Query(ctx, "SELECT n, "+strings.Join(sel, ", ")+" FROM typed")
	if err != nil {
		t.Fatal(err)
	}
	for res.Next() {
		var n int32
		texts := make([]*string, len(typedColumns))
		dest := []any{&n}
		for i := range texts {
			dest = append(dest, &texts[i])
		}
		if err := res.Scan(dest...); err != nil {
			t.Fatal(err)
		}
		want[int(n)] = texts
	}
	if err := res.Err(); err != nil || len(want) != rows {
		t.Fatalf("read %d rows back: %v", len(want), err)
	}

	for _, tc := range []struct {
		slot string
		args []string
		kind decoder.ValueKind // what pgoutput sends for a non-NULL value
	}{
		{"typed_binary", []string{"proto_version '1'", "binary 'true'"}, decoder.ValueBinary},
		{"typed_text", []string{"proto_version '1'"}, decoder.ValueText},
	} {
		t.Run(tc.slot, func(t *testing.T) {
			got, kinds := streamTyped(t, dsn, tc.slot, tc.args, rows)
			if len(kinds) != 1 || kinds[tc.kind] == 0 {
				t.Fatalf("pgoutput sent values of kinds %v; want %q only", kinds, tc.kind)
			}
			compared := 0
			for n, texts := range want {
				row, ok := got[n]
				if !ok {
					t.Fatalf("row %d not streamed", n)
				}
				for i, w := range texts {
					v := row[i+1]
					switch {
					case w == nil && v.Kind != decoder.ValueNull:
						t.Errorf("row %d column %s: %q (%c), want NULL", n, typedColumns[i].name, v.Data, v.Kind)
					case w != nil && (v.Kind != decoder.ValueText || string(v.Data) != *w):
						t.Errorf("row %d column %s (%s): %q (%c), want %q", n, typedColumns[i].name, typedColumns[i].typ, v.Data, v.Kind, *w)
					case w != nil:
						compared++
					}
				}
			}
			t.Logf("%d values compared", compared)
		})
	}
}

// streamTyped streams the inserts into typed from slot with args, returns
// each row's decoded values by its n, and counts the kinds of non-NULL
// values pgoutput sent.
func streamTyped(t *testing.T, dsn, slot string, args []string, rows int) (map[int][]decoder.Value, map[decoder.ValueKind]int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := replication.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: append(args, "publication_names 'typed_pub'")}); err != nil {
		t.Fatal(err)
	}
	dec := decoder.New()
	got := map[int][]decoder.Value{}
	kinds := map[decoder.ValueKind]int{}
	for len(got) < rows {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("after %d rows: %v", len(got), err)
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok || len(cd.Data) == 0 || cd.Data[0] != pglogrepl.XLogDataByteID {
			continue
		}
		xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
		if err != nil {
			t.Fatal(err)
		}
		// The kinds on the wire, before the decoder prints them.
		if xld.WALData[0] == 'I' {
			countKinds(t, xld.WALData, kinds)
		}
		m, err := dec.Decode(xld.WALData)
		if err != nil {
			t.Fatal(err)
		}
		if m.Kind != decoder.KindInsert {
			continue
		}
		var n int
		if _, err := fmt.Sscan(string(m.Values[0].Data), &n); err != nil {
			t.Fatalf("row key %q: %v", m.Values[0].Data, err)
		}
		got[n] = m.Values
	}
	return got, kinds
}

// countKinds counts the value kinds of a raw Insert message: 'I', the
// relation OID, 'N', the column count, then per column a kind and, for
// text and binary, a length and the bytes.
func countKinds(t *testing.T, msg []byte, kinds map[decoder.ValueKind]int) {
	t.Helper()
	p := 1 + 4 + 1
	cols := int(binary.BigEndian.Uint16(msg[p:]))
	p += 2
	for i := 0; i < cols; i++ {
		k := decoder.ValueKind(msg[p])
		p++
		if k == decoder.ValueText || k == decoder.ValueBinary {
			p += 4 + int(binary.BigEndian.Uint32(msg[p:]))
			kinds[k]++
		}
	}
	if p != len(msg) {
		t.Fatalf("insert message of %d bytes, columns end at %d", len(msg), p)
	}
}

// The session asks for binary values while the outbox has only types the
// decoder prints, and reads text from the first session that meets
// another: the outbox gaining a numeric column mid-stream ends the session,
// which reconnects without binary values and stores every row once, the
// new column's values in their text form, and the rows from before
// unchanged. A connector started on an outbox with such a column asks for
// text from the start.
func TestReplicator_BinaryValuesUntilAColumnOfAnotherType(t *testing.T) {
	h := setup(t)
	core, logs := observer.New(zapcore.InfoLevel)
	s := &fakeSink{}
	stop := h.runWith(s, zap.New(core), func(*replication.Config) {})
	binaryFlags := func() []bool {
		var out []bool
		for _, e := range logs.FilterMessage("streaming").All() {
			out = append(out, e.ContextMap()["binary_values"].(bool))
		}
		return out
	}
	eventually(t, "streaming", func() bool { return len(binaryFlags()) == 1 })
	h.exec(`INSERT INTO outbox (id, event_type, environment, event_context, event_date_time, metadata_version)
		VALUES ('0195a8e2-7c3d-7a10-9b4e-3f2d1c0b0a01', 'before', 'test', '{"a" : 1}', '1999-12-31 23:59:59.5+00', 7)`)
	eventually(t, "the first event stored", func() bool { return s.count() == 1 })
	h.exec(`ALTER TABLE outbox ADD COLUMN price numeric`)
	h.exec(`INSERT INTO outbox (event_type, environment, event_context, price) VALUES ('after', 'test', '{}', 1.50)`)
	eventually(t, "the second event stored", func() bool { return s.count() == 2 })
	if got := fmt.Sprint(binaryFlags()); got != "[true false]" {
		t.Fatalf("sessions' binary_values %s; want [true false]", got)
	}
	if n := logs.FilterMessage("reconnecting to read values as text").Len(); n != 1 {
		t.Fatalf("%d reconnects to read text, want 1", n)
	}
	if n := logs.FilterMessageSnippet("replication interrupted").Len(); n != 0 {
		t.Fatalf("the switch to text was logged as %d interruptions", n)
	}
	stop()
	s.mu.Lock()
	rows := append([]sink.Row(nil), s.rows...)
	s.mu.Unlock()
	text := func(r sink.Row, col string) string {
		if i := r.Relation.Index(col); i >= 0 && r.Values[i].Kind == decoder.ValueText {
			return string(r.Values[i].Data)
		}
		return "<none>"
	}
	got := strings.Join([]string{text(rows[0], "id"), text(rows[0], "event_date_time"), text(rows[0], "event_context"), text(rows[0], "metadata_version"),
		text(rows[1], "event_type"), text(rows[1], "price")}, " | ")
	want := strings.Join([]string{"0195a8e2-7c3d-7a10-9b4e-3f2d1c0b0a01", "1999-12-31 23:59:59.5+00", `{"a" : 1}`, "7", "after", "1.50"}, " | ")
	if len(rows) != 2 || got != want {
		t.Fatalf("stored %d rows: %s; want 2: %s", len(rows), got, want)
	}

	// A new connector on the outbox as it is now reads text at once.
	core2, logs2 := observer.New(zapcore.InfoLevel)
	stop = h.runWith(&fakeSink{}, zap.New(core2), func(*replication.Config) {})
	defer stop()
	eventually(t, "streaming again", func() bool { return logs2.FilterMessage("streaming").Len() == 1 })
	if b := logs2.FilterMessage("streaming").All()[0].ContextMap()["binary_values"]; b != false {
		t.Fatalf("binary_values %v on an outbox with a numeric column", b)
	}
}

// The switch to text in the middle of a transaction: its rows before the
// new column are stored by the session that ends, the rest by the next,
// each once.
func TestReplicator_BinaryToTextInsideATransaction(t *testing.T) {
	h := setup(t)
	core, logs := observer.New(zapcore.InfoLevel)
	s := &fakeSink{}
	stop := h.runWith(s, zap.New(core), func(*replication.Config) {})
	defer stop()
	eventually(t, "streaming", func() bool { return logs.FilterMessage("streaming").Len() == 1 })
	h.exec(`DO $$ BEGIN
		INSERT INTO outbox (event_type, environment, event_context) SELECT 'before', 'test', '{}' FROM generate_series(1, 3);
		ALTER TABLE outbox ADD COLUMN price numeric;
		INSERT INTO outbox (event_type, environment, event_context, price) VALUES ('after', 'test', '{}', 2.25);
	END $$`)
	eventually(t, "four rows stored", func() bool { return s.count() >= 4 })
	eventually(t, "a second session", func() bool { return logs.FilterMessage("streaming").Len() == 2 })
	time.Sleep(200 * time.Millisecond) // a row stored twice would come now
	s.mu.Lock()
	defer s.mu.Unlock()
	var got []string
	for _, r := range s.rows {
		got = append(got, fmt.Sprintf("%d:%s", r.Pos.Seq, r.Values[r.Relation.Index("event_type")].Data))
	}
	if fmt.Sprint(got) != "[1:before 2:before 3:before 4:after]" {
		t.Fatalf("stored %v; want each of the transaction's four rows once, in order", got)
	}
	// The session that met the numeric stored the rows it held before it
	// ended; the next stored only the last, skipping those as stored.
	// Ended by cancelling its writer, the first session would have stored
	// none, and the next all four in one batch.
	if last := s.seqs[len(s.seqs)-1]; fmt.Sprint(last) != "[4]" {
		t.Fatalf("batches %v; want the rows before the new column stored by the first session, the last alone by the next", s.seqs)
	}
	if n := logs.FilterMessage("reconnecting to read values as text").Len(); n != 1 {
		t.Fatalf("%d reconnects to read text, want 1", n)
	}
}
