package sink_test

import (
	"context"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/sink"
	ddl "github.com/eventcdc/cdc/sql"
)

// An outbox time lands in event_log as the same instant whatever the
// ClickHouse server's timezone and whatever zone the column names: a
// timestamptz as the instant it is, a timestamp without a zone and a date
// as their wall clock in UTC; a Date column takes the day in UTC. The
// texts are pgoutput's under cdc's session (TimeZone UTC), plus one with
// an offset, as a session in another zone would print it. The instant is
// 2026-06-02 01:30:00 UTC, which is still 2026-06-01 in New York: a value
// read in the server's zone would land four hours off, on the day before.
// The process's own zone does not count either: run under TZ=Asia/Kolkata,
// the test catches a sink that hands clickhouse-go a zoneless text, which
// it reads in that zone.
func TestClickHouse_TimesLandAsTheSameInstantWhateverTheServersZone(t *testing.T) {
	const (
		instant = "1780363800" // 2026-06-02 01:30:00 UTC
		day     = "20606"      // 2026-06-02, days since 1970
	)
	columns := []struct{ name, typ, in, want string }{
		{"c_tz", "DateTime", "2026-06-02 01:30:00.75+00", instant},
		{"c_tz_offset", "DateTime", "2026-06-02 07:00:00+05:30", instant},
		{"c_tz_utc", "DateTime('UTC')", "2026-06-02 01:30:00+00", instant},
		{"c_tz_berlin", "DateTime('Europe/Berlin')", "2026-06-02 01:30:00+00", instant},
		{"c_ts", "DateTime", "2026-06-02 01:30:00", instant},
		{"c_ts_utc", "DateTime('UTC')", "2026-06-02 01:30:00", instant},
		{"c_ts_berlin", "DateTime('Europe/Berlin')", "2026-06-02 01:30:00", instant},
		{"c_ts_nullable", "Nullable(DateTime)", "2026-06-02 01:30:00", instant},
		{"c_ts_array", "Array(DateTime)", `{"2026-06-02 01:30:00"}`, "[" + instant + "]"},
		{"c_date_dt", "DateTime", "2026-06-02", "1780358400"}, // its midnight in UTC
		{"c_date", "Date", "2026-06-02", day},
		{"c_tz_date", "Date", "2026-06-02 01:30:00+00", day},
		{"c_ts_date", "Date", "2026-06-02 01:30:00", day},
	}
	env := testenv.Get(t)
	// The package's server runs in UTC (scripts/localdb.sh) unless it
	// comes from the environment; its zone is not checked.
	servers := []struct{ name, zone, dsn string }{
		{"package server", "", env.NewClickHouse(t)},
		{"America/New_York", "America/New_York", env.ClickHouseInZone(t, "America/New_York")},
	}
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			ctx := context.Background()
			ch, err := sink.Open(srv.dsn, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			defer ch.Close()
			if err := ddl.MigrateClickHouse(ctx, ch.Conn()); err != nil {
				t.Fatal(err)
			}
			var zone string
			if err := ch.Conn().QueryRow(ctx, "SELECT timezone()").Scan(&zone); err != nil || (srv.zone != "" && zone != srv.zone) {
				t.Fatalf("server timezone %q (%v), want %q", zone, err, srv.zone)
			}
			rel := &decoder.Relation{ID: 3, Namespace: "public", Name: "outbox", Columns: []decoder.Column{
				{Name: "id"}, {Name: "event_type"}, {Name: "event_date_time"}, {Name: "environment"},
				{Name: "event_context"}, {Name: "metadata_version"},
			}}
			values := []decoder.Value{text("3f2a1e3c-1f3a-4a8e-9d2c-0a1b2c3d4e5f"), text("t"), text("2026-06-02 01:30:00+00"),
				text("test"), text("{}"), text("1")}
			exprs := []string{"toString(toUInt32(event_date_time))"}
			for _, c := range columns {
				if err := ch.Conn().Exec(ctx, "ALTER TABLE event_log ADD COLUMN "+c.name+" "+c.typ); err != nil {
					t.Fatal(err)
				}
				rel.Columns = append(rel.Columns, decoder.Column{Name: c.name})
				values = append(values, text(c.in))
				switch {
				case strings.HasPrefix(c.typ, "Array"):
					exprs = append(exprs, "toString(arrayMap(t -> toUInt32(t), "+c.name+"))")
				case c.typ == "Date":
					exprs = append(exprs, "toString(toUInt16("+c.name+"))")
				default:
					exprs = append(exprs, "toString(toUInt32(assumeNotNull("+c.name+")))")
				}
			}
			rejected, err := ch.Write(ctx, &sink.Batch{Rows: []sink.Row{{Relation: rel, Values: values, Pos: sink.Position{CommitLSN: 0x3000, Seq: 1}}}})
			if err != nil || len(rejected) != 0 {
				t.Fatalf("Write: rejected %v, err %v", rejected, err)
			}
			got := make([]string, len(exprs))
			dest := make([]any, len(got))
			for i := range got {
				dest[i] = &got[i]
			}
			if err := ch.Conn().QueryRow(ctx, "SELECT "+strings.Join(exprs, ", ")+" FROM event_log").Scan(dest...); err != nil {
				t.Fatal(err)
			}
			if got[0] != instant {
				t.Errorf("event_date_time = %s, want %s", got[0], instant)
			}
			for i, c := range columns {
				if got[i+1] != c.want {
					t.Errorf("%s %s from %q = %s, want %s", c.name, c.typ, c.in, got[i+1], c.want)
				}
			}
		})
	}
}
