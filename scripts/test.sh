#!/usr/bin/env bash
# test.sh is `make test`: one PostgreSQL and one ClickHouse for the whole
# suite (every test gets its own databases on them), started under
# .local/test with scripts/localdb.sh and stopped again however the tests
# end. e2e runs on its own, after the rest: its fault tests stop and
# restart the shared servers. (It builds the binary with -race itself.)
set -euo pipefail
cd "$(dirname "$0")/.."
local=$PWD/.local
export PATH="$PATH:/usr/local/go/bin"
go=${GO:-go}

scripts/deps.sh test
scripts/localdb.sh stop "$local/test" >/dev/null 2>&1 || true # left over from an interrupted run
rm -rf "$local/test" && mkdir -p "$local/test" && chmod 755 "$local" "$local/test"

# Each step runs in a process group of its own, which finish signals: a
# SIGTERM sent to make or to this script alone (a CI timeout) would
# otherwise stop the servers under a `go test` that runs on, and whose
# fault tests may start a server again that nothing stops.
child=""
finish() {
	local rc=$?
	# A second signal (make passing on a Ctrl-C the script had too) does
	# not cut the cleanup short.
	trap - EXIT
	trap '' INT TERM HUP
	# The group, even when its leader (go) is gone: a test binary that
	# died without its cleanups (a -timeout panic, a crash) leaves the cdc
	# processes it started running in it.
	if [ -n "$child" ]; then
		kill -TERM -- "-$child" 2>/dev/null || true
		wait "$child" 2>/dev/null || true
	fi
	scripts/localdb.sh stop "$local/test"
	exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
step() {
	setsid "$@" &
	child=$!
	wait "$child"
	child=""
}

servers=$(scripts/localdb.sh start "$local/test")
eval "$(sed 's/^/export /' <<<"$servers")"
export CDC_TEST_PG_DSN="$CDC_PG_DSN" CDC_TEST_CLICKHOUSE_DSN="$CDC_CLICKHOUSE_DSN" CDC_TEST_LOCALDB_DIR="$local/test"
step "$go" vet ./...
# In a zone far from UTC (+14:00): a time sent or read in cdc's own zone
# (TZ) instead of as an instant lands hours off there, and a test sees it;
# the servers and the e2e suite's binary keep the machine's zone.
# shellcheck disable=SC2046 # one argument per package
step env TZ=Pacific/Kiritimati "$go" test -race -count=1 -timeout 20m $("$go" list ./... | grep -v /e2e$)
step "$go" test -count=1 -timeout 45m ./e2e/
