#!/usr/bin/env bash
# ctxswitch.sh BINARY [RATE]: cdc's CPU time and context switches, and its
# walsender's CPU time, over 10 s of the bench's pgbench script (4 clients;
# -R RATE if given, else unthrottled), against `BINARY run` on throwaway servers under
# .local/ctxswitch. Alternate two binaries to compare them:
#   for b in old new old new; do bash bench/ctxswitch.sh /tmp/$b 5000; done
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=$(realpath "$1")
rate=${2:-}
dir=$root/.local/ctxswitch
. bench/servers.sh
fresh_servers "$dir"
pid=
on_exit='[ -z "$pid" ] || kill "$pid" 2>/dev/null || true'
"$bin" migrate >"$dir/migrate.log" 2>&1
"$bin" run >"$dir/cdc.log" 2>&1 &
pid=$!
sleep 3
# The pgbench transaction of bench/steady.go.
sed -n '/^const steadyScript = `/,/^`$/p' bench/steady.go | sed '1s/^const steadyScript = `//; $d' >"$dir/steady.sql"
/usr/lib/postgresql/15/bin/pgbench -n -c 4 -j 2 ${rate:+-R "$rate"} -T 20 -f "$dir/steady.sql" "$CDC_PG_DSN" >"$dir/pgbench.log" 2>&1 &
pb=$!
sleep 6
snap() { # thread, context switches, CPU ticks
	for t in /proc/"$pid"/task/*; do
		echo "$(basename "$t") $(grep -h ctxt_switches "$t/status" | awk '{s+=$2} END {print s}') $(awk '{print $14+$15}' "$t/stat")"
	done | sort
}
# The walsender serving cdc: its CPU over the same 10 s (what the primary pays).
ws=$(psql -X -qAt "$CDC_PG_DSN" -c "SELECT pid FROM pg_stat_replication WHERE application_name = 'cdc'")
wscpu() { awk '{print $14+$15}' /proc/"$ws"/stat; }
ws0=$(wscpu)
snap >"$dir/before"
sleep 10
snap >"$dir/after"
ws1=$(wscpu)
wait "$pb"
switches=$(join "$dir/before" "$dir/after" | awk '{s+=$4-$2} END {print s/10}')
ticks=$(join "$dir/before" "$dir/after" | awk '{s+=$5-$3} END {print s}')
echo "$(basename "$bin") rate=${rate:-unthrottled}: $(grep -o 'tps = [0-9.]*' "$dir/pgbench.log"); cdc CPU $((ticks * 10)) ms in 10 s; $switches context switches/s; walsender CPU $(((ws1 - ws0) * 10)) ms"
