package e2e

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventcdc/cdc/internal/testenv"
)

// fidelityColumn is an outbox column added to the shipped ones, and the
// event_log column it goes to.
type fidelityColumn struct {
	name, pgType, chType string
	text                 bool // a type the decoder reads only as text: the session asks for text values
}

var fidelityColumns = []fidelityColumn{
	{"flag", "boolean", "UInt8", false},
	{"ref", "uuid", "UUID", false},
	{"small", "smallint", "Int16", false},
	{"label", "varchar(40)", "String", false},
	{"code", "char(5)", "String", false},
	{"doc", "jsonb", "String", false},
	{"day", "date", "Date", false},
	{"wall", "timestamp", "DateTime", false},
	{"note", "text", "Nullable(String)", false},
	{"note2", "text", "String DEFAULT 'web'", false}, // NULL is '', the type's zero, not the DEFAULT (publishing.md)
	{"amount", "numeric", "String", true},
	{"tags", "text[]", "Array(String)", true},
	{"blob", "bytea", "String", true},
}

// fidelityRow is one outbox row: the values as SQL literals (nil for NULL),
// and either the error of its dead letter or what event_log must show.
type fidelityRow struct {
	name     string
	sqlASCII bool               // bytes that are not UTF-8, possible only in a SQL_ASCII database
	values   map[string]*string // outbox column → literal; event_type, environment, event_context, event_date_time, metadata_version, traceparent and the extra columns
	refused  string             // the dead letter's error, or "" for a row event_log stores
	want     map[string]string  // event_log column → its rendering (fidelityRender)
}

func lit(s string) *string { return &s }

// fidelityRows are the tricky values: each must reach event_log alike
// whichever path writes it.
func fidelityRows() []fidelityRow {
	long := strings.Repeat("ä€😀x", 300_000) // 3 MB of text
	deep := strings.Repeat("[", 2000) + "1" + strings.Repeat("]", 2000)
	base := func(name string) fidelityRow {
		return fidelityRow{name: name, values: map[string]*string{
			"event_type": lit(name), "environment": lit("prod"), "event_context": lit(`{}`),
			"event_date_time": lit("2026-03-01 10:20:30+00"), "metadata_version": lit("1"),
		}, want: map[string]string{}}
	}
	with := func(r fidelityRow, kv ...string) fidelityRow {
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "\x00NULL" {
				r.values[kv[i]] = nil
			} else {
				r.values[kv[i]] = lit(kv[i+1])
			}
		}
		return r
	}
	want := func(r fidelityRow, kv ...string) fidelityRow {
		for i := 0; i < len(kv); i += 2 {
			r.want[kv[i]] = kv[i+1]
		}
		return r
	}
	refused := func(r fidelityRow, err string) fidelityRow { r.refused = err; return r }
	q := func(s string) string { return fmt.Sprintf("%#v", s) }
	epoch := func(s string) string {
		t, err := time.Parse("2006-01-02 15:04:05.999999Z07", s)
		if err != nil {
			panic(err)
		}
		return fmt.Sprint(t.Unix())
	}
	ctxJSON := `{"b": 1,  "a": "\u0000 \ud800 \udc00\ud800 😀 \" \\ \/", "n": 1e400, "i": 12345678901234567890123, "f": -0.0e-400, "u": "\u00e9"}`
	return []fidelityRow{
		want(with(base("sub-second"), "event_date_time", "2026-03-01 10:20:30.999999+00"),
			"event_date_time", epoch("2026-03-01 10:20:30+00")),
		want(with(base("microsecond after the epoch"), "event_date_time", "1970-01-01 00:00:00.000001+00"),
			"event_date_time", "0"),
		refused(with(base("microsecond before the epoch"), "event_date_time", "1969-12-31 23:59:59.999999+00"),
			`column event_date_time: "1969-12-31 23:59:59.999999+00" is outside DateTime's range 1970-01-01 to 2106-02-06`),
		want(with(base("last of 2106-02-06"), "event_date_time", "2106-02-06 23:59:59.999999+00"),
			"event_date_time", epoch("2106-02-06 23:59:59+00")),
		refused(with(base("2106-02-07"), "event_date_time", "2106-02-07 00:00:00+00"),
			`column event_date_time: "2106-02-07 00:00:00+00" is outside DateTime's range 1970-01-01 to 2106-02-06`),
		refused(with(base("year 10000"), "event_date_time", "10000-01-01 00:00:00+00"),
			`column event_date_time: "10000-01-01 00:00:00+00" is outside DateTime's range 1970-01-01 to 2106-02-06`),
		refused(with(base("BC"), "event_date_time", "0044-03-15 12:00:00+00 BC"),
			`column event_date_time: "0044-03-15 12:00:00+00 BC" is outside DateTime's range 1970-01-01 to 2106-02-06`),
		refused(with(base("infinity"), "event_date_time", "infinity"), `column event_date_time: "infinity" is not a timestamp`),
		refused(with(base("minus infinity"), "event_date_time", "-infinity"), `column event_date_time: "-infinity" is not a timestamp`),
		// DST edges of New York and Berlin, given as offsets.
		want(with(base("spring forward"), "event_date_time", "2026-03-08 01:59:59.5-05"), "event_date_time", epoch("2026-03-08 06:59:59+00")),
		want(with(base("fall back, first"), "event_date_time", "2026-11-01 01:30:00-04"), "event_date_time", epoch("2026-11-01 05:30:00+00")),
		want(with(base("fall back, second"), "event_date_time", "2026-11-01 01:30:00-05"), "event_date_time", epoch("2026-11-01 06:30:00+00")),
		want(with(base("Berlin gap"), "event_date_time", "2026-03-29 02:30:00 Europe/Berlin"), "event_date_time", epoch("2026-03-29 01:30:00+00")),
		want(with(base("json kept as sent"), "event_context", "  "+ctxJSON+"\n"), "event_context", q("  "+ctxJSON+"\n")),
		want(with(base("key order and duplicates kept"), "event_context", `{"z":1,"a":2,"z":3}`), "event_context", q(`{"z":1,"a":2,"z":3}`)),
		want(with(base("long"), "event_context", `{"s":"`+long+`"}`), "event_context", q(`{"s":"`+long+`"}`)),
		want(with(base("deep"), "event_context", deep), "event_context", q(deep)),
		want(with(base("quotes\"and'back\\slash\ttab\nnewline\r\x01\x1f\x7f"), "environment", "env \"'\\\t\n\r\x01\x7f ✓"),
			"event_type", q("quotes\"and'back\\slash\ttab\nnewline\r\x01\x1f\x7f"), "environment", q("env \"'\\\t\n\r\x01\x7f ✓")),
		want(with(base("metadata_version max"), "metadata_version", "9223372036854775807"), "metadata_version", "9223372036854775807"),
		want(with(base("metadata_version zero"), "metadata_version", "0"), "metadata_version", "0"),
		refused(with(base("metadata_version min"), "metadata_version", "-9223372036854775808"),
			`column metadata_version: "-9223372036854775808" does not fit UInt64`),
		want(with(base("traceparent"), "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), "trace_id", q("4bf92f3577b34da6a3ce929d0e0e4736")),
		want(with(base("traceparent upper case"), "traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"), "trace_id", q("")),
		want(with(base("extra columns"),
			"flag", "true", "ref", "00000000-0000-0000-0000-0000000000ff", "small", "-32768", "label", "a\tb \"c\"", "code", "ab",
			"doc", `{"z": [1, 2.50, 1e400], "a": "😀",   "a": 2}`, "day", "2106-02-06", "wall", "2026-03-29 02:30:00.999",
			"note", "", "note2", "x", "amount", "-12345678901234567890.1234567890000", "tags", `{a,"b c",NULL,"\""}`, "blob", `\x00ff`),
			"flag", "1", "ref", q("00000000-0000-0000-0000-0000000000ff"), "small", "-32768", "label", q("a\tb \"c\""), "code", q("ab   "),
			"doc", q(`{"a": 2, "z": [1, 2.50, 1`+strings.Repeat("0", 400)+`]}`), "day", q("2106-02-06"), "wall", epoch("2026-03-29 02:30:00+00"),
			"note", "&\"\"", "note2", q("x"), "amount", q("-12345678901234567890.1234567890000"), "tags", `[]string{"a", "b c", "", "\""}`, "blob", q(`\x00ff`)),
		refused(with(base("wall in year 294276"), "wall", "294276-12-31 23:59:59.999999"),
			`column wall: "294276-12-31 23:59:59.999999" is outside DateTime's range 1970-01-01 to 2106-02-06`),
		refused(with(base("wall BC"), "wall", "4714-11-24 00:00:00 BC"),
			`column wall: "4714-11-24 00:00:00 BC" is outside DateTime's range 1970-01-01 to 2106-02-06`),
		refused(with(base("day in year 5874897"), "day", "5874897-12-31"), `column day: "5874897-12-31" is outside Date's range 1970-01-01 to 2106-02-07`),
		refused(with(base("day BC"), "day", "4713-01-01 BC"), `column day: "4713-01-01 BC" is outside Date's range 1970-01-01 to 2106-02-07`),
		refused(with(base("day infinity"), "day", "infinity"), `column day: "infinity" is not a date`),
		func() fidelityRow {
			r := want(with(base("caf\xe9"), "event_type", "caf\xe9", "environment", "\xff\xfe!", "event_context", "{\"a\":\"\xe9\xff\"}"),
				"event_type", q("caf\xe9"), "environment", q("\xff\xfe!"), "event_context", q("{\"a\":\"\xe9\xff\"}"))
			r.sqlASCII = true
			return r
		}(),
		want(base("extra columns NULL"),
			"flag", "0", "ref", q("00000000-0000-0000-0000-000000000000"), "small", "0", "label", q(""), "code", q(""),
			"doc", q(""), "day", q("0000-00-00") /* day 0, 1970-01-01, as ClickHouse prints it */, "wall", "0", "note", "nil", "note2", q(""), "amount", q(""), "tags", "[]string{}", "blob", q("")),
	}
}

// fidelityRender reads event_log: each event's columns but cdc's own
// positions, rendered so that equal renderings are equal values (strings
// byte for byte, times as seconds since 1970).
func (w *world) fidelityRender() map[string]map[string]string {
	w.t.Helper()
	ctx := context.Background()
	rows, err := w.ch.Query(ctx, `SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = 'event_log' AND name NOT IN ('cdc_commit_lsn', 'cdc_seq')`)
	if err != nil {
		w.t.Fatal(err)
	}
	var names, exprs []string
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			w.t.Fatal(err)
		}
		expr := "`" + name + "`"
		switch typ {
		case "DateTime":
			expr = "toUnixTimestamp(" + expr + ")"
		case "Date", "UUID":
			expr = "toString(" + expr + ")"
		}
		names, exprs = append(names, name), append(exprs, expr)
	}
	rows.Close()
	rows, err = w.ch.Query(ctx, "SELECT "+strings.Join(exprs, ", ")+" FROM event_log FINAL")
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]map[string]string{}
	for rows.Next() {
		dest := make([]any, len(names))
		for i, ct := range rows.ColumnTypes() {
			dest[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			w.t.Fatal(err)
		}
		r := map[string]string{}
		for i, name := range names {
			v := reflect.ValueOf(dest[i]).Elem()
			switch {
			case v.Kind() == reflect.Pointer && v.IsNil():
				r[name] = "nil"
			case v.Kind() == reflect.Pointer:
				// A Nullable's value, not its address.
				r[name] = "&" + fmt.Sprintf("%#v", v.Elem().Interface())
			case v.Kind() == reflect.String || v.Kind() == reflect.Slice:
				r[name] = fmt.Sprintf("%#v", v.Interface())
			default:
				r[name] = fmt.Sprint(v.Interface())
			}
		}
		id, err := uuid.Parse(strings.Trim(r["event_id"], `"`))
		if err != nil {
			w.t.Fatalf("event_id %s: %v", r["event_id"], err)
		}
		out[id.String()] = r
	}
	if err := rows.Err(); err != nil {
		w.t.Fatal(err)
	}
	return out
}

// fidelityPaths runs rows through the three paths that write event_log —
// the connector, dead-letter replay and backfill — and returns what each
// stored. The outbox's extra columns are those of cols; binary says
// whether the connector's sessions read binary values with them.
func fidelityPaths(t *testing.T, w *world, cols []fidelityColumn, rows []fidelityRow, binary bool) (ids []string, stored map[string]map[string]map[string]string) {
	ctx := context.Background()
	// Every extra column, and poison: a text column whose event_log
	// column at first takes no text, so that the connector sets every row
	// aside for the replay to store.
	for _, c := range append(cols, fidelityColumn{"poison", "text DEFAULT 'x'", "UInt8", false}) {
		w.exec(fmt.Sprintf(`ALTER TABLE outbox ADD COLUMN %s %s`, c.name, c.pgType))
		w.chExec(fmt.Sprintf("ALTER TABLE event_log ADD COLUMN `%s` %s", c.name, c.chType))
	}
	// Sessions of the outbox's database print times elsewhere than UTC,
	// in another style: cdc's own sessions must not.
	var db string
	if err := w.pg.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	w.exec(fmt.Sprintf(`ALTER DATABASE %s SET TimeZone = 'America/New_York'`, db))
	w.exec(fmt.Sprintf(`ALTER DATABASE %s SET DateStyle = 'SQL, DMY'`, db))
	w.exec(fmt.Sprintf(`ALTER DATABASE %s SET extra_float_digits = -3`, db))

	types := map[string]string{"event_date_time": "timestamptz", "event_context": "json", "metadata_version": "bigint"}
	for _, c := range cols {
		types[c.name] = c.pgType
	}
	insert := func() {
		for i := range rows {
			r := &rows[i]
			names := []string{"id"}
			args := []any{ids[i]}
			exprs := []string{"$1::uuid"}
			keys := make([]string, 0, len(r.values))
			for k := range r.values {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				switch k {
				case "event_type", "environment", "event_context", "event_date_time", "metadata_version", "traceparent":
				default:
					if indexOfCol(cols, k) < 0 {
						continue // a text column, not in this outbox
					}
				}
				names = append(names, k)
				args = append(args, r.values[k])
				// Each value as text, cast by PostgreSQL's own input
				// function: the literal is what an application sends.
				e := fmt.Sprintf("$%d::text", len(args))
				if typ := types[k]; typ != "" {
					e += "::" + typ
				}
				exprs = append(exprs, e)
			}
			sql := fmt.Sprintf("INSERT INTO outbox (%s) VALUES (%s)", strings.Join(names, ", "), strings.Join(exprs, ", "))
			if _, err := w.pg.Exec(ctx, sql, args...); err != nil {
				t.Fatalf("row %q: %v", r.name, err)
			}
		}
	}
	good := 0
	for range rows {
		ids = append(ids, uuid.New().String())
	}
	for _, r := range rows {
		if r.refused == "" {
			good++
		}
	}
	stored = map[string]map[string]map[string]string{}
	session := fmt.Sprintf(`"binary_values": %t`, binary)

	// The connector refuses every row: poison is a UInt8.
	insert()
	c := w.start(map[string]string{"CDC_METRICS_ADDR": "auto", "CDC_OUTBOX_RETENTION": "0"})
	waitFor(t, 60*time.Second, "every row set aside", func() (bool, string) {
		n := w.pgCount(`SELECT count(*) FROM cdc_dead_letter`)
		return n == int64(len(rows)), fmt.Sprintf("%d dead letters", n)
	})
	if code, _ := c.term(20 * time.Second); code != 0 || !strings.Contains(c.out.String(), session) {
		t.Fatalf("connector exited %d; its sessions did not read with %s", code, session)
	}
	w.chExec("ALTER TABLE event_log MODIFY COLUMN poison String")
	out, stderr, code := w.runOperator(nil, "deadletter", "replay")
	wantOut := fmt.Sprintf("replayed %d dead letters into event_log; %d refused again\n", good, len(rows)-good)
	if code != 1 || out != wantOut {
		t.Fatalf("replay exited %d: %q, want 1 and %q\n%s", code, out, wantOut, stderr)
	}
	stored["replay"] = w.fidelityRender()
	w.fidelityLetters(ids, rows)

	// The connector stores the rows inserted again.
	w.chExec("TRUNCATE TABLE event_log")
	w.exec(`DELETE FROM outbox`)
	insert()
	c = w.start(map[string]string{"CDC_METRICS_ADDR": "auto", "CDC_OUTBOX_RETENTION": "0"})
	waitFor(t, 60*time.Second, "the connector to store and refuse the rows", func() (bool, string) {
		n := w.chCount("SELECT count() FROM event_log")
		refused, err := readMetric(c.MetricsAddr, "cdc_dead_letters_total")
		return err == nil && n == uint64(good) && refused == float64(len(rows)-good), fmt.Sprintf("%d rows stored, %v refused (%v)", n, refused, err)
	})
	if code, _ := c.term(20 * time.Second); code != 0 || !strings.Contains(c.out.String(), session) {
		t.Fatalf("connector exited %d; its sessions did not read with %s", code, session)
	}
	stored["run"] = w.fidelityRender()
	w.fidelityLetters(ids, rows)

	w.chExec("TRUNCATE TABLE event_log")
	out, stderr, code = w.runOperator(nil, "backfill", "--since", "-infinity")
	wantOut = fmt.Sprintf("backfill since -infinity: %d outbox rows read, %d shipped to event_log, %d refused (dead letters)\n", len(rows), good, len(rows)-good)
	if code != 1 || out != wantOut {
		t.Fatalf("backfill exited %d: %q, want 1 and %q\n%s", code, out, wantOut, stderr)
	}
	stored["backfill"] = w.fidelityRender()
	w.fidelityLetters(ids, rows)
	return ids, stored
}

func indexOfCol(cols []fidelityColumn, name string) int {
	for i, c := range cols {
		if c.name == name {
			return i
		}
	}
	return -1
}

// fidelityLetters checks the dead letters are exactly the refused rows',
// each with its reason.
func (w *world) fidelityLetters(ids []string, rows []fidelityRow) {
	w.t.Helper()
	got := map[string]string{}
	for _, l := range w.deadLetters() {
		if l.EventID == nil {
			w.t.Fatalf("dead letter %d has no event id", l.ID)
		}
		got[*l.EventID] = l.Error
	}
	want := map[string]string{}
	for i, r := range rows {
		if r.refused != "" {
			want[ids[i]] = r.refused
		}
	}
	for i, r := range rows {
		if got[ids[i]] != want[ids[i]] {
			w.t.Errorf("row %q: dead letter %q, want %q", r.name, got[ids[i]], want[ids[i]])
		}
	}
	if len(got) != len(want) {
		w.t.Errorf("%d dead letters, want %d", len(got), len(want))
	}
}

// The same outbox row reaches event_log with the same values whichever
// path writes it — the connector reading binary values, the connector
// reading text, dead-letter replay, backfill — and with the values the
// docs promise: times as whole seconds of the instant, whatever the
// session's or ClickHouse's zone; text and JSON byte for byte.
func TestFidelity_EveryPathStoresTheSameValues(t *testing.T) {
	env := testenv.Get(t)
	if !env.Local() {
		t.Skip("needs a ClickHouse server of its own (CDC_TEST_LOCALDB_DIR)")
	}
	zoned := env.ClickHouseInZone(t, "Asia/Kathmandu")
	base := strings.TrimSuffix(zoned, "/default")
	// By mode, by row name, what the connector stored.
	byMode := map[string]map[string]map[string]string{}
	modes := []struct {
		name      string
		textCols  bool   // columns the decoder reads only as text: the session asks for text values
		pgOptions string // CREATE DATABASE's
	}{
		{"binary", false, ""},
		{"text", true, ""},
		{"binary SQL_ASCII", false, "ENCODING 'SQL_ASCII' TEMPLATE template0 LOCALE 'C'"},
		{"text SQL_ASCII", true, "ENCODING 'SQL_ASCII' TEMPLATE template0 LOCALE 'C'"},
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			var rows []fidelityRow
			for _, r := range fidelityRows() {
				if !r.sqlASCII || mode.pgOptions != "" {
					rows = append(rows, r)
				}
			}
			db := testenv.Name("t")
			env.ClickHouseExec(t, zoned, "CREATE DATABASE "+db)
			w := newWorldOn(t, env.NewPostgresWith(t, mode.pgOptions), base+"/"+db)
			var cols []fidelityColumn
			for _, c := range fidelityColumns {
				if mode.textCols || !c.text {
					cols = append(cols, c)
				}
			}
			ids, stored := fidelityPaths(t, w, cols, rows, !mode.textCols)
			for path, got := range stored {
				for i, r := range rows {
					g, ok := got[ids[i]]
					if r.refused != "" {
						if ok {
							t.Errorf("%s: row %q stored, want a dead letter", path, r.name)
						}
						continue
					}
					if !ok {
						t.Errorf("%s: row %q not stored", path, r.name)
						continue
					}
					for col, want := range r.want {
						if _, has := g[col]; !has && indexOfCol(fidelityColumns, col) >= 0 {
							continue // a text column, absent in binary mode
						}
						if g[col] != want {
							t.Errorf("%s: row %q: %s = %.200s, want %.200s", path, r.name, col, g[col], want)
						}
					}
					if run := stored["run"][ids[i]]; path != "run" && !reflect.DeepEqual(g, run) {
						for col := range g {
							if g[col] != run[col] {
								t.Errorf("%s: row %q: %s = %.200s, the connector stored %.200s", path, r.name, col, g[col], run[col])
							}
						}
					}
				}
			}
			byMode[mode.name] = map[string]map[string]string{}
			for i, r := range rows {
				if g, ok := stored["run"][ids[i]]; ok {
					byMode[mode.name][r.name] = g
				}
			}
		})
	}
	// Binary and text values store the same: every column of the binary
	// mode (not the text-only ones), but the event's id.
	for _, pair := range [][2]string{{"binary", "text"}, {"binary", "binary SQL_ASCII"}, {"binary SQL_ASCII", "text SQL_ASCII"}} {
		a, b := byMode[pair[0]], byMode[pair[1]]
		for name, ga := range a {
			gb := b[name]
			for col, v := range ga {
				if col != "event_id" && gb[col] != v {
					t.Errorf("row %q: %s is %.200s in %s, %.200s in %s", name, col, v, pair[0], gb[col], pair[1])
				}
			}
		}
	}
}
