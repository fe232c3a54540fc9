#!/usr/bin/env bash
# ab-profile.sh compares two commits on the in-process drain (the bench's
# `profile` step: replicator + sink + dead letters, 300,000 events in one
# transaction), alternated on one pair of throwaway servers so that both
# see the same host:
#
#   bash bench/ab-profile.sh OLD_COMMIT [NEW_COMMIT (default: the work tree)] [ROUNDS (default 3)]
#
# It prints each run's rows of section 6 (drain time, allocations per
# event, GC cycles, source-only and sink-only diagnostics). The servers
# live under .local/ab and are stopped however it ends.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
old=${1:?usage: bench/ab-profile.sh OLD_COMMIT [NEW_COMMIT] [ROUNDS]}
new=${2:-}
rounds=${3:-3}
dir=$root/.local/ab
scripts/localdb.sh stop "$dir/db" >/dev/null 2>&1 || true
rm -rf "$dir"
git worktree prune # a run killed hard leaves its worktrees registered
mkdir -p "$dir/db"
chmod 755 "$root/.local" "$dir" "$dir/db"
cleanup() {
	scripts/localdb.sh stop "$dir/db" >/dev/null 2>&1 || true
	git worktree remove --force "$dir/old" >/dev/null 2>&1 || true
	[ -z "$new" ] || git worktree remove --force "$dir/new" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
git worktree add -q --detach "$dir/old" "$old"
(cd "$dir/old" && go build -o "$dir/bench-old" ./bench)
if [ -n "$new" ]; then
	git worktree add -q --detach "$dir/new" "$new"
	(cd "$dir/new" && go build -o "$dir/bench-new" ./bench)
else
	go build -o "$dir/bench-new" ./bench
fi
servers=$(scripts/localdb.sh start "$dir/db") # captured: a failed start stops here (set -e)
eval "$(sed 's/^/export /' <<<"$servers")"
for i in $(seq 1 "$rounds"); do
	for v in old new; do
		out=$dir/$v-$i
		mkdir -p "$out"
		"$dir/bench-$v" -dir "$out" -repo "$root" -steps profile >"$out/log" 2>&1 || { echo "$v round $i failed:"; tail "$out/log"; exit 1; }
		echo "== $v, round $i"
		grep -E '^\| 6 ' "$out/results.md"
	done
done
