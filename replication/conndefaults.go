package replication

import (
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// connectTimeout bounds establishing a connection, TLS and authentication
// included, where the DSN sets no connect_timeout: without one, a server
// or proxy that accepts and never answers holds a command for ever.
const connectTimeout = 10 * time.Second

// poolConns is the size of cdc's pools: the connector's monitor,
// retention and dead letters, or one operator command's work.
const poolConns = 4

// ConnDefaults fills in what the DSN left out of a connection's settings:
// application_name "cdc" (a DSN's own name is kept, so that connectors
// sharing a server tell apart in pg_stat_replication and
// pg_stat_activity), and connectTimeout.
func ConnDefaults(cfg *pgconn.Config) {
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "cdc"
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = connectTimeout
	}
}

// PoolDefaults is ConnDefaults for a pool parsed from dsn, and sizes the
// pool at poolConns connections unless dsn sets pool_max_conns (pgx's
// default grows with the host's cores, which says nothing of the work).
func PoolDefaults(dsn string, cfg *pgxpool.Config) {
	ConnDefaults(&cfg.ConnConfig.Config)
	// pgxpool.ParseConfig takes its own settings out of the parameters;
	// pgconn leaves every one in.
	if plain, err := pgconn.ParseConfig(dsn); err != nil || plain.RuntimeParams["pool_max_conns"] == "" {
		cfg.MaxConns = poolConns
	}
	// At least two, whatever the DSN says (an application's URL with
	// pool_max_conns=1): `cdc deadletter replay` holds one connection for
	// its lock while it reads and deletes letters on another, and waited
	// for ever on one.
	cfg.MaxConns = max(cfg.MaxConns, 2)
}
