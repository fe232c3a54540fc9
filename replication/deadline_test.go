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
		want   time.Time
	}{
		{"arrived at once: the whole interval", now, now.Add(time.Second)},
		{"arrived 300ms late: the rest of it", now.Add(-300 * time.Millisecond), now.Add(700 * time.Millisecond)},
		{"arrived 5s late: a quarter still gathers rows", now.Add(-5 * time.Second), now.Add(250 * time.Millisecond)},
		{"server clock ahead: never past the interval", now.Add(2 * time.Second), now.Add(time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := flushDeadline(now, tt.commit, time.Second); !got.Equal(tt.want) {
				t.Fatalf("flushDeadline = %s, want %s", got.Sub(now), tt.want.Sub(now))
			}
		})
	}
}
