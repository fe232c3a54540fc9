package testenv

import (
	"context"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

// StreamSlot starts a walsender streaming slot (pgoutput, protocol 1,
// publication pub) on a replication connection to dsn, held until the
// test ends, and returns the connection: its PID is the slot's active_pid.
func StreamSlot(ctx context.Context, t testing.TB, dsn, slot, pub string) *pgconn.PgConn {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if err := pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + pub + "'"},
	}); err != nil {
		t.Fatalf("start replication on slot %s: %v", slot, err)
	}
	return conn
}
