package status

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/metrics"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// The monitor's slot gauges follow the slot while PostgreSQL answers, and
// a poll that fails marks the slot not active — the alerts on it fire —
// rather than leaving the last good reading standing.
func TestMonitor_FailedPollMarksSlotNotActive(t *testing.T) {
	env := testenv.Get(t)
	dsn := env.NewPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	const slot = "status_test"
	for _, q := range []string{
		`CREATE TABLE t (v int)`,
		`CREATE PUBLICATION p FOR TABLE t`,
		`SELECT pg_create_logical_replication_slot('` + slot + `', 'pgoutput')`,
		`INSERT INTO t SELECT generate_series(1, 1000)`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	m := metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() })
	mon := &Monitor{Pool: pool, Slot: slot, Every: 5 * time.Second, Metrics: m, Log: zap.NewNop()}

	// Nobody streams the slot yet.
	mon.poll(ctx)
	want, err := ReadSlot(ctx, pool, slot)
	if err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.SlotActive); got != 0 {
		t.Fatalf("cdc_slot_active = %v with no consumer, want 0", got)
	}
	if got := testutil.ToFloat64(m.LagBytes); got != float64(want.LagBytes) || want.LagBytes <= 0 {
		t.Fatalf("cdc_replication_lag_bytes = %v, slot lag %d bytes; want equal and positive", got, want.LagBytes)
	}

	// A walsender streams it.
	rcfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	rcfg.RuntimeParams["replication"] = "database"
	repl, err := pgconn.ConnectConfig(ctx, rcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer repl.Close(context.Background())
	if err := pglogrepl.StartReplication(ctx, repl, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'p'"},
	}); err != nil {
		t.Fatal(err)
	}
	mon.poll(ctx)
	if got := testutil.ToFloat64(m.SlotActive); got != 1 {
		t.Fatalf("cdc_slot_active = %v while streaming, want 1", got)
	}
	lag := testutil.ToFloat64(m.LagBytes)

	// PostgreSQL stops answering the monitor; the walsender still runs.
	unreachable, err := pgxpool.New(ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer unreachable.Close()
	mon.Pool = unreachable
	mon.poll(ctx)
	mon.poll(ctx)
	if got := testutil.ToFloat64(m.SlotActive); got != 0 {
		t.Fatalf("cdc_slot_active = %v after failed polls, want 0", got)
	}
	if got := testutil.ToFloat64(m.SlotPollErrors); got != 2 {
		t.Fatalf("cdc_slot_poll_errors_total = %v after 2 failed polls, want 2", got)
	}
	if got := testutil.ToFloat64(m.LagBytes); got != lag {
		t.Fatalf("cdc_replication_lag_bytes = %v after failed polls, want the last reading %v", got, lag)
	}

	// It answers again.
	mon.Pool = pool
	mon.poll(ctx)
	if got := testutil.ToFloat64(m.SlotActive); got != 1 {
		t.Fatalf("cdc_slot_active = %v once polls succeed again, want 1", got)
	}
	if got := testutil.ToFloat64(m.SlotPollErrors); got != 2 {
		t.Fatalf("cdc_slot_poll_errors_total = %v after a good poll, want still 2", got)
	}
}
