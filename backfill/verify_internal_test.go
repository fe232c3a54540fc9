package backfill

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// Each chunk of a verify page is looked up within the seconds of its own
// rows, not from the window's start: the cost of a page stays that of its
// own seconds however long the window.
func TestChunkSeconds(t *testing.T) {
	at := func(s string) Record {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return Record{Time: pgtype.Timestamptz{Time: tm, Valid: true}}
	}
	inf := func(m pgtype.InfinityModifier) Record {
		return Record{Time: pgtype.Timestamptz{InfinityModifier: m, Valid: true}}
	}
	for _, tc := range []struct {
		name   string
		part   []Record
		want   string
		wantOK bool
	}{
		{"one second", []Record{at("2026-12-01T10:00:00.1Z"), at("2026-12-01T10:00:00.9Z")},
			"toUInt32(event_date_time) >= 1796119200 AND toUInt32(event_date_time) <= 1796119200 AND ", true},
		{"a span, fractions dropped", []Record{at("2026-12-01T10:00:00.7Z"), at("2026-12-01T10:00:05.999Z")},
			"toUInt32(event_date_time) >= 1796119200 AND toUInt32(event_date_time) <= 1796119205 AND ", true},
		{"infinite rows around", []Record{inf(pgtype.NegativeInfinity), at("2026-12-01T10:00:01Z"), at("2026-12-01T10:00:02Z"), inf(pgtype.Infinity)},
			"toUInt32(event_date_time) >= 1796119201 AND toUInt32(event_date_time) <= 1796119202 AND ", true},
		{"before 1970", []Record{at("1969-12-31T23:59:59Z"), at("1970-01-01T00:00:03Z")},
			"toUInt32(event_date_time) >= 0 AND toUInt32(event_date_time) <= 3 AND ", true},
		{"only infinite rows", []Record{inf(pgtype.Infinity), inf(pgtype.Infinity)}, "", false},
	} {
		got, ok := chunkSeconds(tc.part)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("%s: chunkSeconds = %q, %v; want %q, %v", tc.name, got, ok, tc.want, tc.wantOK)
		}
	}
}
