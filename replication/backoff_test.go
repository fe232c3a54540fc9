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

// A session that acknowledged what it stored was healthy, however it
// ended: the next connects after the shortest wait (at most 250 ms), each
// time a walsender is terminated again. A session that acknowledged
// nothing new backs off, its waits growing; and so does one that stored
// nothing while the database's other tables wrote WAL: it acknowledged
// the server's WAL end (a keepalive's, within a status interval of
// streaming), which says nothing of its health, and any session failing
// after a second of streaming reset the backoff: a crash loop
// reconnected every 125–250 ms for ever.
func TestReplicator_BacksOffOnlyAfterSessionsThatAcknowledgedNothing(t *testing.T) {
	const sessions = 5
	for _, tc := range []struct {
		name string
		// stored reports whether the sink may store: while it may not,
		// every session ends holding its batch, unacknowledged.
		stored bool
		// busy: no event, other tables' WAL, each session acknowledging
		// the server's WAL end before it ends.
		busy bool
	}{
		{name: "every session acknowledged an event", stored: true},
		{name: "no session acknowledged anything new", stored: false},
		{name: "sessions acknowledged only the WAL of other tables", busy: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := setup(t)
			s := &fakeSink{}
			if !tc.stored {
				s.gate = make(chan struct{}) // never opened: no INSERT ends
			}
			core, logs := observer.New(zapcore.InfoLevel)
			rep, _, stop := h.start(s, nil, zap.New(core), func(*replication.Config) {})
			defer stop()
			interrupted := func() *observer.ObservedLogs { return logs.FilterMessage("replication interrupted; reconnecting") }

			for i := 1; i <= sessions; i++ {
				eventually(t, "streaming", rep.State().Streaming)
				before := h.confirmed()
				if tc.busy {
					h.exec(`CREATE TABLE IF NOT EXISTS other (x int)`)
					h.exec(`INSERT INTO other VALUES (1)`)
					eventually(t, "the server's WAL end acknowledged", func() bool { return h.confirmed() > before })
					h.exec(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'slot' AND active_pid IS NOT NULL`)
					eventually(t, "the interruption logged", func() bool { return interrupted().Len() == i })
					continue
				}
				h.exec(fmt.Sprintf(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('e%d', 'test', '{}')`, i))
				if tc.stored {
					eventually(t, "the event stored and acknowledged", func() bool { return s.count() == i && h.confirmed() > before })
				} else {
					eventually(t, "the event received", func() bool { return !rep.State().OldestPending().IsZero() })
				}
				h.exec(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'slot' AND active_pid IS NOT NULL`)
				eventually(t, "the interruption logged", func() bool { return interrupted().Len() == i })
			}

			var waits []time.Duration
			for _, e := range interrupted().All() {
				d, _ := e.ContextMap()["retry_in"].(time.Duration)
				waits = append(waits, d)
			}
			if len(waits) != sessions {
				t.Fatalf("%d interruptions logged, want %d", len(waits), sessions)
			}
			for i, d := range waits {
				if tc.stored && (d <= 0 || d > 250*time.Millisecond) {
					t.Errorf("wait %d after a session that acknowledged an event: %v, want at most 250ms (all: %v)", i+1, d, waits)
				}
			}
			// Without progress the waits double, with jitter: the third is
			// 500 ms to 1 s, the fifth 2 to 4 s.
			if !tc.stored && waits[sessions-1] < 2*time.Second {
				t.Errorf("fifth wait after sessions that acknowledged nothing: %v, want at least 2s (all: %v)", waits[sessions-1], waits)
			}
		})
	}
}
