#!/usr/bin/env bash
# read-pattern.sh: how a consumer's read pattern changes what the walsender
# costs on a backlog of many transactions (the bench's 300,000 events, each
# committed in its own transaction) — the experiments behind
# CDC_PG_RECEIVE_BUFFER (docs/performance-history.md, fifth and sixth sessions of
# 2026-11-30). Throwaway servers under .local/read-pattern.
#
#   bash bench/read-pattern.sh raw [REPS]   bench/rawread with each pattern of
#                                           the matrix below, in turn, on one
#                                           slot it never confirms
#   bash bench/read-pattern.sh cdc [REPS]   cdc built at BASE_REV (reads before
#                                           the receive buffer; default 0c929a8)
#                                           alternated with the working tree's at
#                                           its default and at 208 KiB (Linux's
#                                           default net.core.rmem_max); one slot
#                                           per drain; one line per drain
#
# RAW_PATTERNS replaces the raw mode's matrix: rawread flags, patterns
# separated by ';' (bench/rawread -h lists the flags). The cdc mode leaves
# .local/read-pattern/{base,new,new208}.sh behind: wrappers for `bash
# bench/run.sh -steps drain -cdc WRAPPER`, the one-transaction comparison.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mode=${1:-}
reps=${2:-3}
n=300000
dir=$root/.local/read-pattern
base_rev=${BASE_REV:-0c929a8}
case "$mode" in
raw | cdc) ;;
*) echo "usage: $0 raw|cdc [REPS]" >&2; exit 2 ;;
esac
. bench/servers.sh
migrated_servers "$dir"
psql=(psql -X -q -A -t -v ON_ERROR_STOP=1 "$CDC_PG_DSN")
# TCP segments the host sent since `nstat -n`, and what a full receive
# queue cost: retransmitted segments, queue prunes, segments collapsed.
segments() {
	nstat TcpOutSegs TcpRetransSegs TcpExtPruneCalled TcpExtTCPRcvCollapsed |
		awk '{ v[$1] = $2 } END { printf "%d TCP segments sent (whole host; %d retransmitted, %d prunes, %d collapsed)", v["TcpOutSegs"], v["TcpRetransSegs"], v["TcpExtPruneCalled"], v["TcpExtTCPRcvCollapsed"] }'
}

if [ "$mode" = raw ]; then
	go build -o "$dir/rawread" ./bench/rawread
	"${psql[@]}" -c "SELECT pg_create_logical_replication_slot('raw', 'pgoutput')" >/dev/null
	insert_transactions "$n" >/dev/null
	patterns=(
		"-read 8192 -pause 5ms -drained"                # cdc before CDC_PG_RECEIVE_BUFFER (less its low-water mark)
		"-rcvbuf 524288 -read 8192 -pause 5ms -drained" # the buffer alone
		"-read 1048576 -pause 3ms"                      # large reads and a pause, the kernel's buffer
		"-rcvbuf 524288 -read 1048576 -pause 3ms"       # all three
		"-rcvbuf 524288 -read 8192"                     # the buffer, small reads, no pause
		"-rcvbuf 131072 -read 1048576 -pause 3ms"       # a smaller buffer
		"-rcvbuf 524288 -read 1048576 -pause 1ms"       # a shorter pause
	)
	if [ -n "${RAW_PATTERNS:-}" ]; then
		IFS=';' read -r -a patterns <<<"$RAW_PATTERNS"
	fi
	for _ in $(seq 1 "$reps"); do
		for args in "${patterns[@]}"; do
			nstat -n >/dev/null
			# shellcheck disable=SC2086 # word splitting of the flags is meant
			echo "$("$dir/rawread" -dsn "$CDC_PG_DSN" -slot raw $args), $(segments)"
		done
	done
	exit 0
fi

# The base: cdc at BASE_REV, built apart.
work=$(mktemp -d)
on_exit="git worktree remove --force '$work/tree' >/dev/null 2>&1 || true; rm -rf '$work'"
git worktree add -q --detach "$work/tree" "$base_rev"
(cd "$work/tree" && go build -o "$dir/cdc-base" ./cmd/cdc)
printf '#!/bin/sh\nexec %s "$@"\n' "$dir/cdc-base" >"$dir/base.sh"
printf '#!/bin/sh\nexec %s "$@"\n' "$dir/cdc" >"$dir/new.sh"
printf '#!/bin/sh\nCDC_PG_RECEIVE_BUFFER=212992 exec %s "$@"\n' "$dir/cdc" >"$dir/new208.sh"
chmod +x "$dir/base.sh" "$dir/new.sh" "$dir/new208.sh"
variants=(base new new208)

drains=$((${#variants[@]} * reps))
for i in $(seq 1 "$drains"); do
	"${psql[@]}" -c "SELECT pg_create_logical_replication_slot('drain_$i', 'pgoutput')" >/dev/null
done
"${psql[@]}" -c "SELECT pg_create_logical_replication_slot('ceiling', 'pgoutput')" >/dev/null
insert_transactions "$n" >/dev/null
start=$(date +%s%N)
"${psql[@]}" -c "SELECT count(*) FROM pg_logical_slot_get_binary_changes('ceiling', NULL, NULL, 'proto_version', '1', 'publication_names', 'cdc_outbox')" >/dev/null
echo "ceiling: $(seconds_since "$start") s"
ch() { clickhouse-client --host 127.0.0.1 --port "$LOCALDB_CH_PORT" "$@"; }
cpu() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }
for i in $(seq 1 "$drains"); do
	tag=${variants[$(((i - 1) % ${#variants[@]}))]}
	ch -q "CREATE DATABASE d$i"
	chdsn="clickhouse://default@127.0.0.1:$LOCALDB_CH_PORT/d$i"
	CDC_CLICKHOUSE_DSN=$chdsn CDC_SLOT_NAME=drain_$i "$dir/cdc" migrate >>"$dir/migrate.log" 2>&1
	nstat -n >/dev/null
	start=$(date +%s%N)
	CDC_CLICKHOUSE_DSN=$chdsn CDC_SLOT_NAME=drain_$i CDC_METRICS_ADDR=off "$dir/$tag.sh" run >"$dir/cdc-$i.log" 2>&1 &
	pid=$!
	until [ "$(ch -q "SELECT count() FROM d$i.event_log")" -ge "$n" ]; do sleep 0.05; done
	took=$(seconds_since "$start")
	ws=$("${psql[@]}" -c "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'drain_$i'")
	echo "$tag drain $i: $took s, walsender cpu $(cpu "$ws") s, cdc cpu $(cpu "$pid") s," \
		"$(segments), peak RSS $(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status") MiB"
	kill -TERM "$pid"
	wait "$pid" || true
	ch -q "DROP DATABASE d$i"
done
