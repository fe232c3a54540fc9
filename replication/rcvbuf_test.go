package replication_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/eventcdc/cdc/replication"
)

// A receive buffer larger than net.core.rmem_max would be capped, and a
// capped one slows a large transaction's drain: the session leaves the
// buffer to the kernel instead, reads without the read-ahead, and says so
// once.
func TestReplicator_ReceiveBufferOverTheMaximumIsLeftToTheKernel(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		t.Skipf("net.core.rmem_max unreadable: %v", err)
	}
	most, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	// Above the maximum wherever it is: a host tuned for large buffers
	// (rmem_max of 16 MiB or more) tests the path too. Left to the
	// kernel, a buffer asked for is never allocated.
	asked := max(16<<20, most+64<<10)
	if most >= 1<<30 {
		t.Skipf("net.core.rmem_max is %d: no larger buffer to ask for", most)
	}
	h := setup(t)
	core, logs := observer.New(zapcore.InfoLevel)
	stop := h.runWith(&fakeSink{}, zap.New(core), func(c *replication.Config) { c.ReceiveBuffer = asked })
	defer stop()
	for deadline := time.Now().Add(20 * time.Second); logs.FilterMessage("streaming").Len() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not streaming after 20s")
		}
	}
	said := logs.FilterMessageSnippet("net.core.rmem_max is below CDC_PG_RECEIVE_BUFFER").All()
	if len(said) != 1 {
		t.Fatalf("said %d times, want once", len(said))
	}
	if f := said[0].ContextMap(); f["asked"] != int64(asked) || f["rmem_max"] != int64(most) {
		t.Errorf("fields %v, want asked %d and rmem_max %d", f, asked, most)
	}
	if got := logs.FilterMessage("streaming").All()[0].ContextMap()["read_ahead_bytes"]; got != int64(0) {
		t.Errorf("read-ahead of %v bytes, want none", got)
	}
}
