#!/usr/bin/env bash
# sql-catchup.sh: what a catch-up mode reading a backlog through PostgreSQL's
# SQL interface would cost on a backlog of many transactions (the bench's
# events, each committed in its own transaction): one call over the whole
# backlog, then calls bounded by upto_nchanges, each followed by
# pg_replication_slot_advance to its last change, as a connector would
# advance only after storing a chunk. Each line shows the slot's
# restart_lsn, from where every call decodes again. Throwaway servers
# under .local/sql-catchup; times are wall seconds of psql.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
n=${1:-300000}
chunk=${2:-60000} # changes per call: Begin, Insert and Commit per event
dir=$root/.local/sql-catchup
. bench/servers.sh
migrated_servers "$dir"
psql=(psql -X -q -v ON_ERROR_STOP=1 "$CDC_PG_DSN")
for s in whole chunked; do
	"${psql[@]}" -c "SELECT pg_create_logical_replication_slot('$s', 'pgoutput')" >/dev/null
done
insert_transactions "$n"
opts="'proto_version', '1', 'publication_names', 'cdc_outbox'"
start=$(date +%s%N)
changes=$("${psql[@]}" -At -c "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('whole', NULL, NULL, $opts)")
echo "one call over the whole backlog: $changes changes in $(seconds_since "$start") s"
call=0
total=0
while :; do
	call=$((call + 1))
	start=$(date +%s%N)
	last=$("${psql[@]}" -At -c "SELECT max(lsn) FROM pg_logical_slot_peek_binary_changes('chunked', NULL, $chunk, $opts)")
	peek=$(seconds_since "$start")
	[ -n "$last" ] || break
	start=$(date +%s%N)
	"${psql[@]}" -c "SELECT pg_replication_slot_advance('chunked', '$last')" >/dev/null
	advance=$(seconds_since "$start")
	total=$(awk -v t="$total" -v p="$peek" -v a="$advance" 'BEGIN { printf "%.2f", t + p + a }')
	echo "call $call (upto_nchanges $chunk): peek $peek s, advance $advance s; restart_lsn / confirmed_flush_lsn now" \
		"$("${psql[@]}" -At -c "SELECT restart_lsn || ' / ' || confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'chunked'")"
done
echo "bounded calls and advances: $((call - 1)) calls, $total s in all"
