package testenv

import (
	"context"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	ddl "github.com/eventcdc/cdc/sql"
)

// MigratedPostgres is a pool on a new database holding cdc's PostgreSQL
// schema (`cdc migrate`'s, with the given publication), closed when the
// test ends.
func (e *Env) MigratedPostgres(t testing.TB, publication string) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, e.NewPostgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := ddl.MigratePostgres(ctx, pool, publication, io.Discard); err != nil {
		t.Fatal(err)
	}
	return pool
}
