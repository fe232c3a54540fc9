package replication_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/eventcdc/cdc/replication"
)

// A session whose set-up gets no answer — a server stuck on a lock, or a
// link that froze once the connection was made — ends after the set-up
// bound, and a later session streams once the server answers again: the
// connector is never held before streaming.
func TestReplicator_UnansweredSetupEndsTheSession(t *testing.T) {
	for _, frozen := range []bool{false, true} {
		name := map[bool]string{false: "server stuck", true: "link frozen"}[frozen]
		t.Run(name, func(t *testing.T) {
			// 3 s, not less: on a loaded host (CI runs packages side by side)
			// a connect, bounded alike, can take a second, and a session that
			// failed there never reaches the lookup this test holds.
			defer replication.SetSetupTimeout(3 * time.Second)()
			h := setup(t)
			ctx := context.Background()
			dsn := h.dsn
			var freeze, thaw func()
			if frozen {
				fz, through := h.throughFreezer("")
				dsn, freeze, thaw = through, fz.Freeze, fz.Thaw
			}

			// The session's first step reads pg_publication: hold it.
			tx, err := h.pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx) //nolint:errcheck // rolled back below; a no-op then
			if _, err := tx.Exec(ctx, `LOCK TABLE pg_publication IN ACCESS EXCLUSIVE MODE`); err != nil {
				t.Fatal(err)
			}
			core, logs := observer.New(zapcore.InfoLevel)
			s := &fakeSink{}
			stop := h.runWith(s, zap.New(core), func(c *replication.Config) { c.DSN = dsn })
			defer stop()
			if frozen {
				// Once the lookup waits, freeze the link and let the server
				// answer: the answer is held on the way. Counted in this
				// test's database: other packages' tests wait on locks of
				// their own on the same server.
				eventually(t, "the session's lookup waiting on the lock", func() bool {
					var n int
					err := h.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
						WHERE datname = current_database() AND application_name = 'cdc' AND wait_event_type = 'Lock'`).Scan(&n)
					// One or more: a session the set-up bound ended
					// leaves its backend waiting on the lock.
					return err == nil && n >= 1
				})
				freeze()
				if err := tx.Rollback(ctx); err != nil {
					t.Fatal(err)
				}
			}
			const want = "look up publication pub: no answer from postgres in 3s"
			deadline := time.Now().Add(20 * time.Second)
			for reconnectsFor(logs, want) == 0 {
				if time.Now().After(deadline) {
					// Say what happened instead: which step a session
					// waited on, or what ended it.
					var seen []string
					for _, e := range logs.All() {
						seen = append(seen, fmt.Sprintf("%s %s %v", e.Time.Format("15:04:05.000"), e.Message, e.ContextMap()))
					}
					t.Fatalf("timed out waiting for a session ended by the set-up bound (%q); logged:\n%s", want, strings.Join(seen, "\n"))
				}
				time.Sleep(20 * time.Millisecond)
			}
			if n := logs.FilterMessage("streaming").Len(); n != 0 {
				t.Fatalf("%d sessions streamed while the server did not answer, want 0", n)
			}
			if frozen {
				thaw()
			} else if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}

			h.exec(`INSERT INTO outbox (event_type, environment, event_context) SELECT 'after', 'test', '{}' FROM generate_series(1, 3)`)
			eventually(t, "3 rows stored once the server answered", func() bool { return s.count() == 3 })
			if n := logs.FilterMessage("streaming").Len(); n != 1 {
				t.Fatalf("%d sessions streamed, want 1", n)
			}
			for _, e := range logs.FilterMessage("replication interrupted; reconnecting").All() {
				if err, _ := e.ContextMap()["error"].(string); !strings.Contains(err, want) && !strings.Contains(err, "connect to postgres for replication") {
					t.Fatalf("session ended by %q; want the set-up bound (%q) or, through a frozen link, a failed connect", err, want)
				}
			}
		})
	}
}
