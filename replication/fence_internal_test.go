package replication

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/metrics"
	"github.com/eventcdc/cdc/sink"
)

// failOnceSink fails its first Write and stores the rest; it counts them.
type failOnceSink struct {
	mu     sync.Mutex
	writes int
}

func (f *failOnceSink) Write(context.Context, *sink.Batch) ([]sink.Rejected, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	if f.writes == 1 {
		return nil, errors.New("clickhouse did not answer")
	}
	return nil, nil
}

func (f *failOnceSink) Written(context.Context, pglogrepl.LSN, pglogrepl.LSN) (*sink.Positions, error) {
	return &sink.Positions{}, nil
}

func (f *failOnceSink) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes
}

// A failed batch is retried only while the session's walsender holds the
// slot. One whose walsender no longer does — a process frozen while its
// batch failed, woken after another took the slot over and stored the same
// rows — waits instead, until its session ends; the next replays them.
func TestStore_RetriesOnlyWhileItsWalsenderHoldsTheSlot(t *testing.T) {
	dsn := testenv.Get(t).NewPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, q := range []string{`CREATE TABLE t (v int)`, `CREATE PUBLICATION p FOR TABLE t`, `SELECT pg_create_logical_replication_slot('fence', 'pgoutput')`} {
		if _, err := queryRows(ctx, conn, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
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
	if err := pglogrepl.StartReplication(ctx, repl, "fence", 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'p'"},
	}); err != nil {
		t.Fatal(err)
	}
	holder, other := repl.PID(), repl.PID()+1
	defer SetSinkRetryMax(20 * time.Millisecond)()
	batch := &sink.Batch{Rows: []sink.Row{{Pos: sink.Position{CommitLSN: 0x100, Seq: 1}}}}
	newReplicator := func(s Sink) *Replicator {
		return New(Config{DSN: dsn, Slot: "fence"}, s, nil, zap.NewNop(), metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() }))
	}

	if r := newReplicator(&failOnceSink{}); !r.holdsSlot(ctx, holder) || r.holdsSlot(ctx, other) {
		t.Fatalf("holdsSlot(walsender %d) = %v, holdsSlot(%d) = %v; want true, false", holder, r.holdsSlot(ctx, holder), other, r.holdsSlot(ctx, other))
	}

	// Another walsender holds the slot: the failed batch is not sent again
	// before its context ends.
	s := &failOnceSink{}
	sctx, scancel := context.WithTimeout(ctx, time.Second)
	_, stored := newReplicator(s).store(sctx, batch, fence{walsender: other, handed: time.Now()})
	scancel()
	if stored || s.count() != 1 {
		t.Fatalf("store with the slot held by another walsender: stored %v after %d writes, want false after 1", stored, s.count())
	}

	// A first attempt that starts late (a process frozen after it handed
	// the batch over) looks first: with another walsender holding the slot
	// it sends nothing.
	s = &failOnceSink{}
	sctx, scancel = context.WithTimeout(ctx, time.Second)
	_, stored = newReplicator(s).store(sctx, batch, fence{walsender: other, handed: time.Now().Add(-time.Minute)})
	scancel()
	if stored || s.count() != 0 {
		t.Fatalf("late first attempt with the slot held by another walsender: stored %v after %d writes, want false after 0", stored, s.count())
	}

	// This session's walsender holds it: retried and stored.
	s = &failOnceSink{}
	if _, stored := newReplicator(s).store(ctx, batch, fence{walsender: holder, handed: time.Now()}); !stored || s.count() != 2 {
		t.Fatalf("store with the slot held by the session's walsender: stored %v after %d writes, want true after 2", stored, s.count())
	}
}
