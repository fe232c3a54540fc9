package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/eventcdc/cdc/config"
	"github.com/eventcdc/cdc/deadletter"
	"github.com/eventcdc/cdc/health"
	"github.com/eventcdc/cdc/metrics"
	"github.com/eventcdc/cdc/replication"
	"github.com/eventcdc/cdc/retention"
	"github.com/eventcdc/cdc/sink"
	ddl "github.com/eventcdc/cdc/sql"
	"github.com/eventcdc/cdc/status"
	"github.com/eventcdc/cdc/tracing"
)

func runRun(ctx context.Context, cfg config.Config, args []string, _ io.Writer, log *zap.Logger) error {
	// No flags: configured by CDC_* variables. -h says so.
	if err := parseFlags(flag.NewFlagSet("run", flag.ContinueOnError), args); err != nil {
		return err
	}
	setMemoryLimit(cfg)
	summary := []zap.Field{zap.String("version", version)}
	for k, v := range cfg.Summary() {
		summary = append(summary, zap.String(k, v))
	}
	// What the collector works to (debug.SetMemoryLimit(-1) reads it):
	// a container limit below it leaves the process to be killed first.
	summary = append(summary, zap.Int64("gomemlimit", debug.SetMemoryLimit(-1)))
	log.Info("starting", summary...)

	// Before any connection: a bad OTEL_* setting is a configuration error.
	// The handler first: what the SDK reports while it is set up goes to
	// the connector's log.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("exporting traces failed", zap.Error(err)) }))
	// Setup connects nothing; a signal already come (ctx cancelled) would
	// make the OTLP/HTTP exporter refuse to start, which is no setting to
	// fix: the pipeline below stops on that signal as on any other.
	tp, shutdownTracing, err := tracing.Setup(context.WithoutCancel(ctx), os.Getenv, version)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdownTracing(sctx); err != nil {
			log.Warn("flushing traces failed", zap.Error(err))
		}
	}()

	// Listen before connecting anywhere: a taken or unresolvable
	// CDC_METRICS_ADDR is a setting to fix, found at once.
	var metricsLn net.Listener
	if cfg.MetricsAddr != "off" {
		metricsLn, err = net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("CDC_METRICS_ADDR: %w", err)}
		}
		defer metricsLn.Close()
	}

	pool, err := openPool(cfg.PGDSN)
	if err != nil {
		return err
	}
	defer func() {
		if !closeWithin(pool.Close, poolCloseWait) {
			log.Warn("PostgreSQL did not answer while cdc closed its connections; exiting without waiting for them", zap.Duration("waited", poolCloseWait))
		}
	}()
	ch, err := sink.Open(cfg.ClickHouseDSN, log.Named("sink"))
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("CDC_CLICKHOUSE_DSN: %w", err)}
	}
	defer ch.Close()

	reg := prometheus.NewRegistry()
	m := metrics.New(reg, func() int64 { return time.Now().UnixNano() }, metrics.BatchLimits(cfg.BatchMaxRows, cfg.BatchMaxBytes))
	rep := replication.New(replication.Config{
		DSN:             cfg.PGDSN,
		Slot:            cfg.SlotName,
		Publication:     cfg.Publication,
		BatchMaxRows:    cfg.BatchMaxRows,
		BatchMaxBytes:   cfg.BatchMaxBytes,
		FlushInterval:   cfg.FlushInterval,
		InsertsInFlight: cfg.InsertsInFlight,
		ReceiveBuffer:   cfg.PGReceiveBuffer,
		ReceiveTimeout:  cfg.PGReceiveTimeout,
		ShutdownTimeout: cfg.ShutdownTimeout,
		Tracer:          tp,
		HoldRetention: func(ctx context.Context, ahead bool) error {
			hold := retention.HoldIfOutboxHasRows
			if ahead {
				hold = retention.HoldAhead
			}
			created, err := hold(ctx, pool, cfg.SlotName)
			if !ahead {
				// The slot was just made: say from when to backfill.
				noteGap(ctx, pool, log)
			}
			if err != nil && !ahead {
				// Made ahead of the slot, the hold stands all the same.
				if held, herr := retention.Held(ctx, pool, cfg.SlotName); herr == nil && held {
					log.Warn("could not check the outbox again for the retention hold; the hold made before the slot stands", zap.Error(err))
					err = nil
				}
			}
			if created {
				log.Warn("outbox retention is held on every instance until an operator drops the hold: the outbox keeps the rows the new slot will not stream (docs/operations.md, Outbox retention)",
					zap.String("hold", retention.HoldName(cfg.SlotName)))
			}
			return err
		},
	}, ch, deadletter.New(pool, cfg.SlotName), log.Named("replication"), m)

	g, gctx := errgroup.WithContext(ctx)
	// The probes first: /healthz answers while the schema check below
	// waits (up to schemaCheckTimeout on a server that does not answer),
	// or a liveness probe would restart a process that is only starting.
	// And last: the server outlives a signal until the pipeline has
	// stopped, so /metrics shows a shutdown that waits on ClickHouse (up
	// to CDC_SHUTDOWN_TIMEOUT) instead of the scrape failing as if cdc
	// were gone.
	probeCtx, stopProbes := context.WithCancel(context.WithoutCancel(ctx))
	defer stopProbes()
	if cfg.MetricsAddr != "off" {
		srv := &health.Server{
			Addr:      cfg.MetricsAddr,
			Listener:  metricsLn,
			Gatherer:  reg,
			Profiling: cfg.Profiling,
			Every:     time.Second,
			MaxAge:    2 * time.Second,
			Checks: []health.Check{
				{Name: "postgres", Fn: func(context.Context) error {
					if !rep.State().Streaming() {
						return fmt.Errorf("replication connection is not streaming")
					}
					return nil
				}},
				{Name: "clickhouse", Fn: func(ctx context.Context) error {
					if err := ch.Ping(ctx); err != nil {
						return err
					}
					// A sink that answers pings but refuses every
					// INSERT holds the pipeline up all the same.
					return rep.State().StoreError()
				}},
			},
		}
		// Stopped once replication has (below), however it ended.
		g.Go(func() error { return srv.Run(probeCtx) })
	}
	if err := checkSchema(gctx, pool, ch, cfg.OutboxRetention > 0, log); err != nil {
		stopProbes()
		_ = g.Wait()
		return err
	}
	g.Go(func() error {
		defer stopProbes()
		if err := rep.Run(gctx); err != nil {
			return fmt.Errorf("replication: %w", err)
		}
		return nil
	})
	mon := &status.Monitor{Pool: pool, Slot: cfg.SlotName, Every: 5 * time.Second, Metrics: m, Log: log.Named("monitor"),
		Paused: rep.State().SlotCreated}
	g.Go(func() error { return mon.Run(gctx) })
	cleaner := &retention.Cleaner{Pool: pool, Keep: cfg.OutboxRetention, Every: time.Minute, BatchSize: 1000, Pause: 20 * time.Millisecond, Log: log.Named("retention"),
		Horizon: rep.State().Horizon, Slot: cfg.SlotName}
	g.Go(func() error { return cleaner.Run(gctx) })
	err = g.Wait()
	switch {
	case err != nil:
	case rep.State().LeftUnstored():
		// Exit 0 all the same: nothing unstored was acknowledged.
		log.Warn("shut down; what was not stored within CDC_SHUTDOWN_TIMEOUT (rows in ClickHouse, refused rows' dead letters in PostgreSQL), or before the slot stopped being this session's, is replayed at the next start")
	case rep.State().LeftUnacknowledged():
		// Not "cleanly" after the warning that the acknowledgement
		// failed: the next start is sent those rows again.
		log.Warn("shut down; the final acknowledgement did not reach PostgreSQL: the next start is sent again what ClickHouse stored since the last one, and skips it as stored")
	default:
		log.Info("shut down cleanly")
	}
	return err
}

// noteGap says, once cdc run has made a missing slot, from which time to
// backfill, as migrate does when it makes one (noteOlderEvents): the
// oldest event the outbox holds. The gap begins where cdc last
// acknowledged, before the loss (a failover to a standby, a dropped slot),
// by as much as cdc was behind; a --since at "the time of the loss", all
// the old warning said, left out the events cdc had not shipped by then,
// and a verify from that time found nothing missing.
func noteGap(ctx context.Context, pool *pgxpool.Pool, log *zap.Logger) {
	span, err := readOutboxSpan(ctx, pool)
	switch {
	case err != nil:
		log.Warn("could not read the oldest outbox event: backfill the new slot's gap with `cdc backfill --since` the oldest event_date_time the outbox holds", zap.Error(err))
	case span.oldest != nil && !span.minusInfinity:
		log.Warn("the outbox holds events from "+*span.oldest+" on, which the new slot will not stream: ship them with `cdc backfill --since "+*span.oldest+"`, then `cdc verify --since "+*span.oldest+"` (the gap begins where cdc last acknowledged, before the loss: a --since at the time of the loss misses the events cdc had not shipped by then)",
			zap.String("since", *span.oldest))
	case span.oldest != nil || span.minusInfinity:
		verify := ""
		if span.oldest != nil {
			verify = ", then `cdc verify --since " + *span.oldest + "`"
		}
		log.Warn("the outbox holds events from -infinity on, which the new slot will not stream: ship them with `cdc backfill --since -infinity`"+verify+" (the gap begins where cdc last acknowledged, before the loss: a --since at the time of the loss misses the events cdc had not shipped by then)",
			zap.String("since", "-infinity"))
	case span.infinity:
		log.Warn("the outbox holds events dated infinity, which the new slot will not stream and ClickHouse cannot store: set them aside as dead letters with `cdc backfill --since " + span.now + "`")
	}
}

// schemaCheckTimeout bounds run's look at the schema at start.
const schemaCheckTimeout = 15 * time.Second

// checkSchema looks once, at start, at what `cdc migrate` makes (sql.Lack):
// an earlier build's migrate made less, and a new build started before its
// own migrate ran (or without one) finds the schema as that left it. What
// run cannot work without stops it, naming `cdc migrate`; what it works
// without, slower, it names in one warning each, with what that costs. So
// too the privileges on cdc's tables that its role lacks, each named with
// the GRANT that gives it. A look that cannot be made (a server down at
// start) stops nothing: the pipeline waits for that server as it would
// without the look.
func checkSchema(ctx context.Context, pool *pgxpool.Pool, ch *sink.ClickHouse, retention bool, log *zap.Logger) error {
	cctx, cancel := context.WithTimeout(ctx, schemaCheckTimeout)
	defer cancel()
	var lacks []ddl.Lack
	pg, err := ddl.CheckPostgres(cctx, pool, retention)
	switch {
	case err == nil:
		lacks = append(lacks, pg...)
	case replication.IsLoginError(err), replication.IsPoolerRefusal(err), replication.IsTLSError(err):
		return err // exit 2, as the replication connection's first login would
	case ctx.Err() == nil:
		log.Warn("could not look at the PostgreSQL schema at start; going on without", zap.Error(err))
	}
	chl, err := ddl.CheckClickHouse(cctx, ch.Conn())
	switch {
	case err == nil:
		lacks = append(lacks, chl...)
	case sink.IsLoginError(err), sink.IsTLSError(err):
		return err
	case ctx.Err() == nil:
		log.Warn("could not look at the ClickHouse schema at start; going on without", zap.Error(err))
	}
	if err := ddl.Fatal(lacks); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	for _, l := range lacks {
		if l.Grant != "" {
			log.Warn("the role cdc connects as lacks a privilege; grant it as the admin", zap.String("missing", l.What), zap.String("effect", l.Effect), zap.String("grant", l.Grant))
			continue
		}
		log.Warn("the schema lacks what `cdc migrate` makes; run it as the admin", zap.String("missing", l.What), zap.String("effect", l.Effect))
	}
	return nil
}

// poolCloseWait bounds how long cdc run waits, once the pipeline has
// stopped, for the pool's connections to PostgreSQL to close. A query the
// shutdown cut short (the monitor's, retention's) leaves pgx sending a
// cancel request and waiting up to 15 s for the server to end that
// connection, and pgxpool.Close waits for it: on a server that stopped
// answering (a dropped route, a paused VM) the process sat that long
// after "shut down", past the bounds docs/operations.md gives (Shutdown
// timeout). A healthy server's connections close in milliseconds; the
// others go with the process.
const poolCloseWait = time.Second

// closeWithin runs shut, and reports whether it returned within wait.
// One that has not is left to finish, or to end with the process.
func closeWithin(shut func(), wait time.Duration) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		shut()
	}()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

func openPool(dsn string) (*pgxpool.Pool, error) { return openPoolWith(dsn, nil) }

// openPoolWith is openPool with these settings for its sessions.
func openPoolWith(dsn string, settings map[string]string) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("CDC_PG_DSN: %w", err)}
	}
	replication.PoolDefaults(dsn, pcfg)
	for k, v := range settings {
		pcfg.ConnConfig.RuntimeParams[k] = v
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres pool: %w", err)
	}
	return pool, nil
}

// setMemoryLimit sets Go's soft memory limit to memoryLimit(cfg), unless
// GOMEMLIMIT is set: an explicit one wins. cdc run calls it, and so do the
// commands that move events' values (backfill, deadletter replay and list
// --json): they hold one batch or page of them at a time, less than the
// pipeline, and without the limit the heap doubles before the collector
// runs: three 32 MiB events took them to 354-415 MiB, 185-227 MiB with
// it, where the connector holds one in under 6 x 32 MiB + 100 MiB.
func setMemoryLimit(cfg config.Config) {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit(cfg))
	}
}

// memoryLimit is the soft memory limit cdc run sets for Go's collector. It
// keeps garbage from piling up between collections (without one the heap
// doubles before the collector runs), and it sits above the live heap the
// pipeline allows, or the collector would run without pause while it is
// full: the writer's budget for INSERTs in flight (each a batch and its
// block copies), the batch being filled, the replication read-ahead buffer,
// and 52 MiB for the rest of the process. That is 112.5 MiB by default.
func memoryLimit(cfg config.Config) int64 {
	return int64(sink.InsertBudget(cfg.InsertsInFlight, cfg.BatchMaxBytes)+cfg.BatchMaxBytes+cfg.PGReceiveBuffer) + 52<<20
}
