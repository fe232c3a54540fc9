package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sync/errgroup"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/config"
	"github.com/eventcdc/cdc/deadletter"
	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/metrics"
	"github.com/eventcdc/cdc/replication"
	"github.com/eventcdc/cdc/sink"
)

// profileDrain drains a backlog like the drain step, but with the pipeline
// running in this process (replication.Replicator with the ClickHouse sink
// and the dead-letter store, wired as cmd/cdc/run.go wires them) under a CPU
// profile, and counts the process's allocations per event. The binary has
// no profiling endpoint; this needs none.
func (b *bench) profileDrain(ctx context.Context) error {
	n := b.o.events
	w, err := b.newWorld(ctx, "bench_profile")
	if err != nil {
		return err
	}
	defer w.close()
	if _, err := insertBacklog(ctx, w.pg, n); err != nil {
		return err
	}

	pool, err := pgxpool.New(ctx, w.pgDSN)
	if err != nil {
		return fmt.Errorf("open postgres pool: %w", err)
	}
	defer pool.Close()
	ch, err := sink.Open(w.chDSN, zap.NewNop())
	if err != nil {
		return fmt.Errorf("open sink: %w", err)
	}
	defer ch.Close()
	m := metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() })
	rep := replication.New(replication.Config{
		DSN:           w.pgDSN,
		Slot:          w.slot,
		Publication:   config.DefaultPublication,
		BatchMaxRows:  config.DefaultBatchMaxRows,
		BatchMaxBytes: config.DefaultBatchMaxBytes,
		FlushInterval: config.DefaultFlushInterval,
		// As cmd/cdc/run.go wires it with the defaults.
		InsertsInFlight: config.DefaultInsertsInFlight,
		ReceiveBuffer:   config.DefaultPGReceiveBuffer,
	}, ch, deadletter.New(pool, w.slot), zap.NewNop(), m)

	cpuPath := filepath.Join(b.o.dir, "cpu.pprof")
	f, err := os.Create(cpuPath)
	if err != nil {
		return fmt.Errorf("create cpu profile: %w", err)
	}
	defer f.Close()
	// The allocs profile counts from process start: keep a baseline so the
	// tops show only what the drain allocated (pprof -base).
	basePath := filepath.Join(b.o.dir, "allocs-base.pprof")
	if err := writeProfile("allocs", basePath); err != nil {
		return err
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := pprof.StartCPUProfile(f); err != nil {
		return fmt.Errorf("start cpu profile: %w", err)
	}
	start := time.Now()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- rep.Run(rctx) }()
	seen, err := waitCount(ctx, w.ch, nil, uint64(n), 50*time.Millisecond, 5*time.Minute)
	cancel()
	runErr := <-done
	pprof.StopCPUProfile()
	runtime.ReadMemStats(&after)
	if err != nil {
		return err
	}
	if runErr != nil {
		return fmt.Errorf("replicator: %w", runErr)
	}
	allocPath := filepath.Join(b.o.dir, "allocs.pprof")
	if err := writeProfile("allocs", allocPath); err != nil {
		return err
	}

	d := seen.Sub(start)
	mallocs := float64(after.Mallocs-before.Mallocs) / float64(n)
	bytes := float64(after.TotalAlloc-before.TotalAlloc) / float64(n)
	b.add("6", "In-process drain (replication.Replicator + sink + dead letters, this process, CPU profile on)",
		fmt.Sprintf("%d events in %.2f s → %.0f events/s; whole process **%.1f allocs/event, %.0f B/event**, %d GC cycles",
			n, d.Seconds(), float64(n)/d.Seconds(), mallocs, bytes, after.NumGC-before.NumGC),
		"—", "—")

	// Human-readable tops next to the raw profiles.
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	for _, p := range []struct {
		out, profile string
		args         []string
	}{
		{"profile-cpu-flat.txt", cpuPath, []string{"-top", "-nodecount=40"}},
		{"profile-cpu-cum.txt", cpuPath, []string{"-top", "-cum", "-nodecount=60"}},
		{"profile-alloc-space.txt", allocPath, []string{"-top", "-sample_index=alloc_space", "-nodecount=30", "-base", basePath}},
		{"profile-alloc-objects.txt", allocPath, []string{"-top", "-sample_index=alloc_objects", "-nodecount=30", "-base", basePath}},
	} {
		args := append([]string{"tool", "pprof"}, p.args...)
		args = append(args, exe, p.profile)
		out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("go tool pprof %s: %w: %s", p.profile, err, out)
		}
		if err := os.WriteFile(filepath.Join(b.o.dir, p.out), out, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", p.out, err)
		}
	}
	b.note("Profiles of the in-process drain: %s and %s (baseline %s); tops in %s/profile-*.txt (`go tool pprof -top %s %s`).",
		cpuPath, allocPath, basePath, b.o.dir, exe, cpuPath)
	return nil
}

func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s profile: %w", name, err)
	}
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		f.Close()
		return fmt.Errorf("write %s profile: %w", name, err)
	}
	return f.Close()
}

// nullSink stores nothing, instantly: with it the replicator runs as fast
// as PostgreSQL sends and cdc decodes.
type nullSink struct {
	rows  atomic.Int64
	done  chan struct{}
	close sync.Once // Write is called from two goroutines at once
	want  int64
}

func (s *nullSink) Write(_ context.Context, b *sink.Batch) ([]sink.Rejected, error) {
	if s.rows.Add(int64(len(b.Rows))) >= s.want {
		s.close.Do(func() { close(s.done) })
	}
	return nil, nil
}

func (s *nullSink) Written(context.Context, pglogrepl.LSN, pglogrepl.LSN) (*sink.Positions, error) {
	return &sink.Positions{}, nil
}

// decompose measures the two halves of the drain apart: the source
// (walsender → cdc decoding and batching, into a sink that stores nothing)
// and the sink (sink.ClickHouse.Write of rows already in memory, one writer
// and two in parallel).
func (b *bench) decompose(ctx context.Context) error {
	n := b.o.events
	w, err := b.newWorld(ctx, "bench_source")
	if err != nil {
		return err
	}
	defer w.close()
	if _, err := insertBacklog(ctx, w.pg, n); err != nil {
		return err
	}
	ns := &nullSink{done: make(chan struct{}), want: int64(n)}
	m := metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() })
	rep := replication.New(replication.Config{
		DSN: w.pgDSN, Slot: w.slot, Publication: config.DefaultPublication,
		BatchMaxRows: config.DefaultBatchMaxRows, BatchMaxBytes: config.DefaultBatchMaxBytes, FlushInterval: config.DefaultFlushInterval,
		InsertsInFlight: config.DefaultInsertsInFlight,
		ReceiveBuffer:   config.DefaultPGReceiveBuffer,
	}, ns, nil, zap.NewNop(), m)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- rep.Run(rctx) }()
	select {
	case <-ns.done:
	case <-time.After(5 * time.Minute):
	}
	d := time.Since(start)
	cancel()
	if err := <-done; err != nil {
		return fmt.Errorf("replicator into a null sink: %w", err)
	}
	if got := ns.rows.Load(); got < int64(n) {
		return fmt.Errorf("null sink got %d rows in 5 minutes, want %d", got, n)
	}
	b.add("6", "Diagnostic, source only: in-process replicator into a sink that stores nothing (walsender → decode → batch)",
		fmt.Sprintf("%d events in %.2f s → **%.0f events/s**", n, d.Seconds(), float64(n)/d.Seconds()), "—", "—")

	// The sink alone: the backlog's rows, built in memory, cut into
	// batches of the size the drain's stream cut (its byte rule counts
	// overhead the bench cannot see); by CDC_BATCH_MAX_BYTES of values when
	// the drain did not run.
	maxRows := config.DefaultBatchMaxRows
	if b.drainRows > 0 {
		maxRows = b.drainRows
	}
	batches := memoryBatches(n, config.DefaultBatchMaxBytes, maxRows)
	for _, writers := range []int{1, 2} {
		sw, err := b.newWorld(ctx, fmt.Sprintf("bench_sink%d", writers))
		if err != nil {
			return err
		}
		sinks := make([]*sink.ClickHouse, writers)
		for i := range sinks {
			if sinks[i], err = sink.Open(sw.chDSN, zap.NewNop()); err != nil {
				sw.close()
				return fmt.Errorf("open sink: %w", err)
			}
		}
		start := time.Now()
		var g errgroup.Group
		for i, s := range sinks {
			g.Go(func() error {
				for j := i; j < len(batches); j += writers {
					if _, err := s.Write(ctx, batches[j]); err != nil {
						return fmt.Errorf("write batch %d: %w", j, err)
					}
				}
				return nil
			})
		}
		err = g.Wait()
		d := time.Since(start)
		for _, s := range sinks {
			s.Close()
		}
		if err == nil {
			var got uint64
			if got, err = chCount(ctx, sw.ch, "event_log"); err == nil && got != uint64(n) {
				err = fmt.Errorf("sink-only run stored %d rows, want %d", got, n)
			}
		}
		sw.close()
		if err != nil {
			return err
		}
		b.add("6", fmt.Sprintf("Diagnostic, sink only: sink.ClickHouse.Write of in-memory rows, %d batches of ≤ %d rows, %d writer(s) in parallel", len(batches), len(batches[0].Rows), writers),
			fmt.Sprintf("%d events in %.2f s → **%.0f events/s** (%.2f s per INSERT per writer)", n, d.Seconds(), float64(n)/d.Seconds(), d.Seconds()*float64(writers)/float64(len(batches))), "—", "—")
	}
	return nil
}

// memoryBatches builds n outbox rows like insertBacklog's, as the decoder
// hands them over, cut into batches by the stream's rules.
func memoryBatches(n, maxBytes, maxRows int) []*sink.Batch {
	rel := &decoder.Relation{ID: 16385, Namespace: "public", Name: "outbox", Columns: []decoder.Column{
		{Name: "id", TypeOID: 2950, Key: true}, {Name: "event_type", TypeOID: 25}, {Name: "event_date_time", TypeOID: 1184},
		{Name: "environment", TypeOID: 25}, {Name: "event_context", TypeOID: 114}, {Name: "metadata_version", TypeOID: 20},
		{Name: "traceparent", TypeOID: 25},
	}}
	text := func(s string) decoder.Value { return decoder.Value{Kind: decoder.ValueText, Data: []byte(s)} }
	now := time.Now().UTC()
	ts := now.Format("2006-01-02 15:04:05.999999") + "+00"
	var out []*sink.Batch
	cur := &sink.Batch{}
	for i := 1; i <= n; i++ {
		ctxJSON := fmt.Sprintf(`{"order_id":"ord_%020d","customer_id":"cus_8f3a2b1c","currency":"EUR",`+
			`"total":"149.90","items":[{"sku":"SKU-1042","qty":2,"price":"49.95"},{"sku":"SKU-2210","qty":1,"price":"50.00"}],`+
			`"shipping":{"method":"express","country":"DE"},"locale":"de-DE","source":"web","campaign":"spring-sale"}`, i)
		vals := []decoder.Value{text(uuid.NewString()), text("order.created"), text(ts), text("production"), text(ctxJSON), text("1"),
			text("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")}
		size := 0
		for _, v := range vals {
			size += len(v.Data)
		}
		cur.Rows = append(cur.Rows, sink.Row{Relation: rel, Values: vals, Pos: sink.Position{CommitLSN: 0x1000000, Seq: uint64(i)}, CommitTime: now, Size: size})
		cur.Bytes += size
		if len(cur.Rows) >= maxRows || cur.Bytes >= maxBytes {
			cur.End = 0x1000000
			out = append(out, cur)
			cur = &sink.Batch{}
		}
	}
	if len(cur.Rows) > 0 {
		out = append(out, cur)
	}
	return out
}

// rawStream reads the backlog off a slot with a bare receive loop — no
// decoding beyond the message type, no batching — and times the two phases
// of a large transaction: until its first change arrives (with pgoutput v1
// PostgreSQL decodes the whole transaction before sending any of it; with
// v2 streaming it sends blocks as it decodes), and from there to its commit.
// via names the transport in the table when it is not loopback TCP.
func (b *bench) rawStream(ctx context.Context, dsn, slot string, n int, streaming bool, via string) (time.Duration, error) {
	conn, err := replication.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	args := []string{"proto_version '1'"}
	label, note := "pgoutput v1", "PostgreSQL decodes the whole transaction first"
	if streaming {
		args = []string{"proto_version '2'", "streaming 'on'", "binary 'true'"}
		label, note = "pgoutput v2, streaming on, binary values", "blocks are sent as the transaction is decoded"
	}
	start := time.Now()
	err = pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: append(args, "publication_names '"+config.DefaultPublication+"'"),
	})
	if err != nil {
		return 0, fmt.Errorf("start replication on %s: %w", slot, err)
	}
	var first time.Time
	var inserts int
	var last pglogrepl.LSN
	rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for {
		msg, err := conn.ReceiveMessage(rctx)
		if err != nil {
			return 0, fmt.Errorf("receive from %s after %d inserts: %w", slot, inserts, err)
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok || len(cd.Data) == 0 {
			continue
		}
		switch cd.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(cd.Data[1:])
			if err == nil && pkm.ReplyRequested {
				_ = pglogrepl.SendStandbyStatusUpdate(rctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: last})
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
			if err != nil || len(xld.WALData) == 0 {
				return 0, fmt.Errorf("parse xlogdata: %v", err)
			}
			last = xld.WALStart
			switch xld.WALData[0] {
			case 'B', 'S':
				if first.IsZero() {
					first = time.Now()
				}
			case 'I':
				inserts++
			case 'C', 'c':
				if inserts >= n {
					end := time.Now()
					b.add("1", "Reference: the same WAL streamed over the replication protocol ("+label+")"+via+" to a bare pglogrepl receive loop (own slot; no decoding, no batching, no sink)",
						fmt.Sprintf("first change %.2f s after START_REPLICATION (%s); then %d inserts in %.2f s → %.0f events/s; total %.2f s → **%.0f events/s**",
							first.Sub(start).Seconds(), note, inserts, end.Sub(first).Seconds(), float64(inserts)/end.Sub(first).Seconds(), end.Sub(start).Seconds(), float64(inserts)/end.Sub(start).Seconds()),
						"—", "—")
					return end.Sub(start), nil
				}
			}
		}
	}
}
