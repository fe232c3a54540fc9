#!/usr/bin/env bash
# ceiling-spread.sh [ROUNDS]: how steady the drain target's ceiling is on
# its own. On throwaway servers under .local/ceiling-spread (stopped on
# exit), inserts the bench's backlog (300,000 events of ~300 bytes, one
# transaction) once, then times `count(*)` over
# pg_logical_slot_get_binary_changes with protocol 1 on a fresh slot per
# run, alternating logical_decoding_work_mem between its default (64MB:
# the transaction is spilled to disk and read back) and 2GB (no spill).
# Nothing else runs meanwhile. Prints one line per run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
rounds=${1:-4}
dir=$root/.local/ceiling-spread
. bench/servers.sh
migrated_servers "$dir"
psql() { command psql -X -q -A -t -v ON_ERROR_STOP=1 "$CDC_PG_DSN" "$@"; }
runs=$((rounds * 2))
for i in $(seq 1 "$runs"); do
	psql -c "SELECT pg_create_logical_replication_slot('spread_$i', 'pgoutput')" >/dev/null
done
insert_backlog 300000
for i in $(seq 1 "$runs"); do
	mem=64MB
	[ $((i % 2)) = 0 ] && mem=2GB
	t0=$(date +%s%N)
	n=$(psql -c "SET logical_decoding_work_mem = '$mem'" -c "SELECT count(*) FROM pg_logical_slot_get_binary_changes('spread_$i', NULL, NULL,
		'proto_version', '1', 'publication_names', 'cdc_outbox')")
	printf 'run %d logical_decoding_work_mem=%-4s %s messages in %s s\n' "$i" "$mem" "$n" "$(seconds_since "$t0")"
done
