package replication_test

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/eventcdc/cdc/replication"
)

// An INSERT that runs long — ClickHouse frozen, a link gone without a
// reset — is logged while it runs, once, with its batch's size: the log
// said nothing until read_timeout failed it, minutes later, while the lag
// grew. One that returns in time is not.
func TestReplicator_LogsAnInsertThatRunsLong(t *testing.T) {
	defer replication.SetSlowInsert(300 * time.Millisecond)()
	const slow = "an INSERT into event_log has run this long and goes on: ClickHouse is slow, or stopped answering (it fails after the DSN's read_timeout, 5 min by default, without progress, and is retried unless cdc is shutting down)"
	h := setup(t)
	s := &fakeSink{holdFirst: make(chan struct{})}
	core, logs := observer.New(zapcore.WarnLevel)
	stop := h.runWith(s, zap.New(core), func(*replication.Config) {})
	defer stop()

	h.exec(`INSERT INTO outbox (event_type, environment, event_context) SELECT 'e', 'test', '{}' FROM generate_series(1, 7)`)
	eventually(t, "the slow INSERT's warning", func() bool { return logs.FilterMessage(slow).Len() > 0 })
	time.Sleep(time.Second) // more than three times the bound: still one line
	close(s.holdFirst)
	eventually(t, "the 7 rows stored", func() bool { return s.count() == 7 })
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) SELECT 'e', 'test', '{}' FROM generate_series(1, 3)`)
	eventually(t, "the next 3 rows stored", func() bool { return s.count() == 10 })
	time.Sleep(500 * time.Millisecond)

	warned := logs.FilterMessage(slow).All()
	if len(warned) != 1 {
		t.Fatalf("%d slow-INSERT warnings, want 1 (the held INSERT's only): %v", len(warned), logs.All())
	}
	if got := warned[0].ContextMap(); got["rows"] != int64(7) || got["running"] != 300*time.Millisecond {
		t.Fatalf("warning says %v; want rows 7, running 300ms", got)
	}
}
