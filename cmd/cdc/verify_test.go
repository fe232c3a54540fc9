package main

import (
	"errors"
	"strings"
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

// --until is optional, an RFC 3339 time after --since; anything else is a
// usage error naming the flag.
func TestParseUntil(t *testing.T) {
	since := time.Date(2026, 11, 25, 12, 40, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		in    string
		since time.Time
		want  time.Time
		err   string
	}{
		{"none", "", since, time.Time{}, ""},
		{"after since", "2026-11-25T13:05:00.5+01:00", since, time.Date(2026, 11, 25, 12, 5, 0, 500000000, time.UTC), "--until 2026-11-25T12:05:00.5Z is not after --since 2026-11-25T12:40:00Z"},
		{"later", "2026-11-25T13:05:00Z", since, time.Date(2026, 11, 25, 13, 5, 0, 0, time.UTC), ""},
		// Finer than PostgreSQL's microseconds: rounded up, so that a
		// row at 12:40:00 (before the bound) is not cut off with it.
		{"a nanosecond after", "2026-11-25T12:40:00.000000001Z", since, since.Add(time.Microsecond), ""},
		{"a microsecond and a half after", "2026-11-25T12:40:00.0000015Z", since, since.Add(2 * time.Microsecond), ""},
		{"whole microseconds", "2026-11-25T12:40:00.000003Z", since, since.Add(3 * time.Microsecond), ""},
		{"equal to since", "2026-11-25T12:40:00Z", since, time.Time{}, "--until 2026-11-25T12:40:00Z is not after --since 2026-11-25T12:40:00Z: no row lies between them"},
		{"since -infinity", "1970-01-01T00:00:00Z", time.Time{}, time.Unix(0, 0), ""},
		{"the zero time", "0001-01-01T00:00:00Z", time.Time{}, time.Time{}, "--until 0001-01-01T00:00:00Z is the earliest time RFC 3339 writes: give a later one"},
		{"the zero time after a --since", "0001-01-01T00:00:00Z", since, time.Time{}, "--until 0001-01-01T00:00:00Z is the earliest time RFC 3339 writes: give a later one"},
		{"infinity", "infinity", since, time.Time{}, `--until "infinity" is not an RFC 3339 time, e.g. 2026-03-01T00:00:00Z`},
		{"a date", "2026-12-01", since, time.Time{}, `--until "2026-12-01" is not an RFC 3339 time`},
	} {
		got, err := parseUntil(tc.in, tc.since)
		if tc.err != "" {
			var ee *exitError
			if err == nil || !strings.HasPrefix(err.Error(), tc.err) || !errors.As(err, &ee) || ee.code != 2 {
				t.Errorf("%s: parseUntil(%q) = %v, %v; want a usage error starting %q", tc.name, tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("%s: parseUntil(%q) = %v, %v; want %v", tc.name, tc.in, got, err, tc.want)
		}
	}
}

// The resume hint of a bounded backfill keeps its --until.
func TestResumeHint(t *testing.T) {
	at := pgtype.Timestamptz{Time: time.Date(2026, 11, 25, 13, 5, 0, 0, time.UTC), Valid: true}
	until := time.Date(2026, 11, 25, 15, 0, 0, 0, time.FixedZone("CET", 3600))
	for _, tc := range []struct {
		name   string
		resume pgtype.Timestamptz
		until  time.Time
		want   string
	}{
		{"unbounded", at, time.Time{}, "every row before 2026-11-25T13:05:00Z is stored; to go on from there: cdc backfill --since 2026-11-25T13:05:00Z"},
		{"bounded", at, until, "every row before 2026-11-25T13:05:00Z is stored; to go on from there: cdc backfill --since 2026-11-25T13:05:00Z --until 2026-11-25T14:00:00Z"},
		{"from -infinity", pgtype.Timestamptz{InfinityModifier: pgtype.NegativeInfinity, Valid: true}, until, "every row before -infinity is stored; to go on from there: cdc backfill --since -infinity --until 2026-11-25T14:00:00Z"},
		{"nothing stored", pgtype.Timestamptz{}, until, ""},
	} {
		got, ok := resumeHint(tc.resume, tc.until)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s: resumeHint = %q, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
}
