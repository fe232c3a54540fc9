#!/usr/bin/env bash
# run.sh is `make bench`: start a throwaway PostgreSQL and ClickHouse under
# .local/bench, build cdc without -race (the race detector would measure
# itself), run the measurements, and stop the servers however it ends.
# Arguments go to the bench program (go run ./bench -h lists them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dir=$root/.local/bench
scripts/localdb.sh stop "$dir" >/dev/null 2>&1 || true # left over from an interrupted run
rm -rf "$dir"
mkdir -p "$dir"
chmod 755 "$root/.local" "$dir"
trap 'scripts/localdb.sh stop "$dir"' EXIT
trap 'exit 130' INT TERM
servers=$(scripts/localdb.sh start "$dir") # captured: a failed start stops here (set -e)
eval "$(sed 's/^/export /' <<<"$servers")"
# Tests the micro-benchmark packages may gain use these servers, not new ones.
export CDC_TEST_PG_DSN="$CDC_PG_DSN" CDC_TEST_CLICKHOUSE_DSN="$CDC_CLICKHOUSE_DSN" CDC_TEST_LOCALDB_DIR="$dir"
# -buildvcs=false: git refuses a clone owned by another user, and the
# build with it; the table takes the revision from git itself.
go build -buildvcs=false -o "$dir/cdc" ./cmd/cdc
go build -buildvcs=false -o "$dir/bench" ./bench
"$dir/bench" -cdc "$dir/cdc" -dir "$dir" -repo "$root" "$@"
