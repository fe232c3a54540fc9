package main

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// A failed backfill's resume point prints as a --since parseSince reads
// back to the same time; a row dated infinity has none.
func TestResumeSince(t *testing.T) {
	at := time.Date(2026, 5, 5, 5, 5, 5, 123456000, time.FixedZone("CEST", 2*3600))
	for _, tc := range []struct {
		name string
		in   pgtype.Timestamptz
		want string
		ok   bool
	}{
		{"a time, in UTC", pgtype.Timestamptz{Time: at, Valid: true}, "2026-05-05T03:05:05.123456Z", true},
		{"-infinity", pgtype.Timestamptz{InfinityModifier: pgtype.NegativeInfinity, Valid: true}, "-infinity", true},
		{"infinity", pgtype.Timestamptz{InfinityModifier: pgtype.Infinity, Valid: true}, "", false},
		{"past year 9999", pgtype.Timestamptz{Time: time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC), Valid: true}, "9999-12-31T23:59:59.999999999Z", true},
		{"before year 1", pgtype.Timestamptz{Time: time.Date(-43, 3, 15, 0, 0, 0, 0, time.UTC), Valid: true}, "-infinity", true},
		{"no failed row", pgtype.Timestamptz{}, "", false},
	} {
		got, ok := resumeSince(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: resumeSince = %q, %v; want %q, %v", tc.name, got, ok, tc.want, tc.ok)
			continue
		}
		if !ok {
			continue
		}
		since, err := parseSince(got)
		if err != nil || formatSince(since) != got {
			t.Errorf("%s: parseSince(%q) = %v, %v; want the same time back", tc.name, got, since, err)
		}
		if y := tc.in.Time.Year(); y < 1 || y > 9999 {
			if !since.IsZero() && !tc.in.Time.After(since) { // zero: no lower bound
				t.Errorf("%s: --since %s does not reach back to %v", tc.name, got, tc.in.Time)
			}
			continue
		}
		if tc.in.InfinityModifier == pgtype.Finite && !since.Equal(at) {
			t.Errorf("%s: parseSince(%q) = %v, want %v", tc.name, got, since, at)
		}
	}
}
