package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/config"
	"github.com/eventcdc/cdc/replication"
	"github.com/eventcdc/cdc/retention"
	"github.com/eventcdc/cdc/sink"
	ddl "github.com/eventcdc/cdc/sql"
)

// runMigrate applies the DDL on both sides. It needs rights `cdc run` does
// not: run it with an admin DSN at deploy time.
func runMigrate(ctx context.Context, cfg config.Config, args []string, stdout io.Writer, log *zap.Logger) error {
	// No flags: configured by CDC_* variables. -h says so.
	if err := parseFlags(flag.NewFlagSet("migrate", flag.ContinueOnError), args); err != nil {
		return err
	}
	pcfg, err := pgx.ParseConfig(cfg.PGDSN)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("CDC_PG_DSN: %w", err)}
	}
	replication.ConnDefaults(&pcfg.Config)
	pg, err := pgx.ConnectConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer pg.Close(context.Background())
	if err := ddl.MigratePostgres(ctx, pg, cfg.Publication, stdout); err != nil {
		return err
	}
	created, err := ddl.CreateSlot(ctx, pg, cfg.SlotName)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(stdout, "created replication slot %s: events published from now on are kept until cdc run ships them\n", cfg.SlotName)
		if err := noteOlderEvents(ctx, pg, cfg.SlotName, stdout); err != nil {
			return err
		}
	}
	ch, err := sink.Open(cfg.ClickHouseDSN, log)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("CDC_CLICKHOUSE_DSN: %w", err)}
	}
	defer ch.Close()
	if err := ddl.MigrateClickHouse(ctx, ch.Conn()); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "migrated: postgres outbox, cdc_dead_letter, publication %s; clickhouse %s\n", cfg.Publication, sink.Table)
	return nil
}

// noteOlderEvents says, after a slot was created, whether the outbox holds
// events from before it: a new slot never streams them (a slot lost and
// recreated, or history imported before cdc), only `cdc backfill` ships
// them. It holds retention (retention.Hold) so that no `cdc run` deletes
// them meanwhile, and says how to lift the hold. The index on
// event_date_time answers at once, however large the outbox.
func noteOlderEvents(ctx context.Context, pg *pgx.Conn, slot string, stdout io.Writer) error {
	var oldest *string
	// Rows at ±infinity: --since -infinity reads every row, and backfill
	// reads those at infinity whatever the --since. An empty outbox has no
	// oldest: NULL, not -infinity.
	err := pg.QueryRow(ctx, `SELECT CASE WHEN t IS NULL THEN NULL WHEN isfinite(t) THEN to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') ELSE '-infinity' END
		FROM (SELECT min(event_date_time) AS t FROM outbox) m`).Scan(&oldest)
	if err != nil {
		return fmt.Errorf("read the oldest outbox event: %w", err)
	}
	if oldest == nil {
		return nil
	}
	fmt.Fprintf(stdout, "the outbox already holds events from %s on, which this slot will not stream: ship them with `cdc backfill --since %[1]s`\n", *oldest)
	if _, err := retention.Hold(ctx, pg, slot); err != nil {
		// The slot is made: a failed hold must not fail the migration,
		// whose next run would not make the slot, nor the hold, again.
		fmt.Fprintf(stdout, "could not hold outbox retention (%v): start cdc run with CDC_OUTBOX_RETENTION=0 until `cdc verify --since %s` finds none missing (its retention deletes outbox rows older than CDC_OUTBOX_RETENTION)\n", err, *oldest)
		return nil
	}
	fmt.Fprintf(stdout, "outbox retention is held on every cdc run until `cdc verify --since %s` finds none missing; then lift the hold: SELECT pg_drop_replication_slot('%s');\n", *oldest, retention.HoldName(slot))
	return nil
}
