#!/usr/bin/env bash
# demo.sh — the main job end to end on one machine: local PostgreSQL and
# ClickHouse under .local/demo, `cdc migrate`, `cdc run`, sample events
# published the way an application does (INSERT INTO outbox inside a
# transaction), the events shown arriving in ClickHouse with the lag, then
# everything stopped again.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=$root/.local/demo
export PATH="$PATH:/usr/local/go/bin"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# 1. Debian packages, when missing.
scripts/deps.sh demo

# 2. Servers, stopped again however the demo ends.
cdc_pid=""
interrupted=0
cleanup() {
	trap '' INT TERM
	if [ -n "$cdc_pid" ] && kill -0 "$cdc_pid" 2>/dev/null; then
		# A Ctrl-C reached cdc too (it is in the terminal's process
		# group), and it is storing what it holds: a second signal would
		# have it exit at once. It is given its shutdown (10 s) first.
		if [ "$interrupted" = 1 ]; then
			for _ in $(seq 1 150); do kill -0 "$cdc_pid" 2>/dev/null || break; sleep 0.1; done
		fi
		kill -TERM "$cdc_pid" 2>/dev/null || true
		wait "$cdc_pid" || true
	fi
	scripts/localdb.sh stop "$dir"
	echo "stopped PostgreSQL and ClickHouse"
}
trap cleanup EXIT
trap 'interrupted=1; exit 130' INT
trap 'exit 143' TERM
# A fresh folder each time, so the counts below are this run's.
scripts/localdb.sh stop "$dir" >/dev/null 2>&1 || true
rm -rf "$dir"
mkdir -p "$dir" && chmod 755 "$root/.local" "$dir"
step "starting PostgreSQL 15 and ClickHouse under .local/demo"
# Captured first: a failed start then stops the demo (set -e) instead of
# leaving it to run against whatever CDC_* variables the shell has.
servers=$(scripts/localdb.sh start "$dir")
eval "$(sed 's/^/export /' <<<"$servers")"
metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export CDC_METRICS_ADDR=127.0.0.1:$metrics_port CDC_FLUSH_INTERVAL=500ms CDC_LOG_FORMAT=console
psql=(psql -q -X -v ON_ERROR_STOP=1 "$CDC_PG_DSN")
ch=(clickhouse-client --host 127.0.0.1 --port "$LOCALDB_CH_PORT")

step "building cdc"
# -buildvcs=false: git refuses a clone owned by another user (sudo make
# demo), and the build with it; the demo needs no revision in its binary.
go build -buildvcs=false -o "$dir/cdc" ./cmd/cdc

step "cdc migrate (outbox table, publication and slot in PostgreSQL; event_log in ClickHouse)"
"$dir/cdc" migrate

step "cdc run (logs in .local/demo/cdc.log, metrics on http://$CDC_METRICS_ADDR/metrics)"
"$dir/cdc" run >"$dir/cdc.log" 2>&1 &
cdc_pid=$!
ready=0 answer=""
for _ in $(seq 1 100); do
	if answer=$(curl -fs --max-time 2 "http://$CDC_METRICS_ADDR/readyz" 2>/dev/null); then ready=1; break; fi
	kill -0 "$cdc_pid" 2>/dev/null || break # exited: it will not become ready
	sleep 0.1
done
if [ "$ready" != 1 ]; then
	# The reason is in cdc's log (and /readyz's answer, when cdc still runs);
	# the cleanup trap stops cdc and the servers.
	if kill -0 "$cdc_pid" 2>/dev/null; then
		echo "cdc did not become ready: http://$CDC_METRICS_ADDR/readyz did not answer 200" >&2
		answer=$(curl -s --max-time 2 "http://$CDC_METRICS_ADDR/readyz" 2>/dev/null || true)
		[ -z "$answer" ] || printf '/readyz: %s\n' "$answer" >&2
	else
		rc=0
		wait "$cdc_pid" || rc=$?
		cdc_pid=""
		echo "cdc exited ($rc) before it became ready" >&2
	fi
	echo "cdc's log: $dir/cdc.log; its last lines:" >&2
	tail -n 20 "$dir/cdc.log" >&2 || true
	exit 1
fi
echo "$answer"

step "publishing events: each INSERT INTO outbox commits with its business transaction"
for round in 1 2 3; do
	"${psql[@]}" <<SQL
BEGIN;
-- the business write would be here, e.g. INSERT INTO users ...
INSERT INTO outbox (event_type, environment, event_context)
SELECT 'user_created', 'demo', json_build_object('user_id', $round * 1000 + g, 'email', 'user' || g || '@example.com')
FROM generate_series(1, 1000) g;
COMMIT;
BEGIN;
INSERT INTO outbox (event_type, environment, event_context) VALUES ('never_happened', 'demo', '{"rolled_back": true}');
ROLLBACK;
SQL
	echo "round $round: committed 1000 user_created events (and rolled one back)"
	sleep 0.7
	"${ch[@]}" -q "SELECT count() AS events_in_clickhouse FROM event_log FINAL FORMAT PrettyCompactNoEscapes"
	curl -fs --max-time 5 "http://$CDC_METRICS_ADDR/metrics" | grep -E '^cdc_replication_lag_(bytes|seconds) ' | sed 's/^/  /'
done

step "waiting for the last batch"
stored=0
for _ in $(seq 1 100); do
	stored=$("${ch[@]}" -q 'SELECT count() FROM event_log FINAL')
	[ "$stored" = 3000 ] && break
	sleep 0.1
done
if [ "$stored" != 3000 ]; then
	echo "event_log holds $stored events 10 s after the last commit, not 3000; cdc's log: $dir/cdc.log, its last lines:" >&2
	tail -n 20 "$dir/cdc.log" >&2 || true
	exit 1
fi
"${ch[@]}" -q "SELECT event_type, count() AS events, min(event_date_time) AS first, max(event_date_time) AS last FROM event_log FINAL GROUP BY event_type FORMAT PrettyCompactNoEscapes"
"${ch[@]}" -q "SELECT event_id, event_type, environment, event_context FROM event_log FINAL ORDER BY event_context LIMIT 3 FORMAT PrettyCompactNoEscapes"

step "cdc status"
"$dir/cdc" status

step "metrics"
curl -fs --max-time 5 "http://$CDC_METRICS_ADDR/metrics" | grep -E '^cdc_(events_written_total|batches_written_total|replication_lag_bytes|replication_lag_seconds|dead_letters_total|buffer_bytes) '

step "SIGTERM: cdc flushes, acknowledges and exits"
kill -TERM "$cdc_pid"
rc=0
wait "$cdc_pid" || rc=$?
cdc_pid=""
if [ "$rc" != 0 ]; then
	echo "cdc exited $rc after SIGTERM; its log: $dir/cdc.log" >&2
	exit 1
fi
echo "cdc exited 0"
tail -n 3 "$dir/cdc.log"
