package replication_test

import (
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/eventcdc/cdc/replication"
)

// Before it makes a missing slot, a session asks whether the server is a
// standby in recovery (pg_is_in_recovery()), where PostgreSQL 15 makes no
// logical slot. A database whose roles may not execute that function (a
// hardened catalog: REVOKE EXECUTE … FROM PUBLIC) refused the question,
// and the session failed at each retry: the slot was never made, and cdc
// never streamed, where it streamed before the check. A refused question
// is no answer: the slot is made, as it was, and a standby would refuse
// that with its own error.
func TestReplicator_MissingSlotIsMadeWhenRecoveryMayNotBeAsked(t *testing.T) {
	h := setup(t)
	h.exec(`REVOKE EXECUTE ON FUNCTION pg_is_in_recovery() FROM PUBLIC`)
	h.as(h.role(fmt.Sprintf("cdc_norecovery_%d", time.Now().UnixNano()%1e9), "LOGIN REPLICATION"))
	h.exec(`SELECT pg_drop_replication_slot('slot')`) // lost, as after a failover
	core, logs := observer.New(zapcore.WarnLevel)
	s := &fakeSink{}
	rep, _, stop := h.start(s, nil, zap.New(core), func(*replication.Config) {})
	defer stop()
	eventually(t, "streaming", rep.State().Streaming)
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('after', 'test', '{}')`)
	eventually(t, "the event stored", func() bool { return s.count() == 1 })
	if n := logs.FilterMessage("replication slot did not exist and was created: events committed before now will not be streamed; if this is not the first start, recover them with `cdc backfill --since` the oldest event the outbox holds (cdc run names it next), not the time of the loss: events cdc had not acknowledged before it are in the gap too").Len(); n != 1 {
		t.Fatalf("%d warnings of the slot made, want 1: %v", n, logs.All())
	}
}
