package replication_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/metrics"
	"github.com/eventcdc/cdc/replication"
)

// throughFreezer is a Freezer in front of the test's server and the DSN
// that reaches the server through it, with options as startup options.
func (h *harness) throughFreezer(options string) (*testenv.Freezer, string) {
	h.t.Helper()
	u, err := url.Parse(h.dsn)
	if err != nil {
		h.t.Fatal(err)
	}
	if u.Host == "" {
		h.t.Skip("the test server listens on a Unix socket only")
	}
	fz := testenv.NewFreezer(h.t, u.Host)
	dsn, err := fz.DSN(h.dsn, options)
	if err != nil {
		h.t.Fatal(err)
	}
	return fz, dsn
}

// reconnectsFor counts the reconnects logged with an error containing what.
func reconnectsFor(logs *observer.ObservedLogs, what string) int {
	n := 0
	for _, e := range logs.FilterMessage("replication interrupted; reconnecting").All() {
		if err, ok := e.ContextMap()["error"].(string); ok && strings.Contains(err, what) {
			n++
		}
	}
	return n
}

// A server whose wal_sender_timeout is long raises the receive timeout
// to 1.5 times it: a walsender may answer the ping that late (receiveTimeout).
func TestReplicator_ReceiveTimeoutAtLeastOneAndAHalfWalSenderTimeouts(t *testing.T) {
	h := setup(t)
	core, logs := observer.New(zapcore.InfoLevel)
	stop := h.runWith(&fakeSink{}, zap.New(core), func(c *replication.Config) { c.ReceiveTimeout = 2 * time.Second })
	defer stop()
	eventually(t, "a session", func() bool { return logs.FilterMessage("streaming").Len() == 1 })
	var ms int64 // 60s from scripts/localdb.sh; servers from the environment may differ
	if err := h.pool.QueryRow(context.Background(), `SELECT setting::bigint FROM pg_settings WHERE name = 'wal_sender_timeout'`).Scan(&ms); err != nil {
		t.Fatal(err)
	}
	want := max(2*time.Second, time.Duration(ms)*time.Millisecond*3/2)
	if got := logs.FilterMessage("streaming").All()[0].ContextMap()["receive_timeout"]; got != want {
		t.Fatalf("receive_timeout %v, want %s (wal_sender_timeout %d ms)", got, want, ms)
	}
}

// A link that goes silent without a reset ends the session after
// ReceiveTimeout of waiting (the connector stops reporting itself as
// streaming), while an idle but healthy server — which sends nothing on
// its own once everything is acknowledged — is asked for a keepalive and
// never taken for dead.
func TestReplicator_SilentLinkEndsTheSessionIdleServerDoesNot(t *testing.T) {
	h := setup(t)
	fz, dsn := h.throughFreezer("-c wal_sender_timeout=1s")
	const timeout = 2 * time.Second

	core, logs := observer.New(zapcore.InfoLevel)
	s := &fakeSink{}
	cfg := replication.Config{
		DSN: dsn, Slot: "slot", Publication: "pub",
		BatchMaxRows: 1000, BatchMaxBytes: 1 << 20, FlushInterval: 50 * time.Millisecond,
		StatusInterval: 100 * time.Millisecond, InsertsInFlight: 2, ReceiveBuffer: 128 << 10,
		ReceiveTimeout: timeout,
	}
	m := metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() })
	r := replication.New(cfg, s, nil, zap.New(core), m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	sessions := func() int { return logs.FilterMessage("streaming").Len() }
	silent := func() int { return reconnectsFor(logs, replication.ErrServerSilent.Error()) }

	h.exec(`INSERT INTO outbox (event_type, environment, event_context) SELECT 'before', 'test', '{}' FROM generate_series(1, 5)`)
	eventually(t, "5 rows stored", func() bool { return s.count() == 5 })
	if got := logs.FilterMessage("streaming").All()[0].ContextMap()["receive_timeout"]; got != timeout {
		t.Fatalf("session's receive_timeout %v, want %s (1.5 × the session's wal_sender_timeout of 1s is less)", got, timeout)
	}

	// Idle for three timeouts: the session must live on.
	time.Sleep(3 * timeout)
	if !r.State().Streaming() || sessions() != 1 || silent() != 0 ||
		testutil.ToFloat64(m.Streaming) != 1 || testutil.ToFloat64(m.Interruptions) != 0 {
		t.Fatalf("idle server: streaming %v (gauge %v), sessions %d, silent-link reconnects %d (counter %v); want true (1), 1, 0 (0)",
			r.State().Streaming(), testutil.ToFloat64(m.Streaming), sessions(), silent(), testutil.ToFloat64(m.Interruptions))
	}

	fz.Freeze()
	frozeAt := time.Now()
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) SELECT 'during', 'test', '{}' FROM generate_series(1, 3)`)
	for silent() == 0 {
		if time.Since(frozeAt) > timeout+3*time.Second {
			t.Fatalf("no silent link logged %s after the link froze (ReceiveTimeout %s); streaming %v",
				time.Since(frozeAt).Round(time.Millisecond), timeout, r.State().Streaming())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n, on, gauge, count := silent(), r.State().Streaming(), testutil.ToFloat64(m.Streaming), testutil.ToFloat64(m.Interruptions); n != 1 || on || gauge != 0 || count != 1 {
		t.Fatalf("after the timeout: %d silent-link reconnects logged, streaming %v (gauge %v), interruptions %v; want 1, false (0), 1; logs: %v",
			n, on, gauge, count, logs.All())
	}
	if got := s.count(); got != 5 {
		t.Fatalf("%d rows stored while frozen, want 5", got)
	}

	fz.Thaw()
	eventually(t, "the 3 rows committed while frozen stored after the link came back", func() bool { return s.count() == 8 })
	if got := s.count(); got != 8 {
		t.Fatalf("%d rows stored, want 8", got)
	}
	if on := testutil.ToFloat64(m.Streaming); on != 1 {
		t.Fatalf("cdc_replication_streaming %v after the link came back, want 1", on)
	}
}

// A large row that arrives steadily over a thin link, a whole message
// taking longer than ReceiveTimeout, is no silence: the bytes keep coming.
func TestReplicator_LargeRowOverAThinLinkIsNotSilence(t *testing.T) {
	h := setup(t)
	fz, dsn := h.throughFreezer("-c wal_sender_timeout=1s")
	core, logs := observer.New(zapcore.InfoLevel)
	s := &fakeSink{}
	stop := h.runWith(s, zap.New(core), func(c *replication.Config) {
		c.DSN, c.ReceiveTimeout, c.BatchMaxBytes = dsn, 2*time.Second, 16<<20
	})
	defer stop()
	eventually(t, "a session", func() bool { return logs.FilterMessage("streaming").Len() == 1 })
	fz.SetRate(1 << 20)
	// One row of about 4 MB of JSON: some 4 s at 1 MiB/s, twice the limit.
	h.exec(`INSERT INTO outbox (event_type, environment, event_context)
		SELECT 'big', 'test', json_build_object('pad', string_agg(md5(i::text), ''))
		FROM generate_series(1, 130000) i`)
	eventually(t, "the large row stored", func() bool { return s.count() == 1 })
	if n, silent := logs.FilterMessage("streaming").Len(), logs.FilterMessage("replication interrupted; reconnecting").Len(); n != 1 || silent != 0 {
		t.Fatalf("%d sessions, %d reconnects for a row arriving slowly; want 1 and 0: %v", n, silent, logs.FilterMessage("replication interrupted; reconnecting").All())
	}
}

// A session that waits out an open streamed transaction reads without
// streaming, so on PostgreSQL 15 the receive timeout does not apply
// (silenceLimit); after each status it asks a second connection whether
// that transaction has ended. On a link that died without a reset, that
// lookup is bounded, and its failure ends the session.
func TestReplicator_FrozenLinkWhileWaitingOutATransactionEndsTheSession(t *testing.T) {
	defer replication.SetLookupTimeout(2 * time.Second)()
	h := setup(t)
	fz, dsn := h.throughFreezer("-c wal_sender_timeout=1s -c logical_decoding_work_mem=64kB")
	core, logs := observer.New(zapcore.InfoLevel)
	r := replication.New(replication.Config{
		DSN: dsn, Slot: "slot", Publication: "pub",
		BatchMaxRows: 1000, BatchMaxBytes: 1 << 20, FlushInterval: 50 * time.Millisecond,
		StatusInterval: 100 * time.Millisecond, InsertsInFlight: 2, ReceiveBuffer: 128 << 10,
		ReceiveTimeout: 2 * time.Second,
	}, &fakeSink{}, nil, zap.New(core), metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() }))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { fz.Thaw(); cancel(); <-done }()

	tx := h.begin(ctx)
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SAVEPOINT sp"); err != nil {
		t.Fatal(err)
	}
	insertRows(t, ctx, tx, "open", 3000)
	eventually(t, "a reconnect without streaming", func() bool { return reconnected(logs, false) })
	eventually(t, "the session waiting the transaction out", func() bool {
		return logs.FilterMessage("streaming").Len() == 2 && r.State().Streaming()
	})

	fz.Freeze()
	frozeAt := time.Now()
	// The lookup fails in its query, or in connecting when the freeze came
	// before the session's first lookup.
	lookupFailed := func() bool {
		return reconnectsFor(logs, "look up status of transaction")+reconnectsFor(logs, "connect to postgres for transaction status") > 0
	}
	for !lookupFailed() {
		if time.Since(frozeAt) > 10*time.Second {
			t.Fatalf("no failed lookup logged 10s after the link froze (lookups bounded at 2s); streaming %v; reconnects: %v",
				r.State().Streaming(), logs.FilterMessage("replication interrupted; reconnecting").All())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r.State().Streaming() {
		t.Fatal("still streaming after the lookup failed")
	}
}
