package replication_test

import (
	"maps"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcdc/cdc/replication"
)

// The DSN's own application_name, connect_timeout and pool_max_conns are
// kept; what it leaves out gets cdc's: "cdc", 10 s, 4 connections.
func TestPoolDefaults(t *testing.T) {
	for _, tc := range []struct {
		dsn     string
		name    string
		timeout time.Duration
		conns   int32
	}{
		{"postgres://u@db/app", "cdc", 10 * time.Second, 4},
		{"postgres://u@db/app?application_name=cdc-orders", "cdc-orders", 10 * time.Second, 4},
		{"postgres://u@db/app?connect_timeout=3", "cdc", 3 * time.Second, 4},
		{"postgres://u@db/app?pool_max_conns=9", "cdc", 10 * time.Second, 9},
		{"host=db user=u dbname=app application_name=billing pool_max_conns=2 connect_timeout=1", "billing", time.Second, 2},
	} {
		cfg, err := pgxpool.ParseConfig(tc.dsn)
		if err != nil {
			t.Fatal(err)
		}
		replication.PoolDefaults(tc.dsn, cfg)
		if got := cfg.ConnConfig.RuntimeParams["application_name"]; got != tc.name {
			t.Errorf("%s: application_name %q, want %q", tc.dsn, got, tc.name)
		}
		if cfg.ConnConfig.ConnectTimeout != tc.timeout {
			t.Errorf("%s: connect timeout %v, want %v", tc.dsn, cfg.ConnConfig.ConnectTimeout, tc.timeout)
		}
		if cfg.MaxConns != tc.conns {
			t.Errorf("%s: %d connections, want %d", tc.dsn, cfg.MaxConns, tc.conns)
		}
	}
}

// A DSN's or PGTZ's other spelling of a setting that fixes the text form
// of values goes: PostgreSQL would apply whichever of two came last.
func TestSetTextParams_DropsOtherSpellings(t *testing.T) {
	t.Setenv("PGTZ", "America/New_York")
	cfg, err := pgconn.ParseConfig("postgres://u@db/app?datestyle=German&INTERVALSTYLE=sql_standard&application_name=x")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RuntimeParams["timezone"] != "America/New_York" || cfg.RuntimeParams["datestyle"] != "German" {
		t.Fatalf("pgconn parsed %v: the test's premise is gone", cfg.RuntimeParams)
	}
	replication.SetTextParams(cfg.RuntimeParams)
	want := replication.TextParams()
	want["application_name"] = "x"
	if !maps.Equal(cfg.RuntimeParams, want) {
		t.Fatalf("parameters %v, want %v", cfg.RuntimeParams, want)
	}
}
