#!/usr/bin/env bash
# first-insert.sh [SESSIONS [BURSTS [EVENTS]]]: how long each INSERT of a
# `cdc run` process takes to store, the first against the later ones. On
# throwaway servers under .local/first-insert, SESSIONS times (3): start
# `cdc run`, commit BURSTS (4) transactions of EVENTS (5000) bench events
# 2 s apart (each becomes one batch, cut when cdc has caught up), stop it;
# then print each session's store durations from its debug log, and
# ClickHouse's own duration of each INSERT (system.query_log: cdc's
# connections ask for log_queries).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
sessions=${1:-3} bursts=${2:-4} events=${3:-5000}
dir=$root/.local/first-insert
. bench/servers.sh
pid=
on_exit='[ -z "$pid" ] || kill "$pid" 2>/dev/null || true'
migrated_servers "$dir"
export CDC_LOG_LEVEL=debug CDC_METRICS_ADDR=off
case $CDC_CLICKHOUSE_DSN in
*\?*) CDC_CLICKHOUSE_DSN+="&log_queries=1" ;;
*) CDC_CLICKHOUSE_DSN+="?log_queries=1" ;;
esac
ctx=$(event_context_sql)
for s in $(seq 1 "$sessions"); do
	"$dir/cdc" run >"$dir/cdc-$s.log" 2>&1 &
	pid=$!
	sleep 2
	for _ in $(seq 1 "$bursts"); do
		psql -X -q -v ON_ERROR_STOP=1 "$CDC_PG_DSN" -c "INSERT INTO outbox (event_type, environment, event_context)
			SELECT 'order.created', 'production', $ctx FROM generate_series(1, $events) AS i"
		sleep 2
	done
	kill -TERM "$pid"
	wait "$pid" || true
	pid=
	printf 'session %d: INSERTs stored in (s):' "$s"
	grep '"batch stored"' "$dir/cdc-$s.log" | grep -o '"rows":[0-9]*,.*"duration":[0-9.]*' |
		sed -E 's/"rows":([0-9]*),.*"duration":([0-9.]*)/\2 (\1 rows)/' | awk '{printf " %.3f %s %s", $1, $2, $3}'
	echo
done
# The query log is written every 7.5 s (flush_interval_milliseconds).
clickhouse-client --host 127.0.0.1 --port "$LOCALDB_CH_PORT" -q "SYSTEM FLUSH LOGS"
echo "ClickHouse's durations of the same INSERTs, in order (ms):"
clickhouse-client --host 127.0.0.1 --port "$LOCALDB_CH_PORT" -q "
	SELECT groupArray(query_duration_ms) FROM (
		SELECT query_duration_ms FROM system.query_log
		WHERE type = 2 AND query LIKE 'INSERT INTO event_log%'
		ORDER BY query_start_time, event_time)"
