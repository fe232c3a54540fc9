#!/usr/bin/env bash
# run.sh reproduces the figures in docs/design.md: 1,000 one-row ClickHouse
# INSERTs against one 1,000-row INSERT, and a polling relay against logical
# decoding over the same 300,000 outbox rows (30,000 transactions of 10).
# Local servers under .local/design, stopped at the end. About 2 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PATH:/usr/local/go/bin"
dir=$PWD/.local/design
scripts/localdb.sh stop "$dir" >/dev/null 2>&1 || true
rm -rf "$dir" && mkdir -p "$dir" && chmod 755 "$PWD/.local" "$dir"
trap 'scripts/localdb.sh stop "$dir"' EXIT
servers=$(scripts/localdb.sh start "$dir") # captured: a failed start stops here (set -e)
eval "$(sed 's/^/export /' <<<"$servers")"

go run ./bench/design/chins "$CDC_CLICKHOUSE_DSN"

psql -q -X "$CDC_PG_DSN" <<'SQL'
CREATE TABLE outbox (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq bigserial UNIQUE,            -- what a keyset poller orders by
    event_type text NOT NULL,
    event_date_time timestamptz NOT NULL DEFAULT now(),
    environment text NOT NULL,
    event_context json NOT NULL,
    metadata_version bigint NOT NULL DEFAULT 1,
    traceparent text
);
CREATE PUBLICATION bench_pub FOR TABLE outbox WITH (publish = 'insert');
SELECT pg_create_logical_replication_slot('bench_slot', 'pgoutput') \gset
SQL
echo "inserting 300,000 rows in 30,000 transactions..."
start=$(date +%s.%N)
for _ in $(seq 1 30); do
	{
		for _ in $(seq 1 1000); do
			echo "INSERT INTO outbox (event_type, environment, event_context) SELECT 'user_created', 'bench', json_build_object('user_id', g, 'pad', repeat('x', 180)) FROM generate_series(1, 10) g;"
		done
	} | psql -q -X "$CDC_PG_DSN"
done
echo "inserted in $(echo "$(date +%s.%N) - $start" | bc) s"
for mode in poll poll poll decode drain; do
	go run ./bench/design/relay "$CDC_PG_DSN" "$mode"
done
