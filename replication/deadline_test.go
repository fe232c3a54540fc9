package replication

import (
	"testing"
	"time"
)

func TestFlushDeadline(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		commit time.Time
		insert time.Duration
		want   time.Time
	}{
		{"arrived at once: the whole interval", now, 0, now.Add(time.Second)},
		{"arrived 300ms late: the rest of it", now.Add(-300 * time.Millisecond), 0, now.Add(700 * time.Millisecond)},
		{"INSERTs take 200ms: handed over 200ms sooner", now, 200 * time.Millisecond, now.Add(800 * time.Millisecond)},
		{"INSERTs take 3s: at most half the interval is taken off", now, 3 * time.Second, now.Add(500 * time.Millisecond)},
		{"late and slow: a quarter still gathers rows", now.Add(-600 * time.Millisecond), 400 * time.Millisecond, now.Add(250 * time.Millisecond)},
		{"arrived 3s late: a quarter still gathers rows", now.Add(-3 * time.Second), 0, now.Add(250 * time.Millisecond)},
		{"arrived 5s late, a backlog: the whole interval, to fill by size", now.Add(-5 * time.Second), 0, now.Add(time.Second)},
		{"server clock ahead: never past the interval", now.Add(2 * time.Second), 0, now.Add(time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := flushDeadline(now, tt.commit, time.Second, tt.insert); !got.Equal(tt.want) {
				t.Fatalf("flushDeadline = %s, want %s", got.Sub(now), tt.want.Sub(now))
			}
		})
	}
}

func TestDueWhenCaughtUp(t *testing.T) {
	server := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		first  time.Time
		insert time.Duration
		want   bool
	}{
		{"committed just now: gathers for its interval", server.Add(-10 * time.Millisecond), 0, false},
		{"committed 900ms ago: not yet due", server.Add(-900 * time.Millisecond), 0, false},
		{"committed an interval ago: due", server.Add(-time.Second), 0, true},
		{"a backlog committed a minute ago: due", server.Add(-time.Minute), 0, true},
		{"INSERTs take 200ms: due 200ms sooner", server.Add(-800 * time.Millisecond), 200 * time.Millisecond, true},
		{"INSERTs take 3s: at most half the interval is taken off", server.Add(-400 * time.Millisecond), 3 * time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := dueWhenCaughtUp(server, tt.first, time.Second, tt.insert); got != tt.want {
				t.Fatalf("dueWhenCaughtUp = %v, want %v", got, tt.want)
			}
		})
	}
}
