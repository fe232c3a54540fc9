#!/usr/bin/env bash
# sql-interface.sh: how fast PostgreSQL's SQL interface to logical decoding
# hands the bench's 300,000-row backlog to a client, against the ceiling
# (count(*) only) — a reference for a catch-up mode that would read a
# backlog with pg_logical_slot_peek_binary_changes instead of the
# walsender, which flushes every change as its own message. Throwaway
# servers under .local/sql-interface; each figure is wall seconds of psql.
# Also: the same with pgoutput's binary option, and how many rows a call
# bounded by upto_nchanges returns.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dir=$root/.local/sql-interface
. bench/servers.sh
migrated_servers "$dir"
psql=(psql -X -q -v ON_ERROR_STOP=1 "$CDC_PG_DSN")
for s in v1_count v1_rows v2_count v2_rows; do
	"${psql[@]}" -c "SELECT pg_create_logical_replication_slot('$s', 'pgoutput')" >/dev/null
done
insert_backlog 300000
v1="'proto_version', '1', 'publication_names', 'cdc_outbox'"
v2="'proto_version', '2', 'streaming', 'on', 'publication_names', 'cdc_outbox'"
timed() { # label, SQL: run it with psql into /dev/null, print wall seconds
	local start
	start=$(date +%s%N)
	"${psql[@]}" -c "$2" >/dev/null
	printf '%-44s %s s\n' "$1" "$(seconds_since "$start")"
}
for round in 1 2; do
	timed "ceiling, protocol 1, count(*) ($round)" "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('v1_count', NULL, NULL, $v1)"
	timed "protocol 1, every change to the client ($round)" "COPY (SELECT data FROM pg_logical_slot_peek_binary_changes('v1_rows', NULL, NULL, $v1)) TO STDOUT (FORMAT binary)"
	timed "protocol 2 streaming, count(*) ($round)" "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('v2_count', NULL, NULL, $v2)"
	timed "protocol 2 streaming, every change ($round)" "COPY (SELECT data FROM pg_logical_slot_peek_binary_changes('v2_rows', NULL, NULL, $v2)) TO STDOUT (FORMAT binary)"
	# pgoutput's binary option: values in their send format, no text output.
	timed "protocol 1, binary, count(*) ($round)" "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('v1_count', NULL, NULL, 'binary', 'true', $v1)"
	timed "protocol 2 streaming, binary, count(*) ($round)" "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('v2_count', NULL, NULL, 'binary', 'true', $v2)"
done
# What upto_nchanges bounds: with protocol 1 rows appear at the commit, so
# the one-transaction backlog comes whole; with streaming, one block.
for p in v1 v2; do
	opts=$v1
	[ "$p" = v2 ] && opts=$v2
	printf '%-44s %s rows\n' "$p, upto_nchanges 1000" "$("${psql[@]}" -At -c "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('${p}_count', NULL, 1000, $opts)")"
done
