// Command relay measures a polling relay against logical decoding over the
// same outbox rows, for docs/design.md; bench/design/run.sh sets it up.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
)

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func wal(ctx context.Context, c *pgx.Conn) int64 {
	var n int64
	must(c.QueryRow(ctx, `SELECT pg_current_wal_lsn() - '0/0'`).Scan(&n))
	return n
}

func main() {
	ctx := context.Background()
	c, err := pgx.Connect(ctx, os.Args[1])
	must(err)
	defer c.Close(ctx)
	switch os.Args[2] {
	case "poll":
		start := time.Now()
		var last int64
		rows, bytes, polls := 0, 0, 0
		for {
			polls++
			rs, err := c.Query(ctx, `SELECT id::text, seq, event_type, event_date_time, environment, event_context::text, metadata_version, traceparent FROM outbox WHERE seq > $1 ORDER BY seq LIMIT 1000`, last)
			must(err)
			n := 0
			for rs.Next() {
				var id, typ, env, ctxs string
				var seq, ver int64
				var at time.Time
				var tp *string
				must(rs.Scan(&id, &seq, &typ, &at, &env, &ctxs, &ver, &tp))
				last = seq
				n++
				bytes += len(ctxs)
			}
			must(rs.Err())
			rows += n
			if n == 0 {
				break
			}
		}
		fmt.Printf("poll: %d rows, %d context bytes, %d polls in %v\n", rows, bytes, polls, time.Since(start).Round(time.Millisecond))
		t := time.Now()
		for i := 0; i < 1000; i++ {
			_, err := c.Exec(ctx, `SELECT id FROM outbox WHERE seq > $1 ORDER BY seq LIMIT 1000`, last)
			must(err)
		}
		fmt.Printf("empty poll: %v each\n", time.Since(t)/1000)
	case "drain":
		// FOR UPDATE SKIP LOCKED relay: claim, ship, delete.
		w0 := wal(ctx, c)
		start := time.Now()
		rows := 0
		for {
			tag, err := c.Exec(ctx, `DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY seq LIMIT 1000 FOR UPDATE SKIP LOCKED) RETURNING id, event_type, event_date_time, environment, event_context, metadata_version, traceparent`)
			must(err)
			if tag.RowsAffected() == 0 {
				break
			}
			rows += int(tag.RowsAffected())
		}
		fmt.Printf("drain: %d rows deleted in %v, %d WAL bytes written by the deletes\n", rows, time.Since(start).Round(time.Millisecond), wal(ctx, c)-w0)
	case "decode":
		for _, fn := range []string{"pg_logical_slot_peek_binary_changes", "pg_logical_slot_get_binary_changes"} {
			start := time.Now()
			var n, b int64
			must(c.QueryRow(ctx, `SELECT count(*), coalesce(sum(length(data)), 0) FROM `+fn+`('bench_slot', NULL, NULL, 'proto_version', '1', 'publication_names', 'bench_pub')`).Scan(&n, &b))
			fmt.Printf("%s: %d messages, %d bytes in %v\n", fn, n, b, time.Since(start).Round(time.Millisecond))
		}
	}
}
