package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/config"
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
