// Command chins measures 1,000 one-row INSERTs against one 1,000-row INSERT
// into ClickHouse, for docs/design.md; bench/design/run.sh runs it.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/google/uuid"
)

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func main() {
	ctx := context.Background()
	opts, err := clickhouse.ParseDSN(os.Args[1])
	must(err)
	conn, err := clickhouse.Open(opts)
	must(err)
	must(conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS insbench"))
	for _, t := range []string{"one_row", "batched"} {
		must(conn.Exec(ctx, "DROP TABLE IF EXISTS insbench."+t))
		must(conn.Exec(ctx, "CREATE TABLE insbench."+t+" (event_id UUID, event_type String, event_date_time DateTime, event_context String) ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(event_date_time) ORDER BY (event_type, event_date_time, event_id)"))
	}
	now := time.Now()
	const n = 1000
	start := time.Now()
	for i := 0; i < n; i++ {
		b, err := conn.PrepareBatch(ctx, "INSERT INTO insbench.one_row (event_id, event_type, event_date_time, event_context)")
		must(err)
		must(b.Append(uuid.New(), "user_created", now, `{"user_id": 1}`))
		must(b.Send())
	}
	one := time.Since(start)
	start = time.Now()
	b, err := conn.PrepareBatch(ctx, "INSERT INTO insbench.batched (event_id, event_type, event_date_time, event_context)")
	must(err)
	for i := 0; i < n; i++ {
		must(b.Append(uuid.New(), "user_created", now, `{"user_id": 1}`))
	}
	must(b.Send())
	batched := time.Since(start)
	for _, t := range []struct {
		name string
		d    time.Duration
	}{{"one_row", one}, {"batched", batched}} {
		var parts uint64
		must(conn.QueryRow(ctx, "SELECT count() FROM system.parts WHERE database = 'insbench' AND table = ? ", t.name).Scan(&parts))
		fmt.Printf("%s: %d rows in %v, %d parts written (active or merged away)\n", t.name, n, t.d.Round(time.Millisecond), parts)
	}
	must(conn.Exec(ctx, "DROP DATABASE insbench"))
}
