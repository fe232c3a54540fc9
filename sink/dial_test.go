package sink

import (
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

func TestDialTimeout(t *testing.T) {
	for _, tc := range []struct {
		dsn  string
		want time.Duration
	}{
		{"clickhouse://host:9000/db", defaultDialTimeout},
		{"clickhouse://host:9000/db?read_timeout=1m", defaultDialTimeout},
		// clickhouse-go's own default, asked for explicitly, is kept.
		{"clickhouse://host:9000/db?dial_timeout=30s", 30 * time.Second},
		{"clickhouse://host:9000/db?dial_timeout=2s&secure=true", 2 * time.Second},
		{"clickhouse://host:9000/db?dial_timeout=0s", defaultDialTimeout},
	} {
		opts, err := clickhouse.ParseDSN(tc.dsn)
		if err != nil {
			t.Fatalf("ParseDSN(%q): %v", tc.dsn, err)
		}
		if got := dialTimeout(tc.dsn, opts.DialTimeout); got != tc.want {
			t.Errorf("dialTimeout(%q) = %s, want %s", tc.dsn, got, tc.want)
		}
	}
}
