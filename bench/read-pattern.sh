#!/usr/bin/env bash
# read-pattern.sh: how a consumer's read pattern changes what the walsender
# costs on a backlog of many transactions (the bench's 300,000 events, each
# committed in its own transaction) — the experiment of docs/performance.md,
# fifth session of 2026-11-30. Throwaway servers under .local/read-pattern.
#
#   bash bench/read-pattern.sh raw [REPS]   bench/rawread with cdc's pattern and
#                                           with a small buffer, large reads and a
#                                           pause, alternated on one unconfirmed slot
#   bash bench/read-pattern.sh cdc [REPS]   cdc and a prototype with those settings
#                                           (bench/read-pattern.patch, built in a
#                                           temporary worktree), alternated, one slot
#                                           per drain; one line per drain
#
# READ_PATTERN_OVERRIDES replaces the variant's settings. The cdc mode
# leaves .local/read-pattern/{base,variant}.sh behind: wrappers
# for `bash bench/run.sh -steps drain -cdc WRAPPER`, the one-transaction
# comparison.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mode=${1:-}
reps=${2:-4}
n=300000
dir=$root/.local/read-pattern
small="-rcvbuf 524288 -read 1048576 -pause 3ms"
# The prototype's settings (bench/read-pattern.patch): SO_RCVBUF, read-ahead
# buffer, pause, pause before every refill, no low-water mark; CDCX_FULL
# instead of CDCX_ALWAYS pauses only after a refill of fewer bytes.
overrides=${READ_PATTERN_OVERRIDES:-CDCX_RCVBUF=524288 CDCX_READBUF=1048576 CDCX_PAUSE=3ms CDCX_ALWAYS=1 CDCX_NOLOWAT=1}
case "$mode" in
raw | cdc) ;;
*) echo "usage: $0 raw|cdc [REPS]" >&2; exit 2 ;;
esac
. bench/servers.sh
migrated_servers "$dir"
psql=(psql -X -q -A -t -v ON_ERROR_STOP=1 "$CDC_PG_DSN")

if [ "$mode" = raw ]; then
	go build -o "$dir/rawread" ./bench/rawread
	"${psql[@]}" -c "SELECT pg_create_logical_replication_slot('raw', 'pgoutput')" >/dev/null
	insert_transactions "$n" >/dev/null
	for _ in $(seq 1 "$reps"); do
		for args in "-read 8192 -pause 5ms -drained" "$small"; do
			# shellcheck disable=SC2086 # word splitting of the flags is meant
			"$dir/rawread" -dsn "$CDC_PG_DSN" -slot raw $args
		done
	done
	exit 0
fi

# The prototype: the working tree's code with the patch, built apart.
work=$(mktemp -d)
on_exit="git worktree remove --force '$work/tree' >/dev/null 2>&1 || true; rm -rf '$work'"
git worktree add -q --detach "$work/tree" HEAD
git -C "$work/tree" apply "$root/bench/read-pattern.patch"
(cd "$work/tree" && go build -o "$dir/cdc-variant" ./cmd/cdc)
printf '#!/bin/sh\nexec %s "$@"\n' "$dir/cdc" >"$dir/base.sh"
printf '#!/bin/sh\n%s exec %s "$@"\n' "$overrides" "$dir/cdc-variant" >"$dir/variant.sh"
chmod +x "$dir/base.sh" "$dir/variant.sh"

for i in $(seq 1 $((2 * reps))); do
	"${psql[@]}" -c "SELECT pg_create_logical_replication_slot('drain_$i', 'pgoutput')" >/dev/null
done
"${psql[@]}" -c "SELECT pg_create_logical_replication_slot('ceiling', 'pgoutput')" >/dev/null
insert_transactions "$n" >/dev/null
start=$(date +%s%N)
"${psql[@]}" -c "SELECT count(*) FROM pg_logical_slot_get_binary_changes('ceiling', NULL, NULL, 'proto_version', '1', 'publication_names', 'cdc_outbox')" >/dev/null
echo "ceiling: $(seconds_since "$start") s"
ch() { clickhouse-client --host 127.0.0.1 --port "$LOCALDB_CH_PORT" "$@"; }
cpu() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }
for i in $(seq 1 $((2 * reps))); do
	wrapper=$dir/base.sh tag=unchanged
	[ $((i % 2)) = 0 ] && wrapper=$dir/variant.sh tag=variant
	ch -q "CREATE DATABASE d$i"
	chdsn="clickhouse://default@127.0.0.1:$LOCALDB_CH_PORT/d$i"
	CDC_CLICKHOUSE_DSN=$chdsn CDC_SLOT_NAME=drain_$i "$dir/cdc" migrate >>"$dir/migrate.log" 2>&1
	nstat -n >/dev/null
	start=$(date +%s%N)
	CDC_CLICKHOUSE_DSN=$chdsn CDC_SLOT_NAME=drain_$i CDC_METRICS_ADDR=off "$wrapper" run >"$dir/cdc-$i.log" 2>&1 &
	pid=$!
	until [ "$(ch -q "SELECT count() FROM d$i.event_log")" -ge "$n" ]; do sleep 0.05; done
	took=$(seconds_since "$start")
	ws=$("${psql[@]}" -c "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'drain_$i'")
	echo "$tag drain $i: $took s, walsender cpu $(cpu "$ws") s, cdc cpu $(cpu "$pid") s," \
		"$(nstat TcpOutSegs | awk '/TcpOutSegs/ { print $2 }') TCP segments sent (whole host)"
	kill -TERM "$pid"
	wait "$pid" || true
	ch -q "DROP DATABASE d$i"
done
