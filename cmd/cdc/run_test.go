package main

import (
	"testing"

	"github.com/eventcdc/cdc/config"
)

// The soft memory limit stays above what the pipeline may hold live, for
// any number of INSERTs in flight: below it the collector would run
// without pause through a backlog.
func TestMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		inserts, batch, receive int
		want                    int64
	}{
		// The defaults: 2 × (16 + 6) + 16 + 0.5 + 52.
		{config.DefaultInsertsInFlight, config.DefaultBatchMaxBytes, config.DefaultPGReceiveBuffer, 225 * mib / 2},
		{1, 64 << 10, 0, 6*mib + 64<<10 + 64<<10 + 52*mib},
		// The most in flight: 16 × (16 + 6) + 16 + 16 + 52.
		{config.MaxInsertsInFlight, 16 * mib, 16 * mib, 436 * mib},
	} {
		cfg := config.Config{InsertsInFlight: tc.inserts, BatchMaxBytes: tc.batch, PGReceiveBuffer: tc.receive}
		got := memoryLimit(cfg)
		if got != tc.want {
			t.Errorf("memoryLimit(%d in flight, %d-byte batches, %d-byte receive buffer) = %d, want %d", tc.inserts, tc.batch, tc.receive, got, tc.want)
		}
		// Live at most: every INSERT in flight a full batch with its
		// block copies, the open batch, the read-ahead buffer.
		live := int64(tc.inserts*(tc.batch+6*mib) + tc.batch + tc.receive)
		if got < live+32*mib {
			t.Errorf("memoryLimit %d leaves under 32 MiB above the %d bytes the pipeline may hold", got, live)
		}
	}
}
