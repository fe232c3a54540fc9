package main

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/eventcdc/cdc/internal/testenv"
)

// A server that refuses migrate's watch a connection (the role's or the
// database's CONNECTION LIMIT, max_connections reached: SQLSTATE 53300)
// answers: migrate waits on as long as its own session does, here for a
// lock let go after three times migrateSilence. It stopped migrate after
// migrateSilence, "postgres answered nothing", cancelling whatever it was
// doing (a CREATE INDEX CONCURRENTLY cancelled leaves an invalid index).
func TestMigrate_WatchRefusedAConnectionIsNoSilence(t *testing.T) {
	defer func(every, silence time.Duration) { migrateWatchEvery, migrateSilence = every, silence }(migrateWatchEvery, migrateSilence)
	migrateWatchEvery, migrateSilence = 100*time.Millisecond, time.Second
	pool, env := operatorEnv(t)
	ctx := context.Background()
	// The admin migrate runs as: a role of one connection. A superuser
	// is held to no CONNECTION LIMIT.
	role := testenv.Name("admin")
	for _, sql := range []string{
		`CREATE ROLE ` + role + ` LOGIN REPLICATION CONNECTION LIMIT 1`,
		`DO $$ BEGIN EXECUTE format('GRANT CREATE ON DATABASE %I TO ` + role + `', current_database()); END $$`,
		`GRANT CREATE, USAGE ON SCHEMA public TO ` + role,
		`ALTER TABLE outbox OWNER TO ` + role,
		`ALTER TABLE cdc_dead_letter OWNER TO ` + role,
		`ALTER PUBLICATION cdc_outbox OWNER TO ` + role,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	t.Cleanup(func() {
		for _, sql := range []string{`REASSIGN OWNED BY ` + role + ` TO current_user`, `DROP OWNED BY ` + role, `DROP ROLE ` + role} {
			_, _ = pool.Exec(context.Background(), sql)
		}
	})
	u, err := url.Parse(env["CDC_PG_DSN"])
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	env["CDC_PG_DSN"] = u.String()

	_, release := holdLock(t, pool, "LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
	done, stdout, stderr := startMigrate(env)
	select {
	case code := <-done:
		t.Fatalf("migrate exited %d while it waited for the lock; stdout %q, stderr %q", code, stdout.String(), stderr.String())
	case <-time.After(3 * migrateSilence):
	}
	release()
	awaitMigrated(t, done, stdout, stderr)
}
