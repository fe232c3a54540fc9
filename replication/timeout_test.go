package replication

import (
	"testing"
	"time"
)

func TestParseServerDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1min", time.Minute, true},
		{"60s", time.Minute, true},
		{"500ms", 500 * time.Millisecond, true},
		{"2h", 2 * time.Hour, true},
		{"1d", 24 * time.Hour, true},
		{"0", 0, true},
		{"1500", 1500 * time.Millisecond, true},
		{" 30s ", 30 * time.Second, true},
		{"", 0, false},
		{"min", 0, false},
		{"10us", 0, false},
		{"1.5s", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseServerDuration(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseServerDuration(%q) = %s, %v; want %s, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestEffectiveReceiveTimeout(t *testing.T) {
	tests := []struct {
		name       string
		limit, wst time.Duration
		want       time.Duration
	}{
		{"defaults: 60s against the server's 60s", time.Minute, time.Minute, 90 * time.Second},
		{"longer than 1.5 × wal_sender_timeout: as set", 5 * time.Minute, time.Minute, 5 * time.Minute},
		{"the server's timeout off: as set", time.Minute, 0, time.Minute},
		{"short server timeout: as set", 2 * time.Second, time.Second, 2 * time.Second},
		{"off stays off", 0, time.Minute, 0},
	}
	for _, tt := range tests {
		if got := effectiveReceiveTimeout(tt.limit, tt.wst); got != tt.want {
			t.Errorf("%s: effectiveReceiveTimeout(%s, %s) = %s, want %s", tt.name, tt.limit, tt.wst, got, tt.want)
		}
	}
}

func TestSilenceLimit(t *testing.T) {
	tests := []struct {
		name      string
		streaming bool
		major     int
		want      time.Duration
	}{
		{"15 streaming: applies", true, 15, time.Minute},
		{"15 without streaming (waiting out a transaction): off", false, 15, 0},
		{"16 without streaming: applies (progress is reported while changes are skipped)", false, 16, time.Minute},
		{"13, no streaming at all: off", false, 13, 0},
		{"version unknown, without streaming: off", false, 0, 0},
	}
	for _, tt := range tests {
		if got := silenceLimit(time.Minute, tt.streaming, tt.major); got != tt.want {
			t.Errorf("%s: silenceLimit(1m, %v, %d) = %s, want %s", tt.name, tt.streaming, tt.major, got, tt.want)
		}
	}
}
