#!/usr/bin/env bash
# heap-large.sh [BINARY]: what holds cdc's heap while it drains the bench's
# 50 events of 10 MiB (`bash bench/run.sh -steps large`). The connector
# runs with CDC_PPROF=on; its heap profile is fetched every 100 ms from the
# metrics address the bench gave it, and the profile with the most in use
# is printed (`go tool pprof -top`). BINARY defaults to a build of this tree.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=$root/.local/heap-large
rm -rf "$out" && mkdir -p "$out"
if [ -n "${1:-}" ]; then bin=$(realpath "$1"); else bin=$out/cdc && go build -o "$bin" ./cmd/cdc; fi
printf '#!/bin/sh\nCDC_PPROF=on exec %s "$@"\n' "$bin" >"$out/cdc-pprof"
chmod +x "$out/cdc-pprof"

bash bench/run.sh -steps large -cdc "$out/cdc-pprof" >"$out/bench.log" 2>&1 &
bench=$!
n=0
while kill -0 "$bench" 2>/dev/null; do
	for pid in $(pgrep -f "$bin run" || true); do
		# The process may have ended since pgrep saw it.
		addr=$({ tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | sed -n 's/^CDC_METRICS_ADDR=//p' || true)
		[ -n "$addr" ] || continue
		n=$((n + 1))
		curl -sf -o "$out/heap-$n.pb.gz" "http://$addr/debug/pprof/heap" || rm -f "$out/heap-$n.pb.gz"
	done
	sleep 0.1
done
wait "$bench"
grep -E '^\| 3 \|' "$out/bench.log" | cut -c1-160
best= most=0
for f in "$out"/heap-*.pb.gz; do
	[ -s "$f" ] || continue
	inuse=$(go tool pprof -sample_index=inuse_space -top -unit=B "$f" 2>/dev/null | sed -n 's/.* of \([0-9]*\)B total.*/\1/p' | head -1)
	inuse=${inuse:-0}
	if [ "$inuse" -gt "$most" ]; then most=$inuse best=$f; fi
done
echo "$(ls "$out"/heap-*.pb.gz 2>/dev/null | wc -l) heap profiles; the largest in use: $best"
[ -z "$best" ] || go tool pprof -sample_index=inuse_space -top "$best" 2>/dev/null | sed -n '1,16p'
